"""GMM head against scikit-learn's GaussianMixture and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from jaxrej.heads import gmm as G


def _mixture(n, seed, d=5, k=4, offset=10.0):
    """Anisotropic Gaussian clusters, shifted away from the origin (tests the centring)."""
    r = np.random.default_rng(123)  # same mixture for every seed
    mus = r.normal(scale=4.0, size=(k, d))
    mix = r.normal(size=(k, d, d)) * 0.6
    r = np.random.default_rng(seed)
    z = r.integers(0, k, n)
    x = mus[z] + np.einsum("nij,nj->ni", mix[z], r.normal(size=(n, d)))
    return (x + offset).astype(np.float32), z


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_heldout_loglik_matches_sklearn(covariance_type):
    xtr, _ = _mixture(1500, seed=0)
    xte, _ = _mixture(600, seed=1)
    g = G.fit(xtr, G.EMOptions(4, covariance_type, n_init=2), key=jax.random.key(0))
    sk = GaussianMixture(4, covariance_type=covariance_type, n_init=2, random_state=0).fit(xtr)
    ours, ref = float(jnp.mean(G.log_prob(g, xte))), sk.score(xte)
    assert ours >= ref - 0.01 * abs(ref), (ours, ref)
    assert bool(g.converged)
    assert float(g.lower_bound) == pytest.approx(float(jnp.mean(G.log_prob(g, xtr))), abs=1e-4)
    np.testing.assert_allclose(float(jnp.sum(g.weights)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_log_prob_and_responsibilities_match_sklearn_for_same_params(covariance_type):
    xtr, _ = _mixture(800, seed=2)
    sk = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(xtr)
    g = G.from_params(sk.weights_, sk.means_, sk.covariances_, covariance_type)
    xte, _ = _mixture(200, seed=3)
    # float32 on data centred at 10: |error| ~ 1e-4 nats
    np.testing.assert_allclose(G.log_prob(g, xte), sk.score_samples(xte), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(G.responsibilities(g, xte), sk.predict_proba(xte), atol=2e-4)


def test_full_covariance_is_stable_for_nearly_singular_clusters():
    # a cluster living on a 2-D plane in 4-D: Sigma is singular but for reg_covar
    r = np.random.default_rng(0)
    a = np.c_[r.normal(size=(400, 2)), np.zeros((400, 2))]
    b = r.normal(size=(400, 4)) + 5.0
    x = np.r_[a, b].astype(np.float32)
    g = G.fit(x, G.EMOptions(2, "full", reg_covar=1e-4), key=jax.random.key(1))
    lp = G.log_prob(g, x)
    assert bool(jnp.all(jnp.isfinite(lp)))
    sk = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, random_state=0).fit(x)
    assert float(jnp.mean(lp)) >= sk.score(x) - 0.01 * abs(sk.score(x))


def test_n_init_keeps_the_best_run():
    x, _ = _mixture(600, seed=4, k=4)
    opts = dict(n_components=6, kmeans_iters=0, max_iter=5)
    # restart i of an n_init=3 fit uses split(key, 3)[i]: the same run as a single fit with it
    singles = [
        float(G.fit(x, G.EMOptions(**opts), key=k).lower_bound)
        for k in jax.random.split(jax.random.key(9), 3)
    ]
    best = G.fit(x, G.EMOptions(**opts, n_init=3), key=jax.random.key(9))
    assert len(set(np.round(singles, 4))) > 1  # the restarts really differ
    assert float(best.lower_bound) == pytest.approx(max(singles), abs=1e-5)


def test_kmeans_plusplus_picks_distinct_data_points_in_every_cluster():
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    r = np.random.default_rng(0)
    x = np.repeat(centres, 50, axis=0) + r.normal(size=(150, 2))
    c = np.asarray(G.kmeans_plusplus(jnp.asarray(x), jnp.ones(150), 3, key=jax.random.key(0)))
    # every seed is a data point, and each true cluster gets exactly one
    assert all(np.any(np.all(np.isclose(x, ci), axis=1)) for ci in c)
    nearest = np.argmin(((c[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest.tolist()) == [0, 1, 2]


def test_class_conditional_matches_per_class_sklearn():
    x, z = _mixture(1200, seed=5, k=3)
    y = z.astype(np.int32)
    g = G.fit_class_conditional(x, y, G.EMOptions(2, "full"), num_classes=3, key=jax.random.key(0))
    assert g.means.shape == (3, 2, 5)
    xte, zte = _mixture(300, seed=6, k=3)
    lp = np.asarray(G.class_log_prob(g, xte))  # (N, C)
    assert lp.shape == (300, 3)
    for c in range(3):
        sk = GaussianMixture(2, covariance_type="full", random_state=0).fit(x[y == c])
        ours, ref = lp[zte == c, c].mean(), sk.score(xte[zte == c])
        assert ours >= ref - 0.01 * abs(ref), (c, ours, ref)
    assert np.mean(np.argmax(lp, 1) == zte) > 0.95


def test_log_prob_gradient_matches_finite_differences(x64):
    x, _ = _mixture(400, seed=7)
    g = G.fit(x, G.EMOptions(3, "full"), key=jax.random.key(0), dtype=jnp.float64)
    z = jnp.asarray(x[:4], jnp.float64) + 0.3
    f = lambda z: jnp.sum(G.log_prob(g, z))  # noqa: E731
    gr = jax.grad(f)(z)
    v = jnp.asarray(np.random.default_rng(0).normal(size=z.shape))
    h = 1e-5
    fd = (f(z + h * v) - f(z - h * v)) / (2 * h)
    assert abs(float(fd - jnp.sum(gr * v))) / float(jnp.linalg.norm(gr)) < 1e-6


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_purify_converges_to_closed_form_for_one_gaussian(covariance_type):
    # K = 1: argmin -log N(z; mu, S) + lam/2 ||z - z0||^2 = (S^-1 + lam I)^-1 (S^-1 mu + lam z0)
    r = np.random.default_rng(0)
    a = r.normal(size=(3, 3))
    cov = a @ a.T + 0.5 * np.eye(3)
    if covariance_type == "diag":
        cov = np.diag(cov)
    mu = np.array([1.0, -2.0, 0.5])
    g = G.from_params(
        np.ones(1, np.float32),
        mu[None].astype(np.float32),
        cov[None].astype(np.float32),
        covariance_type,
    )
    z0 = r.normal(size=(5, 3)).astype(np.float32) * 3
    lam = 0.7
    z = np.asarray(G.purify(g, z0, proximity=lam, n_steps=400))
    prec = np.linalg.inv(np.diag(cov) if covariance_type == "diag" else cov)
    expected = np.linalg.solve(prec + lam * np.eye(3), (prec @ mu)[:, None] + lam * z0.T).T
    np.testing.assert_allclose(z, expected, atol=1e-4)
    assert bool(jnp.all(G.log_prob(g, z) >= G.log_prob(g, z0)))


def test_bad_input():
    x, _ = _mixture(50, seed=0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="feats"):
        G.fit(bad, G.EMOptions(2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="feats"):
        G.fit(x[:, 0], G.EMOptions(2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="covariance_type"):
        G.EMOptions(2, covariance_type="tied")
    with pytest.raises(ValueError, match="n_components"):
        G.EMOptions(0)
    with pytest.raises(ValueError, match="reg_covar"):
        G.EMOptions(2, reg_covar=-1.0)
    with pytest.raises(ValueError, match="options"):
        G.fit(x, {"n_components": 2}, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        G.fit_class_conditional(
            x,
            np.r_[np.zeros(49), [1]].astype(np.int32) * 0 + np.arange(50) % 2,
            G.EMOptions(2),
            num_classes=3,
            key=jax.random.key(0),
        )
