"""Divergence estimators against jax.jacfwd and against their own expectation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej.divergence import exact_trace, hutchinson_trace, sample_probes


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
