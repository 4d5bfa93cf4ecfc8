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
    """
    eps_fn = make_noise_fn(net)
    if not getattr(net, "precondition", False):

        def score_fn(params, x, t, y):
            t = jnp.asarray(t, dtype=x.dtype)
            return -eps_fn(params, x, t, y) / sde.std(t)

        return score_fn
    mu, s = float(net.data_mean), float(net.data_std)

    def preconditioned_score_fn(params, x, t, y):
        t = jnp.asarray(t, dtype=x.dtype)
        m, std = sde.mean_coeff(t), sde.std(t)
        v = jnp.square(m * s) + jnp.square(std)
        r = x - m * mu
        eps = std * r / v + (m * s / jnp.sqrt(v)) * eps_fn(params, r / jnp.sqrt(v), t, y)
        return -eps / std

    return preconditioned_score_fn


def init_params(net: nn.Module, event_shape, *, key: jax.Array):
    """Parameters of `net` for inputs of `event_shape` (initialised on a batch of one)."""
    x = jnp.zeros((1, *tuple(event_shape)), jnp.float32)
    return jax.jit(net.init)(key, x, jnp.full((1,), 0.5, jnp.float32), jnp.zeros((1,), jnp.int32))
