"""SkipDivergenceRK against diffrax's own solvers: the same method, fewer divergence evaluations."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej.flow import SOLVERS
from jaxrej.flow.rk import SkipDivergenceRK, flow_term

D = 5
W = 0.6 * np.random.default_rng(0).normal(size=(D, D))


def _velocity(t, x):
    return jnp.tanh(jnp.asarray(W, x.dtype) @ x) * jnp.cos(3.0 * t) - x


def _field(counter=None):
    def field(t, x):
        if counter is not None:  # count divergence evaluations on the host
            jax.debug.callback(lambda: counter.__setitem__(0, counter[0] + 1))
        return _velocity(t, x), jnp.trace(jax.jacfwd(lambda z: _velocity(t, z))(x))

    return field


def test_unused_stages_of_the_tableaus():
    """Dopri5's 2nd stage and Dopri8's 2nd-5th have zero solution and error weight; Tsit5 and Heun
    use every stage; an FSAL last stage is never skipped (it is the next step's first stage)."""
    assert SOLVERS["dopri5"].divergence_unused == (False, True) + (False,) * 5
    assert SOLVERS["dopri8"].divergence_unused == (False,) + (True,) * 4 + (False,) * 9
    assert not any(SOLVERS["tsit5"].divergence_unused)
    assert not any(SOLVERS["heun"].divergence_unused)


@pytest.mark.parametrize("name", ["dopri5", "dopri8", "tsit5", "heun"])
def test_weights_are_diffrax_tableau(name):
    """SolverInfo.weights (the one tableau of the forward step and the reverse pass): consistent
    (rows of a sum to c, b sums to 1, b_err sums to 0) and diffrax's own b_sol and c."""
    info = SOLVERS[name]
    a, b, b_err, c = info.weights
    tableau = info.make().tableau
    np.testing.assert_allclose(a.sum(axis=1), c, atol=1e-12)
    np.testing.assert_allclose(b.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(b_err.sum(), 0.0, atol=1e-12)
    np.testing.assert_array_equal(b, np.asarray(tableau.b_sol))
    np.testing.assert_array_equal(c[1:], np.asarray(tableau.c))


@pytest.mark.parametrize("solver", ["dopri5", "dopri8"])
@pytest.mark.parametrize("t0, t1", [(0.0, 2.0), (2.0, 0.0)])
@pytest.mark.parametrize("adaptive", [False, True])
def test_same_steps_and_solution_as_diffrax(solver, t0, t1, adaptive):
    """float64: (x, delta) at every step equal diffrax's, forward and backward in time. Fixed
    steps: to rounding. Adaptive (rtol = atol = 1e-7): the same number of steps, and times and
    states equal to well within the tolerance (the controller amplifies the rounding of the error
    estimate's cancelling sum: Dopri8's step sizes differ by ~1e-7 relative)."""
    with jax.enable_x64(True):
        x0 = jnp.linspace(-1.0, 1.0, D)
        sols = []
        for ours in (False, True):
            term = (
                flow_term(_field(), _velocity)
                if ours
                else diffrax.ODETerm(lambda t, s, args: _field()(t, s[0]))
            )
            sols.append(
                diffrax.diffeqsolve(
                    term,
                    SkipDivergenceRK(SOLVERS[solver]) if ours else SOLVERS[solver].make(),
                    t0=t0,
                    t1=t1,
                    dt0=None if adaptive else (t1 - t0) / 20,
                    y0=(x0, jnp.zeros(())),
                    stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-7)
                    if adaptive
                    else diffrax.ConstantStepSize(),
                    saveat=diffrax.SaveAt(steps=True),
                )
            )
        ref, got = sols
        n = int(ref.stats["num_accepted_steps"])
        assert n > 5
        assert int(got.stats["num_steps"]) == int(ref.stats["num_steps"])
        tol = 1e-6 if adaptive else 1e-12
        np.testing.assert_allclose(got.ts[:n], ref.ts[:n], rtol=tol)
        for g, r in zip(got.ys, ref.ys, strict=True):
            np.testing.assert_allclose(g[:n], r[:n], rtol=tol, atol=tol)


def test_divergence_skipped_at_unused_stages():
    """Fixed Dopri5 steps: 5 divergences per step (not 6) plus the first stage; Dopri8: 9 of 13."""
    for solver, per_step in (("dopri5", 5), ("dopri8", 9)):
        count = [0]
        sol = diffrax.diffeqsolve(
            flow_term(_field(count), _velocity),
            SkipDivergenceRK(SOLVERS[solver]),
            t0=0.0,
            t1=1.0,
            dt0=0.1,
            y0=(jnp.ones(D), jnp.zeros(())),
            stepsize_controller=diffrax.ConstantStepSize(),
        )
        jax.block_until_ready(sol.ys)
        jax.effects_barrier()
        assert count[0] == 1 + per_step * int(sol.stats["num_steps"]), solver


def test_divergence_skipped_under_vmap():
    """Under vmap (as every jaxrej solve runs) the skip stays a branch, not a select that computes
    both: a batched evaluation calls the host once, 1 + 5 per step for 10 Dopri5 steps."""
    count = [0]

    def solve(x0):
        return diffrax.diffeqsolve(
            flow_term(_field(count), _velocity),
            SkipDivergenceRK(SOLVERS["dopri5"]),
            t0=0.0,
            t1=1.0,
            dt0=0.1,
            y0=(x0, jnp.zeros(())),
            stepsize_controller=diffrax.ConstantStepSize(),
        ).ys[1]

    jax.block_until_ready(jax.jit(jax.vmap(solve))(jnp.ones((3, D))))
    jax.effects_barrier()
    assert count[0] == 1 + 5 * 10


def test_divergence_evaluations_counts_the_skipped_stages():
    """SolverInfo.divergence_evaluations: NFE minus one velocity-only stage per Dopri5 step (four
    for Dopri8); solvers that use every stage's divergence are unchanged."""
    steps = np.array([0, 1, 40])
    count = lambda name, nfe: SOLVERS[name].divergence_evaluations(nfe)  # noqa: E731
    np.testing.assert_array_equal(count("dopri5", 1 + 6 * steps), 1 + 5 * steps)
    np.testing.assert_array_equal(count("dopri8", 1 + 13 * steps), 1 + 9 * steps)
    np.testing.assert_array_equal(count("tsit5", 1 + 6 * steps), 1 + 6 * steps)
    np.testing.assert_array_equal(count("heun", 2 * steps), 2 * steps)
