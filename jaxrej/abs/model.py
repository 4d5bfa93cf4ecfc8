"""The ABS generative model: one MLP decoder per class (parameters stacked on a leading class
axis, applied with vmap) and, for E-ABS, one shared encoder that proposes a latent per class.

    p(z) = N(0, I_d),   p(x | z, y) = N(x; G_y(z), sigma^2 I_D),   x in [0, 1]^D (flattened pixels)

G_y: z (d,) -> sigmoid(MLP_y(z)) (D,); with likelihood='bernoulli', p(x | z, y) is the pixels'
cross-entropy against the logits MLP_y(z) (`bound`). Encoder: x (D,) -> means and log-variances (C, d) of
q(z | x, y) for every class y at once. The decoders are matmul-shaped: on XLA:CPU their
gradients run fast inside compiled loops (unlike convolutions).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct


class ABSModel(struct.PyTreeNode):
    """Static description of the model (no arrays): num_classes C, event_shape (H, W, ch),
    latent_dim d (8 in ABS), decoder / encoder hidden widths, sigma (the fixed pixel std of the
    Gaussian likelihood), encoder (E-ABS shared encoder on/off), output: 'sigmoid' (pixels in
    (0, 1)) or 'linear' (with hidden=() the decoder is G(z) = W z + b: the closed-form case);
    likelihood: 'gaussian' (fixed sigma) or 'bernoulli' (logits; needs output='sigmoid')."""

    num_classes: int = struct.field(pytree_node=False, default=10)
    event_shape: tuple = struct.field(pytree_node=False, default=(28, 28, 1))
    latent_dim: int = struct.field(pytree_node=False, default=8)
    hidden: tuple = struct.field(pytree_node=False, default=(256, 512))
    encoder_hidden: tuple = struct.field(pytree_node=False, default=(512, 256))
    sigma: float = struct.field(pytree_node=False, default=0.2)
    encoder: bool = struct.field(pytree_node=False, default=True)
    output: str = struct.field(pytree_node=False, default="sigmoid")
    likelihood: str = struct.field(pytree_node=False, default="gaussian")

    def __post_init__(self):
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ValueError(f"num_classes: expected an int >= 2, got {self.num_classes!r}")
        if not (isinstance(self.latent_dim, int) and self.latent_dim >= 1):
            raise ValueError(f"latent_dim: expected an int >= 1, got {self.latent_dim!r}")
        if not (isinstance(self.sigma, (int, float)) and self.sigma > 0):
            raise ValueError(f"sigma: expected a number > 0, got {self.sigma!r}")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected positive widths, got {self.hidden!r}")
        if self.output not in ("sigmoid", "linear"):
            raise ValueError(f"output: expected sigmoid|linear, got {self.output!r}")
        if self.likelihood not in ("gaussian", "bernoulli"):
            raise ValueError(f"likelihood: expected gaussian|bernoulli, got {self.likelihood!r}")
        if self.likelihood == "bernoulli" and self.output != "sigmoid":
            raise ValueError("likelihood: 'bernoulli' needs output='sigmoid' (its logits)")

    @property
    def dim(self) -> int:
        return int(math.prod(self.event_shape))


class _MLP(nn.Module):
    hidden: tuple
    out: int

    @nn.compact
    def __call__(self, h):
        for w in self.hidden:
            h = nn.elu(nn.Dense(int(w))(h))
        return nn.Dense(self.out)(h)


def _decoder(model: ABSModel) -> _MLP:
    return _MLP(tuple(model.hidden), model.dim)


def _encoder(model: ABSModel) -> _MLP:
    return _MLP(tuple(model.encoder_hidden), 2 * model.num_classes * model.latent_dim)


def init_params(model: ABSModel, *, key: jax.Array) -> dict:
    """{'dec': stacked decoder params (leading axis C), 'enc': encoder params or {}}."""
    k_dec, k_enc = jax.random.split(key)
    z = jnp.zeros((model.latent_dim,), jnp.float32)
    keys = jax.random.split(k_dec, model.num_classes)
    dec = jax.vmap(lambda k: _decoder(model).init(k, z))(keys)
    enc = {}
    if model.encoder:
        enc = _encoder(model).init(k_enc, jnp.zeros((model.dim,), jnp.float32))
    return {"dec": dec, "enc": enc}


def decode_raw(model: ABSModel, dec_params: Any, z: jax.Array) -> jax.Array:
    """H_y(z): ONE class's decoder params (no class axis), z (d,) -> raw output h (D,) (the
    logits with output='sigmoid'); the likelihood reads h (`bound`)."""
    return _decoder(model).apply(dec_params, z)


def decode(model: ABSModel, dec_params: Any, z: jax.Array) -> jax.Array:
    """G_y(z): ONE class's decoder params (no class axis), z (d,) -> mean image (D,) (in (0, 1)
    with output='sigmoid')."""
    h = decode_raw(model, dec_params, z)
    return jax.nn.sigmoid(h) if model.output == "sigmoid" else h


def decode_classes(model: ABSModel, dec: Any, z: jax.Array) -> jax.Array:
    """Every class's decoder on its own latent: stacked params, z (C, d) -> (C, D)."""
    return jax.vmap(lambda p, zc: decode(model, p, zc))(dec, z)


def class_params(dec: Any, c) -> Any:
    """Class c's decoder params out of the stacked ones."""
    return jax.tree_util.tree_map(lambda a: a[c], dec)


def encode(model: ABSModel, enc: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Shared encoder (E-ABS): x (D,) -> (mean (C, d), log-variance (C, d)) of q(z | x, y)."""
    if not model.encoder:
        raise ValueError("model.encoder: the model has no encoder (encoder=False)")
    out = _encoder(model).apply(enc, x).reshape(2, model.num_classes, model.latent_dim)
    return out[0], jnp.clip(out[1], -12.0, 4.0)
