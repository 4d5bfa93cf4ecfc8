"""log p(x | y) from the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

The probability-flow ODE of a forward SDE dx = f dt + g dW is

    dx/dt = v(x, t, y) = f(x, t) - g(t)^2 / 2 * s(x, t, y),          s ~ grad_x log p_t(x | y),

and by the instantaneous change of variables (Chen et al. 2018, Thm. 1)

    log p_eps(x | y) = log p_T(x(T)) + int_eps^T div_x v(x(t), t, y) dt.

Both are solved together from t = eps to T with diffrax, one solve per example under `jax.vmap`, so
every example has its own step-size control and its result never depends on its batch neighbours.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from jaxrej import flow
from jaxrej.divergence import PROBES, sample_probes
from jaxrej.flow import SOLVERS
from jaxrej.sde import SDE

DIVERGENCES = ("exact", *PROBES)
ADJOINTS = ("checkpoint", "backsolve", "direct")
# The defaults follow benchmarks/solver_tolerance.py on the digits model: the loosest setting whose
# reject decisions agree with a float64 rtol = atol = 1e-8 truth on >= 99.5% of test digits, with
# the fewest evaluations (Dopri5 at 1e-4: 169 NFE per solve vs 216 for Tsit5; 0/360 flips, while
# 1e-3 flipped 22/360; the exact-trace sweep agrees, 0/120). Errors there: median 0.045 nats, max
# 0.36 nats per pair -- pass tighter rtol/atol where log p itself must be accurate.
DEFAULT_SOLVER = "dopri5"
# the arguments of a jitted solve that are static (hashable; each value compiles once)
STATIC_OPTIONS = ("score_fn", "sde", "divergence", "n_probes", "solver", "adjoint", "n_steps",
                  "max_steps")  # fmt: skip
DEFAULT_TOL = 1e-4


@struct.dataclass
class LikelihoodResult:
    """Per-example results of a likelihood solve; every field has the batch shape.

    logp: log p(x(eps) | y) in nats; NaN where `ok` is False (never a silent number).
    nfe:  vector-field evaluations: v plus its divergence, or v alone at the stages whose divergence
          has zero weight (Dopri5: 1 of 6 per step; jaxrej.flow.divergence_evaluations counts them).
    ok:   the solver reached T with finite values, the input was finite and the label valid.
    """

    logp: jax.Array
    nfe: jax.Array
    ok: jax.Array


def _check_options(divergence, solver, adjoint, n_probes, n_steps, max_steps):
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence: expected one of {DIVERGENCES}, got {divergence!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {tuple(SOLVERS)}, got {solver!r}")
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint: expected one of {ADJOINTS}, got {adjoint!r}")
    if not (isinstance(n_probes, int) and n_probes >= 1):
        raise ValueError(f"n_probes: expected an int >= 1, got {n_probes!r}")
    if n_steps is not None and not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(f"n_steps: expected None or an int >= 1, got {n_steps!r}")
    if n_steps is None and not SOLVERS[solver][4]:
        raise ValueError(f"n_steps: solver {solver!r} has no error estimate; give n_steps")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps: expected an int >= 1, got {max_steps!r}")


def _check_scalar(name, value, low, high, *, open_low=True):
    """Validate a scalar when it is concrete (a traced value is checked by the caller's design)."""
    try:
        v = float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    bad = not math.isfinite(v) or v > high or (v <= low if open_low else v < low)
    if bad:
        raise ValueError(f"{name}: expected a value in ({low}, {high}), got {v!r}")


def _check_batch(x, y, sde):
    if not isinstance(sde, SDE):
        raise ValueError(f"sde: expected a jaxrej SDE (VPSDE, SubVPSDE, VESDE), got {type(sde)}")
    x_dtype = getattr(x, "dtype", None)
    if getattr(x, "ndim", 0) < 2:
        raise ValueError(f"x: expected shape (B, *event) with at least 2 dims, got {jnp.shape(x)}")
    if not jnp.issubdtype(x_dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype, got {x_dtype}")
    if y is not None:
        if jnp.ndim(y) != 1 or jnp.shape(y)[0] != x.shape[0]:
            raise ValueError(
                f"y: expected shape ({x.shape[0]},) to match x's batch, got {jnp.shape(y)}"
            )
        if not jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
            raise ValueError(f"y: expected an integer dtype, got {jnp.asarray(y).dtype}")


def check_solve(
    x, y, sde, *, divergence, solver, adjoint, n_probes, n_steps, max_steps, rtol, atol, eps
):
    """ValueError naming the argument for any bad option, shape or dtype of a likelihood solve."""
    _check_options(divergence, solver, adjoint, n_probes, n_steps, max_steps)
    _check_batch(x, y, sde)
    _check_scalar("eps", eps, 0.0, sde.T)
    _check_scalar("rtol", rtol, 0.0, math.inf)
    _check_scalar("atol", atol, 0.0, math.inf)


def _check_probes(probes, x, divergence, n_probes):
    shape = jnp.shape(probes)
    if divergence == "exact":
        raise ValueError("probes: given with divergence='exact'; use 'rademacher' or 'gaussian'")
    if len(shape) != x.ndim + 1 or shape[0] != x.shape[0] or shape[2:] != x.shape[1:]:
        raise ValueError(
            f"probes: expected shape ({x.shape[0]}, K, {', '.join(map(str, x.shape[1:]))}), "
            f"got {shape}"
        )
    if n_probes not in (1, shape[1]):
        raise ValueError(f"n_probes: {n_probes} disagrees with the {shape[1]} probes given")


def _solve_one(
    score_fn, params, sde, x, y, probes, rtol, atol, eps, *, solver, adjoint, n_steps, max_steps
):
    """(logp, nfe, ok) for one example; a failure is ok=False with logp NaN."""
    finite = jnp.all(jnp.isfinite(x))
    x = jnp.where(
        finite, x, jnp.zeros_like(x)
    )  # a NaN input gets a cheap dummy solve, then ok=False
    solve = {
        "checkpoint": flow.solve_checkpoint,
        "backsolve": flow.solve_backsolve,
        "direct": flow.solve_direct,
    }[adjoint]
    logp, nfe, success = solve(
        score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps
    )
    ok = finite & success & jnp.isfinite(logp)
    return jnp.where(ok, logp, jnp.nan), nfe, ok


@functools.partial(
    jax.jit,
    static_argnames=(*STATIC_OPTIONS, "num_classes"),
)
def _log_likelihood(
    score_fn,
    params,
    sde,
    x,
    y,
    key,
    probes,
    rtol,
    atol,
    eps,
    *,
    divergence,
    n_probes,
    solver,
    adjoint,
    n_steps,
    max_steps,
    num_classes,
):
    b = x.shape[0]
    if divergence != "exact" and probes is None:
        keys = jax.random.split(key, b)
        probes = jax.vmap(lambda k: sample_probes(k, x.shape[1:], n_probes, divergence, x.dtype))(
            keys
        )
    solve = functools.partial(
        _solve_one,
        score_fn,
        params,
        sde,
        rtol=rtol,
        atol=atol,
        eps=eps,
        solver=solver,
        adjoint=adjoint,
        n_steps=n_steps,
        max_steps=max_steps,
    )
    logp, nfe, ok = jax.vmap(solve)(x, y, probes)
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
    divergence: str = "rademacher",
    n_probes: int = 1,
    rtol: float = DEFAULT_TOL,
    atol: float = DEFAULT_TOL,
    eps: float = 1e-5,
    solver: str = DEFAULT_SOLVER,
    adjoint: str = "checkpoint",
    n_steps: int | None = None,
    max_steps: int = 4096,
    num_classes: int | None = None,
    probes: jax.Array | None = None,
) -> LikelihoodResult:
    """log p(x(eps) | y) for a batch, by the probability-flow ODE; returns a LikelihoodResult (B,).

    score_fn(params, x, t, y) -> shaped like x, for ONE example. x: (B, *event) float; y: (B,) int.
    divergence: "exact" (D vector-Jacobian products per evaluation), or Hutchinson with "rademacher" or
        "gaussian" probes, `n_probes` of them averaged, drawn once per solve from `key`.
    probes: optional (B, K, *event) Hutchinson probes to use instead of drawing them (e.g. the
        same probes for every solver setting); needs a Hutchinson divergence, n_probes 1 or K.
    rtol, atol: PID step-size tolerances (may be traced); eps: start time in (0, T).
    solver: one of SOLVERS; `n_steps` switches to that many fixed steps (required for "euler").
    adjoint: how jax.grad differentiates through the solve -- "checkpoint" (discretise-then-
        optimise; stores x at every accepted step: max_steps x D floats per example), "backsolve"
        (the continuous adjoint; gradients w.r.t. x only, memory independent of the steps),
        "direct" (supports forward-over-reverse, e.g. Hessian-vector products; memory grows with
        max_steps).
    num_classes: when given, a label outside [0, num_classes) gives ok=False and logp=NaN.
    """
    check_solve(x, y, sde, divergence=divergence, solver=solver, adjoint=adjoint, n_probes=n_probes,
                n_steps=n_steps, max_steps=max_steps, rtol=rtol, atol=atol, eps=eps)  # fmt: skip
    if probes is not None:
        _check_probes(probes, x, divergence, n_probes)
    return _log_likelihood(
        score_fn,
        params,
        sde,
        x,
        jnp.asarray(y),
        key,
        None if probes is None else jnp.asarray(probes, x.dtype),
        rtol,
        atol,
        eps,
        divergence=divergence,
        n_probes=n_probes,
        solver=solver,
        adjoint=adjoint,
        n_steps=n_steps,
        max_steps=max_steps,
        num_classes=num_classes,
    )


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
