"""Weather corruptions (Hendrycks & Dietterich 2019): snow, frost, fog, brightness, for ONE image
x: (H, W, C) in [0, 1], C in {1, 3}.

Frost: the original blends one of six frost photographs shipped with the benchmark; here the
texture is procedural (`frost_texture`: a fixed-seed field of thin bright crystals over a soft
fractal haze, bluish-white for RGB), built once with numpy and deterministic; each example
takes a random crop of it (from its key). Fog: the plasma fractal (diamond-square) of the
original, on a next-power-of-two map covering the image, in JAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.corruptions import blur

_GREY = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY
FROST_SIZE = 128  # side of the procedural frost texture, in CIFAR-sized pixels
FROST_TINT = (0.86, 0.93, 1.0)  # RGB multiplier of the frost texture (pale blue-white ice)


def grey(x):
    """Luminance (H, W, 1) of an RGB (H, W, 3) image (cv2 weights) or the image itself (C = 1)."""
    if x.shape[-1] == 1:
        return x
    return jnp.tensordot(x, jnp.asarray(_GREY, x.dtype), axes=([-1], [0]))[..., None]


def plasma_fractal(key, mapsize: int, wibbledecay: float):
    """Diamond-square heightmap (mapsize, mapsize) in [0, 1] (the original's plasma_fractal:
    each refinement adds wibble * U(-wibble, wibble), wibble starting at 100, divided by
    `wibbledecay` per octave). mapsize: a power of two >= 2."""
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize: expected a power of two >= 2, got {mapsize}")
    m = jnp.zeros((mapsize, mapsize))
    n_oct = mapsize.bit_length() - 1
    u = jax.random.uniform(key, (n_oct, 3, mapsize, mapsize), m.dtype, -1.0, 1.0)  # one draw
    step, wibble, octave = mapsize, 100.0, 0
    while step >= 2:
        half, g = step // 2, mapsize // step

        def wibbled(a, j, wibble=wibble, octave=octave, g=g):
            return a / 4 + wibble * wibble * u[octave, j, :g, :g]

        corner = m[0::step, 0::step]
        sq = corner + jnp.roll(corner, -1, axis=0)
        sq = sq + jnp.roll(sq, -1, axis=1)
        m = m.at[half::step, half::step].set(wibbled(sq, 0))
        dr, ul = m[half::step, half::step], m[0::step, 0::step]
        lt = dr + jnp.roll(dr, 1, axis=0) + ul + jnp.roll(ul, -1, axis=1)
        m = m.at[0::step, half::step].set(wibbled(lt, 1))
        tt = dr + jnp.roll(dr, 1, axis=1) + ul + jnp.roll(ul, -1, axis=0)
        m = m.at[half::step, 0::step].set(wibbled(tt, 2))
        step, wibble, octave = half, wibble / wibbledecay, octave + 1
    m = m - m.min()
    return m / jnp.maximum(m.max(), 1e-12)


def fog(x, *, key, amount: float, wibbledecay: float):
    """x + amount * plasma (one map for all channels, cropped to H x W), rescaled by
    max(x) / (max(x) + amount) and clipped: the original fog."""
    h, w = x.shape[:2]
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    p = plasma_fractal(key, mapsize, wibbledecay)[:h, :w, None].astype(x.dtype)
    mx = x.max()
    return jnp.clip((x + amount * p) * mx / (mx + amount), 0.0, 1.0)


def brightness(x, *, key=None, amount: float):
    """RGB: V of HSV increased by `amount` (clipped to 1) with H and S kept, i.e. every channel
    scaled by V' / V (black becomes grey V'); grey: clip(x + amount). skimage rgb2hsv/hsv2rgb."""
    del key
    if x.shape[-1] == 1:
        return jnp.clip(x + amount, 0.0, 1.0)
    v = x.max(axis=-1, keepdims=True)
    v2 = jnp.clip(v + amount, 0.0, 1.0)
    scaled = x * (v2 / jnp.where(v > 0, v, 1.0))
    return jnp.clip(jnp.where(v > 0, scaled, v2), 0.0, 1.0)


def snow(x, *, key, loc, scale, zoom, threshold, radius, sigma, blend, max_radius=None):
    """The original snow: a layer N(loc, scale) per pixel, clipped_zoom by `zoom` (flake size,
    >= 1), zeroed below `threshold`, clipped, motion-blurred (radius, sigma, angle uniform in
    [-135, -45)), rounded to 8 bits; the image is brightened to blend * x + (1 - blend) *
    max(x, 1.5 grey(x) + 0.5) and the layer plus its 180-degree rotation added, clipped.
    With `max_radius` (static) every parameter may be traced."""
    k1, k2 = jax.random.split(key)
    h, w = x.shape[:2]
    layer = loc + scale * jax.random.normal(k1, (h, w, 1), x.dtype)
    zoom = jnp.maximum(jnp.asarray(zoom, x.dtype), 1.0) if max_radius is not None else zoom
    layer = blur.clipped_zoom(layer, zoom if max_radius is not None else max(1.0, float(zoom)))
    layer = jnp.clip(jnp.where(layer < threshold, 0.0, layer), 0.0, 1.0)
    angle = jax.random.uniform(k2, (), x.dtype, -135.0, -45.0)
    layer = blur.motion_blur_at(layer, angle, radius=radius, sigma=sigma, max_radius=max_radius)
    layer = jnp.round(jnp.clip(layer, 0.0, 1.0) * 255.0) / 255.0
    y = blend * x + (1 - blend) * jnp.maximum(x, grey(x) * 1.5 + 0.5)
    return jnp.clip(y + layer + layer[::-1, ::-1], 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def frost_texture() -> np.ndarray:
    """The procedural frost texture (FROST_SIZE, FROST_SIZE) in [0, 1], float32, tileable:
    1200 thin crystal needles (random position, angle, exponential length of mean 6 px, random
    brightness; bilinear splats, wrapping at the borders) over a fractal haze (three octaves of
    smoothed noise), mapped through 1 - exp(-.) and scaled to [0, 1]. Fixed seed: always the same."""
    rng = np.random.default_rng(20190328)
    n = FROST_SIZE
    acc = np.zeros((n, n))
    for _ in range(1200):
        y0, x0 = rng.uniform(0, n, 2)
        a = rng.uniform(0, np.pi)
        length = rng.exponential(6.0) + 1.0
        b = rng.uniform(0.2, 1.0)
        t = np.linspace(0.0, length, int(4 * length) + 2)
        ys, xs = y0 + t * np.sin(a), x0 + t * np.cos(a)
        iy, ix = np.floor(ys).astype(int), np.floor(xs).astype(int)
        fy, fx = ys - iy, xs - ix
        for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                            (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):  # fmt: skip
            np.add.at(acc, ((iy + dy) % n, (ix + dx) % n), 0.25 * b * wgt)
    haze = np.zeros((n, n))
    for cells, amp in ((4, 0.6), (16, 0.3), (64, 0.15)):
        g = rng.standard_normal((cells, cells))
        rep = np.kron(g, np.ones((n // cells, n // cells)))
        k = np.fft.fft2(rep) * np.exp(-0.5 * (np.fft.fftfreq(n)[:, None] ** 2
                                               + np.fft.fftfreq(n)[None] ** 2) * (n / cells) ** 2)  # fmt: skip
        haze += amp * np.real(np.fft.ifft2(k))
    tex = 1.0 - np.exp(-(acc + 0.35 * np.maximum(haze + 0.5, 0.0)))
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return tex.astype(np.float32)


def frost(x, *, key, image_weight: float, frost_weight: float, scale: float):
    """clip(image_weight * x + frost_weight * crop, 0, 1): crop is a random window of
    round(H / scale) x round(W / scale) texture pixels (wrapping; the texture is drawn in
    CIFAR-sized pixels) resized to H x W (antialiased linear), tinted for RGB."""
    h, w, c = x.shape
    n = FROST_SIZE
    th = int(min(n, max(1, round(h / scale))))
    tw = int(min(n, max(1, round(w / scale))))
    tex = jnp.asarray(frost_texture(), x.dtype)
    oy, ox = jax.random.randint(key, (2,), 0, n)
    tex = jnp.roll(tex, (-oy, -ox), axis=(0, 1))[:th, :tw, None]
    if (th, tw) != (h, w):
        tex = jax.image.resize(tex, (h, w, 1), "linear", antialias=True)
    if c == 3:
        tex = tex * jnp.asarray(FROST_TINT, x.dtype)
    else:
        tex = tex * jnp.asarray(float(np.dot(FROST_TINT, _GREY)), x.dtype)
    return jnp.clip(image_weight * x + frost_weight * tex, 0.0, 1.0)
