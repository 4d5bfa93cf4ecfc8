"""Scaling and dequantization conventions -- the ONE place they are defined.

Images are stored as integers k in {0, ..., n_levels - 1} (uint8). Models see floats in [0, 1]:

    train (uniform dequantization):  x = (k + u) / n_levels,  u ~ U[0, 1)^D
    eval  ("uniform"):               the same, with a fixed key (an unbiased one-sample estimate)
    eval  ("center"):                x = (k + 1/2) / n_levels
    discriminative classifiers:      x = k / (n_levels - 1)   (`to_unit_interval`: 0 and 1 included)
    score models from that pixel space (`pixels_to_model_input`; any x in [0, 1], e.g. an
    adversarial or corrupted image): x' = ((n_levels - 1) x + c) / n_levels, c = 1/2 ("center")
    or u ~ U[0, 1)^D ("uniform"): at x = k / (n_levels - 1) the two maps above

With uniform dequantization the discrete log-likelihood satisfies (Theis et al. 2016)
    log P(k) >= E_u[ log p(x) ] + D log n_levels,
so bits/dim = -(log p(x) + D log n_levels) / (D log 2) for densities on [0, 1]^D
(`jaxrej.bits_per_dim` applies that offset).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEQUANTIZE = ("uniform", "center")


def check_images(images, n_levels: int, name: str = "images") -> None:
    """ValueError unless `images` are integers in [0, n_levels)."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"{name}: expected integer pixel levels, got dtype {images.dtype}")
    if images.size and (images.min() < 0 or images.max() >= n_levels):
        raise ValueError(
            f"{name}: expected levels in [0, {n_levels - 1}], got [{images.min()}, {images.max()}]"
        )


def dequantize(images: jax.Array, n_levels: int, *, key: jax.Array) -> jax.Array:
    """Integer levels (any shape) -> float32 (k + u) / n_levels in [0, 1), u ~ U[0, 1)."""
    u = jax.random.uniform(key, images.shape, jnp.float32)
    return (images.astype(jnp.float32) + u) / n_levels


def center(images: jax.Array, n_levels: int) -> jax.Array:
    """Integer levels -> float32 (k + 1/2) / n_levels, the bin centres."""
    return (images.astype(jnp.float32) + 0.5) / n_levels


def to_unit_interval(images, n_levels: int):
    """Integer levels (any shape, numpy or jax) -> float32 k / (n_levels - 1) in [0, 1], the input
    of the base classifiers and heads (jaxrej heads); no dequantization noise."""
    return images.astype(np.float32) / (n_levels - 1)


def to_model_input(images: jax.Array, n_levels: int, *, mode: str, key: jax.Array | None = None):
    """`dequantize` (mode "uniform", needs key) or `center` (mode "center")."""
    if mode == "uniform":
        if key is None:
            raise ValueError("key: mode 'uniform' needs a key")
        return dequantize(images, n_levels, key=key)
    if mode == "center":
        return center(images, n_levels)
    raise ValueError(f"dequantize: expected one of {DEQUANTIZE}, got {mode!r}")


def row_ids(x: jax.Array) -> jax.Array:
    """(B,) uint32: a hash of each row's float32 bits (x (B, ...)), so that a row's random draws
    (`jax.random.fold_in(key, id)`) are a function of its content alone -- not of its position
    in a batch, the batch's size or its other rows. Not differentiated (stop_gradient)."""
    b = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32)).reshape(x.shape[0], -1)
    bits = jax.lax.bitcast_convert_type(b, jnp.uint32)

    def mix(v):  # the "lowbias32" integer finaliser (C. Wellons' hash-prospector)
        v = (v ^ (v >> 16)) * jnp.uint32(0x7FEB352D)
        v = (v ^ (v >> 15)) * jnp.uint32(0x846CA68B)
        return v ^ (v >> 16)

    pos = jnp.arange(bits.shape[1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
    return mix(jnp.sum(mix(bits + pos), axis=1, dtype=jnp.uint32))


def pixels_to_model_input(x: jax.Array, n_levels: int, *, mode: str, key: jax.Array | None = None,
                          ids: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """Pixel space x (B, *event) in [0, 1] (k / (n_levels - 1) for level k) -> the score model's
    input ((n_levels - 1) x + c) / n_levels: c = 1/2 (mode "center", the bin centres) or c = u ~
    U[0, 1)^event (mode "uniform", needs key) drawn from fold_in(key, ids[i]) for row i (ids:
    default `row_ids(x)`). At x = k / (n_levels - 1) this is `to_model_input`'s map of level k."""
    scaled = (n_levels - 1) * x
    if mode == "center":
        return (scaled + 0.5) / n_levels
    if mode != "uniform":
        raise ValueError(f"dequantize: expected one of {DEQUANTIZE}, got {mode!r}")
    if key is None:
        raise ValueError("key: mode 'uniform' needs a key")
    ids = row_ids(x) if ids is None else ids
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), x.shape[1:], x.dtype))(
        ids
    )
    return (scaled + u) / n_levels


def quantize(x: jax.Array, n_levels: int) -> jax.Array:
    """Inverse map: floats in [0, 1] -> integer levels floor(x n_levels), clipped to the range."""
    return jnp.clip(jnp.floor(x * n_levels), 0, n_levels - 1).astype(jnp.int32)
