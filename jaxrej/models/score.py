"""Turn a noise-predicting network into the contract's score function.

score_sde's noise parametrisation: the network predicts eps in x(t) = m(t) x(0) + std(t) eps,
so the score is  s_theta(x, t, y) = -eps_theta(x, t, y) / std(t)   (Song et al. 2021, app. C).

    score_fn = make_score_fn(net, sde)
    score_fn(params, x, t, y) -> shaped like x     # ONE example: x event-shaped, t scalar, y int scalar
"""

from __future__ import annotations

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

    eps = net(x, t, y), or, for a net with `precondition` set, the net's output F on a rescaled
    input added to the best linear prediction for data of per-dimension mean mu and std s
    (net.data_mean, net.data_std; the noise-prediction form of Karras et al. 2022's
    preconditioning):

        eps = std (x - m mu) / v + c_out F((x - m mu) / sqrt(v), t, y),
        v = m^2 s^2 + std^2,  c_out = m s / sqrt(v),   m, std: the SDE's perturbation kernel at t.

    The first term is E[z | x_t] for Gaussian data; F predicts the rest at unit scale. Without it
    a network whose hidden width is below the data's dimension cannot even represent the
    identity that eps ~ x_t is at large t (benchmarks/results/mnist_sbgc_curve.md).

    A net with `atom_bin` = (lo, hi) (most MNIST pixels sit in the bin of level 0) outputs a
    second channel a and the prediction is the posterior mean under a two-part prior per pixel,
    "uniform on [lo, hi]" or "the rest":
        eps = g E[z | x_t, bin] + (1 - g) eps_rest,   g = sigmoid(a + log p(x_t | bin)),
    with E[z | x_t, bin] and log p(x_t | bin) in closed form (`atom_posterior`), eps_rest the
    prediction above. The closed form resolves the bin at any noise level, which a network of
    the scaled input cannot: its inputs differ by std / s there.
    """
    eps_fn = make_noise_fn(net)
    if not getattr(net, "precondition", False):

        def score_fn(params, x, t, y):
            t = jnp.asarray(t, dtype=x.dtype)
            return -eps_fn(params, x, t, y) / sde.std(t)

        return score_fn
    mu, s = float(net.data_mean), float(net.data_std)
    atom = tuple(getattr(net, "atom_bin", ())) or None

    def preconditioned_score_fn(params, x, t, y):
        t = jnp.asarray(t, dtype=x.dtype)
        m, std = sde.mean_coeff(t), sde.std(t)
        v = jnp.square(m * s) + jnp.square(std)
        r = x - m * mu
        out = eps_fn(params, r / jnp.sqrt(v), t, y)
        if atom is None:
            return -(std * r / v + (m * s / jnp.sqrt(v)) * out) / std
        f, a = out[..., 0], out[..., 1]
        eps_cont = std * r / v + (m * s / jnp.sqrt(v)) * f
        eps_atom, log_p_atom = atom_posterior(x, m, std, *atom)
        g = jax.nn.sigmoid(a + log_p_atom)
        return -(g * eps_atom + (1.0 - g) * eps_cont) / std

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


def init_params(net: nn.Module, event_shape, *, key: jax.Array):
    """Parameters of `net` for inputs of `event_shape` (initialised on a batch of one)."""
    x = jnp.zeros((1, *tuple(event_shape)), jnp.float32)
    return jax.jit(net.init)(key, x, jnp.full((1,), 0.5, jnp.float32), jnp.zeros((1,), jnp.int32))
