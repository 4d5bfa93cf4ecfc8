"""Baseline confidence scores: maximum softmax probability, temperature scaling, Mahalanobis.

* MSP (Hendrycks & Gimpel 2017): s(x) = max_c softmax(f(x))_c.
* Temperature scaling (Guo et al. 2017): softmax(f(x) / T) with T = argmin_T NLL on validation
  data. NLL(beta) with beta = 1/T is convex in beta (a log-sum-exp of linear functions), so its
  derivative is monotone and T is found by bisection on d NLL / d beta.
* Mahalanobis (Lee et al. 2018, eq. 2, no input preprocessing): class means mu_c and one tied
  covariance Sigma = (1/N) sum_n (z_n - mu_{y_n})(z_n - mu_{y_n})^T; class score
  -(z - mu_c)^T Sigma^{-1} (z - mu_c) / 2 (Cholesky solve), confidence = max over classes.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.linalg import solve_triangular

__all__ = [
    "msp",
    "nll",
    "fit_temperature",
    "Mahalanobis",
    "fit_mahalanobis",
    "mahalanobis_class_scores",
    "mahalanobis_score",
]


def _check_logits(logits, labels=None):
    shape = np.shape(logits)
    if len(shape) != 2 or shape[1] < 2:
        raise ValueError(f"logits: expected a (N, C) array with C >= 2, got shape {shape}")
    if labels is not None and np.shape(labels) != (shape[0],):
        raise ValueError(f"labels: expected shape ({shape[0]},), got {np.shape(labels)}")


@jax.jit
def msp(logits: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """max_c softmax(logits / T)_c, (N,)."""
    return jnp.max(jax.nn.softmax(logits / temperature, axis=-1), axis=-1)


@jax.jit
def nll(logits: jax.Array, labels: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Mean negative log-likelihood of labels under softmax(logits / T)."""
    logp = jax.nn.log_softmax(logits / temperature, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


@partial(jax.jit, static_argnames=("n_iter",))
def _bisect_beta(logits, labels, beta_max, n_iter=80):
    dnll = jax.grad(lambda b: nll(logits * b, labels))

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        up = dnll(mid) > 0  # past the minimum
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    lo, hi = jax.lax.fori_loop(0, n_iter, body, (jnp.zeros(()), jnp.asarray(beta_max, jnp.float32)))
    return 0.5 * (lo + hi)


def fit_temperature(
    logits: jax.Array, labels: jax.Array, *, max_inverse_temperature: float = 100.0
) -> jax.Array:
    """T = argmin_T NLL(logits / T, labels) on validation data, a scalar > 0.

    Bisection on beta = 1/T in [0, max_inverse_temperature] (80 halvings). If the NLL still
    decreases at the upper end (separable data), T = 1 / max_inverse_temperature.
    """
    _check_logits(logits, labels)
    x = jnp.asarray(logits, jnp.float32)
    beta = _bisect_beta(x, jnp.asarray(labels, jnp.int32), float(max_inverse_temperature))
    return 1.0 / beta


@struct.dataclass
class Mahalanobis:
    """Class means (C, D) and the Cholesky factor (D, D) of the tied covariance Sigma = L L^T."""

    means: jax.Array
    chol: jax.Array


@partial(jax.jit, static_argnames=("num_classes",))
def _fit_mahalanobis(z, y, num_classes, reg):
    onehot = jax.nn.one_hot(y, num_classes, dtype=z.dtype)
    means = (onehot.T @ z) / jnp.sum(onehot, axis=0)[:, None]
    centred = z - means[y]
    cov = centred.T @ centred / z.shape[0] + reg * jnp.eye(z.shape[1], dtype=z.dtype)
    return Mahalanobis(means=means, chol=jnp.linalg.cholesky(cov))


def fit_mahalanobis(
    feats: jax.Array, labels: jax.Array, *, num_classes: int, reg: float = 1e-6
) -> Mahalanobis:
    """Class means and tied covariance (+ reg I) of feats (N, D) with labels (N,)."""
    shape = np.shape(feats)
    if len(shape) != 2:
        raise ValueError(f"feats: expected a (N, D) array, got shape {shape}")
    if not np.all(np.isfinite(np.asarray(feats))):
        raise ValueError("feats: expected finite values, found NaN or inf")
    y = np.asarray(labels)
    if y.shape != (shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected an int array of shape ({shape[0]},)")
    missing = np.setdiff1d(np.arange(num_classes), y)
    if missing.size:
        raise ValueError(f"labels: class(es) {missing.tolist()} have no example")
    return _fit_mahalanobis(jnp.asarray(feats, jnp.float32), jnp.asarray(y), num_classes, reg)


@jax.jit
def mahalanobis_class_scores(m: Mahalanobis, feats: jax.Array) -> jax.Array:
    """-(z - mu_c)^T Sigma^{-1} (z - mu_c) / 2 for feats (N, D) -> (N, C)."""
    z = jnp.asarray(feats, m.means.dtype)
    diff = z[:, None, :] - m.means[None]  # (N, C, D)
    u = solve_triangular(m.chol, diff.reshape(-1, z.shape[1]).T, lower=True)  # L^{-1} diff
    return -0.5 * jnp.sum(jnp.square(u), axis=0).reshape(z.shape[0], -1)


@jax.jit
def mahalanobis_score(m: Mahalanobis, feats: jax.Array) -> jax.Array:
    """Confidence max_c of the class scores, (N,) (Lee et al. 2018's M(x), halved)."""
    return jnp.max(mahalanobis_class_scores(m, feats), axis=1)
