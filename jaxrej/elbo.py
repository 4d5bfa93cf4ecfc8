"""Class scores from the denoising bound: log p(x | y) >= ELBO(x, y), every class at once.

The "Diffusion Classifier" of Li et al. 2023 ("Your diffusion model is secretly a zero-shot
classifier") scores each class by its denoising loss, with the SAME times and noises for every
class of an example, so the class comparison sees only the model's difference between classes.
Here the loss is the likelihood-weighted one (Song, Durkan, Murray & Ermon 2021, "Maximum
likelihood training of score-based diffusion models", thm. 3, its denoising form), completed with
its prior and constant terms, so every score is a true lower bound in nats:

    ELBO(x, y) = E_z log pi(m_T x + std_T z) + D log m_T
                 - 1/2 int_eps^T g(t)^2 / std(t)^2 ( E_z || std(t) s(x_t, t, y) + z ||^2 - D ) dt,

    x_t = m(t) x + std(t) z,  z ~ N(0, I_D),  m, std: the SDE's perturbation kernel (jaxrej.sde).

It bounds the model "reverse SDE from pi at T down to eps, then x = x_eps / m(eps) + N(0,
std(eps)^2 / m(eps)^2)": averaging thm. 3's bound on [eps, T] over x_eps ~ N(m(eps) x,
std(eps)^2) turns its conditional score into the kernel's from 0 (the training target), and the
drift's divergence int_eps^T div f = D log(m_T / m_eps) with that decoder's reconstruction term
D log m_eps leaves D log m_T. With the exact score the bound equals E_{x_eps} log p_eps(x_eps)
+ D log m_eps - E_{x_T}[log p_T(x_T) - log pi(x_T)] (tests/test_elbo.py): tight up to the
prior's mismatch and the width of the decoder, as the ODE's log p_eps(x | y) is.

The prior term is exact (Gaussian), the integral Monte Carlo over `n_times` (t, z) draws per
example, shared by its classes and drawn from (key, index in the batch) alone:
  "importance": t ~ p(t) = w(t) / Z on [eps, T], w = g^2 / std^2 (jaxrej.training.losses), each
                draw weighted Z = W(T) - W(eps);
  "stratified": the same density, one draw in each of n_times equal-probability strata of p(t);
  "uniform":    t ~ U(eps, T), each draw weighted (T - eps) w(t).
All three are unbiased. The integrand's "- D" is estimated as rho(t) ||z||^2 + (1 - rho(t)) D with
rho = m^2 / (m^2 + std^2), a control variate (E ||z||^2 = D): where the signal dominates (small t)
the network cannot see the noise and ||std s + z||^2 ~ ||z||^2, where the noise dominates it
predicts z and ||std s + z||^2 ~ 0; subtracting the matching term removes most of either's
variance (and keeps the uniform sampling's variance from growing like 1 / eps).
With `label_cutoff` c (a score that ignores the label below c: models' `label_cutoff`) the
integral splits at c: n_times draws on [c, T] scored for every class, n_times on [eps, c] scored
once (class 0) and shared. The classes' differences, which come from [c, T] alone, then get all
n_times draws instead of the share of [eps, T]'s that lands above c, for (C + 1) / C the cost.
With `label_max` h the bound is that of the model whose score above h is the class average
s_bar(x, t) = 1/C sum_c s(x, t, c), one label-free score shared by the classes (`class_mean_score`):
the label acts in the window [c, h] alone, where every class gets n_times draws, and n_times
shared draws on [h, T] score s_bar (C evaluations each). A classifier choice, not a training one:
on MNIST the class differences of the coarse scales are the noisy, less accurate ones
(benchmarks/results/label_window.md), and any vector field is the score of a model, so the result
is still a lower bound on a model's log p(x | y). Cost: (2C + 1) n_times evaluations per example.
Pure JAX: jit, grad and vmap compose; shapes are static.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrej.likelihood import check_batch
from jaxrej.sde import SDE, VESDE, VPSDE, SubVPSDE
from jaxrej.training.losses import (
    dsm_loss_per_example,
    importance_cum_weight,
    importance_time_from_uniform,
    importance_weight,
)

TIME_SAMPLINGS = ("importance", "stratified", "uniform")


def _check_options(sde, num_classes, n_times, time_sampling, eps, chunk_size, label_cutoff=0.0,
                   label_max=0.0):  # fmt: skip
    if not isinstance(sde, (VPSDE, SubVPSDE, VESDE)):
        raise ValueError(f"sde: expected a VPSDE, SubVPSDE or VESDE, got {type(sde).__name__}")
    if num_classes is not None and not (
        isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1
    ):
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    if not (isinstance(n_times, int) and not isinstance(n_times, bool) and n_times >= 1):
        raise ValueError(f"n_times: expected an int >= 1, got {n_times!r}")
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling: expected one of {TIME_SAMPLINGS}, got {time_sampling!r}")
    if not (isinstance(eps, (int, float)) and 0.0 < eps < sde.T):
        raise ValueError(f"eps: expected a float in (0, T={sde.T}), got {eps!r}")
    if chunk_size is not None and not (
        isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1
    ):
        raise ValueError(f"chunk_size: expected None or an int >= 1, got {chunk_size!r}")
    if not (isinstance(label_cutoff, (int, float)) and (label_cutoff == 0.0
                                                         or eps < label_cutoff < sde.T)):  # fmt: skip
        raise ValueError(
            f"label_cutoff: expected 0 (off) or a time in (eps={eps}, T={sde.T}), got "
            f"{label_cutoff!r}"
        )
    if not (isinstance(label_max, (int, float)) and (label_max == 0.0
                                                      or max(eps, label_cutoff) < label_max < sde.T)):  # fmt: skip
        raise ValueError(
            f"label_max: expected 0 (off) or a time in (max(eps, label_cutoff)="
            f"{max(eps, label_cutoff)}, T={sde.T}), got {label_max!r}"
        )


def sample_times(sde, n: int, *, key: jax.Array, time_sampling: str = "importance",
                 eps: float = 1e-5, t_max: float | None = None,
                 dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """(t, c), each (n,): times in [eps, t_max] (t_max = T by default) and weights with
    E[mean_k c_k h(t_k)] = int_eps^t_max w(t) h(t) dt for any h, w = g^2 / std^2 (module doc for
    the three samplings)."""
    _check_options(sde, None, n, time_sampling, eps, None)
    t_max = sde.T if t_max is None else t_max
    z = importance_cum_weight(sde, jnp.asarray(t_max, dtype)) - importance_cum_weight(
        sde, jnp.asarray(eps, dtype)
    )
    if time_sampling == "uniform":
        t = jax.random.uniform(key, (n,), dtype, minval=eps, maxval=t_max)
        return t, (t_max - eps) * importance_weight(sde, t)
    u = jax.random.uniform(key, (n,), dtype)
    if time_sampling == "stratified":
        u = (jnp.arange(n, dtype=dtype) + u) / n
    t = importance_time_from_uniform(sde, u, eps=eps, t_max=t_max).astype(dtype)
    return t, jnp.full((n,), z, dtype)


def draws(sde, x: jax.Array, n_times: int, *, key: jax.Array, time_sampling: str,
          eps: float, t_max: float | None = None,
          ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """(t (B, K), c (B, K), z (B, K, *event)) on [eps, t_max]: example i's draws come from
    fold_in(key, ids[i]) alone (ids: default the position in the batch), so they are the same
    for all its classes, whatever the batch's other rows."""

    def one(i):
        tkey, zkey = jax.random.split(jax.random.fold_in(key, i))
        t, c = sample_times(sde, n_times, key=tkey, time_sampling=time_sampling, eps=eps,
                            t_max=t_max, dtype=x.dtype)  # fmt: skip
        return t, c, jax.random.normal(zkey, (n_times, *x.shape[1:]), x.dtype)

    return jax.vmap(one)(jnp.arange(x.shape[0]) if ids is None else ids)


def residual(score_fn, params, sde, x, t, z, y) -> jax.Array:
    """||std s(x_t, t, y) + z||^2 - rho ||z||^2 - (1 - rho) D for ONE example x (event shape), time
    t, noise z: the noise-space denoising loss (losses.dsm_loss_per_example, plain weighting,
    summed) less a control variate of mean D, rho = m^2 / (m^2 + std^2) (module doc)."""
    loss = dsm_loss_per_example(score_fn, params, sde, x, y, t, z, weighting="plain", reduce="sum")
    m2, std2 = jnp.square(sde.mean_coeff(t)), jnp.square(sde.std(t))
    rho = m2 / (m2 + std2)
    return loss - rho * jnp.sum(jnp.square(z)) - (1 - rho) * x.size


def prior_terms(sde, x: jax.Array) -> jax.Array:
    """E_z log pi(m_T x + std_T z) + D log m_T for ONE example (exact): a scalar."""
    t = jnp.asarray(sde.T, x.dtype)
    mean, std = sde.marginal(x, t)
    d = x.size
    return (sde.prior_logp(mean) - 0.5 * d * jnp.square(std) / sde.prior_std**2
            + d * sde.log_mean_coeff(t))  # fmt: skip


def _residuals(one, x, t, z, cls, chunk_size):
    """`residual` of every (example b, class cls[b, m], draw k): x (B, *event), t (B, K),
    z (B, K, *event), cls (B, M) -> (B, M, K)."""
    b, m = cls.shape
    k = t.shape[1]
    if chunk_size is None:
        per_time = jax.vmap(one, in_axes=(None, 0, 0, None))  # (K,) for one class
        per_class = jax.vmap(per_time, in_axes=(None, None, None, 0))  # (M, K)
        return jax.vmap(per_class)(x, t, z, cls)

    def flat(idx):
        i, j, n = idx // (m * k), (idx // k) % m, idx % k
        return one(x[i], t[i, n], z[i, n], cls[i, j])

    return jax.lax.map(flat, jnp.arange(b * m * k), batch_size=chunk_size).reshape(b, m, k)


def class_mean_score(score_fn: Callable, num_classes: int) -> Callable:
    """s_bar(params, x, t, y) = 1/C sum_c score_fn(params, x, t, c) for ONE example: a score that
    ignores y (the model of `label_max` above its window; module doc)."""

    def s_bar(params, x, t, y):
        del y
        s = jax.vmap(lambda c: score_fn(params, x, t, c))(jnp.arange(num_classes, dtype=jnp.int32))
        return jnp.mean(s, axis=0)

    return s_bar


@functools.partial(
    jax.jit,
    static_argnames=("score_fn", "sde", "num_classes", "n_times", "time_sampling", "eps",
                     "chunk_size", "label_cutoff", "label_max"),
)  # fmt: skip
def _elbos(score_fn, params, sde, x, cls, key, ids=None, *, num_classes, n_times, time_sampling,
           eps, chunk_size, label_cutoff, label_max):  # fmt: skip
    """ELBO of the pairs (x[b], cls[b, m]): x (B, *event), cls (B, M) -> (B, M); ids (B,) or
    None: the examples' draw ids (`draws`)."""
    one = functools.partial(residual, score_fn, params, sde)
    sampling = dict(n_times=n_times, time_sampling=time_sampling, ids=ids)

    def part(one, cls, key, lo, hi):  # (B, M): -2 x the integral over [lo, hi]
        t, c, z = draws(sde, x, key=key, eps=lo, t_max=hi, **sampling)
        return jnp.mean(c[:, None, :] * _residuals(one, x, t, z, cls, chunk_size), axis=-1)

    # per class on the label's window [label_cutoff, label_max]; shared below and above it (the
    # keys of the window and of the part below are those of the estimator before label_max)
    mid_key, lo_key = jax.random.split(key) if label_cutoff else (key, None)
    dsm = part(one, cls, mid_key, label_cutoff or eps, label_max or None)
    if label_cutoff:  # the net ignores the label below its cutoff: class 0 stands for all
        dsm = dsm + part(one, cls[:, :1], lo_key, eps, label_cutoff)
    if label_max:  # the class-average score, one for all classes
        mean_one = functools.partial(residual, class_mean_score(score_fn, num_classes), params, sde)
        dsm = dsm + part(mean_one, cls[:, :1], jax.random.fold_in(key, 2), label_max, None)
    return jax.vmap(functools.partial(prior_terms, sde))(x)[:, None] - 0.5 * dsm


def class_elbos(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    *,
    num_classes: int,
    key: jax.Array,
    n_times: int = 64,
    time_sampling: str = "stratified",
    eps: float = 1e-5,
    chunk_size: int | None = None,
    label_cutoff: float = 0.0,
    label_max: float = 0.0,
    ids: jax.Array | None = None,
) -> jax.Array:
    """Lower bounds on log p(x | y) for every class y: x (B, *event) -> (B, C) nats.

    score_fn(params, x, t, y) as in `jaxrej.class_log_likelihoods`. n_times: (t, z) draws per
    example, the same for all its classes (module doc); time_sampling: "stratified" (default),
    "importance" or "uniform". eps: the smallest time, as FlowSolve.eps. chunk_size: score
    evaluations per vmapped call (default: all B * C * n_times at once); the result does not
    depend on it. label_cutoff: a time below which score_fn ignores y (the net's label gate):
    the integral splits there (module doc); 0 (default) off. Wrong (biased) for a score that
    depends on y below it. label_max: the top of the label's window, above which the bound is
    that of the class-average score (module doc); 0 (default) off. An unbiased estimate of the
    bound: its mean over keys is the bound; its class differences have the variance of the
    model's class differences only. Cost:
    B * C * n_times score evaluations (B * (C + 1) * n_times with label_cutoff, C more with
    label_max), one backward
    pass of as many under grad. Pure: jit, grad and vmap compose.
    `jaxrej.marginal_log_likelihood` of the result bounds log p(x) from below. ids: (B,) integers
    example i's draws derive from (default: i, its position in the batch; `draws`).
    """
    _check_options(sde, num_classes, n_times, time_sampling, eps, chunk_size, label_cutoff,
                   label_max)  # fmt: skip
    check_batch(x, None, sde)
    cls = jnp.broadcast_to(jnp.arange(num_classes, dtype=jnp.int32), (x.shape[0], num_classes))
    if ids is not None and jnp.shape(ids) != x.shape[:1]:
        raise ValueError(
            f"ids: expected shape {x.shape[:1]} (one per example), got {jnp.shape(ids)}"
        )
    return _elbos(score_fn, params, sde, x, cls, key, ids, num_classes=num_classes, n_times=n_times,
                  time_sampling=time_sampling, eps=float(eps), chunk_size=chunk_size,
                  label_cutoff=float(label_cutoff), label_max=float(label_max))  # fmt: skip


def elbo(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    num_classes: int | None = None,
    n_times: int = 64,
    time_sampling: str = "stratified",
    eps: float = 1e-5,
    chunk_size: int | None = None,
    label_cutoff: float = 0.0,
    label_max: float = 0.0,
) -> jax.Array:
    """The bound of `class_elbos` for one class per example: x (B, *event), y (B,) int -> (B,).

    With the same key, elbo(...)[i] equals class_elbos(...)[i, y[i]] (the same draws; with
    label_cutoff, below it y's draws where class_elbos scores class 0: equal for a label-gated
    score; above label_max, the class-average score's draws, the same as class_elbos's).
    num_classes: when given, a label outside [0, num_classes) gives NaN; label_max needs it.
    """
    _check_options(sde, num_classes, n_times, time_sampling, eps, chunk_size, label_cutoff,
                   label_max)  # fmt: skip
    if label_max and num_classes is None:
        raise ValueError("num_classes: label_max averages the score over the classes; give it")
    check_batch(x, y, sde)
    y = jnp.asarray(y)
    out = _elbos(score_fn, params, sde, x, y[:, None].astype(jnp.int32), key,
                 num_classes=num_classes, n_times=n_times, time_sampling=time_sampling,
                 eps=float(eps), chunk_size=chunk_size, label_cutoff=float(label_cutoff),
                 label_max=float(label_max))[:, 0]  # fmt: skip
    if num_classes is not None:
        out = jnp.where((y >= 0) & (y < num_classes), out, jnp.nan)
    return out
