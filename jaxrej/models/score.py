"""Turn a noise-predicting network into the contract's score function.

score_sde's noise parametrisation: the network predicts eps in x(t) = m(t) x(0) + std(t) eps,
so the score is  s_theta(x, t, y) = -eps_theta(x, t, y) / std(t)   (Song et al. 2021, app. C).

    score_fn = make_score_fn(net, sde)
    score_fn(params, x, t, y) -> shaped like x     # ONE example: x event-shaped, t scalar, y int scalar
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ScoreFn = Callable[[object, jax.Array, jax.Array, jax.Array], jax.Array]


def make_noise_fn(net: nn.Module) -> ScoreFn:
    """eps_fn(params, x, t, y) for one example: the net applied to a batch of one."""

    def eps_fn(params, x, t, y):
        t = jnp.asarray(t, dtype=x.dtype)
        y = jnp.asarray(y, dtype=jnp.int32)
        return net.apply(params, x[None], t[None], y[None])[0]

    return eps_fn


def make_score_fn(net: nn.Module, sde) -> ScoreFn:
    """score_fn(params, x, t, y) = -eps(x, t, y) / sde.std(t), for ONE example (vmap to batch).

    One function per equal (net, sde) pair (a flax module and an SDE compare and hash by their
    fields): a computation jitted with the score function static (a scorer's solve, the training
    step) compiles once per process however often a run is loaded (`jaxrej demo`, a resumed
    run, evaluate's scorers); an unhashable net gets a new function each call.

    eps = net(x, t, y), or, for a net with `precondition` set, the net's output F on a rescaled
    input added to the best linear prediction for data of per-dimension mean mu and std s
    (net.data_mean, net.data_std; the noise-prediction form of Karras et al. 2022's
    preconditioning):

        eps = std (x - m mu) / v + c_out F((x - m mu) / sqrt(v), t, y),
        v = m^2 s^2 + std^2,  c_out = m s / sqrt(v),   m, std: the SDE's perturbation kernel at t.

    The first term is E[z | x_t] for Gaussian data; F predicts the rest at unit scale. Without it
    a network whose hidden width is below the data's dimension cannot even represent the
    identity that eps ~ x_t is at large t (benchmarks/results/mnist_sbgc_curve.md).

    A net with `atoms` (G groups of pixel-value bins; MNIST's pixels pile up in the bin of level 0
    and in the levels 251-255) outputs G more channels a_1..a_G, and the prediction is the
    posterior mean under a (G + 1)-part prior per pixel, "group g" (a weighted mixture of uniform
    bins) or "the rest":
        eps = sum_g pi_g E[z | x_t, g] + pi_0 eps_rest,
        pi = softmax(0, a_1 + log p(x_t | 1), ..., a_G + log p(x_t | G)),
    with E[z | x_t, g] and log p(x_t | g) in closed form (`group_posterior`), eps_rest the
    prediction above. The closed form resolves the bins at any noise level, which a network of
    the scaled input cannot: its inputs differ by std / s there.
    """
    try:
        return _cached_score_fn(net, sde)
    except TypeError:  # a field that does not hash
        return _score_fn(net, sde)


@functools.lru_cache(maxsize=64)
def _cached_score_fn(net: nn.Module, sde) -> ScoreFn:
    return _score_fn(net, sde)


def _score_fn(net: nn.Module, sde) -> ScoreFn:
    """`make_score_fn`'s function, built anew."""
    eps_fn = make_noise_fn(net)
    if not getattr(net, "precondition", False):

        def score_fn(params, x, t, y):
            t = jnp.asarray(t, dtype=x.dtype)
            return -eps_fn(params, x, t, y) / sde.std(t)

        return score_fn
    mu, s = float(net.data_mean), float(net.data_std)
    groups = check_atoms(getattr(net, "atoms", ()))

    def preconditioned_score_fn(params, x, t, y):
        t = jnp.asarray(t, dtype=x.dtype)
        m, std = sde.mean_coeff(t), sde.std(t)
        v = jnp.square(m * s) + jnp.square(std)
        r = x - m * mu
        out = eps_fn(params, r / jnp.sqrt(v), t, y)
        if not groups:
            return -(std * r / v + (m * s / jnp.sqrt(v)) * out) / std
        eps = [std * r / v + (m * s / jnp.sqrt(v)) * out[..., 0]]
        logits = [jnp.zeros_like(x)]
        for g, bins in enumerate(groups):
            eps_g, log_p_g = group_posterior(x, m, std, bins)
            eps.append(eps_g)
            logits.append(out[..., 1 + g] + log_p_g)
        pi = jax.nn.softmax(jnp.stack(logits, -1), axis=-1)
        return -jnp.sum(pi * jnp.stack(eps, -1), -1) / std

    return preconditioned_score_fn


def log_ndtr_diff(a: jax.Array, b: jax.Array) -> jax.Array:
    """log(Phi(b) - Phi(a)) for a <= b elementwise, stable in both tails (Phi: the standard
    normal CDF); a width that underflows gives a finite log of ~1e-30 times the tail."""
    flip = a > 0  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): work in the lower tail
    lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
    la, lb = jax.scipy.special.log_ndtr(lo), jax.scipy.special.log_ndtr(hi)
    return lb + jnp.log(-jnp.expm1(jnp.minimum(la - lb, -1e-30)))


def atom_posterior(x_t, m, std, lo: float, hi: float):
    """The noise posterior of a pixel whose clean value is uniform on the bin [lo, hi]:
    x_t = m x_0 + std z, x_0 ~ U[lo, hi], z ~ N(0, 1), elementwise on x_t (any shape).

    z | x_t is N(0, 1) truncated to [alpha, beta], alpha = (x_t - m hi) / std,
    beta = (x_t - m lo) / std, so
        E[z | x_t] = (phi(alpha) - phi(beta)) / (Phi(beta) - Phi(alpha)),
        log p(x_t) = log(Phi(beta) - Phi(alpha)) - log(m (hi - lo)).
    Returns (E[z | x_t], log p(x_t)), each shaped like x_t; the mean is clipped into [alpha, beta],
    where it lies exactly, so round-off in the far tails cannot leave the interval.
    """
    alpha, beta = (x_t - m * hi) / std, (x_t - m * lo) / std
    log_z = log_ndtr_diff(alpha, beta)
    log_phi = lambda u: -0.5 * jnp.square(u) - 0.5 * jnp.log(2 * jnp.pi)  # noqa: E731
    ratio = lambda u: jnp.exp(jnp.minimum(log_phi(u) - log_z, 80.0))  # noqa: E731
    mean = jnp.clip(ratio(alpha) - ratio(beta), alpha, beta)
    return mean, log_z - jnp.log(m * (hi - lo))


def group_posterior(x_t, m, std, bins):
    """The noise posterior of a pixel whose clean value is a mixture of uniform bins: bins is a
    tuple of (lo, hi, w) (weights w > 0, normalised here), elementwise on x_t (any shape).
    Returns (E[z | x_t], log p(x_t)), each shaped like x_t: the bins' `atom_posterior`s mixed by
    their posterior weights w_j p(x_t | j) / p(x_t)."""
    means, logps = zip(*(atom_posterior(x_t, m, std, lo, hi) for lo, hi, _ in bins), strict=True)
    log_w = jnp.log(jnp.asarray([w for _, _, w in bins], x_t.dtype))
    log_w = log_w - jax.nn.logsumexp(log_w)
    joint = jnp.stack(logps, -1) + log_w  # (..., J)
    log_p = jax.nn.logsumexp(joint, axis=-1)
    post = jnp.exp(joint - log_p[..., None])
    return jnp.sum(post * jnp.stack(means, -1), -1), log_p


def check_atoms(value) -> tuple:
    """`atoms` as a tuple of groups, each a tuple of (lo, hi, w) float triples with
    0 <= lo < hi and w > 0 (lists, as read back from a config's JSON, are accepted); () off.
    ValueError naming `atoms` otherwise."""
    try:
        groups = tuple(tuple((float(lo), float(hi), float(w)) for lo, hi, w in g) for g in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"atoms: expected groups of (lo, hi, weight) bins, got {value!r}"
        ) from None
    for g in groups:
        if not g or any(not (0.0 <= lo < hi and w > 0.0) for lo, hi, w in g):
            raise ValueError(
                f"atoms: every group needs bins (lo, hi, w) with 0 <= lo < hi, w > 0; got {g!r}"
            )
    return groups


def init_params(net: nn.Module, event_shape, *, key: jax.Array):
    """Parameters of `net` for inputs of `event_shape` (initialised on a batch of one); compiled
    once per equal net and shape in a process (a run trained, then loaded to score)."""
    x = jnp.zeros((1, *tuple(event_shape)), jnp.float32)
    args = (key, x, jnp.full((1,), 0.5, jnp.float32), jnp.zeros((1,), jnp.int32))
    try:
        hash(net)
    except TypeError:  # a field that does not hash
        return jax.jit(net.init)(*args)
    return _init(net, *args)


@functools.partial(jax.jit, static_argnums=0)
def _init(net: nn.Module, key, x, t, y):
    return net.init(key, x, t, y)
