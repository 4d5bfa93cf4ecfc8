"""Digital corruptions (Hendrycks & Dietterich 2019): contrast, elastic transform, pixelate,
JPEG, for ONE image x: (H, W, C) in [0, 1], C in {1, 3}.

JPEG is a JAX DCT-quantise round trip, not libjpeg: 8-bit input levels, level shift 128, 8x8
orthonormal DCT-II per block (edges padded by replication to a multiple of 8, as libjpeg does),
coefficients rounded to multiples of the standard Annex K tables scaled by quality (libjpeg's
jpeg_quality_scaling, baseline-clipped to 1..255), inverse DCT, rounded to 8 bits. Colour goes
through JFIF YCbCr with the luminance table for Y and the chrominance table for Cb, Cr, at full
resolution (libjpeg, and so PIL, subsample chroma 2x2 by default: colour fringes differ).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.corruptions import filters

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance)
JPEG_LUMINANCE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
])  # fmt: skip
JPEG_CHROMINANCE = np.array([
    [17, 18, 24, 47, 99, 99, 99, 99], [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99], [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99], [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99], [99, 99, 99, 99, 99, 99, 99, 99],
])  # fmt: skip


def contrast(x, *, key=None, factor: float):
    """clip((x - m) * factor + m, 0, 1), m the per-channel mean over the image."""
    del key
    m = x.mean(axis=(0, 1), keepdims=True)
    return jnp.clip((x - m) * factor + m, 0.0, 1.0)


def _affine_from_points(src, dst):
    """The 2x3 affine A with A [p; 1] = q for three point pairs (cv2.getAffineTransform)."""
    a = jnp.concatenate([src, jnp.ones((3, 1), src.dtype)], axis=1)  # (3, 3)
    return jnp.linalg.solve(a, dst).T  # (2, 3)


def elastic_transform(x, *, key, alpha, sigma, affine, max_sigma=None):
    """CIFAR-10-C's elastic transform: a random affine warp (three points at the centre +- a
    third of the side, each moved by U(-affine, affine) px; bilinear, border reflect-101), then
    a displacement field gaussian_filter(U(-1, 1), sigma, 'reflect', truncate 3) * alpha per
    axis, sampled bilinearly (scipy map_coordinates order 1, 'reflect'). With `max_sigma`
    (static) sigma may be traced."""
    h, w = x.shape[:2]
    u = jax.random.uniform(key, (2 * h * w + 6,), x.dtype, -1.0, 1.0)  # one draw
    cy, cx, sq = h // 2, w // 2, min(h, w) // 3
    src = jnp.asarray([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], x.dtype)
    dst = src + affine * u[:6].reshape(3, 2)
    inv = _affine_from_points(dst, src)  # output pixel -> source pixel
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij")
    sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    y = filters.map_coordinates(x, sy, sx, mode="reflect101")

    def field(v):
        v = v.reshape(h, w, 1)
        f = filters.gaussian_filter(v, sigma, mode="reflect", truncate=3.0, max_sigma=max_sigma)
        return f[..., 0] * alpha

    dx, dy = field(u[6 : 6 + h * w]), field(u[6 + h * w :])
    out = filters.map_coordinates(y, yy + dy, xx + dx, mode="reflect")
    return jnp.clip(out, 0.0, 1.0)


def pixelate(x, *, key=None, size: tuple[int, int], upsample: str = "box"):
    """Resize to `size` (h, w) with Pillow's BOX filter and back with `upsample` ('box' as in
    CIFAR-10-C, 'nearest' as in imagecorruptions), in floating point (Pillow rounds to 8 bits
    after each resize)."""
    del key
    h, w = x.shape[:2]
    sh, sw = int(size[0]), int(size[1])
    if (sh, sw) == (h, w):
        return x
    y = filters.apply_separable(
        x, filters.resize_matrix(h, sh, "box"), filters.resize_matrix(w, sw, "box")
    )
    y = filters.apply_separable(
        y, filters.resize_matrix(sh, h, upsample), filters.resize_matrix(sw, w, upsample)
    )
    return jnp.clip(y, 0.0, 1.0)


def quality_table(base: np.ndarray, quality):
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table(force_baseline=True); quality may
    be traced."""
    q = jnp.clip(jnp.round(jnp.asarray(quality, jnp.float32)), 1, 100)
    scale = jnp.where(q < 50, jnp.floor(5000 / q), 200 - 2 * q)
    return jnp.clip(jnp.floor((jnp.asarray(base, jnp.float32) * scale + 50) / 100), 1, 255)


def _dct_matrix() -> np.ndarray:
    """Orthonormal 8-point DCT-II matrix D[k, n] (JPEG's FDCT is D f D^T)."""
    k, n = np.arange(8)[:, None], np.arange(8)[None]
    d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d


def _jpeg_plane(p, table: np.ndarray):
    """DCT-quantise round trip of one plane (H, W) of 8-bit levels (level-shifted inside)."""
    h, w = p.shape
    ph, pw = -h % 8, -w % 8
    p = jnp.pad(p, ((0, ph), (0, pw)), mode="edge") - 128.0
    hb, wb = p.shape[0] // 8, p.shape[1] // 8
    blocks = p.reshape(hb, 8, wb, 8).transpose(0, 2, 1, 3)
    d = jnp.asarray(_dct_matrix(), p.dtype)
    q = table.astype(p.dtype)
    coef = jnp.einsum("kn,abnm,lm->abkl", d, blocks, d)
    coef = jnp.round(coef / q) * q
    rec = jnp.einsum("kn,abkl,lm->abnm", d, coef, d)
    rec = rec.transpose(0, 2, 1, 3).reshape(hb * 8, wb * 8)[:h, :w] + 128.0
    return rec


def jpeg_compression(x, *, key=None, quality: int):
    """JPEG round trip at `quality` (module doc), output rounded to 8-bit levels / 255."""
    del key
    v = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)
    lum, chrom = quality_table(JPEG_LUMINANCE, quality), quality_table(JPEG_CHROMINANCE, quality)
    if x.shape[-1] == 1:
        out = _jpeg_plane(v[..., 0], lum)[..., None]
    else:
        r, g, b = v[..., 0], v[..., 1], v[..., 2]
        yy = jnp.round(0.299 * r + 0.587 * g + 0.114 * b)
        cb = jnp.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128.0)
        cr = jnp.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128.0)
        yy, cb, cr = (
            _jpeg_plane(yy, lum),
            _jpeg_plane(cb, chrom) - 128.0,
            _jpeg_plane(cr, chrom) - 128.0,
        )
        out = jnp.stack(
            [yy + 1.402 * cr, yy - 0.344136 * cb - 0.714136 * cr, yy + 1.772 * cb], axis=-1
        )
    return (jnp.clip(jnp.round(out), 0.0, 255.0) / 255.0).astype(x.dtype)
