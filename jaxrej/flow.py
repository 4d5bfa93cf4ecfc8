"""The augmented probability-flow ODE for ONE example, its solve, and its adjoints.

State (x, delta) on t in [eps, T]:

    dx/dt = v(x, t) = f(x, t) - g(t)^2 / 2 * s(x, t, y),       d delta / dt = div_x v(x, t),

and log p_eps(x | y) = log p_T(x(T)) + delta(T) (Chen et al. 2018, Thm. 1; Song et al. 2021, eq. 39).

Three ways to differentiate the solve: `solve_direct` (autodiff through diffrax; forward-mode
too), `solve_checkpoint` (discretise-then-optimise over the accepted steps, see there) and
`solve_backsolve`, the continuous adjoint for d logp / dx only (Chen et al. 2018, Prop. 1): with
L = log p_T(x(T)) + int_eps^T div v dt and a(t) = dL/dx(t),

    a(T) = grad log p_T(x(T)),          da/dt = -(dv/dx)^T a - grad_x div v,

integrated back from T to eps together with x(t); a(eps) is the input gradient. Its state is
(x, a) alone -- no parameter adjoint -- so its memory does not grow with the number of steps and
stays small under vmap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxrej import rk
from jaxrej.divergence import exact_trace, hutchinson_trace

# name -> (solver factory, evaluations per step, evaluations before the first step with an
# adaptive / a fixed step size, adaptive?). The counts are diffrax 0.7's, measured by counting
# vector-field calls (tests/test_likelihood.py::test_nfe_counts_vector_field_evaluations).
SOLVERS: dict[str, tuple[Callable[[], diffrax.AbstractSolver], int, int, int, bool]] = {
    "tsit5": (diffrax.Tsit5, 6, 1, 1, True),
    "dopri5": (diffrax.Dopri5, 6, 1, 1, True),
    "dopri8": (diffrax.Dopri8, 13, 1, 1, True),
    "heun": (diffrax.Heun, 2, 0, 0, True),
    "euler": (diffrax.Euler, 1, 0, 0, False),
}


def divergence_evaluations(solver: str, nfe):
    """How many of a solve's `nfe` evaluations computed the divergence: the others, at the stages
    `_ode_solver` skips (jaxrej.rk), computed the velocity alone."""
    make_solver, per_step, init, _, _ = SOLVERS[solver]
    tableau = getattr(make_solver(), "tableau", None)
    skipped = 0 if tableau is None else sum(rk.divergence_unused(tableau))
    return nfe - skipped * ((nfe - init) // per_step)


def _v(score_fn, sde, params, t, x, y):
    return sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(params, x, t, y)


def _directions(x, probes):
    """The trace's directions and weight: the basis (w = 1) or the K probes (w = 1/K)."""
    if probes is None:
        return jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape)), 1.0
    return probes, 1.0 / probes.shape[0]


def velocity(score_fn, params, sde, y):
    """(t, x) -> v(x, t) = f(x, t) - g(t)^2 / 2 * score_fn(params, x, t, y), for one example."""

    return lambda t, x: _v(score_fn, sde, params, t, x, y)


def velocity_and_divergence(score_fn, params, sde, y, probes):
    """(t, x) -> (v(x, t), div v(x, t)); exact trace when probes is None, else Hutchinson."""
    v = velocity(score_fn, params, sde, y)

    def field(t, x):
        fx, div = (
            exact_trace(lambda z: v(t, z), x)
            if probes is None
            else hutchinson_trace(lambda z: v(t, z), x, probes)
        )
        return fx, div.astype(x.dtype)

    return field


def field_vjp(score_fn, sde, params, t, x, y, probes, a, c, want_params=False):
    """(v, a^T dv/dx + c grad_x div v, the same for params or None) at (t, x): the cotangents of
    one vector-field evaluation (v, div v) for the cotangent (a, c). c=None stands for a zero
    divergence cotangent known when tracing (a stage with zero weight): it skips the products below.

    grad_x div v = w sum_k H_{e_k . v} e_k over the trace's directions e_k (the basis with w = 1 for
    the exact trace, the K probes with w = 1/K for Hutchinson): each term is a forward-over-reverse
    product jvp(x -> (dv/dx)^T e_k, e_k), measured 2-3x cheaper than reverse-mode differentiation of
    the trace (reverse-over-reverse). The params cotangent (only when `want_params`) is reverse-
    over-forward through a forward-mode trace.
    """
    f = lambda z: _v(score_fn, sde, params, t, z, y)  # noqa: E731
    vx, pullback = jax.vjp(f, x)
    (gx,) = pullback(a)
    dirs, w = _directions(x, probes)

    def hess_dir(e):
        return jax.jvp(lambda z: jax.vjp(f, z)[1](e)[0], (x,), (e,))[1]

    gp = None
    if c is None:
        if want_params:
            (gp,) = jax.vjp(lambda p: _v(score_fn, sde, p, t, x, y), params)[1](a)
        return vx, gx, gp
    gx = gx + (c * w) * jnp.sum(jax.vmap(hess_dir)(dirs), axis=0)
    if want_params:

        def v_and_div(p):
            vp = lambda z: _v(score_fn, sde, p, t, z, y)  # noqa: E731
            vz, jd = jax.vmap(lambda e: jax.jvp(vp, (x,), (e,)), out_axes=(None, 0))(dirs)
            return vz, w * jnp.sum(jd * dirs)

        (gp,) = jax.vjp(v_and_div, params)[1]((a, c))
    return vx, gx, gp


def _controller(rtol, atol, t0, t1, n_steps):
    if n_steps is None:
        return diffrax.PIDController(rtol=rtol, atol=atol), None
    return diffrax.ConstantStepSize(), (t1 - t0) / n_steps


def _ode_solver(solver):
    """The diffrax solver for the augmented ODE: `solver`'s method, skipping the divergences its
    tableau never uses (jaxrej.rk) where there are any (Dopri5, Dopri8)."""
    base = SOLVERS[solver][0]()
    tableau = getattr(base, "tableau", None)
    if tableau is not None and any(rk.divergence_unused(tableau)):
        return rk.SkipDivergenceRK(base)
    return base


def _forward(
    score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps, *,
    saveat=None, adjoint=None,
):  # fmt: skip
    """Solve (x, 0) from eps to T: returns (diffrax solution, nfe, solver succeeded)."""
    field = velocity_and_divergence(score_fn, params, sde, y, probes)
    _, per_step, init_adaptive, init_fixed, _ = SOLVERS[solver]
    t0, t1 = jnp.asarray(eps, x.dtype), jnp.asarray(sde.T, x.dtype)
    controller, dt0 = _controller(rtol, atol, t0, t1, n_steps)
    sol = diffrax.diffeqsolve(
        rk.flow_term(field, velocity(score_fn, params, sde, y)),
        _ode_solver(solver),
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=(x, jnp.zeros((), x.dtype)),
        saveat=saveat or diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(),
        max_steps=max_steps,
        throw=False,
    )
    nfe = (init_adaptive if n_steps is None else init_fixed) + per_step * sol.stats["num_steps"]
    return sol, nfe, sol.result == diffrax.RESULTS.successful


def _strip(tree):
    """The values of custom_vjp primals (symbolic_zeros=True wraps them)."""
    return jax.tree_util.tree_map(lambda p: p.value, tree)


def _perturbed(tree) -> bool:
    return any(p.perturbed for p in jax.tree_util.tree_leaves(tree))


def _nan_unless(ok, tree):
    return jax.tree_util.tree_map(lambda g: jnp.where(ok, g, jnp.nan), tree)


def _solve(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps,
           adjoint=None):  # fmt: skip
    """(logp, nfe, succeeded) for one example. The default adjoint compiles to a plain while loop
    when nothing differentiates it: the forward pass of the checkpoint and backsolve adjoints."""
    sol, nfe, ok = _forward(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol,
                            atol, eps, adjoint=adjoint)  # fmt: skip
    return sde.prior_logp(sol.ys[0][-1]) + sol.ys[1][-1], nfe, ok


def solve_direct(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps):
    """As `_solve`, differentiated by plain autodiff through diffrax (DirectAdjoint: supports
    forward-over-reverse, e.g. Hessian-vector products; its bounded loop is slower undifferentiated)."""
    return _solve(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps,
                  adjoint=diffrax.DirectAdjoint())  # fmt: skip


# ------------------------------------------------------------------ discretise-then-optimise


def _tableau(solver):
    """(a (s, s), b (s,), c (s,), needed (s,)) of the solver's Runge-Kutta step; `needed[i]` is
    False for a stage nothing in the step uses (the FSAL stage of Tsit5 and Dopri5/8)."""
    if solver == "euler":
        a, b, c = np.zeros((1, 1)), np.ones(1), np.zeros(1)
    else:
        a, b, _, c = rk.weights(SOLVERS[solver][0]().tableau)
    needed = [bool(b[i] != 0 or np.any(a[i + 1 :, i] != 0)) for i in range(b.size)]
    return a, b, c, needed


def _step_vjp(score_fn, sde, solver, params, y, probes, t, h, x, a_next, c, want_params):
    """Cotangents (x, params) of one Runge-Kutta step x_n -> (x_{n+1}, delta increment) from
    those of its outputs (a_next, c). The step size h is a constant, as in diffrax (its
    controller stops gradients). Stages are recomputed from x_n by the velocity alone."""
    a, b, c_nodes, needed = _tableau(solver)
    stages, k = [None] * b.size, [None] * b.size
    for i in range(b.size):
        if needed[i]:
            stages[i] = x + h * sum(
                (a[i, j] * k[j] for j in range(i) if a[i, j]), jnp.zeros_like(x)
            )
            if np.any(a[i + 1 :, i]):  # later stages use k_i (x_{n+1} itself is not needed)
                k[i] = _v(score_fn, sde, params, t + c_nodes[i] * h, stages[i], y)
    stage_ct = [None] * b.size
    g_x, g_p = a_next, None
    for i in reversed(range(b.size)):
        if not needed[i]:
            continue
        k_ct = (h * b[i]) * a_next
        for j in range(i + 1, b.size):
            if a[j, i] and stage_ct[j] is not None:
                k_ct = k_ct + (h * a[j, i]) * stage_ct[j]
        div_ct = c * h * b[i] if b[i] else None  # a zero-weight stage's divergence is unused
        _, stage_ct[i], gp = field_vjp(score_fn, sde, params, t + c_nodes[i] * h, stages[i], y,
                                       probes, k_ct, div_ct, want_params)  # fmt: skip
        g_x = g_x + stage_ct[i]
        g_p = gp if g_p is None else jax.tree_util.tree_map(jnp.add, g_p, gp)
    return g_x, g_p


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def solve_checkpoint(
    score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps
):
    """As `solve_direct`, differentiated by discretise-then-optimise on the accepted steps: the
    forward pass stores x at every accepted step (max_steps x D per example), the reverse pass
    recomputes each step's stages from it and backpropagates through the Runge-Kutta step with
    `field_vjp`. The gradient is that of the computed number (step sizes held constant, as in
    diffrax) -- no re-solve, and no divergence recomputed in the reverse pass."""
    return _solve(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps)


def _checkpoint_fwd(
    score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps
):
    want_params = _perturbed(params)
    params, x, y, probes, rtol, atol, eps = map(_strip, (params, x, y, probes, rtol, atol, eps))
    sol, nfe, ok = _forward(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol,
                            atol, eps, saveat=diffrax.SaveAt(t0=True, steps=True))  # fmt: skip
    n = sol.stats["num_accepted_steps"]
    logp = sde.prior_logp(sol.ys[0][n]) + sol.ys[1][n]
    return (logp, nfe, ok), (params, y, probes, sol.ts, sol.ys[0], n, ok, want_params)


def _checkpoint_bwd(score_fn, sde, solver, n_steps, max_steps, residuals, cotangents):
    params, y, probes, ts, xs, n, ok, want_params = residuals
    ct = cotangents[0]
    if isinstance(ct, jax.custom_derivatives.SymbolicZero):
        ct = jnp.zeros((), xs.dtype)
    zeros_p = jax.tree_util.tree_map(jnp.zeros_like, params) if want_params else None

    def back_one_step(carry):
        i, g_x, g_p = carry
        i = i - 1
        g_x, gp = _step_vjp(score_fn, sde, solver, params, y, probes, ts[i], ts[i + 1] - ts[i],
                            xs[i], g_x, ct, want_params)  # fmt: skip
        if want_params:
            g_p = jax.tree_util.tree_map(jnp.add, g_p, gp)
        return i, g_x, g_p

    a_t = ct * jax.grad(sde.prior_logp)(xs[n])
    _, g_x, g_p = jax.lax.while_loop(lambda c: c[0] > 0, back_one_step, (n, a_t, zeros_p))
    valid = ok | (ct == 0)  # a failed solve's gradient is NaN, never a silent number
    return (_nan_unless(valid, g_p), _nan_unless(valid, g_x), None, None, None, None, None)


solve_checkpoint.defvjp(_checkpoint_fwd, _checkpoint_bwd, symbolic_zeros=True)


# ------------------------------------------------------------------ continuous adjoint


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def solve_backsolve(
    score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps
):
    """As `solve_direct`, differentiated by the continuous adjoint (w.r.t. x only)."""
    return _solve(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps)


def _backsolve_fwd(
    score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol, atol, eps
):
    if _perturbed(params):
        raise ValueError(
            "adjoint: 'backsolve' differentiates log p(x|y) with respect to x only; "
            "use adjoint='checkpoint' for gradients with respect to params"
        )
    params, x, y, probes, rtol, atol, eps = map(_strip, (params, x, y, probes, rtol, atol, eps))
    sol, nfe, ok = _forward(score_fn, sde, solver, n_steps, max_steps, params, x, y, probes, rtol,
                            atol, eps)  # fmt: skip
    x_t = sol.ys[0][-1]
    return (sde.prior_logp(x_t) + sol.ys[1][-1], nfe, ok), (params, x_t, y, probes, rtol, atol, eps)


def _backsolve_bwd(score_fn, sde, solver, n_steps, max_steps, residuals, cotangents):
    params, x_t, y, probes, rtol, atol, eps = residuals
    ct = cotangents[0]
    if isinstance(ct, jax.custom_derivatives.SymbolicZero):
        ct = jnp.zeros((), x_t.dtype)

    def backward(t, state, args):
        v, ja, _ = field_vjp(score_fn, sde, params, t, state[0], y, probes, state[1], ct)
        return v, -ja

    a_t = ct * jax.grad(sde.prior_logp)(x_t)
    make_solver = SOLVERS[solver][0]
    t0, t1 = jnp.asarray(sde.T, x_t.dtype), jnp.asarray(eps, x_t.dtype)
    controller, dt0 = _controller(rtol, atol, t0, t1, n_steps)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(backward),
        make_solver(),
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=(x_t, a_t),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )
    grad_x = jnp.where(sol.result == diffrax.RESULTS.successful, sol.ys[1][-1], jnp.nan)
    return (None, grad_x, None, None, None, None, None)


solve_backsolve.defvjp(_backsolve_fwd, _backsolve_bwd, symbolic_zeros=True)
