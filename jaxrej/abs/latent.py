"""Test-time latent optimisation (ABS): for every class, start from the best latents of a fixed
random bank (their decoded images are computed once, so scoring the bank is one matmul) and,
with E-ABS's encoder, from the encoder's proposal; run `steps` Adam steps on the log joint of
every (class, start) at once (one lax.scan); keep each class's best; add the Laplace correction
(`bound.linearised_elbo`) at the optimum.

    bank = latent_bank(model, params, n=1000, key=key)
    res = class_bounds(model, params, bank, x, options=LatentOptions())   # x (B, H, W, ch) in [0, 1]
    res.score (B, C), res.log_joint (B, C), res.z (B, C, d)

One example, then vmap: a row's scores never depend on its batch neighbours. The whole result is
differentiable in x through the unrolled Adam steps (the start selection is piecewise constant).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrej.abs import bound
from jaxrej.abs.model import ABSModel, decode_classes, decode_raw, encode


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatentOptions:
    """steps: Adam steps (ABS: ~50); lr: Adam step size; n_starts: best bank latents per class
    to optimise from; encoder_start: also start from the encoder's mean (E-ABS; ignored without
    an encoder); correction: add the Laplace term (score = linearised ELBO) or not (score = the
    log joint, ABS's objective)."""

    steps: int = 50
    lr: float = 0.05
    n_starts: int = 1
    encoder_start: bool = True
    correction: bool = True

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"steps: expected an int >= 0, got {self.steps!r}")
        if not (isinstance(self.n_starts, int) and self.n_starts >= 1):
            raise ValueError(f"n_starts: expected an int >= 1, got {self.n_starts!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr: expected a number > 0, got {self.lr!r}")


class LatentBank(struct.PyTreeNode):
    """z (K, d) ~ N(0, I); lin (C, K, D), offset (C, K): `bound.linear_terms` of every class's
    decoder at z_k, so that log p(x | H_c(z_k)) = <x, lin[c, k]> + offset[c, k] + const(x)."""

    z: jax.Array
    lin: jax.Array
    offset: jax.Array


class BoundResult(struct.PyTreeNode):
    """score (B, C): the class bound (log joint + correction); log_joint (B, C); z (B, C, d)."""

    score: jax.Array
    log_joint: jax.Array
    z: jax.Array


def latent_bank(model: ABSModel, params: dict, *, n: int, key: jax.Array) -> LatentBank:
    """K = n random latents and every class's decoder outputs at them, as linear terms."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    z = jax.random.normal(key, (n, model.latent_dim), jnp.float32)
    h = jax.vmap(lambda p: jax.vmap(lambda zk: decode_raw(model, p, zk))(z))(params["dec"])
    lin, offset = bound.linear_terms(model, h)
    return LatentBank(z=z, lin=lin, offset=offset)


def _starts(model, params, bank, x, options):
    """Starting latents (C, S, d) of one example x (D,)."""
    # log joint up to a term of x alone: <x, lin> + offset - ||z||^2 / 2
    lj = jnp.einsum("ckd,d->ck", bank.lin, x) + bank.offset
    lj = lj - 0.5 * jnp.sum(bank.z**2, axis=-1)[None, :]
    _, idx = jax.lax.top_k(lj, options.n_starts)  # (C, S)
    z0 = bank.z[idx]
    if options.encoder_start and model.encoder:
        mu, _ = encode(model, params["enc"], x)
        z0 = jnp.concatenate([z0, mu[:, None, :]], axis=1)
    return z0


def _class_log_joint(model, dec, x, z):
    """log joint of every (class, start): z (C, S, d) -> (C, S)."""

    def per_class(p, zc):
        return jax.vmap(lambda zz: bound.log_joint(model, x, decode_raw(model, p, zz), zz))(zc)

    return jax.vmap(per_class)(dec, z)


def optimise_one(model: ABSModel, params: dict, bank: LatentBank, x: jax.Array, *,
                 options: LatentOptions) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """One example x (D,) -> (score (C,), log joint (C,), best z (C, d)) (module doc)."""
    dec = params["dec"]
    z = _starts(model, params, bank, x, options)
    opt = optax.adam(options.lr)
    # the per-(class, start) objectives are separate, so the gradient of their sum is each one's
    loss = lambda z: -jnp.sum(_class_log_joint(model, dec, x, z)) / model.dim  # noqa: E731

    def step(carry, _):
        z, state = carry
        g = jax.grad(loss)(z)
        upd, state = opt.update(g, state, z)
        return (optax.apply_updates(z, upd), state), None

    if options.steps:
        (z, _), _ = jax.lax.scan(step, (z, opt.init(z)), None, length=options.steps)
    lj = _class_log_joint(model, dec, x, z)  # (C, S)
    best = jnp.argmax(lj, axis=1)
    z_best = jnp.take_along_axis(z, best[:, None, None], axis=1)[:, 0]  # (C, d)
    lj_best = jnp.max(lj, axis=1)
    if not options.correction:
        return lj_best, lj_best, z_best

    def corr(p, zc):
        raw = lambda zz: decode_raw(model, p, zz)  # noqa: E731
        return bound.laplace_correction(model, raw(zc), jax.jacfwd(raw)(zc))

    return lj_best + jax.vmap(corr)(dec, z_best), lj_best, z_best


def class_bounds(model: ABSModel, params: dict, bank: LatentBank, x: jax.Array, *,
                 options: LatentOptions) -> BoundResult:  # fmt: skip
    """Class bounds of a batch x (B, *event_shape) in [0, 1] (module doc), vmapped over rows."""
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        raise ValueError(f"x: expected (B, {tuple(model.event_shape)}), got {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        flat = flat.astype(jnp.float32)
    s, lj, z = jax.vmap(lambda xi: optimise_one(model, params, bank, xi, options=options))(flat)
    return BoundResult(score=s, log_joint=lj, z=z)


def reconstructions(model: ABSModel, params: dict, z: jax.Array) -> jax.Array:
    """Every class's reconstruction at its latent: z (B, C, d) -> (B, C, *event_shape)."""
    imgs = jax.vmap(lambda zb: decode_classes(model, params["dec"], zb))(z)
    return imgs.reshape(z.shape[:2] + tuple(model.event_shape))
