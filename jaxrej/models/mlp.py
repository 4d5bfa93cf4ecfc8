"""Class-conditional residual MLP score network for vectors and small images.

Input x (B, *event) is flattened; emb = time MLP + label Dense (embeddings.py);
each block: h <- h + Dense(silu(Dense(silu(LN(h))) + Dense(silu(emb)))).
The output (B, *event) is the noise prediction eps_theta(x, t, y) (score = -eps / std(t), score.py).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrej.models.embeddings import TimeLabelEmbedding


class ConditionalMLP(nn.Module):
    """eps_theta(x, t, y): (B, *event), (B,), (B,) int -> (B, *event)."""

    num_classes: int
    hidden: int = 512
    n_blocks: int = 3
    emb_dim: int = 128
    time_embedding: str = "fourier"
    fourier_scale: float = 16.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout / batch statistics
        event = x.shape[1:]
        d = math.prod(event)
        emb = TimeLabelEmbedding(
            self.emb_dim, self.num_classes, self.time_embedding, self.fourier_scale, name="embed"
        )(t, y)
        emb = nn.silu(emb)
        h = nn.Dense(self.hidden, name="in")(x.reshape(x.shape[0], d))
        for i in range(self.n_blocks):
            z = nn.silu(nn.LayerNorm(name=f"block{i}_norm")(h))
            z = nn.Dense(self.hidden, name=f"block{i}_dense0")(z)
            z = z + nn.Dense(self.hidden, name=f"block{i}_emb")(emb)
            z = nn.Dense(self.hidden, name=f"block{i}_dense1")(nn.silu(z))
            h = h + z
        h = nn.silu(nn.LayerNorm(name="out_norm")(h))
        out = nn.Dense(d, kernel_init=nn.initializers.zeros, name="out")(h)
        return out.reshape(x.shape).astype(jnp.result_type(x))
