"""A small pre-activation-free ResNet (He et al. 2016) with BatchNorm, for 8x8 .. 32x32 images."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ResidualBlock(nn.Module):
    """y = relu(x' + BN(Conv(relu(BN(Conv(x)))))), x' a strided 1x1 projection when shapes change."""

    channels: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        h = nn.Conv(self.channels, (3, 3), strides=self.strides, use_bias=False)(x)
        h = nn.relu(norm()(h))
        h = nn.Conv(self.channels, (3, 3), use_bias=False)(h)
        h = norm()(h)
        if x.shape != h.shape:
            x = nn.Conv(self.channels, (1, 1), strides=self.strides, use_bias=False)(x)
            x = norm()(x)
        return nn.relu(x + h)


class ResNet(nn.Module):
    """x (B, H, W, Ch) -> (logits (B, C), features (B, channels[-1])) after global average pooling.

    Stage i has `blocks` residual blocks of `channels[i]` channels; stages after the first
    halve the spatial size.
    """

    num_classes: int
    channels: Sequence[int] = (16, 32, 64)
    blocks: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        h = nn.Conv(self.channels[0], (3, 3), use_bias=False)(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
        for i, ch in enumerate(self.channels):
            for j in range(self.blocks):
                h = ResidualBlock(ch, strides=2 if (i > 0 and j == 0) else 1)(h, train)
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats
