"""Input gradients and Hessian-vector products through the probability-flow ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrej
from jaxrej.autodiff import hvp, log_likelihood_and_grad
from tests.gaussian import alpha_var, make_params, make_score_fn

C, D = 2, 3
KEY = jax.random.key(0)
SDE = jaxrej.VPSDE()


@pytest.fixture(scope="module")
def problem():
    mus, covs = make_params(C, D, seed=3)
    rng = np.random.default_rng(4)
    y = np.array([0, 1, 1])
    x = mus[y] + rng.normal(size=(3, D))
    return mus, covs, x, y


def _flow_matrix(covs, y, eps):
    """M with x_T = a_T mu + M (x - a_eps mu): log p is prior(x_T) + const, Hessian -M M."""
    a_e, v_e = alpha_var("vp", eps)
    a_t, v_t = alpha_var("vp", 1.0)
    lam, u = np.linalg.eigh(covs[y])
    return u @ np.diag(np.sqrt((a_t**2 * lam + v_t) / (a_e**2 * lam + v_e))) @ u.T


def _closed_form_grad(mus, covs, x, y, eps=1e-5):
    a_e, _ = alpha_var("vp", eps)
    a_t, _ = alpha_var("vp", 1.0)
    out = []
    for xi, yi in zip(x, y, strict=True):
        m = _flow_matrix(covs, yi, eps)
        x_t = a_t * mus[yi] + m @ (xi - a_e * mus[yi])
        out.append(-m @ x_t)  # grad of -|x_T|^2 / 2 through x_T = ... + M x (M symmetric)
    return np.stack(out)


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
@pytest.mark.parametrize("divergence", ["exact", "rademacher"])
def test_gradient_matches_closed_form(problem, adjoint, divergence):
    mus, covs, x, y = problem
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    res, g = log_likelihood_and_grad(
        make_score_fn("vp", (D,)),
        params,
        SDE,
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y),
        key=KEY,
        divergence=divergence,
        adjoint=adjoint,
    )
    assert bool(res.ok.all())
    truth = _closed_form_grad(mus, covs, x, y)
    rel = np.linalg.norm(np.asarray(g) - truth, axis=1) / np.linalg.norm(truth, axis=1)
    assert rel.max() <= 1e-3, rel


def _mlp_score(params, x, t, y):
    """A small nonlinear, label- and time-conditioned field: its divergence depends on x."""
    w1, w2, emb = params
    h = jnp.tanh(w1 @ x + emb[y] + t)
    return -x + w2 @ h


def _mlp_params(dtype):
    rng = np.random.default_rng(0)
    return (
        jnp.asarray(rng.normal(size=(8, D)), dtype),
        jnp.asarray(rng.normal(size=(D, 8)) * 0.5, dtype),
        jnp.asarray(rng.normal(size=(C, 8)), dtype),
    )


@pytest.mark.parametrize(
    "adjoint, divergence",
    [
        ("checkpoint", "exact"),
        ("backsolve", "exact"),
        ("checkpoint", "gaussian"),
        ("backsolve", "rademacher"),
    ],
)
def test_gradient_matches_finite_differences(adjoint, divergence):
    """Central differences of a nonlinear score's log-likelihood (fixed probes), float64, tight tol."""
    with jax.enable_x64(True):
        params = _mlp_params(jnp.float64)
        x = jnp.asarray(np.random.default_rng(1).normal(size=(2, D)), jnp.float64)
        y = jnp.array([0, 1])
        opts = dict(key=KEY, divergence=divergence, rtol=1e-10, atol=1e-10, eps=1e-3)

        def f(x_):
            return jaxrej.log_likelihood(_mlp_score, params, SDE, x_, y, **opts).logp

        _, g = log_likelihood_and_grad(_mlp_score, params, SDE, x, y, adjoint=adjoint, **opts)
        v = jnp.asarray(np.random.default_rng(2).normal(size=(2, D)), jnp.float64)
        h = 1e-4
        fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        directional = jnp.sum(g * v, axis=1)
        err = np.abs(np.asarray(fd - directional)) / np.linalg.norm(np.asarray(g), axis=1)
        assert err.max() < 1e-5, err


def test_hvp_matches_hessian_on_plain_function():
    def f(x):
        return jnp.sum(jnp.sin(x) * x**2) + jnp.prod(jnp.cos(x))

    x = jnp.array([0.3, -1.2, 0.7, 2.0])
    v = jnp.array([1.0, 0.5, -2.0, 0.1])
    np.testing.assert_allclose(hvp(f, x, v), jax.hessian(f)(x) @ v, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="v"):
        hvp(f, x, v[:2])


@pytest.mark.parametrize("divergence", ["exact", "rademacher"])
def test_hvp_through_the_ode(problem, divergence):
    """Hessian of log p(x|y) for Gaussian data is -M M (constant); the solve's HVP matches it,
    and matches jax.hessian of the same solve."""
    mus, covs, x, y = problem
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    sf = make_score_fn("vp", (D,))

    def f(xi):
        return jaxrej.log_likelihood(
            sf,
            params,
            SDE,
            xi[None],
            jnp.asarray(y[:1]),
            key=KEY,
            divergence=divergence,
            adjoint="direct",
            max_steps=256,
        ).logp[0]

    x0 = jnp.asarray(x[0], jnp.float32)
    v = jnp.array([1.0, -0.5, 0.25])
    m = _flow_matrix(covs, y[0], 1e-5)
    truth = -(m @ m) @ np.asarray(v)
    got = hvp(f, x0, v)
    assert np.linalg.norm(np.asarray(got) - truth) / np.linalg.norm(truth) <= 1e-3
    np.testing.assert_allclose(got, jax.hessian(f)(x0) @ v, rtol=1e-4, atol=1e-4)


def test_failed_example_gets_nan_gradient(problem):
    mus, covs, x, y = problem
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))
    xs = np.asarray(x, np.float32).copy()
    xs[1, 0] = np.nan
    res, g = log_likelihood_and_grad(
        make_score_fn("vp", (D,)),
        params,
        SDE,
        jnp.asarray(xs),
        jnp.asarray(y),
        key=KEY,
        divergence="exact",
    )
    assert not bool(res.ok[1])
    assert np.isnan(np.asarray(g[1])).all() and np.isfinite(np.asarray(g)[[0, 2]]).all()


def test_backsolve_refuses_parameter_gradients(problem):
    """The continuous adjoint here is for inputs only: asking it for d/dparams is a clear error."""
    mus, covs, x, y = problem
    params = (jnp.asarray(mus, jnp.float32), jnp.asarray(covs, jnp.float32))

    def loss(p):
        return jaxrej.log_likelihood(
            make_score_fn("vp", (D,)),
            p,
            SDE,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y),
            key=KEY,
            divergence="exact",
            adjoint="backsolve",
        ).logp.sum()

    with pytest.raises(ValueError, match="backsolve"):
        jax.grad(loss)(params)


@pytest.mark.parametrize("probes", [None, "rademacher"])
def test_field_vjp_matches_plain_autodiff(probes):
    """field_vjp's forward-over-reverse cotangents equal reverse-mode AD of the plain field (v,
    div v), for x and params, with the exact trace and with Hutchinson probes."""
    from jaxrej.flow.field import field_vjp, velocity_and_divergence

    with jax.enable_x64(True):
        params = _mlp_params(jnp.float64)
        x = jnp.asarray(np.random.default_rng(7).normal(size=D), jnp.float64)
        t = jnp.asarray(0.37, jnp.float64)
        e = None
        if probes:
            e = jaxrej.sample_probes(jax.random.key(3), (D,), 5, probes, jnp.float64)
        a = jnp.asarray([0.3, -1.1, 0.6])
        c = jnp.asarray(0.7)
        out, pull = jax.vjp(
            lambda p, z: velocity_and_divergence(_mlp_score, SDE, p, 1, e)(t, z), params, x
        )
        want_p, want_x = pull((a, c))
        v, got_x, got_p = field_vjp(_mlp_score, SDE, params, t, x, 1, e, a, c, True)
        np.testing.assert_allclose(v, out[0], rtol=1e-12)
        np.testing.assert_allclose(got_x, want_x, rtol=1e-9)
        for got, want in zip(got_p, want_p, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        assert field_vjp(_mlp_score, SDE, params, t, x, 1, e, a, c)[2] is None
        # c=None (a zero divergence cotangent known when tracing) skips the divergence products
        want_p0, want_x0 = pull((a, jnp.zeros_like(c)))
        _, got_x0, got_p0 = field_vjp(_mlp_score, SDE, params, t, x, 1, e, a, None, True)
        np.testing.assert_allclose(got_x0, want_x0, rtol=1e-12)
        for got, want in zip(got_p0, want_p0, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "solver, n_steps, probes",
    [("tsit5", None, None), ("dopri5", None, "rademacher"), ("dopri8", None, None),
     ("heun", None, "gaussian"), ("euler", 16, None)],
)  # fmt: skip
def test_checkpoint_adjoint_equals_autodiff_through_the_solver(solver, n_steps, probes):
    """The recorded-grid reverse pass (solve_checkpoint) gives the gradient of the computed number
    w.r.t. x and params: equal to plain autodiff through diffrax (DirectAdjoint) in float64."""
    from jaxrej.flow import FlowSolve, adjoints

    solve_checkpoint, solve_direct = adjoints.checkpoint, adjoints.direct
    opts = FlowSolve(divergence="exact" if probes is None else probes, n_probes=2, solver=solver,
                     n_steps=n_steps, max_steps=256, rtol=1e-4, atol=1e-4)  # fmt: skip

    with jax.enable_x64(True):
        params = _mlp_params(jnp.float64)
        x = jnp.asarray(np.random.default_rng(8).normal(size=D), jnp.float64)
        e = None
        if probes:
            e = jaxrej.sample_probes(jax.random.key(3), (D,), 2, probes, jnp.float64)

        def logp(solve, p, z):
            return solve(_mlp_score, SDE, opts, p, z, 1, e)

        assert bool(logp(solve_direct, params, x)[2])  # the solve succeeded
        want = jax.grad(lambda p, z: logp(solve_direct, p, z)[0], argnums=(0, 1))(params, x)
        got = jax.grad(lambda p, z: logp(solve_checkpoint, p, z)[0], argnums=(0, 1))(params, x)
        np.testing.assert_allclose(
            logp(solve_checkpoint, params, x)[0], logp(solve_direct, params, x)[0]
        )
        for g, w in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_checkpoint_gradient_of_a_failed_solve_is_nan():
    """A solve that hits max_steps gives a NaN gradient, not the gradient of a truncated solve."""
    from jaxrej.flow import FlowSolve, adjoints

    params = _mlp_params(jnp.float32)
    x = jnp.asarray(np.random.default_rng(8).normal(size=D), jnp.float32)
    g = jax.grad(
        lambda z: adjoints.checkpoint(_mlp_score, SDE, FlowSolve(divergence="exact", solver="tsit5",
                                     max_steps=3, rtol=1e-6, atol=1e-6), params, z, 1, None)[0]
    )(x)  # fmt: skip
    assert bool(jnp.all(jnp.isnan(g)))
