"""Interpolation curves (jaxrej.eval.interpolation) against closed forms: a Gaussian
log-density is a concave quadratic along any line (exact values from scipy, exact second
differences -h^2 v^T S^-1 v); a two-Gaussian mixture between its modes dips in the middle, and
its exact second derivative E_w[g''] + Var_w[g'] >= 0 says the curve is convex."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from jaxrej.eval import interpolation as interp


def test_gaussian_curve_is_the_exact_concave_quadratic(tmp_path):
    rng = np.random.default_rng(0)
    d, p = 5, 7
    a_mat = rng.normal(size=(d, d))
    cov = a_mat @ a_mat.T + d * np.eye(d)
    mu = rng.normal(size=d)
    prec = np.linalg.inv(cov)
    x0, x1 = rng.normal(size=(p, d)), rng.normal(size=(p, d)) + 2.0
    logdet = np.linalg.slogdet(cov)[1]

    def log_px(x):  # (B, d) -> (B,), jitted once (the padded batches share one shape)
        z = x - mu
        return -0.5 * (jnp.einsum("bi,ij,bj->b", z, prec, z) + logdet + d * jnp.log(2 * jnp.pi))

    calls = []
    f = jax.jit(log_px)
    res = interp.interpolation_curves(
        lambda x: calls.append(x.shape) or f(x), x0, x1, n_points=9, batch_size=10
    )
    assert set(calls) == {(10, d)}  # 63 points in padded batches of 10
    a = np.linspace(0, 1, 9)
    exact = np.array([
        stats.multivariate_normal(mu, cov).logpdf((1 - a)[:, None] * x0[i] + a[:, None] * x1[i])
        for i in range(p)
    ])  # fmt: skip
    np.testing.assert_allclose(res.curves, exact, rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(res.mean, exact.mean(0), rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(res.std, exact.std(0), rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(res.quantiles[1], np.median(exact, 0), rtol=2e-5, atol=2e-4)
    v = x1 - x0
    h = a[1] - a[0]
    d2 = -(h**2) * np.mean(np.einsum("pi,ij,pj->p", v, prec, v))  # constant along the line
    np.testing.assert_allclose(res.second_differences, np.full(7, d2), rtol=1e-3)
    assert not res.convex and res.tol == pytest.approx(1e-3 * np.ptp(res.mean))
    out = interp.plot(res, str(tmp_path / "interp.png"))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert res.to_dict()["convex"] is False


def test_two_gaussian_mixture_dips_between_its_modes_and_is_convex():
    d, s = 4, 1.5
    mu = np.zeros(d)
    mu[0] = 3.0
    rng = np.random.default_rng(1)
    p = 12
    off = rng.normal(size=(p, d)) * 0.5
    off[:, 0] = 0.0
    x0 = off - 0.6 * np.eye(d)[0] + 0.05 * rng.normal(size=(p, d))
    x1 = off + 0.6 * np.eye(d)[0] + 0.05 * rng.normal(size=(p, d))

    def comps(x):  # (2, B) component log-densities (each N(+-mu, s^2 I)) + log 1/2
        x = np.asarray(x, np.float64)
        return np.stack([stats.multivariate_normal(m, s * s * np.eye(d)).logpdf(x)
                         for m in (-mu, mu)]) + np.log(0.5)  # fmt: skip

    res = interp.interpolation_curves(lambda x: logsumexp(comps(x), axis=0), x0, x1, n_points=11)
    a = res.alphas
    mid = res.mean[len(a) // 2]
    assert mid < res.mean[0] - 0.1 and mid < res.mean[-1] - 0.1  # the curve dips in between
    # exact second derivative along each line: f'' = E_w[g''] + Var_w[g'], g_k the component
    # log-densities, w their responsibilities; g_k'' = -|v|^2 / s^2 for both
    fine = np.linspace(0, 1, 201)
    for i in range(p):
        v = x1[i] - x0[i]
        xs = (1 - fine)[:, None] * x0[i] + fine[:, None] * x1[i]
        lg = comps(xs)
        w = np.exp(lg - logsumexp(lg, axis=0))
        g1 = np.stack([-(xs - m) @ v / s**2 for m in (-mu, mu)])
        var = (w * g1**2).sum(0) - (w * g1).sum(0) ** 2
        assert np.all(var - v @ v / s**2 > 0)  # convex along every pair's line
    assert res.convex and np.all(res.second_differences > 0)


def test_random_pairs_and_bad_input():
    i0, i1 = interp.random_pairs(5, 50, seed=0)
    assert i0.shape == i1.shape == (50,) and np.all(i0 != i1) and i1.max() < 5
    np.testing.assert_array_equal(interp.random_pairs(5, 50, seed=0)[1], i1)
    with pytest.raises(ValueError, match="x0, x1"):
        interp.interpolation_curves(lambda x: x.sum(1), np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="alphas"):
        interp.interpolation_curves(lambda x: x.sum(1), np.zeros((2, 3)), np.ones((2, 3)),
                                    alphas=[0.0, 0.5, 0.4])  # fmt: skip
    with pytest.raises(ValueError, match="non-finite"), np.errstate(invalid="ignore"):
        interp.interpolation_curves(lambda x: np.log(x[:, 0] - 0.5), np.zeros((2, 3)),
                                    np.ones((2, 3)))  # fmt: skip
    with pytest.raises(ValueError, match="n:"):
        interp.random_pairs(1, 3, seed=0)
