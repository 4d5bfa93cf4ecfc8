"""Gaussian mixture heads on classifier features: EM in JAX, k-means++ init, purification.

p(z) = sum_k pi_k N(z; mu_k, Sigma_k), Sigma_k diagonal ("diag") or dense ("full").
EM (Dempster et al. 1977; Bishop 2006, eqs. 9.23-9.28):
  E: r_nk = pi_k N(z_n; mu_k, Sigma_k) / sum_j pi_j N(z_n; mu_j, Sigma_j)   (log-sum-exp)
  M: N_k = sum_n w_n r_nk, pi_k = N_k / sum_j N_j, mu_k = sum_n w_n r_nk z_n / N_k,
     Sigma_k = sum_n w_n r_nk (z_n - mu_k)(z_n - mu_k)^T / N_k + reg_covar I
with optional sample weights w_n (the class-conditional variant fits every class at once with
w_n = [y_n = c]). Conventions follow scikit-learn's GaussianMixture: the stored
`precisions_cholesky` P_k satisfies P_k P_k^T = Sigma_k^{-1}, so
  log N(z; mu_k, Sigma_k) = -D/2 log 2 pi + sum_d log P_k[d, d] - ||(z - mu_k)^T P_k||^2 / 2,
stable in float32 (Cholesky of Sigma_k, never an explicit inverse or determinant). Data are
centred before EM (the fit is translation-equivariant) to limit float32 cancellation.

Stopping: |L_t - L_{t-1}| < tol for the mean log-likelihood L, or max_iter; n_init runs from
independent k-means++ seeds (Arthur & Vassilvitskii 2007, greedy variant), keeping the best L.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

__all__ = [
    "GMM",
    "EMOptions",
    "fit",
    "fit_class_conditional",
    "from_params",
    "log_prob",
    "class_log_prob",
    "component_log_prob",
    "responsibilities",
    "purify",
    "kmeans_plusplus",
]

COVARIANCE_TYPES = ("diag", "full")


@dataclasses.dataclass(frozen=True)
class EMOptions:
    """How a mixture is fitted (hashable: the compiled fit's static argument).

    n_components: K per mixture; covariance_type: "diag" | "full"; reg_covar: added to each
    covariance's diagonal; tol: stop when the mean log-likelihood moves by less; max_iter: EM
    iterations at most; n_init: independent k-means++ seeds, the best kept; kmeans_iters: Lloyd
    steps before the first M step. A bad value raises ValueError naming the field.
    """

    n_components: int
    covariance_type: str = "diag"
    reg_covar: float = 1e-6
    tol: float = 1e-3
    max_iter: int = 100
    n_init: int = 1
    kmeans_iters: int = 10

    def __post_init__(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type: expected one of {COVARIANCE_TYPES}, got "
                             f"{self.covariance_type!r}")  # fmt: skip
        for name, least in (("n_components", 1), ("max_iter", 1), ("n_init", 1),
                            ("kmeans_iters", 0)):  # fmt: skip
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= least):
                raise ValueError(f"{name}: expected an int >= {least}, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("reg_covar", "tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"{name}: expected a non-negative number, got {v!r}")
            object.__setattr__(self, name, float(v))


@struct.dataclass
class GMM:
    """A fitted mixture. Shapes for K components in D dims (a leading (C,) for class-conditional).

    weights (K,), means (K, D), covariances (K, D) | (K, D, D), precisions_cholesky like
    covariances; lower_bound () the final mean training log-likelihood; n_iter (), converged ().
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    covariance_type: str = struct.field(pytree_node=False, default="diag")


# ----------------------------------------------------------------------------- densities


def _chunk(k, n, d):
    """Components per step of a lax.map so one step holds about 2^22 floats."""
    return max(1, min(k, (1 << 22) // max(1, n * d)))


def _precisions_cholesky(cov, covariance_type):
    if covariance_type == "diag":
        return jax.lax.rsqrt(cov)
    d = cov.shape[-1]
    chol = jnp.linalg.cholesky(cov)  # Sigma = L L^T  ->  Sigma^-1 = L^-T L^-1, P = L^-T
    eye = jnp.broadcast_to(jnp.eye(d, dtype=cov.dtype), cov.shape)
    return jnp.swapaxes(solve_triangular(chol, eye, lower=True), -1, -2)


def _log_gaussian(x, means, prec_chol, covariance_type):
    """log N(x_n; mu_k, Sigma_k) for x (N, D) -> (N, K)."""
    n, d = x.shape
    if covariance_type == "diag":
        prec = jnp.square(prec_chol)  # (K, D)
        quad = (
            jnp.square(x) @ prec.T
            - 2.0 * x @ (means * prec).T
            + jnp.sum(jnp.square(means) * prec, axis=1)
        )
        quad = jnp.maximum(quad, 0.0)
        log_det = jnp.sum(jnp.log(prec_chol), axis=1)
    else:

        def one(args):
            mu, p = args
            return jnp.sum(jnp.square((x - mu) @ p), axis=1)

        quad = jax.lax.map(one, (means, prec_chol), batch_size=_chunk(means.shape[0], n, d)).T
        log_det = jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=1)
    return -0.5 * (d * math.log(2 * math.pi) + quad) + log_det


def _weighted_log_prob(params, x, covariance_type):
    weights, means, _, prec_chol = params
    return _log_gaussian(x, means, prec_chol, covariance_type) + jnp.log(weights)


def _m_step(x, w, resp, reg_covar, covariance_type):
    """Weighted M step; resp (N, K), w (N,) -> (weights, means, covariances, prec_chol)."""
    n, d = x.shape
    r = resp * w[:, None]
    nk = jnp.sum(r, axis=0) + 10 * jnp.finfo(x.dtype).eps
    means = (r.T @ x) / nk[:, None]
    if covariance_type == "diag":
        cov = (r.T @ jnp.square(x)) / nk[:, None] - jnp.square(means)
        cov = jnp.maximum(cov, 0.0) + reg_covar
    else:

        def one(args):
            mu, rk, nkk = args
            diff = x - mu
            return (rk[:, None] * diff).T @ diff / nkk

        cov = jax.lax.map(one, (means, r.T, nk), batch_size=_chunk(means.shape[0], n, d))
        cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + reg_covar * jnp.eye(d, dtype=x.dtype)
    weights = nk / jnp.sum(nk)
    return weights, means, cov, _precisions_cholesky(cov, covariance_type)


# ----------------------------------------------------------------------------- k-means++


def _sq_dist(x, c):
    """||x_n - c||^2 for x (N, D), c (D,) -> (N,)."""
    return jnp.sum(jnp.square(x - c), axis=1)


def kmeans_plusplus(
    x: jax.Array,
    w: jax.Array,
    n_clusters: int,
    *,
    key: jax.Array,
    n_local_trials: int | None = None,
) -> jax.Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant).

    x (N, D), w (N,) non-negative sample weights -> centres (n_clusters, D). Each new centre
    is the best of `n_local_trials` candidates drawn with probability prop. to w_n D(x_n)^2.
    """
    n, d = x.shape
    trials = n_local_trials or 2 + int(math.log(n_clusters))
    k0, key = jax.random.split(key)
    logw = jnp.log(jnp.maximum(w, 0.0))
    first = jax.random.categorical(k0, logw)
    centres = jnp.zeros((n_clusters, d), x.dtype).at[0].set(x[first])
    closest = _sq_dist(x, x[first])

    def body(i, carry):
        centres, closest = carry
        ki = jax.random.fold_in(key, i)
        cand = jax.random.categorical(ki, logw + jnp.log(closest), shape=(trials,))
        d_cand = jax.vmap(lambda c: jnp.minimum(closest, _sq_dist(x, x[c])))(cand)  # (T, N)
        best = jnp.argmin(d_cand @ w)
        return centres.at[i].set(x[cand[best]]), d_cand[best]

    centres, _ = jax.lax.fori_loop(1, n_clusters, body, (centres, closest))
    return centres


def _lloyd(x, w, centres, n_iter):
    """n_iter weighted Lloyd steps; an empty cluster keeps its centre."""

    def step(_, c):
        d2 = jnp.sum(jnp.square(x), 1)[:, None] - 2 * x @ c.T + jnp.sum(jnp.square(c), 1)
        onehot = jax.nn.one_hot(jnp.argmin(d2, axis=1), c.shape[0], dtype=x.dtype) * w[:, None]
        cnt = jnp.sum(onehot, axis=0)
        new = (onehot.T @ x) / jnp.maximum(cnt, 1e-12)[:, None]
        return jnp.where(cnt[:, None] > 0, new, c)

    return jax.lax.fori_loop(0, n_iter, step, centres)


# ----------------------------------------------------------------------------- EM


def _fit_once(x, w, key, o: EMOptions):
    n_components, covariance_type, reg_covar = o.n_components, o.covariance_type, o.reg_covar
    centres = kmeans_plusplus(x, w, n_components, key=key)
    centres = _lloyd(x, w, centres, o.kmeans_iters)
    d2 = jnp.sum(jnp.square(x), 1)[:, None] - 2 * x @ centres.T + jnp.sum(jnp.square(centres), 1)
    resp = jax.nn.one_hot(jnp.argmin(d2, axis=1), n_components, dtype=x.dtype)
    params = _m_step(x, w, resp, reg_covar, covariance_type)
    wsum = jnp.sum(w)

    def cond(state):
        _, _, it, converged = state
        return (it < o.max_iter) & ~converged

    def body(state):
        params, lb_prev, it, _ = state
        wlp = _weighted_log_prob(params, x, covariance_type)
        lpn = logsumexp(wlp, axis=1)
        lb = jnp.sum(w * lpn) / wsum
        params = _m_step(x, w, jnp.exp(wlp - lpn[:, None]), reg_covar, covariance_type)
        return params, lb, it + 1, jnp.abs(lb - lb_prev) < o.tol

    init = (params, jnp.array(-jnp.inf, x.dtype), jnp.array(0, jnp.int32), jnp.array(False))
    params, _, it, converged = jax.lax.while_loop(cond, body, init)
    lpn = logsumexp(_weighted_log_prob(params, x, covariance_type), axis=1)
    lb = jnp.sum(w * lpn) / wsum  # the likelihood of the parameters returned
    return params, lb, it, converged


@partial(jax.jit, static_argnames="o")
def _fit(x, w, key, o: EMOptions):
    shift = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    run = partial(_fit_once, x - shift, w, o=o)
    keys = (
        key[None] if o.n_init == 1 else jax.random.split(key, o.n_init)
    )  # run i uses split(key)[i]
    params, lb, it, conv = jax.lax.map(run, keys)
    best = jnp.argmax(jnp.where(jnp.isfinite(lb), lb, -jnp.inf))
    pick = lambda a: a[best]  # noqa: E731
    weights, means, cov, prec_chol = jax.tree.map(pick, params)
    return GMM(
        weights=weights,
        means=means + shift,
        covariances=cov,
        precisions_cholesky=prec_chol,
        lower_bound=lb[best],
        n_iter=it[best],
        converged=conv[best],
        covariance_type=o.covariance_type,
    )


def _check_feats(feats, name="feats", min_rows=1):
    shape = np.shape(feats)
    if len(shape) != 2 or shape[0] < min_rows or shape[1] < 1:
        raise ValueError(f"{name}: expected a (N, D) array with N >= {min_rows}, got shape {shape}")
    if not np.all(np.isfinite(np.asarray(feats))):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")


def fit(
    feats: jax.Array,
    options: EMOptions,
    *,
    key: jax.Array,
    sample_weight: jax.Array | None = None,
    dtype=jnp.float32,
) -> GMM:
    """EM fit of a mixture to feats (N, D) -> GMM (class-agnostic head).

    k-means++ seeding, then `options.kmeans_iters` Lloyd steps give hard responsibilities for the
    first M step (scikit-learn's default init); then EM until |dL| < options.tol. Runs in `dtype`
    (float32 by default; float64 needs jax_enable_x64). Raises ValueError on bad input.
    """
    _check_em_options(options)
    _check_feats(feats, min_rows=options.n_components)
    x = jnp.asarray(feats, dtype)
    w = jnp.ones(x.shape[0], dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
    if w.shape != (x.shape[0],):
        raise ValueError(f"sample_weight: expected shape ({x.shape[0]},), got {w.shape}")
    return _fit(x, w, key, options)


def fit_class_conditional(
    feats: jax.Array,
    labels: jax.Array,
    options: EMOptions,
    *,
    num_classes: int,
    key: jax.Array,
    dtype=jnp.float32,
) -> GMM:
    """One mixture per class, p(z | y = c), fitted together (vmap over classes, weights [y = c]).

    feats (N, D), labels (N,) int -> GMM whose arrays carry a leading (C,) axis.
    Every class needs at least options.n_components examples.
    """
    _check_em_options(options)
    _check_feats(feats)
    y = np.asarray(labels)
    if y.shape != (np.shape(feats)[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected an int array of shape ({np.shape(feats)[0]},)")
    counts = np.bincount(y, minlength=num_classes) if y.size and y.min() >= 0 else None
    if counts is None or counts.size != num_classes:
        raise ValueError(f"labels: expected values in [0, {num_classes})")
    small = np.flatnonzero(counts < options.n_components)
    if small.size:
        raise ValueError(f"labels: class(es) {small.tolist()} have fewer than "
                         f"n_components={options.n_components} examples")  # fmt: skip
    x = jnp.asarray(feats, dtype)
    w = (jnp.asarray(y)[None, :] == jnp.arange(num_classes)[:, None]).astype(dtype)  # (C, N)
    keys = jax.random.split(key, num_classes)
    one = partial(_fit, o=options)
    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))(x, w, keys)


def _check_em_options(options):
    if not isinstance(options, EMOptions):
        raise ValueError(f"options: expected a jaxrej.heads.gmm.EMOptions, got {options!r}")


def from_params(
    weights: jax.Array, means: jax.Array, covariances: jax.Array, covariance_type: str = "diag"
) -> GMM:
    """A GMM from given parameters (e.g. scikit-learn's), computing the precision Cholesky."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type: expected one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )
    cov = jnp.asarray(covariances)
    return GMM(
        weights=jnp.asarray(weights),
        means=jnp.asarray(means),
        covariances=cov,
        precisions_cholesky=_precisions_cholesky(cov, covariance_type),
        lower_bound=jnp.array(jnp.nan),
        n_iter=jnp.array(0),
        converged=jnp.array(True),
        covariance_type=covariance_type,
    )


# ----------------------------------------------------------------------------- evaluation


def _params(gmm):
    return gmm.weights, gmm.means, gmm.covariances, gmm.precisions_cholesky


@jax.jit
def component_log_prob(gmm: GMM, feats: jax.Array) -> jax.Array:
    """log pi_k + log N(z_n; mu_k, Sigma_k), (N, K)."""
    x = jnp.asarray(feats, gmm.means.dtype)
    return _weighted_log_prob(_params(gmm), x, gmm.covariance_type)


@jax.jit
def log_prob(gmm: GMM, feats: jax.Array) -> jax.Array:
    """log p(z_n) = logsumexp_k (log pi_k + log N(z_n; mu_k, Sigma_k)), (N,)."""
    return logsumexp(component_log_prob(gmm, feats), axis=1)


@jax.jit
def responsibilities(gmm: GMM, feats: jax.Array) -> jax.Array:
    """Posterior r_nk = p(k | z_n), (N, K); rows sum to one."""
    return jax.nn.softmax(component_log_prob(gmm, feats), axis=1)


@jax.jit
def class_log_prob(gmm: GMM, feats: jax.Array) -> jax.Array:
    """log p(z_n | y = c) for a class-conditional GMM (leading (C,) axis) -> (N, C)."""
    return jax.vmap(log_prob, in_axes=(0, None), out_axes=1)(gmm, feats)


def _lipschitz(gmm):
    """An upper bound on the largest eigenvalue of any Sigma_k^{-1}."""
    p2 = jnp.square(gmm.precisions_cholesky)
    return jnp.max(p2) if gmm.covariance_type == "diag" else jnp.max(jnp.sum(p2, axis=(-1, -2)))


@partial(jax.jit, static_argnames=("n_steps",))
def purify(
    gmm: GMM,
    feats: jax.Array,
    *,
    proximity: float = 1.0,
    n_steps: int = 50,
    step_size: float | None = None,
) -> jax.Array:
    """Feature purification: gradient descent on E(z) = -log p(z) + lambda/2 ||z - z0||^2.

    z_{t+1} = z_t - eta grad E(z_t), z_0 = feats (N, D), lambda = `proximity`; moves features
    toward higher mixture likelihood while staying near the input (the GMM head's appendix).
    eta defaults to 1 / (lambda + max eig Sigma_k^{-1}) (bounded by the Frobenius norm), a
    step that is stable for every Gaussian component. Returns the purified features (N, D).
    """
    z0 = jnp.asarray(feats, gmm.means.dtype)
    eta = 1.0 / (proximity + _lipschitz(gmm)) if step_size is None else step_size

    def energy(z):
        return -jnp.sum(log_prob(gmm, z)) + 0.5 * proximity * jnp.sum(jnp.square(z - z0))

    grad = jax.grad(energy)
    return jax.lax.fori_loop(0, n_steps, lambda _, z: z - eta * grad(z), z0)
