"""Random affine warps of training images (rotation, scale, translation), bilinear, zero fill.

    x_aug = random_affine(x, key, max_rotate=10.0, max_scale=0.1, max_shift=1.0)   # x (B, H, W, ch)

Each image gets its own angle a ~ U[-max_rotate, max_rotate] (degrees), scale s ~ U[1 - max_scale,
1 + max_scale] and translation t ~ U[-max_shift, max_shift]^2 (pixels); output pixel p reads the
input at c + R(-a) (p - c - t) / s, c the image centre ((H - 1) / 2, (W - 1) / 2), by bilinear
interpolation with zeros outside. `affine_warp` is the deterministic warp of one image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def affine_warp(img: jax.Array, angle: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """img (H, W, ch) rotated by `angle` (radians; clockwise as displayed, rows down: pi / 2 on a
    square image is np.rot90(img, -1)) and scaled by `scale` about the centre, then translated by
    `shift` (2,) = (rows, cols) pixels -> (H, W, ch)."""
    h, w, ch = img.shape
    c = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], img.dtype)
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=img.dtype), jnp.arange(w, dtype=img.dtype),
                              indexing="ij")  # fmt: skip
    q = jnp.stack([rows, cols]) - (c + shift)[:, None, None]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src = jnp.stack([cos * q[0] - sin * q[1], sin * q[0] + cos * q[1]]) / scale
    src = src + c[:, None, None]

    def channel(k):
        return jax.scipy.ndimage.map_coordinates(img[..., k], [src[0], src[1]], order=1,
                                                 mode="constant", cval=0.0)  # fmt: skip

    return jnp.stack([channel(k) for k in range(ch)], axis=-1)


def random_affine(x: jax.Array, key: jax.Array, *, max_rotate: float = 0.0, max_scale: float = 0.0,
                  max_shift: float = 0.0) -> jax.Array:  # fmt: skip
    """x (B, H, W, ch) -> each image warped by its own random affine map (module doc)."""
    if x.ndim != 4:
        raise ValueError(f"x: expected (B, H, W, ch), got shape {tuple(x.shape)}")
    for name, v in (("max_rotate", max_rotate), ("max_scale", max_scale), ("max_shift", max_shift)):
        if not v >= 0:
            raise ValueError(f"{name}: expected >= 0, got {v!r}")
    if not max_scale < 1:
        raise ValueError(f"max_scale: expected < 1, got {max_scale!r}")
    b = x.shape[0]
    ka, ks, kt = jax.random.split(key, 3)
    angle = jnp.deg2rad(jax.random.uniform(ka, (b,), minval=-max_rotate, maxval=max_rotate))
    scale = jax.random.uniform(ks, (b,), minval=1 - max_scale, maxval=1 + max_scale)
    shift = jax.random.uniform(kt, (b, 2), minval=-max_shift, maxval=max_shift)
    dt = x.dtype
    return jax.vmap(affine_warp)(x, angle.astype(dt), scale.astype(dt), shift.astype(dt))
