"""The ABS generative model: one decoder per class (parameters stacked on a leading class axis,
applied with vmap) and, for E-ABS, one shared encoder that proposes a latent per class.

    p(z) = N(0, I_d),   p(x | z, y) = N(x; G_y(z), sigma^2 I_D),   x in [0, 1]^D (flattened pixels)

With members = M > 1 each class is a mixture of M such models (decoders trained independently
on the class's rows): p(x | y) = 1/M sum_m p_m(x | y). The decoders are stacked on one axis of
C M, class-major (decoder i is member i % M of class i // M); everything per decoder (the encoder's
proposals, the latent bank, the search) runs over that axis.

With binarize = t (binary ABS, Schott et al. 2019) every input is thresholded, x -> [x > t], before
it is scored or trained on: a pixel moves only when a perturbation carries it across t, so an
L-inf radius below t can change only the pixels within it of t. The threshold has no gradient;
attacks differentiate through it straight through (`latent.binarize`).

G_y: z (d,) -> sigmoid(H_y(z)) (D,); with likelihood='bernoulli', p(x | z, y) is the pixels'
cross-entropy against the logits H_y(z) (`bound`). Encoder: x (D,) -> means and log-variances (C, d) of
q(z | x, y) for every class y at once.

H_y is an MLP (decoder='mlp') or a convolutional decoder (decoder='conv', channels (c_0, ..., c_k)):

    z -> Dense -> elu -> (H / 2^k, W / 2^k, c_0)
      -> k times: 3x3 conv to 4 c_i channels -> elu -> depth-to-space (2x upsampling to c_i)
      -> 3x3 conv to ch channels -> H (D,)

the sub-pixel upsampling of Shi et al. (2016), which spans the same maps as a stride-2
transposed convolution with a 6x6 kernel. Its 3x3 convolutions (zero padding 'SAME') have two
implementations of the same map, chosen per call (`decode_raw`'s conv_impl): 'matmul' (`conv3x3`:
one matmul of the input's nine shifted copies), which the test-time latent search runs (its
gradient inside a compiled loop: on XLA:CPU a real convolution's runs several times slower there,
benchmarks/conv_in_loop and benchmarks/abs_conv_cost), and 'lax' (`lax.conv_general_dilated`),
which training runs (one jitted step per batch, one class at a time:
`training.decode_class_rows`).
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
    latent_dim d (8 in ABS), decoder: 'mlp' (hidden widths) or 'conv' (channels (c_0, ..., c_k),
    module doc; H and W divisible by 2^k), encoder hidden widths, sigma (the fixed pixel std of the
    Gaussian likelihood), encoder (E-ABS shared encoder on/off), output: 'sigmoid' (pixels in
    (0, 1)) or 'linear' (with hidden=() the decoder is G(z) = W z + b: the closed-form case);
    likelihood: 'gaussian' (fixed sigma) or 'bernoulli' (logits; needs output='sigmoid');
    members: M decoders per class; binarize: None or the threshold t in (0, 1) of binary ABS
    (module doc)."""

    num_classes: int = struct.field(pytree_node=False, default=10)
    event_shape: tuple = struct.field(pytree_node=False, default=(28, 28, 1))
    latent_dim: int = struct.field(pytree_node=False, default=8)
    hidden: tuple = struct.field(pytree_node=False, default=(256, 512))
    encoder_hidden: tuple = struct.field(pytree_node=False, default=(512, 256))
    sigma: float = struct.field(pytree_node=False, default=0.2)
    encoder: bool = struct.field(pytree_node=False, default=True)
    output: str = struct.field(pytree_node=False, default="sigmoid")
    likelihood: str = struct.field(pytree_node=False, default="gaussian")
    decoder: str = struct.field(pytree_node=False, default="mlp")
    channels: tuple = struct.field(pytree_node=False, default=(32, 16, 8))
    members: int = struct.field(pytree_node=False, default=1)
    binarize: float | None = struct.field(pytree_node=False, default=None)

    def __post_init__(self):
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ValueError(f"num_classes: expected an int >= 2, got {self.num_classes!r}")
        if isinstance(self.members, bool) or not (
            isinstance(self.members, int) and self.members >= 1
        ):
            raise ValueError(f"members: expected an int >= 1, got {self.members!r}")
        if self.binarize is not None and not (
            isinstance(self.binarize, (int, float)) and not isinstance(self.binarize, bool)
            and 0 < self.binarize < 1
        ):  # fmt: skip
            raise ValueError(
                f"binarize: expected None or a threshold in (0, 1), got {self.binarize!r}"
            )
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
        if self.decoder not in ("mlp", "conv"):
            raise ValueError(f"decoder: expected mlp|conv, got {self.decoder!r}")
        if self.decoder == "conv":
            if not self.channels or any(int(c) < 1 for c in self.channels):
                raise ValueError(f"channels: expected positive widths, got {self.channels!r}")
            k = 2 ** (len(self.channels) - 1)
            if len(self.event_shape) != 3 or self.event_shape[0] % k or self.event_shape[1] % k:
                raise ValueError(f"event_shape: decoder='conv' with {len(self.channels)} channels "
                                 f"needs (H, W, ch) with H, W divisible by {k}, got "
                                 f"{tuple(self.event_shape)}")  # fmt: skip

    @property
    def dim(self) -> int:
        return int(math.prod(self.event_shape))

    @property
    def n_decoders(self) -> int:
        """C M: the decoders on the stacked axis (module doc)."""
        return self.num_classes * self.members


class _MLP(nn.Module):
    hidden: tuple
    out: int

    @nn.compact
    def __call__(self, h):
        for w in self.hidden:
            h = nn.elu(nn.Dense(int(w))(h))
        return nn.Dense(self.out)(h)


def conv3x3(h: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A 3x3 convolution with zero padding ('SAME', cross-correlation as lax.conv) as ONE matmul:
    h (..., H, W, c_in), kernel (9 c_in, c_out) (rows: the offsets (di, dj) in row-major order,
    then c_in), bias (c_out,) -> (..., H, W, c_out). With c_out >= c_in, the matmul of the
    input's nine shifted copies (im2col); with fewer outputs than inputs (the last layer), the
    matmul to 9 c_out channels first and the sum of their nine shifted copies (less to copy)."""
    H, W, c_in = h.shape[-3:]
    c_out = kernel.shape[-1]
    lead = [(0, 0)] * (h.ndim - 3)
    if c_out >= c_in:
        p = jnp.pad(h, lead + [(1, 1), (1, 1), (0, 0)])
        cols = [p[..., i : i + H, j : j + W, :] for i in range(3) for j in range(3)]
        return jnp.concatenate(cols, axis=-1) @ kernel + bias
    k = jnp.moveaxis(kernel.reshape(9, c_in, c_out), 0, 1).reshape(c_in, 9 * c_out)
    y = jnp.pad((h @ k).reshape(*h.shape[:-1], 9, c_out), lead + [(1, 1), (1, 1), (0, 0), (0, 0)])
    # out[a, b] = sum_(i, j) y[a + i, b + j, offset (i, j)] (y padded by one pixel)
    return bias + sum(
        y[..., i : i + H, j : j + W, 3 * i + j, :] for i in range(3) for j in range(3)
    )


def conv3x3_lax(h: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """`conv3x3` by lax.conv_general_dilated (NHWC, HWIO, 'SAME'): the same map."""
    lead, c_in = h.shape[:-3], h.shape[-1]
    y = jax.lax.conv_general_dilated(h.reshape((-1,) + h.shape[-3:]),
                                     kernel.reshape(3, 3, c_in, -1), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return y.reshape(lead + y.shape[1:]) + bias


def depth_to_space(h: jax.Array) -> jax.Array:
    """(..., H, W, 4 c) -> (..., 2H, 2W, c): channel block (a, b) goes to pixel (2i + a, 2j + b)."""
    *lead, H, W, c4 = h.shape
    c = c4 // 4
    h = h.reshape(*lead, H, W, 2, 2, c)
    h = jnp.moveaxis(h, -3, -4)  # (..., H, 2, W, 2, c)
    return h.reshape(*lead, 2 * H, 2 * W, c)


class _Conv3x3(nn.Module):
    features: int
    impl: str = "matmul"

    @nn.compact
    def __call__(self, h):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (9 * h.shape[-1], self.features))  # fmt: skip
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return (conv3x3_lax if self.impl == "lax" else conv3x3)(h, kernel, bias)


class _ConvDecoder(nn.Module):
    """z (d,) -> raw output (H W ch,) (module doc)."""

    channels: tuple
    event_shape: tuple
    impl: str = "matmul"

    @nn.compact
    def __call__(self, z):
        H, W, ch = self.event_shape
        k = 2 ** (len(self.channels) - 1)
        c0 = int(self.channels[0])
        h = nn.elu(nn.Dense((H // k) * (W // k) * c0)(z)).reshape(H // k, W // k, c0)
        for c in self.channels[1:]:
            h = depth_to_space(nn.elu(_Conv3x3(4 * int(c), self.impl)(h)))
        return _Conv3x3(ch, self.impl)(h).reshape(-1)


def _decoder(model: ABSModel, conv_impl: str = "matmul") -> nn.Module:
    if conv_impl not in ("matmul", "lax"):
        raise ValueError(f"conv_impl: expected matmul|lax, got {conv_impl!r}")
    if model.decoder == "conv":
        return _ConvDecoder(tuple(int(c) for c in model.channels), tuple(model.event_shape),
                            conv_impl)  # fmt: skip
    return _MLP(tuple(model.hidden), model.dim)


def _encoder(model: ABSModel) -> _MLP:
    return _MLP(tuple(model.encoder_hidden), 2 * model.n_decoders * model.latent_dim)


def init_params(model: ABSModel, *, key: jax.Array) -> dict:
    """{'dec': stacked decoder params (leading axis C M), 'enc': encoder params or {}}."""
    k_dec, k_enc = jax.random.split(key)
    z = jnp.zeros((model.latent_dim,), jnp.float32)
    keys = jax.random.split(k_dec, model.n_decoders)
    dec = jax.vmap(lambda k: _decoder(model).init(k, z))(keys)
    enc = {}
    if model.encoder:
        enc = _encoder(model).init(k_enc, jnp.zeros((model.dim,), jnp.float32))
    return {"dec": dec, "enc": enc}


def decode_raw(model: ABSModel, dec_params: Any, z: jax.Array, *,
               conv_impl: str = "matmul") -> jax.Array:  # fmt: skip
    """H_y(z): ONE class's decoder params (no class axis), z (d,) -> raw output h (D,) (the
    logits with output='sigmoid'); the likelihood reads h (`bound`). conv_impl: how a conv
    decoder's convolutions run, 'matmul' | 'lax' (module doc; the same values)."""
    return _decoder(model, conv_impl).apply(dec_params, z)


def decode(model: ABSModel, dec_params: Any, z: jax.Array) -> jax.Array:
    """G_y(z): ONE class's decoder params (no class axis), z (d,) -> mean image (D,) (in (0, 1)
    with output='sigmoid')."""
    h = decode_raw(model, dec_params, z)
    return jax.nn.sigmoid(h) if model.output == "sigmoid" else h


def decode_classes(model: ABSModel, dec: Any, z: jax.Array) -> jax.Array:
    """Every decoder on its own latent: stacked params, z (C M, d) -> (C M, D)."""
    return jax.vmap(lambda p, zc: decode(model, p, zc))(dec, z)


def class_params(dec: Any, c) -> Any:
    """Decoder c's params out of the stacked ones."""
    return jax.tree_util.tree_map(lambda a: a[c], dec)


def encode(model: ABSModel, enc: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Shared encoder (E-ABS): x (D,) -> (mean (C M, d), log-variance (C M, d)) of q(z | x, y),
    one per decoder."""
    if not model.encoder:
        raise ValueError("model.encoder: the model has no encoder (encoder=False)")
    out = _encoder(model).apply(enc, x).reshape(2, model.n_decoders, model.latent_dim)
    return out[0], jnp.clip(out[1], -12.0, 4.0)
