"""log p(x | y) from the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

The probability-flow ODE of a forward SDE dx = f dt + g dW is

    dx/dt = v(x, t, y) = f(x, t) - g(t)^2 / 2 * s(x, t, y),          s ~ grad_x log p_t(x | y),

and by the instantaneous change of variables (Chen et al. 2018, Thm. 1)

    log p_eps(x | y) = log p_T(x(T)) + int_eps^T div_x v(x(t), t, y) dt.

Both are solved together from t = eps to T with diffrax (jaxrej.flow), one solve per example under
`jax.vmap`, so every example has its own step-size control and its result never depends on its
batch neighbours. How to solve is one `jaxrej.FlowSolve`; keyword arguments named after its fields
are sugar for it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from jaxrej.divergence import sample_probes
from jaxrej.flow import FlowSolve, as_solve, example_log_likelihood
from jaxrej.sde import SDE


@struct.dataclass
class LikelihoodResult:
    """Per-example results of a likelihood solve; every field has the batch shape.

    logp: log p(x(eps) | y) in nats; NaN where `ok` is False (never a silent number).
    nfe:  vector-field evaluations: v plus its divergence, or v alone at the stages whose divergence
          has zero weight (Dopri5: 1 of 6 per step; `SolverInfo.divergence_evaluations` counts them).
    ok:   the solver reached T with finite values, the input was finite and the label valid.
    """

    logp: jax.Array
    nfe: jax.Array
    ok: jax.Array


def check_batch(x, y, sde, *, y_name: str = "y") -> None:
    """ValueError naming the argument for a bad SDE, batch shape or dtype (labels named y_name)."""
    if not isinstance(sde, SDE):
        raise ValueError(f"sde: expected a jaxrej SDE (VPSDE, SubVPSDE, VESDE), got {type(sde)}")
    if getattr(x, "ndim", 0) < 2:
        raise ValueError(f"x: expected shape (B, *event) with at least 2 dims, got {jnp.shape(x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype, got {x.dtype}")
    if y is not None:
        if jnp.ndim(y) != 1 or jnp.shape(y)[0] != x.shape[0]:
            raise ValueError(
                f"{y_name}: expected shape ({x.shape[0]},) to match x's batch, got {jnp.shape(y)}"
            )
        if not jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
            raise ValueError(f"{y_name}: expected an integer dtype, got {jnp.asarray(y).dtype}")


def _check_probes(probes, x, solve: FlowSolve):
    shape = jnp.shape(probes)
    if solve.divergence == "exact":
        raise ValueError("probes: given with divergence='exact'; use 'rademacher' or 'gaussian'")
    if len(shape) != x.ndim + 1 or shape[0] != x.shape[0] or shape[2:] != x.shape[1:]:
        raise ValueError(
            f"probes: expected shape ({x.shape[0]}, K, {', '.join(map(str, x.shape[1:]))}), "
            f"got {shape}"
        )
    if solve.n_probes not in (1, shape[1]):
        raise ValueError(f"n_probes: {solve.n_probes} disagrees with the {shape[1]} probes given")


def solve_pair(score_fn, sde, solve: FlowSolve, params, key, x, i, y, probes=None):
    """(logp, nfe, ok) of ONE pair: example x (event shape) with index i and class y. Hutchinson
    probes, unless given (K, *event), are drawn from (key, i) alone, so the classes of one example
    share them. Differentiable by `solve.adjoint`."""
    if probes is None and solve.divergence != "exact":
        probes = sample_probes(jax.random.fold_in(key, i), x.shape, solve.n_probes,
                               solve.divergence, x.dtype)  # fmt: skip
    return example_log_likelihood(score_fn, sde, solve, params, x, y, probes)


def solve_pairs(score_fn, sde, solve: FlowSolve, params, xs, ids, cls, key, probes=None):
    """(logp, nfe, ok), each (R,), of the pairs (xs[r], cls[r]); xs: (R, *event), ids: (R,) the
    examples' indices (they pick the probes, see `solve_pair`), probes: None or (R, K, *event)."""
    one = functools.partial(solve_pair, score_fn, sde, solve, params, key)
    return jax.vmap(one)(xs, ids, cls, probes)


@functools.partial(jax.jit, static_argnames=("score_fn", "sde", "solve", "num_classes"))
def _log_likelihood(score_fn, params, sde, x, y, key, probes, *, solve, num_classes):
    ids = jnp.arange(x.shape[0])
    logp, nfe, ok = solve_pairs(score_fn, sde, solve, params, x, ids, y, key, probes)
    if num_classes is not None:
        valid = (y >= 0) & (y < num_classes)
        ok = ok & valid
        logp = jnp.where(valid, logp, jnp.nan)
    return LikelihoodResult(logp=logp, nfe=nfe, ok=ok)


def log_likelihood(
    score_fn: Callable,
    params,
    sde: SDE,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    solve: FlowSolve | None = None,
    num_classes: int | None = None,
    probes: jax.Array | None = None,
    **options,
) -> LikelihoodResult:
    """log p(x(eps) | y) for a batch, by the probability-flow ODE; a LikelihoodResult of (B,).

    score_fn(params, x, t, y) -> shaped like x, for ONE example. x: (B, *event) float; y: (B,) int.
    solve: a `jaxrej.FlowSolve` (default FlowSolve()); keyword `options` replace its fields
        (`divergence="exact"`, `rtol=1e-6`, ...). Hutchinson probes are drawn per example from
        (key, index in the batch), or given as `probes` (B, K, *event) -- e.g. the same probes for
        every solver setting -- with a Hutchinson divergence and n_probes 1 or K.
    num_classes: when given, a label outside [0, num_classes) gives ok=False and logp=NaN.
    Pure: jit, grad (through `solve.adjoint`) and vmap compose with it.
    """
    solve = as_solve(solve, options)
    check_batch(x, y, sde)
    if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes: expected None or an int >= 1, got {num_classes!r}")
    if probes is not None:
        _check_probes(probes, x, solve)
        probes = jnp.asarray(probes, x.dtype)
    return _log_likelihood(score_fn, params, sde, x, jnp.asarray(y), key, probes, solve=solve,
                           num_classes=num_classes)  # fmt: skip


def marginal_log_likelihood(class_logp: jax.Array, log_prior: jax.Array | None = None) -> jax.Array:
    """log p(x) = logsumexp_y [log p(x | y) + log p(y)]: (B, C) -> (B,). Uniform prior by default.

    A NaN class log-likelihood (a failed solve) makes the marginal NaN.
    """
    c = class_logp.shape[-1]
    if log_prior is None:
        log_prior = jnp.full((c,), -math.log(c), class_logp.dtype)
    if jnp.shape(log_prior) != (c,):
        raise ValueError(f"log_prior: expected shape ({c},), got {jnp.shape(log_prior)}")
    return jax.nn.logsumexp(class_logp + log_prior, axis=-1)


def bits_per_dim(
    logp: jax.Array, x_shape: tuple[int, ...], *, n_levels: int = 256, data_width: float = 1.0
) -> jax.Array:
    """Bits per dimension of discrete data from the log density of its dequantized version.

    Data with `n_levels` integer levels k are dequantized as u = (k + U[0,1)) / n_levels in [0, 1)
    and fed to the model as x = low + data_width * u. The density of u is p(x) * data_width^D, and
    the discrete log-probability is bounded below by E[log p_u(u)] - D log n_levels (Theis et al.
    2016), so

        bpd = -logp / (D ln 2) + log2(n_levels) - log2(data_width),     D = prod(x_shape).

    For 8-bit images in [0, 1] the offset is 8 bits; in [-1, 1] (data_width=2) it is 7, as in
    score_sde. logp: (B,) nats; x_shape: the event shape of ONE example.
    """
    x_shape = tuple(x_shape)
    if not x_shape or any((not isinstance(s, int)) or s < 1 for s in x_shape):
        raise ValueError(f"x_shape: expected the event shape of one example, got {x_shape!r}")
    if not (isinstance(n_levels, int) and n_levels >= 2):
        raise ValueError(f"n_levels: expected an int >= 2, got {n_levels!r}")
    if not data_width > 0:
        raise ValueError(f"data_width: expected > 0, got {data_width!r}")
    d = math.prod(x_shape)
    return -logp / (d * math.log(2.0)) + math.log2(n_levels) - math.log2(data_width)


def pixel_histogram_bits_per_dim(train_images, images, *, n_levels: int = 256,
                                 alpha: float = 1.0):  # fmt: skip
    """Bits/dim of `images` under the trivial baseline density: every pixel independent, with the
    categorical distribution over its n_levels levels counted on `train_images` (add-`alpha`
    smoothing): P_d(k) = (count_d(k) + alpha) / (N + alpha n_levels).

    train_images (N, *event), images (M, *event): integer levels in [0, n_levels) -> (M,) bits/dim
    (a discrete likelihood: no dequantization offset). What a model must beat to show that it fits
    more than each pixel's histogram. NumPy, float64.
    """
    import numpy as np

    tr, x = np.asarray(train_images), np.asarray(images)
    if tr.ndim < 2 or x.shape[1:] != tr.shape[1:]:
        raise ValueError(f"images: expected (M, *{tr.shape[1:]}) like train_images, got {x.shape}")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha: expected a positive smoothing count, got {alpha!r}")
    for name, a in (("train_images", tr), ("images", x)):
        if a.size and (a.min() < 0 or a.max() >= n_levels):
            raise ValueError(
                f"{name}: expected levels in [0, {n_levels}), got [{a.min()}, {a.max()}]"
            )
    tr, x = tr.reshape(tr.shape[0], -1).astype(np.int64), x.reshape(x.shape[0], -1).astype(np.int64)
    d = tr.shape[1]
    counts = np.zeros((d, n_levels))
    np.add.at(counts, (np.broadcast_to(np.arange(d), tr.shape), tr), 1.0)
    logp = np.log(counts + alpha) - np.log(tr.shape[0] + alpha * n_levels)  # (D, L)
    return -logp[np.arange(d)[None, :], x].sum(axis=1) / (d * math.log(2))
