"""Blur corruptions (Hendrycks & Dietterich 2019), for ONE image x: (H, W, C) in [0, 1].

Lengths (radii, sigmas, displacements) are in pixels of the image given; `jaxrej.corruptions`
scales the CIFAR-10-C values to the image size before calling these.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.corruptions import filters


def _cv2_gaussian1d(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0."""
    t = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(t**2) / (2 * max(sigma, 1e-12) ** 2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """imagecorruptions' defocus kernel: the normalised disk X^2 + Y^2 <= radius^2 on the grid
    -8..8 (ksize 3 anti-alias blur) or, for radius > 8, -ceil(r)..ceil(r) (ksize 5), blurred by
    cv2.GaussianBlur(sigma=alias_blur, border reflect-101); zero outer rings trimmed."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        r = int(math.ceil(radius))
        grid, ksize = np.arange(-r, r + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    d /= d.sum()
    g = _cv2_gaussian1d(ksize, alias_blur).astype(np.float32)
    p = (ksize - 1) // 2
    dp = np.pad(d, p, mode="reflect")  # numpy 'reflect' == cv2 BORDER_REFLECT_101
    n = len(grid)
    rows = sum(g[i] * dp[i : i + n] for i in range(ksize))
    out = sum(g[j] * rows[:, j : j + n] for j in range(ksize))
    return filters.trim_kernel(out.astype(np.float32).astype(np.float64))


def defocus_blur(x, *, key=None, radius: float, alias_blur: float):
    """Correlate every channel with `disk_kernel(radius, alias_blur)` (border reflect-101)."""
    del key
    return jnp.clip(filters.correlate(x, disk_kernel(radius, alias_blur)), 0.0, 1.0)


def glass_blur(x, *, key, sigma, max_delta: int, iterations, max_sigma=None, max_iterations=None):
    """Gaussian blur (sigma, border 'nearest'), quantise to 8 bits (truncating, as np.uint8 does),
    then `iterations` sweeps h = H-d..d+1, w = W-d..d+1 (descending) swapping pixel (h, w) with
    (h + dy, w + dx), dx, dy uniform integers in [-d, d) (d = max_delta), then blur again.
    The swaps are sequential (a lax.fori_loop), as in the original. With max_sigma and
    max_iterations (static bounds), sigma and iterations may be traced."""
    h, w, c = x.shape
    d = int(max_delta)
    n_iter = int(iterations) if max_iterations is None else int(max_iterations)
    y = filters.gaussian_filter(x, sigma, mode="nearest", max_sigma=max_sigma)
    y = jnp.floor(jnp.clip(y, 0.0, 1.0) * 255.0) / 255.0
    hs, ws = np.arange(h - d, d, -1), np.arange(w - d, d, -1)
    if d > 0 and len(hs) and len(ws) and n_iter > 0:
        hh, ww = np.meshgrid(hs, ws, indexing="ij")
        p = np.tile((hh * w + ww).ravel(), n_iter)
        off = jax.random.randint(key, (len(p), 2), -d, d)  # (dx, dy) as np.random.randint(size=2)
        p = jnp.asarray(p, jnp.int32)
        q = p + off[:, 1] * w + off[:, 0]

        def swap(i, f):
            a, b = f[p[i]], f[q[i]]
            return f.at[p[i]].set(b).at[q[i]].set(a)

        n_it = jnp.asarray(iterations).astype(jnp.int32)
        n_swaps = len(p) if max_iterations is None else n_it * (len(hs) * len(ws))
        y = jax.lax.fori_loop(0, n_swaps, swap, y.reshape(h * w, c)).reshape(h, w, c)
    return jnp.clip(filters.gaussian_filter(y, sigma, mode="nearest", max_sigma=max_sigma), 0, 1)


def motion_blur_at(x, angle, *, radius, sigma, max_radius=None):
    """imagecorruptions' _motion_blur at a given angle (degrees): sum over i < 2r+1 of
    k_i * x shifted by (dx_i, dy_i) = (-ceil(i cos a - 1/2), -ceil(i sin a - 1/2)) with edge
    replication, k_i ∝ exp(-i^2 / 2 sigma^2) (normalised over i); stops (drops the remaining
    terms) once a shift reaches the image size. x may be in any units; no clipping. With
    `max_radius` (static) radius and sigma may be traced."""
    h, w = x.shape[:2]
    width = 2 * int(radius if max_radius is None else max_radius) + 1
    t = jnp.arange(width, dtype=x.dtype)
    sg = jnp.maximum(jnp.asarray(sigma, x.dtype), 1e-3)
    k = jnp.where(t < 2 * jnp.asarray(radius) + 1, jnp.exp(-(t**2) / (2 * sg**2)), 0.0)
    k = k / k.sum()
    a = jnp.deg2rad(jnp.asarray(angle, x.dtype))
    py, px = width * jnp.sin(a), width * jnp.cos(a)
    hyp = jnp.hypot(py, px)
    i = jnp.arange(width, dtype=x.dtype)
    dy = -jnp.ceil(i * py / hyp - 0.5).astype(jnp.int32)
    dx = -jnp.ceil(i * px / hyp - 0.5).astype(jnp.int32)
    inside = jnp.cumprod((jnp.abs(dy) < h) & (jnp.abs(dx) < w)).astype(x.dtype)
    r = jnp.clip(jnp.arange(h)[None] - dy[:, None], 0, h - 1)  # (width, H)
    c = jnp.clip(jnp.arange(w)[None] - dx[:, None], 0, w - 1)  # (width, W)
    shifted = x[r[:, :, None], c[:, None, :]]  # (width, H, W, C)
    wts = k * inside
    return jnp.tensordot(wts, shifted, axes=1)


def motion_blur(x, *, key, radius, sigma, max_radius=None):
    """`motion_blur_at` with the angle uniform in [-45, 45) degrees, clipped to [0, 1]."""
    angle = jax.random.uniform(key, (), x.dtype, -45.0, 45.0)
    out = motion_blur_at(x, angle, radius=radius, sigma=sigma, max_radius=max_radius)
    return jnp.clip(out, 0.0, 1.0)


def clipped_zoom(x, zoom):
    """imagecorruptions' clipped_zoom (zoom >= 1): centre crop ceil(n / zoom) per axis, bilinear
    zoom by `zoom` (scipy.ndimage.zoom order=1), keep the top-left H x W. zoom may be traced."""
    h, w = x.shape[:2]
    if isinstance(zoom, jax.Array):
        mh, mw = filters.zoom_matrix_traced(h, zoom), filters.zoom_matrix_traced(w, zoom)
        return filters.apply_separable(x, mh, mw)
    return filters.apply_separable(x, filters.zoom_matrix(h, zoom), filters.zoom_matrix(w, zoom))


def zoom_blur(x, *, key=None, zooms: tuple[float, ...]):
    """(x + sum_z clipped_zoom(x, z)) / (len(zooms) + 1), clipped to [0, 1]."""
    del key
    out = x
    for z in zooms:
        out = out + clipped_zoom(x, float(z))
    return jnp.clip(out / (len(zooms) + 1), 0.0, 1.0)
