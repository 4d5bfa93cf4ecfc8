"""Each SDE's perturbation kernel against its own drift and diffusion, integrated by scipy.

For dx = f(t) x dt + g(t) dW: dm/dt = f m (m(0) = 1) and d var/dt = 2 f var + g^2, started at the
kernel's own var(0) (0 for VP / sub-VP, sigma_min^2 for VE as in score_sde).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.stats import norm

import jaxrej

SDES = [jaxrej.VPSDE(), jaxrej.SubVPSDE(), jaxrej.VESDE(), jaxrej.VPSDE(beta_min=0.5, beta_max=5.0)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: repr(s))
def test_kernel_matches_moment_odes(sde, x64):
    f = lambda t: float(sde.drift_coeff(jnp.float64(t)))  # noqa: E731
    g2 = lambda t: float(sde.diffusion(jnp.float64(t))) ** 2  # noqa: E731
    v0 = float(sde.std(jnp.float64(0.0))) ** 2
    ts = np.array([1e-3, 0.05, 0.3, 0.7, 1.0])
    sol = solve_ivp(
        lambda t, y: [f(t) * y[0], 2 * f(t) * y[1] + g2(t)],
        (0.0, 1.0),
        [1.0, v0],
        t_eval=ts,
        rtol=1e-11,
        atol=1e-13,
        method="DOP853",
    )
    np.testing.assert_allclose(np.asarray(sde.mean_coeff(jnp.asarray(ts))), sol.y[0], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(sde.std(jnp.asarray(ts))) ** 2, sol.y[1], rtol=1e-6)


@pytest.mark.parametrize("sde", SDES[:3], ids=lambda s: repr(s))
def test_prior(sde):
    z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)), jnp.float32)
    want = norm.logpdf(np.asarray(z, np.float64), scale=sde.prior_std).sum()
    np.testing.assert_allclose(sde.prior_logp(z), want, rtol=1e-6)
    sample = sde.prior_sample(jax.random.key(0), (20000,))
    assert abs(float(jnp.std(sample)) / sde.prior_std - 1.0) < 0.03


def test_small_t_is_accurate_in_float32():
    """std near t = 0 keeps its relative accuracy in float32 (expm1, not 1 - exp)."""
    t = 1e-6
    got = float(jaxrej.VPSDE().std(jnp.float32(t)))
    want = math.sqrt(-math.expm1(-0.5 * t**2 * 19.9 - t * 0.1))
    assert abs(got / want - 1.0) < 1e-5


def test_bad_parameters():
    with pytest.raises(ValueError, match="beta_min"):
        jaxrej.VPSDE(beta_min=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        jaxrej.SubVPSDE(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="sigma_max"):
        jaxrej.VESDE(sigma_min=1.0, sigma_max=0.5)
