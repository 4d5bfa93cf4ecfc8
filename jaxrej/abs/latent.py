"""Test-time latent optimisation (ABS): for every class, start from the best latents of a fixed
random bank (their decoded images are computed once, so scoring the bank is one matmul) and,
with E-ABS's encoder, from the encoder's proposal; run `steps` Adam steps on the log joint of
every (class, start) at once (one lax.scan); keep each class's best; add the Laplace correction
(`bound.linearised_elbo`) at the optimum.

    bank = latent_bank(model, params, n=1000, key=key)
    res = class_bounds(model, params, bank, x, options=LatentOptions())   # x (B, H, W, ch) in [0, 1]
    res.score (B, C), res.log_joint (B, C), res.z (B, C, d), res.member (B, C)

With M members per class (`ABSModel.members`) every decoder gets its own bound b_{c,m} and the
class score is the mixture's bound logsumexp_m b_{c,m} - log M (<= log 1/M sum_m p_m(x | c), as
each b_{c,m} <= log p_m(x | c)); log_joint, z and member are those of the class's best member.

A binary model (`ABSModel.binarize`) scores the thresholded input; with straight_through=True
(the attack view) its gradient passes the threshold as if it were the identity (BPDA, Athalye et
al. 2018); the scores are the same either way.

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
from jaxrej.abs.model import ABSModel, class_params, decode, decode_classes, decode_raw, encode


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
    """score (B, C): the class bound (log joint + correction; with members, the mixture's);
    log_joint (B, C), z (B, C, d), member (B, C) int32: those of each class's best member;
    decoder_score (B, C M): every decoder's own bound (class-major; = score with one member)."""

    score: jax.Array
    log_joint: jax.Array
    z: jax.Array
    member: jax.Array
    decoder_score: jax.Array


def latent_bank(model: ABSModel, params: dict, *, n: int, key: jax.Array) -> LatentBank:
    """K = n random latents and every decoder's outputs at them, as linear terms."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    z = jax.random.normal(key, (n, model.latent_dim), jnp.float32)
    h = jax.vmap(lambda p: jax.vmap(lambda zk: decode_raw(model, p, zk))(z))(params["dec"])
    lin, offset = bound.linear_terms(model, h)
    return LatentBank(z=z, lin=lin, offset=offset)


def _starts(model, params, bank, x, options):
    """Starting latents (C M, S, d) of one example x (D,)."""
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
    """log joint of every (decoder, start): z (C M, S, d) -> (C M, S)."""

    def per_class(p, zc):
        return jax.vmap(lambda zz: bound.log_joint(model, x, decode_raw(model, p, zz), zz))(zc)

    return jax.vmap(per_class)(dec, z)


def optimise_one(model: ABSModel, params: dict, bank: LatentBank, x: jax.Array, *,
                 options: LatentOptions) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """One example x (D,) -> per decoder (score (C M,), log joint (C M,), best z (C M, d))."""
    dec = params["dec"]
    z = _starts(model, params, bank, x, options)
    opt = optax.adam(options.lr)
    # the per-(decoder, start) objectives are separate, so the gradient of their sum is each one's
    loss = lambda z: -jnp.sum(_class_log_joint(model, dec, x, z)) / model.dim  # noqa: E731

    def step(carry, _):
        z, state = carry
        g = jax.grad(loss)(z)
        upd, state = opt.update(g, state, z)
        return (optax.apply_updates(z, upd), state), None

    if options.steps:
        (z, _), _ = jax.lax.scan(step, (z, opt.init(z)), None, length=options.steps)
    lj = _class_log_joint(model, dec, x, z)  # (C M, S)
    best = jnp.argmax(lj, axis=1)
    z_best = jnp.take_along_axis(z, best[:, None, None], axis=1)[:, 0]  # (C M, d)
    lj_best = jnp.max(lj, axis=1)
    if not options.correction:
        return lj_best, lj_best, z_best

    def corr(p, zc):
        raw = lambda zz: decode_raw(model, p, zz)  # noqa: E731
        return bound.laplace_correction(model, raw(zc), jax.jacfwd(raw)(zc))

    return lj_best + jax.vmap(corr)(dec, z_best), lj_best, z_best


def binarize(x: jax.Array, threshold: float, *, straight_through: bool = False) -> jax.Array:
    """[x > threshold] as floats; its gradient is 0, or with straight_through the identity's."""
    hard = (x > threshold).astype(x.dtype)
    return x + jax.lax.stop_gradient(hard - x) if straight_through else jax.lax.stop_gradient(hard)


def class_bounds(model: ABSModel, params: dict, bank: LatentBank, x: jax.Array, *,
                 options: LatentOptions, straight_through: bool = False) -> BoundResult:  # fmt: skip
    """Class bounds of a batch x (B, *event_shape) in [0, 1] (module doc), vmapped over rows;
    straight_through: how a binary model's threshold is differentiated (module doc)."""
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        raise ValueError(f"x: expected (B, {tuple(model.event_shape)}), got {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        flat = flat.astype(jnp.float32)
    if model.binarize is not None:
        flat = binarize(flat, model.binarize, straight_through=straight_through)
    s, lj, z = jax.vmap(lambda xi: optimise_one(model, params, bank, xi, options=options))(flat)
    return mixture(model, s, lj, z)


def mixture(model: ABSModel, s: jax.Array, lj: jax.Array, z: jax.Array) -> BoundResult:
    """Per-decoder results (s, lj (B, C M), z (B, C M, d)) -> the classes' (module doc); with one
    member the scores pass through unchanged."""
    B, C, M = s.shape[0], model.num_classes, model.members
    by_class = s.reshape(B, C, M)
    member = jnp.argmax(by_class, axis=-1)

    def pick(a):  # the best member's entry of a (B, C M, ...) -> (B, C, ...)
        a = a.reshape(B, C, M, *a.shape[2:])
        idx = member.reshape(B, C, 1, *(1,) * (a.ndim - 3))
        return jnp.take_along_axis(a, idx, axis=2)[:, :, 0]

    score = by_class[..., 0] if M == 1 else jax.nn.logsumexp(by_class, axis=-1) - jnp.log(M)
    return BoundResult(score=score, log_joint=pick(lj), z=pick(z), member=member.astype(jnp.int32),
                       decoder_score=s)  # fmt: skip


def reconstructions(model: ABSModel, params: dict, z: jax.Array,
                    member: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """Every class's reconstruction at its latent: z (B, C, d), by each class's member `member`
    (B, C) (None: member 0) -> (B, C, *event_shape)."""
    B, C, M = z.shape[0], model.num_classes, model.members
    m = jnp.zeros((B, C), jnp.int32) if member is None else jnp.asarray(member)
    if M == 1:
        imgs = jax.vmap(lambda zb: decode_classes(model, params["dec"], zb))(z)
    else:
        idx = jnp.arange(C)[None, :] * M + m  # (B, C) decoder indices
        one = lambda i, zi: decode(model, class_params(params["dec"], i), zi)  # noqa: E731
        imgs = jax.vmap(jax.vmap(one))(idx, z)
    return imgs.reshape(z.shape[:2] + tuple(model.event_shape))
