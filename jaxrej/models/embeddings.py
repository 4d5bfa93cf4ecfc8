"""Time and label embeddings for class-conditional score networks.

Time: `sinusoidal_embedding` (the DDPM/Transformer position code of t * 1000, as score_sde
feeds continuous VP time to DDPM++) or `GaussianFourierProjection` (fixed random
frequencies, sin/cos(2 pi W t); Tancik et al. 2020, used by NCSN++).
Label: one-hot(y) -> Dense, added to the time embedding (as the SBGC paper does).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

TIME_EMBEDDINGS = ("fourier", "sinusoidal")


def sinusoidal_embedding(t: jax.Array, dim: int, *, scale: float = 1000.0) -> jax.Array:
    """(B,) times -> (B, dim): [sin(s t w_k), cos(s t w_k)], w_k = 10000^(-k / (dim/2 - 1))."""
    if dim % 2:
        raise ValueError(f"dim: expected an even embedding size, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = scale * t[:, None].astype(jnp.float32) * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class GaussianFourierProjection(nn.Module):
    """(B,) -> (B, dim): [sin(2 pi W t), cos(2 pi W t)], W ~ N(0, scale^2) fixed at init (no gradient)."""

    dim: int = 128
    scale: float = 16.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        if self.dim % 2:
            raise ValueError(f"dim: expected an even embedding size, got {self.dim}")
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.dim // 2,))
        w = jax.lax.stop_gradient(w)
        args = 2.0 * math.pi * t[:, None].astype(jnp.float32) * w[None, :]
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeLabelEmbedding(nn.Module):
    """emb(t, y) = MLP(time_code(t)) + Dense(one_hot(y)): (B,), (B,) -> (B, dim)."""

    dim: int
    num_classes: int
    time_embedding: str = "fourier"
    fourier_scale: float = 16.0

    @nn.compact
    def __call__(self, t: jax.Array, y: jax.Array) -> jax.Array:
        if self.time_embedding == "fourier":
            code = GaussianFourierProjection(self.dim, self.fourier_scale, name="fourier")(t)
        elif self.time_embedding == "sinusoidal":
            code = sinusoidal_embedding(t, self.dim)
        else:
            raise ValueError(
                f"time_embedding: expected one of {TIME_EMBEDDINGS}, got {self.time_embedding!r}"
            )
        temb = nn.Dense(self.dim, name="time_dense0")(code)
        temb = nn.Dense(self.dim, name="time_dense1")(nn.silu(temb))
        yemb = nn.Dense(self.dim, name="label_dense")(jax.nn.one_hot(y, self.num_classes))
        return temb + yemb
