"""The class score of analysis by synthesis: a bound on log p(x | y) at a latent z.

    log_joint(x, G(z), z)  = log N(x; G(z), sigma^2 I_D) + log N(z; 0, I_d)          (ABS's objective)
    linearised_elbo(x, z)  = log_joint + (d/2) log 2 pi - 1/2 log det(I_d + J^T J / sigma^2)

J = dG/dz at z (D, d). linearised_elbo is the ELBO E_q[log p(x, z)] + H(q) of the Gaussian
q = N(z, S*), S* = (I + J^T J / sigma^2)^-1 (the best covariance), with the decoder linearised
at z: for a linear decoder G(z) = W z + b it is an exact ELBO, so it is <= log p(x) =
log N(x; b, W W^T + sigma^2 I) for every z, with equality at the posterior mean (where the log
joint is largest). Maximising the log joint over z and adding the correction at the optimum is
the Laplace approximation of log p(x | y).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOG_2PI = float(jnp.log(2 * jnp.pi))


def log_gaussian(x: jax.Array, mean: jax.Array, sigma: float) -> jax.Array:
    """log N(x; mean, sigma^2 I) of one example (any shape, summed) -> scalar."""
    r = (x - mean).reshape(-1)
    return -0.5 * jnp.sum(r * r) / sigma**2 - r.size * (jnp.log(sigma) + 0.5 * LOG_2PI)


def log_prior(z: jax.Array) -> jax.Array:
    """log N(z; 0, I_d), z (d,) -> scalar."""
    return -0.5 * jnp.sum(z * z) - 0.5 * z.size * LOG_2PI


def log_joint(x: jax.Array, mean: jax.Array, z: jax.Array, *, sigma: float) -> jax.Array:
    """log N(x; mean, sigma^2 I) + log N(z; 0, I) for one example; mean = G(z) (D,)."""
    return log_gaussian(x, mean, sigma) + log_prior(z)


def laplace_correction(jac: jax.Array, *, sigma: float) -> jax.Array:
    """(d/2) log 2 pi - 1/2 log det(I_d + J^T J / sigma^2), jac (D, d) -> scalar (<= d/2 log 2pi)."""
    d = jac.shape[-1]
    a = jnp.eye(d, dtype=jac.dtype) + jac.T @ jac / sigma**2
    return 0.5 * d * LOG_2PI - 0.5 * jnp.linalg.slogdet(a)[1]


def linearised_elbo(
    decode_fn: Callable[[jax.Array], jax.Array], x: jax.Array, z: jax.Array, *, sigma: float
) -> jax.Array:
    """The ELBO of q = N(z, S*) under the decoder linearised at z (module doc); decode_fn:
    z (d,) -> mean (D,); x (D,), z (d,) -> scalar. The Jacobian costs d forward-mode passes."""
    mean, jac = decode_fn(z), jax.jacfwd(decode_fn)(z)
    return log_joint(x, mean, z, sigma=sigma) + laplace_correction(
        jac.reshape(-1, z.shape[0]), sigma=sigma
    )
