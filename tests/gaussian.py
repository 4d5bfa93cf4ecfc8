"""Class-conditional Gaussian data: an exact score under every SDE and a closed-form ODE likelihood.

With x(0) | y ~ N(mu_y, S_y), the marginal at time t is N(a_t mu_y, a_t^2 S_y + v_t I), where a_t and
v_t below are derived here from each SDE's drift and diffusion independently of jaxrej.sde. The
probability-flow map is affine: in the eigenbasis S_y = U diag(lam) U^T each coordinate of
x - a_t mu_y scales with sqrt(lam_i(t)), lam_i(t) = a_t^2 lam_i + v_t. Hence

    log p_eps(x | y) = log prior(x_T) + 1/2 sum_i log(lam_i(T) / lam_i(eps)),
    x_T = a_T mu_y + U diag(sqrt(lam(T) / lam(eps))) U^T (x - a_eps mu_y).
"""

import jax.numpy as jnp
import numpy as np


def alpha_var(kind, t, b0=0.1, b1=20.0, smin=0.01, smax=50.0):
    """(a_t, v_t) in numpy float64 for kind in 'vp', 'subvp', 've'."""
    t = np.asarray(t, np.float64)
    if kind == "ve":
        return np.ones_like(t), smin**2 * ((smax / smin) ** (2 * t) - 1.0)
    a2 = np.exp(-0.5 * t**2 * (b1 - b0) - t * b0)
    return np.sqrt(a2), (1.0 - a2) if kind == "vp" else (1.0 - a2) ** 2


def make_params(num_classes, d, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    mus = rng.normal(size=(num_classes, d)) * scale
    covs = []
    for _ in range(num_classes):
        a = rng.normal(size=(d, d)) * 0.5
        covs.append(a @ a.T + 0.05 * np.eye(d))
    return mus, np.stack(covs)


def make_score_fn(kind, event_shape):
    """score_fn(params, x, t, y) with params = (mus (C, D), covs (C, D, D)) as jax arrays."""

    def score_fn(params, x, t, y):
        mus, covs = params
        if kind == "ve":
            a = jnp.ones_like(t)
            v = 0.01**2 * ((50.0 / 0.01) ** (2 * t) - 1.0)
        else:
            a2 = jnp.exp(-0.5 * t**2 * (20.0 - 0.1) - t * 0.1)
            a = jnp.sqrt(a2)
            v = -jnp.expm1(-0.5 * t**2 * (20.0 - 0.1) - t * 0.1)
            v = v if kind == "vp" else v**2
        d = mus.shape[1]
        cov_t = a**2 * covs[y] + v * jnp.eye(d, dtype=x.dtype)
        r = x.reshape(d) - a * mus[y]
        return -jnp.linalg.solve(cov_t, r).reshape(event_shape)

    return score_fn


def closed_form_logp(kind, mus, covs, x, y, eps, prior_std):
    """Exact ODE log-likelihood (float64 numpy) for x: (B, D), y: (B,)."""
    a_e, v_e = alpha_var(kind, eps)
    a_T, v_T = alpha_var(kind, 1.0)
    out = []
    for xi, yi in zip(np.asarray(x, np.float64), np.asarray(y), strict=True):
        lam, u = np.linalg.eigh(covs[yi])
        le, lt = a_e**2 * lam + v_e, a_T**2 * lam + v_T
        xT = a_T * mus[yi] + u @ (np.sqrt(lt / le) * (u.T @ (xi - a_e * mus[yi])))
        d = xi.size
        prior = -0.5 * np.sum(xT**2) / prior_std**2 - d * (
            0.5 * np.log(2 * np.pi) + np.log(prior_std)
        )
        out.append(prior + 0.5 * np.sum(np.log(lt / le)))
    return np.array(out)
