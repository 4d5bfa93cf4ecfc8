"""Noise corruptions (Hendrycks & Dietterich 2019), for ONE image x: (H, W, C) in [0, 1].

Per-pixel (and per-channel) noise: nothing spatial, so the parameters are used unscaled at every
image size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_noise(x, *, key, std: float):
    """clip(x + std * N(0, 1), 0, 1) per pixel and channel."""
    return jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)


def shot_noise(x, *, key, rate: float):
    """clip(Poisson(rate * x) / rate, 0, 1): photon noise with `rate` photons at full intensity.
    (jax's Poisson sampler needs a threefry key: other key types seed one from their bits.)"""
    try:
        counts = jax.random.poisson(key, rate * x, x.shape)
    except NotImplementedError:
        bits = jax.random.bits(key, (2,), jnp.uint32)
        counts = jax.random.poisson(
            jax.random.wrap_key_data(bits, impl="threefry2x32"), rate * x, x.shape
        )
    return jnp.clip(counts.astype(x.dtype) / rate, 0.0, 1.0)


def impulse_noise(x, *, key, amount: float):
    """Salt-and-pepper (skimage.util.random_noise mode 's&p', salt_vs_pepper 0.5): each pixel and
    channel independently becomes 0 or 1 (equally likely) with probability `amount`."""
    k1, k2 = jax.random.split(key)
    flip = jax.random.uniform(k1, x.shape) <= amount
    salt = jax.random.uniform(k2, x.shape) <= 0.5
    return jnp.where(flip, salt.astype(x.dtype), x)
