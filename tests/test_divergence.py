"""Divergence estimators against jax.jacfwd and against their own expectation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej.divergence import exact_trace, hutchinson_trace, hutchpp_trace, sample_probes


def field(x):
    w = jnp.arange(1.0, 13.0).reshape(2, 2, 3) / 10.0
    return jnp.tanh(jnp.einsum("ijk,ij->ijk", w, x.sum(-1)) + x**2)


X = jnp.linspace(-1.0, 1.0, 12).reshape(2, 2, 3)


def test_exact_trace_matches_jacobian():
    fx, tr = exact_trace(field, X)
    jac = jax.jacfwd(field)(X).reshape(12, 12)
    np.testing.assert_allclose(tr, jnp.trace(jac), rtol=1e-6)
    np.testing.assert_allclose(fx, field(X))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_right_variance(kind):
    """Mean of many probes within 4 standard errors of the trace; probes have E[e e^T] = I."""
    probes = sample_probes(jax.random.key(1), X.shape, 20000, kind)
    assert probes.shape == (20000, 2, 2, 3)
    flat = np.asarray(probes).reshape(20000, 12)
    np.testing.assert_allclose(flat.T @ flat / 20000, np.eye(12), atol=0.05)
    if kind == "rademacher":
        assert set(np.unique(flat)) == {-1.0, 1.0}
    _, tr = exact_trace(field, X)
    per_probe = jax.vmap(lambda e: hutchinson_trace(field, X, e[None])[1])(probes)
    se = float(np.std(per_probe) / np.sqrt(len(per_probe)))
    assert abs(float(np.mean(per_probe)) - float(tr)) <= 4 * se
    _, mean_all = hutchinson_trace(field, X, probes)
    np.testing.assert_allclose(mean_all, np.mean(per_probe), rtol=1e-4)


def test_bad_probe_arguments():
    with pytest.raises(ValueError, match="divergence"):
        sample_probes(jax.random.key(0), (3,), 2, "sobol")
    with pytest.raises(ValueError, match="n_probes"):
        sample_probes(jax.random.key(0), (3,), 0)
    with pytest.raises(ValueError, match="probes"):
        hutchinson_trace(field, X, jnp.ones((4, 12)))


def test_hutchpp_is_exact_with_a_full_sketch_and_unbiased_otherwise():
    _, tr = exact_trace(field, X)
    full = sample_probes(jax.random.key(2), X.shape, 12, "gaussian")
    _, est = hutchpp_trace(field, X, full, sample_probes(jax.random.key(3), X.shape, 1))
    np.testing.assert_allclose(est, tr, rtol=1e-5)  # Q spans R^D: the residual is zero
    keys = jax.random.split(jax.random.key(4), 4000)
    draws = jax.vmap(
        lambda k: hutchpp_trace(field, X, *jnp.split(sample_probes(k, X.shape, 4), 2))[1]
    )(keys)
    se = float(np.std(draws) / np.sqrt(len(draws)))
    assert abs(float(np.mean(draws)) - float(tr)) <= 4 * se


def test_hutchpp_beats_hutchinson_on_a_dominant_low_rank_jacobian():
    """J = U diag(10, 8, 6) U^T + 0.1 I (D = 12): at 9 products each, Hutch++ (3 sketch, 3 Q,
    3 probes) captures the dominant part, so its variance is ~20x below Hutchinson's (9 probes)."""
    u = np.linalg.qr(np.random.default_rng(0).normal(size=(12, 3)))[0]
    a = jnp.asarray(u @ np.diag([10.0, 8.0, 6.0]) @ u.T + 0.1 * np.eye(12), jnp.float32)

    def f(x):
        return (a @ x.reshape(12)).reshape(x.shape)

    keys = jax.random.split(jax.random.key(5), 2000)
    pp = jax.vmap(lambda k: hutchpp_trace(f, X, *jnp.split(sample_probes(k, X.shape, 6), 2))[1])
    hu = jax.vmap(lambda k: hutchinson_trace(f, X, sample_probes(k, X.shape, 9))[1])
    var_pp, var_hu = float(np.var(pp(keys))), float(np.var(hu(keys)))
    assert var_pp < 0.1 * var_hu  # measured 1.41 vs 27.7
    with pytest.raises(ValueError, match="sketch"):
        hutchpp_trace(f, X, jnp.ones((13, 2, 2, 3)), jnp.ones((1, 2, 2, 3)))
