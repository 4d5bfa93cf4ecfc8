"""Time and label embeddings for class-conditional score networks.

Time: `sinusoidal_embedding` (the DDPM/Transformer position code of t * 1000, as score_sde
feeds continuous VP time to DDPM++), `GaussianFourierProjection` (fixed random
frequencies, sin/cos(2 pi W t); Tancik et al. 2020, used by NCSN++), or "log_fourier": the same
projection of log(t) / LOG_T_SCALE, which tells apart the small times where the noise level
std(t) ~ sqrt(beta_min t) changes by orders of magnitude (t = 1e-5 and 1e-3 give nearly the same
code of t but codes of log t a sixth of its range apart).
Label: one-hot(y) -> Dense, added to the time embedding (as the SBGC paper does).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

TIME_EMBEDDINGS = ("fourier", "sinusoidal", "log_fourier")
# log_fourier codes log(t) / LOG_T_SCALE, about [-1, 0] for t in [1e-5, 1]
LOG_T_SCALE = 12.0
LABEL_GATE_WIDTH = 0.5  # in log t


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


def label_gate(t: jax.Array, cutoff: float) -> jax.Array:
    """sigmoid((log t - log cutoff) / LABEL_GATE_WIDTH): ~1 above the time `cutoff`, ~0 well below
    it (0.1 at a third of it, 0.01 at a tenth); (B,) -> (B,)."""
    return jax.nn.sigmoid((jnp.log(t.astype(jnp.float32)) - math.log(cutoff)) / LABEL_GATE_WIDTH)


class TimeLabelEmbedding(nn.Module):
    """emb(t, y) = MLP(time_code(t)) + g(t) Dense(one_hot(y)): (B,), (B,) -> (B, dim).

    g = 1, or with `label_cutoff` > 0 the `label_gate`: below that time the network does not see
    the label, so the class log-likelihoods differ only through the coarser scales (larger t)
    where the classes differ; the fine scales, where a label mostly fits noise of the training
    rows, add nothing to the class differences (benchmarks/results/mnist_sbgc_curve.md).
    """

    dim: int
    num_classes: int
    time_embedding: str = "fourier"
    fourier_scale: float = 16.0
    label_cutoff: float = 0.0

    @nn.compact
    def __call__(self, t: jax.Array, y: jax.Array) -> jax.Array:
        if self.time_embedding == "fourier":
            code = GaussianFourierProjection(self.dim, self.fourier_scale, name="fourier")(t)
        elif self.time_embedding == "log_fourier":
            u = jnp.log(t.astype(jnp.float32)) / LOG_T_SCALE
            code = GaussianFourierProjection(self.dim, self.fourier_scale, name="fourier")(u)
        elif self.time_embedding == "sinusoidal":
            code = sinusoidal_embedding(t, self.dim)
        else:
            raise ValueError(
                f"time_embedding: expected one of {TIME_EMBEDDINGS}, got {self.time_embedding!r}"
            )
        temb = nn.Dense(self.dim, name="time_dense0")(code)
        temb = nn.Dense(self.dim, name="time_dense1")(nn.silu(temb))
        yemb = nn.Dense(self.dim, name="label_dense")(jax.nn.one_hot(y, self.num_classes))
        if self.label_cutoff > 0:
            yemb = yemb * label_gate(t, self.label_cutoff)[:, None]
        return temb + yemb
