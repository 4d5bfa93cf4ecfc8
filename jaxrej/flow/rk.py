"""An explicit Runge-Kutta step for the augmented flow ODE that skips divergences nothing uses,
and the reverse pass of one step, both from the method's one tableau (`SolverInfo.weights`).

The augmented state is (x, delta) with dx/dt = v(x, t) and d delta/dt = div v(x, t); the field
never reads delta. A stage's divergence therefore enters the step only through its weights in
the solution (b) and in the error estimate (b - b_hat). Where both are zero -- Dopri5's second
stage, Dopri8's stages 2-5 -- the stage needs v alone: one network evaluation instead of one plus
the D (exact trace) or K (Hutchinson) products of the divergence. The step is otherwise the
diffrax solver's own method (its tableau, order and error order, so the same step-size control):
in float64 it reproduces diffrax's solution and accepted steps (tests/test_rk.py); its speed-up is
measured by benchmarks/rk_skip.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.flow.field import field_vjp, velocity
from jaxrej.flow.options import SolverInfo, skips_divergence


class _VelocityOnly:
    def __repr__(self):
        return "VELOCITY_ONLY"


VELOCITY_ONLY = _VelocityOnly()  # the `args` with which a step asks a flow term for v alone


def flow_term(field: Callable, velocity: Callable) -> diffrax.ODETerm:
    """The augmented term (t, (x, delta), args) -> (v, div v) from field(t, x) -> (v, div v); given
    args=VELOCITY_ONLY it returns (velocity(t, x), 0) without computing the divergence."""

    def vf(t, state, args):
        x, delta = state
        if args is VELOCITY_ONLY:
            return velocity(t, x), jnp.zeros_like(delta)
        return field(t, x)

    return diffrax.ODETerm(vf)


class SkipDivergenceRK(diffrax.AbstractAdaptiveSolver):
    """The explicit RK method `info` for a `flow_term`, evaluating the velocity alone at the stages
    where `info.divergence_unused`. Stages run in a loop whose body is compiled once, as diffrax's
    own; the skip is a `lax.cond` on the (unbatched) stage index, so it stays a branch under vmap.
    Linear interpolation only; no jumps (jaxrej passes no jump_ts).
    """

    info: SolverInfo = eqx.field(static=True)

    term_structure: ClassVar = diffrax.ODETerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return self.info.make().order(terms)

    def error_order(self, terms):
        return self.info.make().error_order(terms)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def init(self, terms, t0, t1, y0, args):
        # FSAL: the first step's first stage, evaluated once here (as diffrax does in its first step)
        return terms.vf(t0, y0, args) if self.info.tableau.fsal else None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump  # always False without jump_ts
        fsal = self.info.tableau.fsal
        a, b, b_err, c = self.info.weights
        s = b.size
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
        a, b, b_err, c = (jnp.asarray(w, dtype) for w in (a, b, b_err, c))
        skip = jnp.asarray(self.info.divergence_unused)
        dt = t1 - t0  # in the solver's time
        h = terms.contr(t0, t1)  # the increment's factor in the term's time (reversed: -dt)
        f0 = solver_state if fsal else terms.vf(t0, y0, args)
        ks = jax.tree_util.tree_map(lambda f: jnp.zeros((s, *f.shape), f.dtype).at[0].set(f), f0)

        def combine(w, ks):
            return jax.tree_util.tree_map(lambda y, k: y + h * jnp.tensordot(w, k, axes=1), y0, ks)

        def stage(i, ks):
            yi = combine(a[i], ks)
            ti = jnp.where(c[i] == 1, t1, t0 + c[i] * dt)
            fi = jax.lax.cond(
                skip[i],
                lambda: terms.vf(ti, yi, VELOCITY_ONLY),
                lambda: terms.vf(ti, yi, args),
            )
            return jax.tree_util.tree_map(lambda k, f: k.at[i].set(f), ks, fi)

        ks = jax.lax.fori_loop(1, s, stage, ks)
        y1 = combine(b, ks)
        y_error = jax.tree_util.tree_map(lambda k: h * jnp.tensordot(b_err, k, axes=1), ks)
        state = jax.tree_util.tree_map(lambda k: k[-1], ks) if fsal else None
        return y1, y_error, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful


def ode_solver(info: SolverInfo) -> diffrax.AbstractSolver:
    """The diffrax solver for the augmented ODE: `info`'s method, by `SkipDivergenceRK` where its
    tableau has divergences nothing uses (Dopri5, Dopri8), else diffrax's own."""
    return SkipDivergenceRK(info) if skips_divergence(info) else info.make()


def step_vjp(score_fn, sde, info: SolverInfo, params, y, probes, t, h, x, a_next, c, want_params):
    """Cotangents (x, params or None) of one Runge-Kutta step x_n -> (x_{n+1}, delta increment)
    from those of its outputs (a_next, c). The step size h is a constant, as in diffrax (its
    controller stops gradients). Stages are recomputed from x_n by the velocity alone; a stage
    nothing uses (the FSAL stage of Tsit5 and Dopri5/8) is skipped, and a stage whose divergence
    has zero weight gets no Hessian products (field_vjp's c=None)."""
    a, b, _, c_nodes = info.weights
    s = b.size
    needed = [bool(b[i] != 0 or np.any(a[i + 1 :, i] != 0)) for i in range(s)]
    v = velocity(score_fn, sde, params, y)
    stages, k = [None] * s, [None] * s
    for i in range(s):
        if needed[i]:
            stages[i] = x + h * sum(
                (a[i, j] * k[j] for j in range(i) if a[i, j]), jnp.zeros_like(x)
            )
            if np.any(a[i + 1 :, i]):  # later stages use k_i (x_{n+1} itself is not needed)
                k[i] = v(t + c_nodes[i] * h, stages[i])
    stage_ct = [None] * s
    g_x, g_p = a_next, None
    for i in reversed(range(s)):
        if not needed[i]:
            continue
        k_ct = (h * b[i]) * a_next
        for j in range(i + 1, s):
            if a[j, i] and stage_ct[j] is not None:
                k_ct = k_ct + (h * a[j, i]) * stage_ct[j]
        div_ct = c * h * b[i] if b[i] else None  # a zero-weight stage's divergence is unused
        _, stage_ct[i], gp = field_vjp(score_fn, sde, params, t + c_nodes[i] * h, stages[i], y,
                                       probes, k_ct, div_ct, want_params)  # fmt: skip
        g_x = g_x + stage_ct[i]
        g_p = gp if g_p is None else jax.tree_util.tree_map(jnp.add, g_p, gp)
    return g_x, g_p
