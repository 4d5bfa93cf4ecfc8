"""A multilayer perceptron classifier: flatten -> [Dense -> ReLU] * L -> Dense(C)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """x (B, *event) -> (logits (B, C), features (B, hidden[-1])) where features = penultimate."""

    num_classes: int
    hidden: Sequence[int] = (256, 128)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        h = jnp.reshape(x, (x.shape[0], -1))
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(self.num_classes)(h), h
