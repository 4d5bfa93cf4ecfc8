"""Forward SDEs dx = f(x, t) dt + g(t) dW on t in [0, T], with score_sde's conventions.

VP and sub-VP: beta(t) = beta_min + t (beta_max - beta_min), prior N(0, I).
VE: sigma(t) = sigma_min (sigma_max / sigma_min)^t, prior N(0, sigma_max^2 I).
Every SDE here has a linear drift f(x, t) = drift_coeff(t) * x, so its perturbation
kernel is Gaussian: x(t) | x(0) ~ N(mean_coeff(t) x(0), std(t)^2 I) (Song et al. 2021, eqs. 29-33).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import struct


class SDE:
    """Common interface. Subclasses define drift_coeff, diffusion, log_mean_coeff, std, prior_std."""

    T: float = 1.0

    def drift(self, x, t):
        """f(x, t) = drift_coeff(t) * x, shaped like x."""
        return self.drift_coeff(t) * x

    def mean_coeff(self, t):
        """m(t) with E[x(t) | x(0)] = m(t) x(0)."""
        return jnp.exp(self.log_mean_coeff(t))

    def marginal(self, x0, t):
        """(mean, std) of the perturbation kernel p_0t(x(t) | x(0) = x0)."""
        return self.mean_coeff(t) * x0, self.std(t)

    def prior_logp(self, z):
        """log N(z; 0, prior_std^2 I) for one example z (any shape) -> scalar."""
        s = self.prior_std
        d = z.size
        return -0.5 * jnp.sum(jnp.square(z)) / s**2 - d * (
            0.5 * math.log(2 * math.pi) + math.log(s)
        )

    def prior_sample(self, key, shape, dtype=jnp.float32):
        """A sample of the prior N(0, prior_std^2 I) with `shape`."""
        import jax

        return self.prior_std * jax.random.normal(key, shape, dtype)


def _check_positive(**kw):
    for name, v in kw.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a positive finite number, got {v!r}")


@struct.dataclass
class _LinearBeta(SDE):
    """beta(t) = beta_min + t (beta_max - beta_min), drift -beta(t) x / 2, prior N(0, I)."""

    beta_min: float = struct.field(pytree_node=False, default=0.1)
    beta_max: float = struct.field(pytree_node=False, default=20.0)

    def __post_init__(self):
        _check_positive(beta_min=self.beta_min, beta_max=self.beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max: expected >= beta_min={self.beta_min}, got {self.beta_max}")

    prior_std = 1.0

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def log_mean_coeff(self, t):
        """log m(t) = -int_0^t beta / 2 = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min


@struct.dataclass
class VPSDE(_LinearBeta):
    """Variance-preserving SDE (DDPM in the continuum limit): f = -beta(t) x / 2, g = sqrt(beta(t))."""

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    def std(self, t):
        """sqrt(1 - m(t)^2), computed as sqrt(-expm1(2 log m)) to stay accurate near t = 0."""
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_mean_coeff(t)))


@struct.dataclass
class SubVPSDE(_LinearBeta):
    """Sub-VP SDE: f = -beta(t) x / 2, g^2 = beta(t) (1 - exp(-2 int_0^t beta)); std(t) = 1 - m(t)^2."""

    def diffusion(self, t):
        # 1 - exp(-2 int beta) = -expm1(4 log m)
        return jnp.sqrt(self.beta(t) * -jnp.expm1(4.0 * self.log_mean_coeff(t)))

    def std(self, t):
        return -jnp.expm1(2.0 * self.log_mean_coeff(t))


@struct.dataclass
class VESDE(SDE):
    """Variance-exploding SDE: f = 0, g = sigma(t) sqrt(2 log(sigma_max / sigma_min)), std(t) = sigma(t).

    As in score_sde, std(t) = sigma(t) is the perturbation std used for training; the SDE itself
    adds variance sigma(t)^2 - sigma_min^2 from t = 0.
    """

    sigma_min: float = struct.field(pytree_node=False, default=0.01)
    sigma_max: float = struct.field(pytree_node=False, default=50.0)

    def __post_init__(self):
        _check_positive(sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max: expected > sigma_min={self.sigma_min}, got {self.sigma_max}"
            )

    @property
    def prior_std(self):
        return self.sigma_max

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def log_mean_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def std(self, t):
        return self.sigma(t)
