"""Three ways to differentiate one example's likelihood solve, and the per-example entry point.

`direct`: autodiff through diffrax (DirectAdjoint: supports forward-over-reverse, e.g. Hessian-
vector products). `checkpoint`: discretise-then-optimise over the accepted steps. `backsolve`: the
continuous adjoint for d logp / dx only (Chen et al. 2018, Prop. 1): with
L = log p_T(x(T)) + int_eps^T div v dt and a(t) = dL/dx(t),

    a(T) = grad log p_T(x(T)),          da/dt = -(dv/dx)^T a - grad_x div v,

integrated back from T to eps together with x(t); a(eps) is the input gradient. Its state is
(x, a) alone -- no parameter adjoint -- so its memory does not grow with the number of steps and
stays small under vmap.

Each is a function (score_fn, sde, solve, params, x, y, probes) -> (logp, nfe, succeeded) of ONE
example; score_fn, sde and the FlowSolve `solve` are static.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp

from jaxrej.flow.field import change_time, field_vjp
from jaxrej.flow.options import FlowSolve
from jaxrej.flow.rk import step_vjp
from jaxrej.flow.solve import controller, forward, log_density, rms_norm


def _solve(score_fn, sde, solve, params, x, y, probes, adjoint=None):
    """(logp, nfe, succeeded). The default adjoint compiles to a plain while loop when nothing
    differentiates it: the forward pass of the checkpoint and backsolve adjoints."""
    sol, nfe, ok = forward(score_fn, sde, solve, params, x, y, probes, adjoint=adjoint)
    return log_density(sde, sol), nfe, ok


def direct(score_fn, sde, solve, params, x, y, probes):
    """Differentiated by plain autodiff through diffrax (its bounded loop is slower undifferentiated)."""
    return _solve(score_fn, sde, solve, params, x, y, probes, adjoint=diffrax.DirectAdjoint())


def _strip(tree):
    """The values of custom_vjp primals (symbolic_zeros=True wraps them)."""
    return jax.tree_util.tree_map(lambda p: p.value, tree)


def _perturbed(tree) -> bool:
    return any(p.perturbed for p in jax.tree_util.tree_leaves(tree))


def _nan_unless(ok, tree):
    return jax.tree_util.tree_map(lambda g: jnp.where(ok, g, jnp.nan), tree)


def _cotangent(ct, dtype):
    return jnp.zeros((), dtype) if isinstance(ct, jax.custom_derivatives.SymbolicZero) else ct


# ------------------------------------------------------------------ discretise-then-optimise


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def checkpoint(score_fn, sde, solve, params, x, y, probes):
    """Differentiated by discretise-then-optimise on the accepted steps: the forward pass stores x
    at every accepted step (max_steps x D per example), the reverse pass recomputes each step's
    stages from it and backpropagates through the Runge-Kutta step (`rk.step_vjp`). The gradient
    is that of the computed number (step sizes held constant, as in diffrax) -- no re-solve, and no
    divergence recomputed in the reverse pass."""
    return _solve(score_fn, sde, solve, params, x, y, probes)


def _checkpoint_fwd(score_fn, sde, solve, params, x, y, probes):
    want_params = _perturbed(params)
    params, x, y, probes = map(_strip, (params, x, y, probes))
    sol, nfe, ok = forward(score_fn, sde, solve, params, x, y, probes,
                           saveat=diffrax.SaveAt(t0=True, steps=True))  # fmt: skip
    n = sol.stats["num_accepted_steps"]
    return (log_density(sde, sol, n), nfe, ok), (params, y, probes, sol.ts, sol.ys[0], n, ok,
                                                 want_params)  # fmt: skip


def _checkpoint_bwd(score_fn, sde, solve, residuals, cotangents):
    params, y, probes, ts, xs, n, ok, want_params = residuals
    ct = _cotangent(cotangents[0], xs.dtype)
    zeros_p = jax.tree_util.tree_map(jnp.zeros_like, params) if want_params else None

    def back_one_step(carry):
        i, g_x, g_p = carry
        i = i - 1
        g_x, gp = step_vjp(score_fn, sde, solve.info, params, y, probes, ts[i], ts[i + 1] - ts[i],
                           xs[i], g_x, ct, want_params)  # fmt: skip
        if want_params:
            g_p = jax.tree_util.tree_map(jnp.add, g_p, gp)
        return i, g_x, g_p

    a_t = ct * jax.grad(sde.prior_logp)(xs[n])
    # A zero cotangent (e.g. a class the loss ignores) skips the loop: under vmap it runs only as
    # long as the longest solve with a nonzero cotangent, and not at all when there is none.
    live = ct != 0
    _, g_x, g_p = jax.lax.while_loop(lambda c: live & (c[0] > 0), back_one_step, (n, a_t, zeros_p))
    valid = ok | (ct == 0)  # a failed solve's gradient is NaN, never a silent number
    return _nan_unless(valid, g_p), _nan_unless(valid, g_x), None, None


checkpoint.defvjp(_checkpoint_fwd, _checkpoint_bwd, symbolic_zeros=True)


# ------------------------------------------------------------------ continuous adjoint


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def backsolve(score_fn, sde, solve, params, x, y, probes):
    """Differentiated by the continuous adjoint (with respect to x only)."""
    return _solve(score_fn, sde, solve, params, x, y, probes)


def _backsolve_fwd(score_fn, sde, solve, params, x, y, probes):
    if _perturbed(params):
        raise ValueError(
            "adjoint: 'backsolve' differentiates log p(x|y) with respect to x only; "
            "use adjoint='checkpoint' for gradients with respect to params"
        )
    params, x, y, probes = map(_strip, (params, x, y, probes))
    sol, nfe, ok = forward(score_fn, sde, solve, params, x, y, probes)
    x_t = sol.ys[0][-1]
    return (log_density(sde, sol), nfe, ok), (params, x_t, y, probes)


def _backsolve_bwd(score_fn, sde, solve, residuals, cotangents):
    params, x_t, y, probes = residuals
    ct = _cotangent(cotangents[0], x_t.dtype)

    def backward(t, state, args):
        v, ja, _ = field_vjp(score_fn, sde, params, t, state[0], y, probes, state[1], ct)
        return v, -ja

    t0, t1 = jnp.asarray(sde.T, x_t.dtype), jnp.asarray(solve.eps, x_t.dtype)
    stepsize, dt0 = controller(solve, t0, t1, norm=rms_norm)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(backward),
        solve.info.make(),
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=(x_t, ct * jax.grad(sde.prior_logp)(x_t)),
        stepsize_controller=stepsize,
        max_steps=solve.max_steps,
        throw=False,
    )
    grad_x = jnp.where(sol.result == diffrax.RESULTS.successful, sol.ys[1][-1], jnp.nan)
    return None, grad_x, None, None


backsolve.defvjp(_backsolve_fwd, _backsolve_bwd, symbolic_zeros=True)

ADJOINTS = {"checkpoint": checkpoint, "backsolve": backsolve, "direct": direct}


def example_log_likelihood(score_fn, sde, solve: FlowSolve, params, x, y, probes):
    """(logp, nfe, ok) for ONE example x (event shape) and label y, differentiable by
    `solve.adjoint`; a non-finite input or a failed solve gives ok=False and logp NaN."""
    score_fn, sde, solve = change_time(score_fn, sde, solve)
    finite = jnp.all(jnp.isfinite(x))
    x = jnp.where(finite, x, jnp.zeros_like(x))  # a NaN input gets a cheap dummy solve
    logp, nfe, success = ADJOINTS[solve.adjoint](score_fn, sde, solve, params, x, y, probes)
    ok = finite & success & jnp.isfinite(logp)
    return jnp.where(ok, logp, jnp.nan), nfe, ok
