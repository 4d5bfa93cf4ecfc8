"""The class score of analysis by synthesis: a bound on log p(x | y) at a latent z.

The decoder's raw output h = H(z) (D,) defines the pixel likelihood (`ABSModel.likelihood`):

    gaussian:   log p(x | h) = log N(x; m(h), sigma^2 I),  m = sigmoid(h) ('sigmoid') or h ('linear')
    bernoulli:  log p(x | h) = sum_i x_i h_i - softplus(h_i)      (cross-entropy; logits h; x in [0, 1])

    log_joint(x, h, z)     = log p(x | h) + log N(z; 0, I_d)                          (ABS's objective)
    linearised_elbo(x, z)  = log_joint + (d/2) log 2 pi - 1/2 log det(I_d + J^T W J)

J = dH/dz at z (D, d), W the likelihood's curvature in h (the Gauss-Newton / Fisher weight):
m'(h)^2 / sigma^2 (gaussian), sigmoid(h)(1 - sigmoid(h)) (bernoulli). linearised_elbo is the ELBO
E_q[log p(x, z)] + H(q) of the Gaussian q = N(z, S*), S* = (I + J^T W J)^-1, with the model
linearised at z: for a linear-Gaussian decoder G(z) = A z + b it is an exact ELBO, so it is
<= log p(x) = log N(x; b, A A^T + sigma^2 I) for every z, with equality at the posterior mean
(where the log joint is largest). Maximising the log joint over z and adding the correction at
the optimum is the Laplace approximation of log p(x | y).

Both likelihoods are linear in x given h: log p(x | h) = <x, a(h)> + b(h) + const(x), which scores
a bank of decoded latents against a batch with one matmul (`linear_terms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2 * math.pi)


def log_gaussian(x: jax.Array, mean: jax.Array, sigma: float) -> jax.Array:
    """log N(x; mean, sigma^2 I) of one example (any shape, summed) -> scalar."""
    r = (x - mean).reshape(-1)
    return -0.5 * jnp.sum(r * r) / sigma**2 - r.size * (jnp.log(sigma) + 0.5 * LOG_2PI)


def log_prior(z: jax.Array) -> jax.Array:
    """log N(z; 0, I_d), z (d,) -> scalar."""
    return -0.5 * jnp.sum(z * z) - 0.5 * z.size * LOG_2PI


def mean_image(model, h: jax.Array) -> jax.Array:
    """The pixel mean of raw decoder output h: sigmoid(h), or h for output='linear'."""
    return h if model.output == "linear" else jax.nn.sigmoid(h)


def log_likelihood(model, x: jax.Array, h: jax.Array) -> jax.Array:
    """log p(x | h) of one example (module doc): x, h (D,) -> scalar."""
    if model.likelihood == "bernoulli":
        return jnp.sum(x * h - jax.nn.softplus(h))
    return log_gaussian(x, mean_image(model, h), model.sigma)


def log_joint(model, x: jax.Array, h: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x | h) + log N(z; 0, I) of one example; h = H(z) (D,), z (d,)."""
    return log_likelihood(model, x, h) + log_prior(z)


def curvature(model, h: jax.Array) -> jax.Array:
    """W (D,): the likelihood's Gauss-Newton weight in h (module doc)."""
    if model.likelihood == "bernoulli":
        p = jax.nn.sigmoid(h)
        return p * (1 - p)
    if model.output == "linear":
        return jnp.full_like(h, 1.0 / model.sigma**2)
    p = jax.nn.sigmoid(h)
    return (p * (1 - p)) ** 2 / model.sigma**2


def laplace_correction(model, h: jax.Array, jac: jax.Array) -> jax.Array:
    """(d/2) log 2 pi - 1/2 log det(I_d + J^T W J), h (D,), jac = dh/dz (D, d) -> scalar
    (<= d/2 log 2pi)."""
    d = jac.shape[-1]
    a = jnp.eye(d, dtype=jac.dtype) + jac.T @ (curvature(model, h)[:, None] * jac)
    return 0.5 * d * LOG_2PI - 0.5 * jnp.linalg.slogdet(a)[1]


def linearised_elbo(model, raw_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                    z: jax.Array) -> jax.Array:  # fmt: skip
    """The ELBO of q = N(z, S*) under the model linearised at z (module doc); raw_fn: z (d,) ->
    h (D,); x (D,), z (d,) -> scalar. The Jacobian costs d forward-mode passes."""
    h, jac = raw_fn(z), jax.jacfwd(raw_fn)(z)
    return log_joint(model, x, h, z) + laplace_correction(model, h, jac.reshape(-1, z.shape[0]))


def linear_terms(model, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a (..., D), b (...,)) with log p(x | h) = <x, a> + b + (a term of x alone), for raw decoder
    outputs h (..., D): scores of many latents against many rows by one matmul."""
    if model.likelihood == "bernoulli":
        return h, -jnp.sum(jax.nn.softplus(h), axis=-1)
    g = mean_image(model, h)
    return g / model.sigma**2, -0.5 * jnp.sum(g * g, axis=-1) / model.sigma**2
