"""DSM losses and importance sampling against closed forms (Gaussian data under linear SDEs)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxrej.sde import VESDE, VPSDE, SubVPSDE
from jaxrej.training import losses

SDES = [VPSDE(0.1, 20.0), SubVPSDE(0.1, 20.0), VESDE(0.01, 50.0)]
D = 3
S = 0.7  # data std
MU = np.array([[0.5, -1.0, 2.0], [-0.3, 0.2, 0.0]], np.float32)  # class means


def _affine_score_fn(sde, a_scale):
    """s(x, t, y) = -a(t) (x - m(t) mu_y) with a = a_scale / (m^2 S^2 + std^2); a_scale=1 is exact."""

    def score_fn(params, x, t, y):
        m, sd = sde.mean_coeff(t), sde.std(t)
        a = a_scale / (m**2 * S**2 + sd**2)
        return -a * (x - m * jnp.asarray(MU)[y])

    return score_fn


def _per_dim_loss(sde, t, a_scale):
    """Closed form of E||std s + z||^2 / D at time t for the affine score (x0 ~ N(mu, S^2 I)):
    std s + z = z (1 - a std^2) - a std m (x0 - mu)  ->  (1 - a std^2)^2 + a^2 std^2 m^2 S^2."""
    m, sd = float(sde.mean_coeff(t)), float(sde.std(t))
    a = a_scale / (m**2 * S**2 + sd**2)
    return (1 - a * sd**2) ** 2 + a**2 * sd**2 * m**2 * S**2


def _data(n, key):
    ky, kx = jax.random.split(key)
    y = jax.random.randint(ky, (n,), 0, 2)
    x = jnp.asarray(MU)[y] + S * jax.random.normal(kx, (n, D))
    return x, y


def _mc(loss_kwargs, sde, score_fn, *, n=40_000, chunks=10, seed=0):
    """Mean and standard error of dsm_loss over `chunks` independent batches."""
    f = jax.jit(lambda x, y, k: losses.dsm_loss(score_fn, None, sde, x, y, key=k, **loss_kwargs))
    vals = []
    for i in range(chunks):
        k1, k2 = jax.random.split(jax.random.key(seed * 1000 + i))
        x, y = _data(n, k1)
        vals.append(float(f(x, y, k2)))
    vals = np.array(vals)
    return vals.mean(), vals.std(ddof=1) / math.sqrt(chunks)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("a_scale", [1.0, 1.3])
def test_plain_dsm_matches_closed_form(sde, a_scale):
    eps = 1e-3
    truth = integrate.quad(lambda t: _per_dim_loss(sde, t, a_scale), eps, 1.0, limit=200)[0] / (
        1 - eps
    )
    mean, se = _mc(dict(weighting="plain", eps=eps), sde, _affine_score_fn(sde, a_scale))
    assert abs(mean - truth) < 4 * se + 1e-3 * truth, (mean, se, truth)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_exact_score_is_the_minimum(sde):
    """At the exact score the plain loss equals its minimum E_t[m^2 S^2 / (m^2 S^2 + std^2)] and
    every other member of the affine family is strictly worse (same noise, paired comparison)."""
    eps = 1e-3
    minimum = integrate.quad(
        lambda t: (lambda m, sd: m**2 * S**2 / (m**2 * S**2 + sd**2))(
            float(sde.mean_coeff(t)), float(sde.std(t))
        ),
        eps, 1.0, limit=200,
    )[0] / (1 - eps)  # fmt: skip
    exact, _ = _mc(dict(weighting="plain", eps=eps), sde, _affine_score_fn(sde, 1.0), chunks=4)
    assert abs(exact - minimum) < 0.01 * minimum
    for a in (0.8, 1.2):
        other, _ = _mc(dict(weighting="plain", eps=eps), sde, _affine_score_fn(sde, a), chunks=4)
        assert other > exact


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_importance_weight_and_density(sde):
    eps = 1e-5
    # W' = w (the closed-form antiderivatives), by central differences in float64
    with jax.enable_x64(True):
        for t in (1e-3, 0.05, 0.3, 0.9):
            h = 1e-6
            fd = (
                losses.importance_cum_weight(sde, jnp.float64(t + h))
                - losses.importance_cum_weight(sde, jnp.float64(t - h))
            ) / (2 * h)
            w = losses.importance_weight(sde, jnp.float64(t))
            np.testing.assert_allclose(float(fd), float(w), rtol=1e-6)
        # w = g^2 / std^2 from the SDE's own diffusion and std
        t = 0.37
        np.testing.assert_allclose(
            float(losses.importance_weight(sde, jnp.float64(t))),
            float(sde.diffusion(t)) ** 2 / float(sde.std(t)) ** 2,
            rtol=1e-12,
        )
        # p(t) integrates to 1 on [eps, T] (split at 1e-2: w ~ 1/t near 0 for VP)
        dens = lambda t: float(losses.importance_density(sde, jnp.float64(t), eps=eps))  # noqa: E731
        total = sum(integrate.quad(dens, a, b, limit=200)[0] for a, b in [(eps, 1e-2), (1e-2, 1.0)])
        assert abs(total - 1.0) < 1e-6


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_importance_samples_follow_the_density(sde):
    eps = 1e-5
    t = np.asarray(losses.sample_importance_time(sde, (20_000,), key=jax.random.key(3), eps=eps))
    assert t.min() >= eps and t.max() <= 1.0

    def cdf(s):
        with jax.enable_x64(True):
            s = jnp.asarray(np.clip(s, eps, 1.0), jnp.float64)
            w0 = losses.importance_cum_weight(sde, jnp.float64(eps))
            w1 = losses.importance_cum_weight(sde, jnp.float64(1.0))
            return np.asarray((losses.importance_cum_weight(sde, s) - w0) / (w1 - w0))

    assert stats.kstest(t, cdf).pvalue > 1e-3


@pytest.mark.parametrize("sde", SDES[:2], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("a_scale", [1.0, 1.3])
def test_likelihood_weighting_importance_sampling_is_unbiased(sde, a_scale):
    """Uniform-t and importance-sampled likelihood-weighted estimators agree with each other and
    with the quadrature of w(t) * closed-form loss; IS has the smaller variance."""
    eps = 1e-2  # the uniform estimator's variance grows like 1/eps for VP
    truth = D * integrate.quad(
        lambda t: float(losses.importance_weight(sde, t)) * _per_dim_loss(sde, t, a_scale),
        eps, 1.0, limit=200,
    )[0] / (1 - eps)  # fmt: skip
    fn = _affine_score_fn(sde, a_scale)
    plain, se_p = _mc(dict(weighting="likelihood", reduce="sum", eps=eps), sde, fn)
    imp, se_i = _mc(
        dict(weighting="likelihood", reduce="sum", eps=eps, importance_sampling=True), sde, fn
    )
    assert abs(plain - truth) < 4 * se_p + 1e-3 * truth, (plain, se_p, truth)
    assert abs(imp - truth) < 4 * se_i + 1e-3 * truth, (imp, se_i, truth)
    assert se_i < se_p


def test_bad_options_raise():
    sde = VPSDE()
    x, y = _data(4, jax.random.key(0))
    fn = _affine_score_fn(sde, 1.0)
    with pytest.raises(ValueError, match="weighting"):
        losses.dsm_loss(fn, None, sde, x, y, key=jax.random.key(0), weighting="nope")
    with pytest.raises(ValueError, match="importance_sampling"):
        losses.dsm_loss(fn, None, sde, x, y, key=jax.random.key(0), importance_sampling=True)
    with pytest.raises(ValueError, match="eps"):
        losses.dsm_loss(fn, None, sde, x, y, key=jax.random.key(0), eps=0.0)
    with pytest.raises(ValueError, match="reduce"):
        losses.dsm_loss(fn, None, sde, x, y, key=jax.random.key(0), reduce="max")


def test_mask_excludes_rows():
    sde = VPSDE()
    x, y = _data(8, jax.random.key(1))
    fn = _affine_score_fn(sde, 1.3)
    key = jax.random.key(2)
    full = losses.dsm_loss(fn, None, sde, x, y, key=key)
    # poison the masked rows: a masked mean must ignore them entirely
    xp = x.at[5:].set(jnp.nan)
    masked = losses.dsm_loss(fn, None, sde, xp, y, key=key, mask=jnp.arange(8) < 5)
    assert np.isfinite(float(masked))
    tkey, zkey = jax.random.split(key)
    t = jax.random.uniform(tkey, (8,), minval=1e-5, maxval=1.0)
    z = jax.random.normal(zkey, x.shape)
    per = jax.vmap(lambda a, b, c, d: losses.dsm_loss_per_example(fn, None, sde, a, b, c, d))(
        x, y, t, z
    )
    np.testing.assert_allclose(float(full), float(per.mean()), rtol=1e-6)
    np.testing.assert_allclose(float(masked), float(per[:5].mean()), rtol=1e-6)
