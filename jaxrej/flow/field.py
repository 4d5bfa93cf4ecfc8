"""The augmented vector field of the probability-flow ODE for ONE example, and its VJP.

    dx/dt = v(x, t) = f(x, t) - g(t)^2 / 2 * s(x, t, y),        d delta / dt = div_x v(x, t)

(Song et al. 2021, eq. 13; Chen et al. 2018, Thm. 1). The divergence is the exact trace (probes
None: the basis directions) or Hutchinson's estimate over the given probes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrej.divergence import exact_trace, hutchinson_trace


def velocity(score_fn, sde, params, y):
    """(t, x) -> v(x, t) = f(x, t) - g(t)^2 / 2 * score_fn(params, x, t, y), for one example."""
    return lambda t, x: sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(params, x, t, y)


def velocity_and_divergence(score_fn, sde, params, y, probes):
    """(t, x) -> (v(x, t), div v(x, t)); the exact trace when probes is None, else Hutchinson."""
    v = velocity(score_fn, sde, params, y)

    def field(t, x):
        f = lambda z: v(t, z)  # noqa: E731
        fx, div = exact_trace(f, x) if probes is None else hutchinson_trace(f, x, probes)
        return fx, div.astype(x.dtype)

    return field


@dataclasses.dataclass(frozen=True)
class SquareTimeSDE:
    """The SDE in the time u with t = u^2: drift 2u f(x, u^2), diffusion sqrt(2u) g(u^2), so that
    its probability-flow velocity is dx/du = 2u v(x, u^2) and the divergence 2u div v. The
    augmented ODE's solution at u = sqrt(t) is the same; log p_T and T = 1 are unchanged
    (sqrt(1) = 1). Only what the flow engine reads is defined."""

    sde: object

    @property
    def T(self):
        return math.sqrt(self.sde.T)

    def drift(self, x, u):
        return 2.0 * u * self.sde.drift(x, u * u)

    def diffusion(self, u):
        return jnp.sqrt(2.0 * u) * self.sde.diffusion(u * u)

    def prior_logp(self, z):
        return self.sde.prior_logp(z)


@dataclasses.dataclass(frozen=True)
class SquareTimeScore:
    """score_fn(params, x, u, y) = the wrapped score at t = u^2 (hashable, as a static argument)."""

    score_fn: Callable

    def __call__(self, params, x, u, y):
        return self.score_fn(params, x, u * u, y)


def change_time(score_fn, sde, solve):
    """(score_fn, sde, solve) of the augmented ODE in the solver's time: unchanged for
    `solve.time_change == "none"`; for "square" the problem in u = sqrt(t) from sqrt(eps) to
    sqrt(T). Near t = eps the field changes on the time scale of t itself (the score's
    noise scale std(t)^2 ~ beta_min t under VP), and a uniform step in u is a step ~ sqrt(t) in t,
    so a step-size controller needs fewer steps in u for the same tolerance
    (benchmarks/likelihood_speed.py measures it)."""
    if solve.time_change == "none":
        return score_fn, sde, solve
    return (SquareTimeScore(score_fn), SquareTimeSDE(sde),
            dataclasses.replace(solve, eps=math.sqrt(solve.eps), time_change="none"))  # fmt: skip


def _directions(x, probes):
    """The trace's directions and weight: the basis (w = 1) or the K probes (w = 1/K)."""
    if probes is None:
        return jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape)), 1.0
    return probes, 1.0 / probes.shape[0]


def field_vjp(score_fn, sde, params, t, x, y, probes, a, c, want_params=False):
    """(v, a^T dv/dx + c grad_x div v, the same for params or None) at (t, x): the cotangents of
    one evaluation (v, div v) for the cotangent (a, c). c=None stands for a zero divergence
    cotangent known when tracing (a stage with zero weight): it skips the products below.

    grad_x div v = w sum_k H_{e_k . v} e_k over the trace's directions e_k (the basis with w = 1
    for the exact trace, the K probes with w = 1/K for Hutchinson): each term is a forward-over-
    reverse product jvp(x -> (dv/dx)^T e_k, e_k) (benchmarks/adjoint.py compares it with reverse-
    over-reverse). The params cotangent (only when `want_params`) is reverse-over-forward through a
    forward-mode trace.
    """
    v_of = lambda p: velocity(score_fn, sde, p, y)  # noqa: E731
    f = lambda z: v_of(params)(t, z)  # noqa: E731
    vx, pullback = jax.vjp(f, x)
    (gx,) = pullback(a)
    gp = None
    if c is None:
        if want_params:
            (gp,) = jax.vjp(lambda p: v_of(p)(t, x), params)[1](a)
        return vx, gx, gp
    dirs, w = _directions(x, probes)

    def hess_dir(e):
        return jax.jvp(lambda z: jax.vjp(f, z)[1](e)[0], (x,), (e,))[1]

    gx = gx + (c * w) * jnp.sum(jax.vmap(hess_dir)(dirs), axis=0)
    if want_params:

        def v_and_div(p):
            vp = lambda z: v_of(p)(t, z)  # noqa: E731
            vz, jd = jax.vmap(lambda e: jax.jvp(vp, (x,), (e,)), out_axes=(None, 0))(dirs)
            return vz, w * jnp.sum(jd * dirs)

        (gp,) = jax.vjp(v_and_div, params)[1]((a, c))
    return vx, gx, gp
