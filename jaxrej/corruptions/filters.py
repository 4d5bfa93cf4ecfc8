"""Image-filtering building blocks shared by the corruptions, for ONE image x: (H, W, C).

Each mirrors the reference implementation the original corruption code calls, so the JAX
versions can be checked against it: `gaussian_filter` is scipy.ndimage.gaussian_filter over the
two spatial axes (radius int(truncate * sigma + 0.5)); `correlate` is cv2.filter2D (border
reflect-101); `map_coordinates` is scipy.ndimage.map_coordinates with order=1; `resize_matrix`
is Pillow's separable resampling (BOX / NEAREST); `zoom_matrix` is scipy.ndimage.zoom with
order=1 (grid_mode=False). Kernels and resampling matrices depend only on static parameters
and are built with numpy at trace time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# scipy.ndimage / skimage border names -> jnp.pad modes
_PAD = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect", "reflect101": "reflect"}


def _pad(x, ph: int, pw: int, mode: str):
    """Pad the two spatial axes of (H, W, C) by (ph, pw); large pads fold repeatedly."""
    if ph == 0 and pw == 0:
        return x
    return jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode=_PAD[mode])


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's normalised 1-d Gaussian, radius int(truncate * sigma + 0.5); [1.] at sigma 0."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return np.ones(1)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _conv_valid(xp, kernel):
    """Per-channel 'valid' correlation of a padded (H', W', C) image with a (kh, kw) kernel."""
    c = xp.shape[-1]
    kernel = jnp.asarray(kernel, xp.dtype)
    k = jnp.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, c))
    out = jax.lax.conv_general_dilated(
        xp[None], k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c, precision=jax.lax.Precision.HIGHEST,
    )  # fmt: skip
    return out[0]


def correlate1d(x, k: np.ndarray, axis: int, mode: str):
    """Correlate (H, W, C) with a 1-d kernel (odd length, centred) along spatial `axis` (0|1)."""
    k = np.asarray(k, np.float64)
    r = (len(k) - 1) // 2
    if r == 0:
        return x * jnp.asarray(k[0], x.dtype)
    xp = _pad(x, r if axis == 0 else 0, r if axis == 1 else 0, mode)
    return _conv_valid(xp, k[:, None] if axis == 0 else k[None, :])


def gaussian_filter(x, sigma, *, mode: str = "nearest", truncate: float = 4.0, max_sigma=None):
    """Separable Gaussian blur of (H, W, C) over H and W (scipy.ndimage.gaussian_filter).
    With `max_sigma` (static) the kernel has radius int(truncate * max_sigma + 0.5) and `sigma`
    may be traced: taps beyond scipy's radius for `sigma` are zero, so the result is the same."""
    if max_sigma is None:
        k = gaussian_kernel1d(float(sigma), truncate)
        return correlate1d(correlate1d(x, k, 0, mode), k, 1, mode)
    r = int(truncate * float(max_sigma) + 0.5)
    if r == 0:
        return x
    sigma = jnp.asarray(sigma, x.dtype)
    t = jnp.arange(-r, r + 1, dtype=x.dtype)
    keep = jnp.abs(t) <= jnp.floor(truncate * sigma + 0.5)
    k = jnp.where(keep, jnp.exp(-0.5 * (t / jnp.maximum(sigma, 1e-12)) ** 2), 0.0)
    k = jnp.where(sigma > 0, k, (t == 0).astype(x.dtype))
    k = k / k.sum()
    xp = _pad(x, r, 0, mode)
    x = _conv_valid(xp, k[:, None])
    return _conv_valid(_pad(x, 0, r, mode), k[None, :])


def correlate(x, kernel: np.ndarray, *, mode: str = "reflect101"):
    """2-d correlation of every channel of (H, W, C) with an odd (kh, kw) kernel (cv2.filter2D)."""
    kernel = np.asarray(kernel, np.float64)
    kh, kw = kernel.shape
    xp = _pad(x, (kh - 1) // 2, (kw - 1) // 2, mode)
    return _conv_valid(xp, kernel)


def trim_kernel(kernel: np.ndarray) -> np.ndarray:
    """Drop all-zero outer rings of a centred odd kernel (same correlation, fewer terms)."""
    k = np.asarray(kernel)
    while k.shape[0] > 1 and not k[0].any() and not k[-1].any():
        k = k[1:-1]
    while k.shape[1] > 1 and not k[:, 0].any() and not k[:, -1].any():
        k = k[:, 1:-1]
    return k


def _fold_symmetric(i, n: int):
    """Index into a half-sample-symmetric extension (scipy 'reflect': d c b a | a b c d | d c b a)."""
    i = jnp.mod(i, 2 * n)
    return jnp.where(i >= n, 2 * n - 1 - i, i)


def _fold_reflect101(i, n: int):
    """Index into a whole-sample-symmetric extension (cv2 BORDER_REFLECT_101: c b | a b c d | c b)."""
    if n == 1:
        return jnp.zeros_like(i)
    i = jnp.mod(i, 2 * n - 2)
    return jnp.where(i >= n, 2 * n - 2 - i, i)


def map_coordinates(x, rows, cols, *, mode: str = "reflect"):
    """Bilinear sample of (H, W, C) at real coordinates rows, cols (each (H', W')) -> (H', W', C);
    scipy.ndimage.map_coordinates(order=1) per channel, mode 'reflect' (half-sample symmetric) or
    'reflect101' (cv2's BORDER_REFLECT_101)."""
    h, w = x.shape[:2]
    fold = {"reflect": _fold_symmetric, "reflect101": _fold_reflect101}[mode]
    r0, c0 = jnp.floor(rows), jnp.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
    ra, rb = fold(r0, h), fold(r0 + 1, h)
    ca, cb = fold(c0, w), fold(c0 + 1, w)
    top = x[ra, ca] * (1 - fc) + x[ra, cb] * fc
    bot = x[rb, ca] * (1 - fc) + x[rb, cb] * fc
    return (top * (1 - fr) + bot * fr).astype(x.dtype)


def apply_separable(x, mh: np.ndarray, mw: np.ndarray):
    """out[i, j, c] = sum_kl mh[i, k] x[k, l, c] mw[j, l]: a separable linear resampling."""
    mh, mw = jnp.asarray(mh, x.dtype), jnp.asarray(mw, x.dtype)
    return jnp.einsum("ik,klc,jl->ijc", mh, x, mw)


def resize_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    """(n_out, n_in) weights of Pillow's 1-d resampling: 'box' (Resample.c precompute_coeffs with
    the box filter, 1 on (-0.5, 0.5]) or 'nearest' (source floor((o + 0.5) * n_in / n_out))."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    if method == "nearest":
        src = np.minimum(np.floor((np.arange(n_out) + 0.5) * scale).astype(int), n_in - 1)
        m[np.arange(n_out), src] = 1.0
        return m
    if method != "box":
        raise ValueError(f"method: expected 'box' or 'nearest', got {method!r}")
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[o, i] = 1.0
        m[o] /= max(m[o].sum(), 1e-300)
    return m


def zoom_matrix_traced(n: int, zoom):
    """`zoom_matrix` for a traced zoom (>= 1): the same (n, n) matrix, built with jnp."""
    z = jnp.asarray(zoom, jnp.float32)
    crop = jnp.ceil(n / z)
    top = jnp.floor((n - crop) / 2)
    n_out = jnp.round(crop * z)
    step = jnp.where((n_out > 1) & (crop > 1), (crop - 1) / jnp.maximum(n_out - 1, 1), 0.0)
    c = jnp.arange(n, dtype=jnp.float32) * step
    i0 = jnp.floor(c)
    f = c - i0
    cols = jnp.arange(n, dtype=jnp.float32)[None]
    lo, hi = (top + i0)[:, None], (top + i0 + 1)[:, None]
    return (cols == lo) * (1 - f)[:, None] + (cols == hi) * f[:, None]


def zoom_matrix(n: int, zoom: float) -> np.ndarray:
    """The centre crop of imagecorruptions' clipped_zoom along one axis as an (n, n) matrix:
    crop ceil(n / zoom) pixels starting at (n - crop) // 2, scipy.ndimage.zoom(order=1) it to
    round(crop * zoom) samples, keep the first n. zoom >= 1."""
    crop = int(math.ceil(n / float(zoom)))
    top = (n - crop) // 2
    n_out = int(round(crop * zoom))
    m = np.zeros((n_out, n))
    step = (crop - 1) / (n_out - 1) if n_out > 1 and crop > 1 else 0.0
    for o in range(n_out):
        c = o * step
        i0 = int(np.floor(c))
        f = c - i0
        m[o, top + i0] += 1 - f
        if f > 0:
            m[o, top + i0 + 1] += f
    return m[:n]
