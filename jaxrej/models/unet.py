"""Class-conditional U-Net score network for images (DDPM++-style, Song et al. 2021, app. H).

Residual blocks: GroupNorm -> SiLU -> 3x3 conv -> + Dense(emb) -> GroupNorm -> SiLU -> 3x3 conv
(zero-initialised), skip (1x1 conv when channels change), output (skip + h) / sqrt(2).
With conditioning="film" the embedding scales and shifts the second GroupNorm instead
(GN(h) * (1 + a) + b, (a, b) = Dense(silu(emb)); "scale-shift norm", Dhariwal & Nichol 2021).
Self-attention blocks at the resolutions in `attn_resolutions`; 3x3 stride-2 conv down-sampling,
nearest-neighbour + 3x3 conv up-sampling; emb = time MLP + label Dense (embeddings.py).
eps_theta(x, t, y): (B, H, W, C), (B,), (B,) -> (B, H, W, C). No dropout.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrej.models.embeddings import TimeLabelEmbedding
from jaxrej.models.mlp import check_conditioning


def _groups(ch: int) -> int:
    return min(ch // 4, 32) if ch >= 4 else 1


class ResnetBlock(nn.Module):
    out_ch: int
    conditioning: str = "add"

    @nn.compact
    def __call__(self, x, emb):
        h = nn.silu(nn.GroupNorm(num_groups=_groups(x.shape[-1]))(x))
        h = nn.Conv(self.out_ch, (3, 3))(h)
        if self.conditioning == "film":
            ab = nn.Dense(2 * self.out_ch, kernel_init=nn.initializers.zeros, name="film")(
                nn.silu(emb)
            )[:, None, None, :]
            a, b = jnp.split(ab, 2, axis=-1)
            h = nn.GroupNorm(num_groups=_groups(self.out_ch))(h) * (1.0 + a) + b
        else:
            h = h + nn.Dense(self.out_ch)(nn.silu(emb))[:, None, None, :]
            h = nn.GroupNorm(num_groups=_groups(self.out_ch))(h)
        h = nn.silu(h)
        h = nn.Conv(self.out_ch, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Conv(self.out_ch, (1, 1), name="skip")(x)
        return (x + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual, rescaled by 1/sqrt(2)."""

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = nn.GroupNorm(num_groups=_groups(c))(x).reshape(b, hh * ww, c)
        q, k, v = (nn.Dense(c, name=n)(h) for n in ("q", "k", "v"))
        w = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) / math.sqrt(c), axis=-1)
        h = jnp.einsum("bij,bjc->bic", w, v)
        h = nn.Dense(c, kernel_init=nn.initializers.zeros, name="proj")(h).reshape(b, hh, ww, c)
        return (x + h) / math.sqrt(2.0)


class ConditionalUNet(nn.Module):
    """eps_theta(x, t, y) for images; depth len(ch_mult) levels of num_res_blocks blocks each."""

    num_classes: int
    nf: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple = (16,)
    time_embedding: str = "sinusoidal"
    fourier_scale: float = 16.0
    conditioning: str = "add"
    # as in ConditionalMLP: F of the preconditioned noise prediction (models/score.py), the label gate
    precondition: bool = False
    label_cutoff: float = 0.0
    data_mean: float = 0.5
    data_std: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
        del train
        check_conditioning(self.conditioning)
        if x.ndim != 4:
            raise ValueError(f"x: expected (B, H, W, C) images, got shape {x.shape}")
        n_down = len(self.ch_mult) - 1
        if x.shape[1] % (2**n_down) or x.shape[2] % (2**n_down):
            raise ValueError(
                f"x: height and width must be divisible by 2^{n_down} for ch_mult={self.ch_mult}, "
                f"got {x.shape[1:3]}"
            )
        emb = TimeLabelEmbedding(
            4 * self.nf,
            self.num_classes,
            self.time_embedding,
            self.fourier_scale,
            self.label_cutoff,
            name="embed",
        )(t, y)
        h = nn.Conv(self.nf, (3, 3), name="conv_in")(x)
        hs = [h]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = ResnetBlock(self.nf * mult, self.conditioning)(h, emb)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock()(h)
                hs.append(h)
            if level != n_down:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
                hs.append(h)
        h = ResnetBlock(h.shape[-1], self.conditioning)(h, emb)
        h = AttnBlock()(h)
        h = ResnetBlock(h.shape[-1], self.conditioning)(h, emb)
        for level, mult in reversed(list(enumerate(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = ResnetBlock(self.nf * mult, self.conditioning)(
                    jnp.concatenate([h, hs.pop()], axis=-1), emb
                )
            if h.shape[1] in self.attn_resolutions:
                h = AttnBlock()(h)
            if level != 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
                h = nn.Conv(c, (3, 3))(h)
        assert not hs
        h = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1]))(h))
        out = nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros, name="conv_out")(h)
        return out.astype(x.dtype)
