"""Baselines against scipy / scikit-learn."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import EmpiricalCovariance

from jaxrej.heads import baselines as B


def _logits(seed, n=500, c=5, scale=4.0):
    r = np.random.default_rng(seed)
    y = r.integers(0, c, n)
    logits = r.normal(size=(n, c)) * 1.5
    logits[np.arange(n), y] += 1.0
    return (logits * scale).astype(np.float32), y.astype(np.int32)  # overconfident


def test_msp_matches_scipy_softmax():
    z, _ = _logits(0)
    np.testing.assert_allclose(B.msp(z), special.softmax(z, axis=1).max(1), rtol=1e-5)
    np.testing.assert_allclose(B.msp(z, 2.0), special.softmax(z / 2, axis=1).max(1), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_temperature_minimises_nll_like_scipy(seed):
    z, y = _logits(seed)

    def nll(t):
        return -np.mean(special.log_softmax(z.astype(np.float64) / t, axis=1)[np.arange(y.size), y])

    ref = optimize.minimize_scalar(
        nll, bounds=(0.05, 50.0), method="bounded", options={"xatol": 1e-8}
    )
    t = float(B.fit_temperature(z, y))
    assert t > 1.5  # the logits were made over-confident
    assert t == pytest.approx(ref.x, rel=1e-3)
    assert float(B.nll(jnp.asarray(z), jnp.asarray(y), t)) == pytest.approx(ref.fun, rel=1e-5)


def test_mahalanobis_matches_sklearn_and_scipy():
    r = np.random.default_rng(0)
    c, d = 3, 4
    y = r.integers(0, c, 300).astype(np.int32)
    a = r.normal(size=(d, d))
    z = (r.normal(size=(300, d)) @ a + 3.0 * np.eye(c, d)[y]).astype(np.float32)
    m = B.fit_mahalanobis(z, y, num_classes=c, reg=0.0)
    means = np.stack([z[y == k].mean(0) for k in range(c)])
    emp = EmpiricalCovariance(assume_centered=False).fit(z - means[y])  # Lee et al.'s recipe
    zt = r.normal(size=(20, d)).astype(np.float32) * 2
    ref = np.array(
        [[-0.5 * mahalanobis(x, means[k], emp.precision_) ** 2 for k in range(c)] for x in zt]
    )
    np.testing.assert_allclose(B.mahalanobis_class_scores(m, zt), ref, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(B.mahalanobis_score(m, zt), ref.max(1), rtol=1e-3, atol=1e-3)


def test_bad_input():
    z, y = _logits(0)
    with pytest.raises(ValueError, match="logits"):
        B.fit_temperature(z[:, 0], y)
    with pytest.raises(ValueError, match="labels"):
        B.fit_temperature(z, y[:-1])
    with pytest.raises(ValueError, match="feats"):
        B.fit_mahalanobis(np.full((4, 2), np.nan), np.arange(4) % 2, num_classes=2)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        B.fit_mahalanobis(np.ones((4, 2)), np.arange(4) % 2, num_classes=3)
