"""A small convolutional classifier: [Conv3x3 -> ReLU -> (pool)] blocks -> Dense -> Dense(C)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class CNN(nn.Module):
    """x (B, H, W, Ch) -> (logits (B, C), features (B, dense)); 2x2 average pooling after each
    block while the spatial size is at least 4, then global average pooling."""

    num_classes: int
    channels: Sequence[int] = (32, 64)
    dense: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        h = x
        for ch in self.channels:
            h = nn.relu(nn.Conv(ch, (3, 3))(h))
            h = nn.relu(nn.Conv(ch, (3, 3))(h))
            if min(h.shape[1:3]) >= 4:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = jnp.mean(h, axis=(1, 2))
        feats = nn.relu(nn.Dense(self.dense)(h))
        return nn.Dense(self.num_classes)(feats), feats
