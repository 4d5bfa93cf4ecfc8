"""The forward solve of the augmented probability-flow ODE for ONE example, with diffrax.

State (x, delta) from t = eps to T, starting at (x, 0); then

    log p_eps(x | y) = log p_T(x(T)) + delta(T)       (Chen et al. 2018, Thm. 1; Song et al. 2021, eq. 39).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from jaxrej.flow.field import velocity, velocity_and_divergence
from jaxrej.flow.options import FlowSolve
from jaxrej.flow.rk import flow_term, ode_solver


def _rms(a):
    return jnp.sqrt(jnp.mean(jnp.square(a)))


def rms_norm(err):
    """diffrax's default norm: the RMS over every component of the (scaled) error pytree."""
    leaves = [jnp.ravel(e) for e in jax.tree_util.tree_leaves(err)]
    return _rms(jnp.concatenate(leaves))


def augmented_norm(err):
    """The step-size controller's norm of the scaled error (x part, delta part): max(RMS over x,
    |delta|). diffrax's default RMS over all D + 1 components would weigh the log-density increment
    -- the number the solve is for -- as 1/(D + 1) of the error."""
    ex, ed = err
    return jnp.maximum(_rms(ex), jnp.abs(ed))


def controller(solve: FlowSolve, t0, t1, *, norm=augmented_norm):
    """(stepsize controller, dt0): a PID controller at (rtol, atol), or `n_steps` fixed steps."""
    if solve.n_steps is None:
        return diffrax.PIDController(rtol=solve.rtol, atol=solve.atol, norm=norm), None
    return diffrax.ConstantStepSize(), (t1 - t0) / solve.n_steps


def forward(score_fn, sde, solve: FlowSolve, params, x, y, probes, *, saveat=None, adjoint=None):
    """Solve (x, 0) from eps to T: returns (diffrax solution, nfe, solver succeeded)."""
    info = solve.info
    t0, t1 = jnp.asarray(solve.eps, x.dtype), jnp.asarray(sde.T, x.dtype)
    stepsize, dt0 = controller(solve, t0, t1)
    sol = diffrax.diffeqsolve(
        flow_term(
            velocity_and_divergence(score_fn, sde, params, y, probes),
            velocity(score_fn, sde, params, y),
        ),
        ode_solver(info),
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=(x, jnp.zeros((), x.dtype)),
        saveat=saveat or diffrax.SaveAt(t1=True),
        stepsize_controller=stepsize,
        adjoint=adjoint or diffrax.RecursiveCheckpointAdjoint(),
        max_steps=solve.max_steps,
        throw=False,
    )
    nfe = info.initial_evaluations + info.evaluations_per_step * sol.stats["num_steps"]
    return sol, nfe, sol.result == diffrax.RESULTS.successful


def log_density(sde, sol, n=-1):
    """log p_T(x(T)) + delta(T) from a forward solution's saved state `n`."""
    return sde.prior_logp(sol.ys[0][n]) + sol.ys[1][n]
