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
def test_fast_field_vjp_matches_plain_autodiff(probes):
    """The field's forward-over-reverse rule equals reverse-mode AD of the plain field, for the
    cotangents of x, t and params, with the exact trace and with Hutchinson probes."""
    from jaxrej.flow import field_with_fast_vjp, velocity_and_divergence

    with jax.enable_x64(True):
        params = _mlp_params(jnp.float64)
        x = jnp.asarray(np.random.default_rng(7).normal(size=D), jnp.float64)
        t = jnp.asarray(0.37, jnp.float64)
        e = None
        if probes:
            e = jaxrej.sample_probes(jax.random.key(3), (D,), 5, probes, jnp.float64)
        a = jnp.asarray([0.3, -1.1, 0.6])
        c = jnp.asarray(0.7)

        def plain(p, tt, z):
            return velocity_and_divergence(_mlp_score, p, SDE, 1, e)(tt, z)

        def fast(p, tt, z):
            return field_with_fast_vjp(_mlp_score, SDE, p, tt, z, 1, e)

        out_p, pull_p = jax.vjp(plain, params, t, x)
        out_f, pull_f = jax.vjp(fast, params, t, x)
        np.testing.assert_allclose(out_f[1], out_p[1], rtol=1e-12)
        for got, want in zip(
            jax.tree_util.tree_leaves(pull_f((a, c))),
            jax.tree_util.tree_leaves(pull_p((a, c))),
            strict=True,
        ):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        # x alone (params not differentiated): the parameter branch is skipped, x and t still agree.
        gx_f = jax.grad(lambda z: fast(params, t, z)[1] + jnp.dot(a, fast(params, t, z)[0]))(x)
        gx_p = jax.grad(lambda z: plain(params, t, z)[1] + jnp.dot(a, plain(params, t, z)[0]))(x)
        np.testing.assert_allclose(gx_f, gx_p, rtol=1e-9)


def test_checkpoint_parameter_gradient_matches_direct_adjoint():
    """d/dparams of the log-likelihood through the checkpoint adjoint (custom field rule) equals
    the direct adjoint's plain autodiff of the same solve."""
    params = _mlp_params(jnp.float32)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(2, D)), jnp.float32)
    y = jnp.array([0, 1])

    def loss(p, adjoint):
        return jaxrej.log_likelihood(
            _mlp_score, p, SDE, x, y, key=KEY, divergence="exact", adjoint=adjoint, max_steps=512
        ).logp.sum()

    g_ck = jax.grad(loss)(params, "checkpoint")
    g_di = jax.grad(loss)(params, "direct")
    for a, b in zip(jax.tree_util.tree_leaves(g_ck), jax.tree_util.tree_leaves(g_di), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
