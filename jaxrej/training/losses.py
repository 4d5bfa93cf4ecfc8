"""Denoising score matching (Song et al. 2021, eq. 7) with two weightings.

For x(t) = m(t) x(0) + std(t) z, z ~ N(0, I), the per-example loss is

    plain:       lambda(t) = std(t)^2:   || std(t) s_theta(x(t), t, y) + z ||^2
    likelihood:  lambda(t) = g(t)^2:     g(t)^2 || s_theta(x(t), t, y) + z / std(t) ||^2

averaged over t ~ U(eps, T) (or summed over dimensions, `reduce="sum"`). With the likelihood
weighting the expectation is, up to a constant, an upper bound on -log p_0 (Song, Durkan,
Murray & Ermon 2021, "Maximum likelihood training of score-based diffusion models", thm. 1).
Its variance is reduced by importance sampling t from p(t) = w(t) / Z on [eps, T] with
w(t) = g(t)^2 / std(t)^2 (the likelihood weight in noise space) and Z = int_eps^T w: each sample
then carries the constant weight Z / (T - eps) on the plain noise-space loss ||std s + z||^2,
which keeps the estimator unbiased for the uniform-time objective (sec. 5 of that paper).

Closed-form cumulative weights W(t) = int w (used to sample by inversion):
  VP:      W = log(expm1(B(t))),            B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2
  sub-VP:  W = 2 log(expm1(B(t))) - B(t)
  VE:      W = 2 log(sigma_max / sigma_min) t
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from jaxrej.sde import VESDE, VPSDE, SubVPSDE

WEIGHTINGS = ("plain", "likelihood")
REDUCES = ("mean", "sum")


def _check_sde(sde):
    if not isinstance(sde, (VPSDE, SubVPSDE, VESDE)):
        raise ValueError(f"sde: expected a VPSDE, SubVPSDE or VESDE, got {type(sde).__name__}")


def _int_beta(sde, t):
    return sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2


def _t_from_int_beta(sde, b):
    """Inverse of B(t) = beta_min t + (beta_max - beta_min) t^2 / 2 (the positive root)."""
    a = sde.beta_max - sde.beta_min
    if a == 0:
        return b / sde.beta_min
    # t = 2 b / (beta_min + sqrt(beta_min^2 + 2 a b)), stable for small b
    return 2.0 * b / (sde.beta_min + jnp.sqrt(sde.beta_min**2 + 2.0 * a * b))


def importance_weight(sde, t: jax.Array) -> jax.Array:
    """w(t) = g(t)^2 / std(t)^2, the likelihood weighting in noise space (any shape)."""
    _check_sde(sde)
    return jnp.square(sde.diffusion(t)) / jnp.square(sde.std(t))


def importance_cum_weight(sde, t: jax.Array) -> jax.Array:
    """W(t), an antiderivative of importance_weight (closed form per SDE; see module doc)."""
    _check_sde(sde)
    if isinstance(sde, VESDE):
        return 2.0 * math.log(sde.sigma_max / sde.sigma_min) * t
    b = _int_beta(sde, t)
    if isinstance(sde, VPSDE):
        return jnp.log(jnp.expm1(b))
    return 2.0 * jnp.log(jnp.expm1(b)) - b


def importance_density(sde, t: jax.Array, *, eps: float = 1e-5) -> jax.Array:
    """p(t) = w(t) / (W(T) - W(eps)) on [eps, T]."""
    z = importance_cum_weight(sde, jnp.asarray(sde.T)) - importance_cum_weight(
        sde, jnp.asarray(eps)
    )
    return importance_weight(sde, t) / z


def importance_time_from_uniform(sde, u: jax.Array, *, eps: float = 1e-5,
                                t_max: float | None = None) -> jax.Array:  # fmt: skip
    """t = W^-1(W(eps) + u (W(t_max) - W(eps))) for u in [0, 1) (any shape), t_max = T by
    default: U(0, 1) draws become t ~ p(t) on [eps, t_max], in closed form per SDE."""
    _check_sde(sde)
    t_max = sde.T if t_max is None else t_max
    dtype = jnp.result_type(u, jnp.float32)
    w0 = importance_cum_weight(sde, jnp.asarray(eps, dtype))
    w1 = importance_cum_weight(sde, jnp.asarray(t_max, dtype))
    target = w0 + u * (w1 - w0)
    if isinstance(sde, VESDE):
        t = target / (2.0 * math.log(sde.sigma_max / sde.sigma_min))
    elif isinstance(sde, VPSDE):
        # log(expm1(B)) = target  ->  B = log(1 + e^target) = softplus(target)
        t = _t_from_int_beta(sde, jax.nn.softplus(target))
    else:
        # 2 log(e^B - 1) - B = target; v = e^B: v^2 - (2 + e^target) v + 1 = 0, root v > 1.
        # B = log v, written as log1p to keep precision for small B.
        c = jnp.exp(target)
        s = jnp.sqrt(c * (c + 4.0))  # sqrt((2 + c)^2 - 4)
        t = _t_from_int_beta(sde, jnp.log1p(0.5 * (c + s)))
    return jnp.clip(t, eps, t_max)


def sample_importance_time(sde, shape, *, key: jax.Array, eps: float = 1e-5) -> jax.Array:
    """t ~ p(t) proportional to g(t)^2 / std(t)^2 on [eps, T], by inverting W in closed form."""
    _check_sde(sde)
    u = jax.random.uniform(key, shape, jnp.float32)
    return importance_time_from_uniform(sde, u, eps=eps)


def dsm_loss_per_example(
    score_fn,
    params,
    sde,
    x: jax.Array,
    y: jax.Array,
    t: jax.Array,
    z: jax.Array,
    *,
    weighting: str = "plain",
    reduce: str = "mean",
) -> jax.Array:
    """The DSM loss of ONE example x (event shape) at time t with noise z (shaped like x)."""
    mean, std = sde.marginal(x, t)
    xt = mean + std * z
    score = score_fn(params, xt, t, y)
    red = jnp.mean if reduce == "mean" else jnp.sum
    if weighting == "plain":
        return red(jnp.square(std * score + z))
    return jnp.square(sde.diffusion(t)) * red(jnp.square(score + z / std))


def dsm_loss(
    score_fn,
    params,
    sde,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    weighting: str = "plain",
    importance_sampling: bool = False,
    eps: float = 1e-5,
    reduce: str = "mean",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Monte-Carlo DSM objective over a batch: x (B, *event), y (B,) -> scalar.

    t ~ U(eps, T) (or ~ p(t) with `importance_sampling`, likelihood weighting only), one z per
    example; the result is the (mask-weighted) batch mean of the per-example losses.
    With importance sampling the per-example value is  Z ||std s + z||^2 / (T - eps)
    with Z = W(T) - W(eps), which has the same expectation as the uniform-time estimator.
    """
    _check_sde(sde)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if reduce not in REDUCES:
        raise ValueError(f"reduce: expected one of {REDUCES}, got {reduce!r}")
    if importance_sampling and weighting != "likelihood":
        raise ValueError("importance_sampling: only defined with weighting='likelihood'")
    if not (0.0 < eps < sde.T):
        raise ValueError(f"eps: expected 0 < eps < T={sde.T}, got {eps!r}")
    b = x.shape[0]
    tkey, zkey = jax.random.split(key)
    z = jax.random.normal(zkey, x.shape, x.dtype)
    if importance_sampling:
        t = sample_importance_time(sde, (b,), key=tkey, eps=eps).astype(x.dtype)
        zc = importance_cum_weight(sde, jnp.asarray(sde.T)) - importance_cum_weight(
            sde, jnp.asarray(eps)
        )
        per = jax.vmap(
            lambda xi, yi, ti, zi: dsm_loss_per_example(
                score_fn, params, sde, xi, yi, ti, zi, weighting="plain", reduce=reduce
            )
        )(x, y, t, z)
        per = per * (zc / (sde.T - eps))
    else:
        t = jax.random.uniform(tkey, (b,), x.dtype, minval=eps, maxval=sde.T)
        per = jax.vmap(
            lambda xi, yi, ti, zi: dsm_loss_per_example(
                score_fn, params, sde, xi, yi, ti, zi, weighting=weighting, reduce=reduce
            )
        )(x, y, t, z)
    if mask is None:
        return jnp.mean(per)
    per = jnp.where(mask, per, 0.0)  # masked rows never contribute, even if NaN
    return jnp.sum(per) / jnp.maximum(jnp.sum(mask.astype(per.dtype)), 1.0)


def class_bound_logits(
    score_fn, params, sde, x: jax.Array, *, key: jax.Array, num_classes: int, t_min: float,
    t_max: float | None = None,
) -> jax.Array:  # fmt: skip
    """One-draw estimates of every class's likelihood-weighted bound on [t_min, t_max] (T by
    default; less its class-free terms): x (B, *event) -> (B, C), -L of `class_denoising_losses`
    with one draw (t ~ w(t) / Z on [t_min, t_max], z) per example shared by its classes:
    unbiased for -L[c]."""
    return -class_denoising_losses(score_fn, params, sde, x, num_classes=num_classes, key=key,
                                   n_samples=1, weighting="likelihood", eps=t_min,
                                   t_max=t_max)  # fmt: skip


def class_ce_loss(
    score_fn,
    params,
    sde,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    num_classes: int,
    t_min: float,
    t_max: float | None = None,
) -> jax.Array:
    """Cross-entropy of p(y | x) = softmax_c of `class_bound_logits` (the model's own class
    bounds on [t_min, t_max], one shared draw per example): x (B, *event), y (B,) -> scalar.
    Added to the DSM objective it trains the bound to rank the classes (a hybrid
    generative-discriminative objective, as Fetaya et al. 2020 and Izmailov et al. 2020 for
    conditional flows); t_max < T trains the window a scorer with `label_max` reads."""
    logits = class_bound_logits(
        score_fn, params, sde, x, key=key, num_classes=num_classes, t_min=t_min, t_max=t_max
    )
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


class LabelGap(struct.PyTreeNode):
    """Does the model use its label? From `class_denoising_losses` L (B, C) and labels y (B,).

    gap:       (B,) mean_{c != y} L[c] - L[y]  (> 0: the true label denoises better)
    correct:   (B,) argmin_c L[c] == y         (the denoising-bound classifier, Li et al. 2023)
    """

    gap: jax.Array
    correct: jax.Array


def class_denoising_losses(
    score_fn,
    params,
    sde,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    n_samples: int = 8,
    weighting: str = "likelihood",
    eps: float = 1e-5,
    t_max: float | None = None,
) -> jax.Array:
    """The denoising loss of every example under every class label: x (B, *event) -> (B, C),
    over t in [eps, t_max] (t_max = T by default).

    Each example draws `n_samples` pairs (t_k, z_k), SHARED by its C classes, so differences
    between classes carry no Monte-Carlo noise from the draws themselves.
      weighting="likelihood": t_k stratified from p(t) = w(t) / Z (w = g^2 / std^2) and
        L[c] = Z / 2 * mean_k || eps_theta(x_k, t_k, c) - z_k ||^2  (summed over dimensions),
        the class-dependent part of the bound  -log p(x | c) <= const + L[c]  (Song et al. 2021,
        "Maximum likelihood training of score-based diffusion models", thm. 1), in nats;
      weighting="plain": t_k stratified on [eps, t_max] and L[c] = mean_k mean_d (std s + z)^2,
        the per-dimension plain DSM loss that training with weighting="plain" minimises.
    x_k = m(t_k) x + std(t_k) z_k and eps_theta = -std * score.
    """
    _check_sde(sde)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    if not (isinstance(n_samples, int) and n_samples >= 1):
        raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
    t_max = sde.T if t_max is None else t_max
    if not (isinstance(t_max, (int, float)) and 0.0 < eps < t_max <= sde.T):
        raise ValueError(f"t_max: expected a number in (eps={eps!r}, T={sde.T}], got {t_max!r}")
    b = x.shape[0]
    ukey, zkey = jax.random.split(key)
    u = (jnp.arange(n_samples) + jax.random.uniform(ukey, (b, n_samples))) / n_samples
    if weighting == "likelihood":
        t = importance_time_from_uniform(sde, u, eps=eps, t_max=t_max).astype(x.dtype)
        zc = importance_cum_weight(sde, jnp.asarray(t_max)) - importance_cum_weight(
            sde, jnp.asarray(eps)
        )
    else:
        t = (eps + u * (t_max - eps)).astype(x.dtype)
    z = jax.random.normal(zkey, (b, n_samples, *x.shape[1:]), x.dtype)
    classes = jnp.arange(num_classes, dtype=jnp.int32)

    def one(xi, ti, zi, c):  # one example, one draw, one class
        mean, std = sde.marginal(xi, ti)
        r = std * score_fn(params, mean + std * zi, ti, c) + zi  # z - eps_theta
        if weighting == "likelihood":
            return 0.5 * zc * jnp.sum(jnp.square(r))
        return jnp.mean(jnp.square(r))

    per_class = jax.vmap(one, in_axes=(None, None, None, 0))
    per_draw = jax.vmap(per_class, in_axes=(None, 0, 0, None))
    per_example = jax.vmap(per_draw, in_axes=(0, 0, 0, None))
    return jnp.mean(per_example(x, t, z, classes), axis=1)


def label_gap(losses: jax.Array, y: jax.Array) -> LabelGap:
    """LabelGap of class losses (B, C) (`class_denoising_losses`) and true labels y (B,)."""
    c = losses.shape[-1]
    true = jnp.take_along_axis(losses, y[:, None], axis=1)[:, 0]
    others = (jnp.sum(losses, axis=1) - true) / (c - 1)
    return LabelGap(gap=others - true, correct=jnp.argmin(losses, axis=1) == y)
