"""Out-of-distribution sets.

Synthetic, for any image shape (H, W, C), float32 in [0, 1], deterministic given `seed`:
`uniform_noise`, `gaussian_noise`, `constant_images`, `photo_patches` (crops of scikit-learn's
two bundled sample photographs, grey-scaled for C = 1 and downscaled with area averaging:
natural-image statistics with no download), `inverted` (of the in-distribution images), all at
once with `synthetic_ood_sets(test_images, seed=...)`. `transformed` is the older integer-level
pair (inverted, noise) that `jaxrej.eval.heads` uses when no OOD dataset is named.

Dataset OOD sets are dataset strings for `jaxrej.data.registry` (`SUGGESTED_OOD`); those whose
images differ in size or channels from the in-distribution set (omniglot 105x105 RGB, dtd of
varying sizes, svhn RGB against MNIST) go through `match_shape` first.
"""

from __future__ import annotations

import functools

import numpy as np

SYNTHETIC = ("uniform_noise", "gaussian_noise", "constant", "inverted", "photos")
SUGGESTED_OOD = {
    "digits": SYNTHETIC,
    "mnist": ("fashion_mnist", "kmnist", "emnist/letters", "omniglot"),
    "cifar10": ("svhn_cropped", "cifar100", "dtd"),
}
_GREY = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma


def _check(n, shape, seed):
    if int(n) != n or n < 0:
        raise ValueError(f"n: expected a non-negative integer, got {n!r}")
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape[:2]) < 1:
        raise ValueError(f"shape: expected (H, W, C) with C in (1, 3), got {shape}")
    if int(seed) != seed:
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    return int(n), shape


def uniform_noise(n: int, shape, *, seed: int) -> np.ndarray:
    """(n, H, W, C) i.i.d. U[0, 1) pixels."""
    n, shape = _check(n, shape, seed)
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def gaussian_noise(n: int, shape, *, seed: int, mean: float = 0.5, std: float = 0.25):
    """(n, H, W, C) i.i.d. clip(N(mean, std^2), 0, 1) pixels."""
    n, shape = _check(n, shape, seed)
    z = np.random.default_rng(seed).normal(mean, std, (n, *shape))
    return np.clip(z, 0.0, 1.0).astype(np.float32)


def constant_images(n: int, shape, *, seed: int) -> np.ndarray:
    """(n, H, W, C) images of one U[0, 1) value per image and channel."""
    n, shape = _check(n, shape, seed)
    v = np.random.default_rng(seed).random((n, 1, 1, shape[2]), dtype=np.float32)
    return np.broadcast_to(v, (n, *shape)).copy()


def inverted(images) -> np.ndarray:
    """1 - images, for float images in [0, 1] (N, H, W, C)."""
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images: expected float images in [0, 1], got dtype {x.dtype}")
    return (1.0 - x).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _sample_photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(im, np.float64) / 255.0 for im in load_sample_images().images)


def _area_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h0, w0, C) -> (h, w, C) by exact area averaging (each output pixel the mean of the input
    area it covers, fractional pixels weighted)."""

    def weights(n_in, n_out):
        edges = np.linspace(0.0, n_in, n_out + 1)
        lo, hi = edges[:-1, None], edges[1:, None]
        pix = np.arange(n_in)[None]
        m = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
        return m / m.sum(axis=1, keepdims=True)

    return np.einsum("ik,klc,jl->ijc", weights(img.shape[0], h), img, weights(img.shape[1], w))


def photo_patches(
    n: int, shape, *, seed: int, min_crop: int = 32, max_crop: int = 128
) -> np.ndarray:
    """(n, H, W, C) crops of scikit-learn's sample photographs (china.jpg, flower.jpg): photo,
    square-ish crop side (uniform in [min_crop, max_crop] px, aspect H:W) and position drawn
    from default_rng(seed); grey-scaled (BT.601) for C = 1; area-averaged down to H x W."""
    n, shape = _check(n, shape, seed)
    h, w, c = shape
    photos = _sample_photos()
    if not 1 <= min_crop <= max_crop:
        raise ValueError(
            f"min_crop, max_crop: expected 1 <= min_crop <= max_crop, got {min_crop}, {max_crop}"
        )
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        p = photos[rng.integers(len(photos))]
        side = rng.integers(min_crop, max_crop + 1)
        ch = int(min(p.shape[0], max(1, round(side * h / max(h, w)))))
        cw = int(min(p.shape[1], max(1, round(side * w / max(h, w)))))
        top, left = rng.integers(0, p.shape[0] - ch + 1), rng.integers(0, p.shape[1] - cw + 1)
        crop = p[top : top + ch, left : left + cw]
        if c == 1:
            crop = crop @ _GREY[:, None]
        out[i] = np.clip(_area_resize(crop, h, w), 0.0, 1.0)
    return out


def synthetic_ood_sets(test_images, *, seed: int) -> dict[str, np.ndarray]:
    """{name: images} for every name in SYNTHETIC, each shaped like the float test images
    (N, H, W, C) in [0, 1]; set k is drawn with seed + k."""
    x = np.asarray(test_images)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"test_images: expected float (N, H, W, C) in [0, 1], got {x.dtype} {x.shape}"
        )
    n, shape = len(x), x.shape[1:]
    return {
        "uniform_noise": uniform_noise(n, shape, seed=seed),
        "gaussian_noise": gaussian_noise(n, shape, seed=seed + 1),
        "constant": constant_images(n, shape, seed=seed + 2),
        "inverted": inverted(x),
        "photos": photo_patches(n, shape, seed=seed + 3),
    }


def match_shape(images, shape, *, invert: bool = False) -> np.ndarray:
    """Bring OOD images to the in-distribution shape (H, W, C): images (N, h, w, c) or a list of
    (h, w, c) arrays of varying sizes, floats in [0, 1] or uint8 (/ 255). Each is centre-cropped
    to the aspect H:W, resized with jax.image.resize (linear, antialiased), converted to grey
    (BT.601) or replicated to 3 channels, clipped; `invert` maps v -> 1 - v (omniglot's black
    strokes on white against MNIST's white on black). Returns float32 (N, H, W, C)."""
    import jax
    import jax.numpy as jnp

    h, w, c = (int(d) for d in shape)
    if c not in (1, 3) or min(h, w) < 1:
        raise ValueError(f"shape: expected (H, W, C) with C in (1, 3), got {tuple(shape)}")
    items = list(images)
    out = np.empty((len(items), h, w, c), np.float32)
    for i, im in enumerate(items):
        a = np.asarray(im)
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"images: expected (h, w, c) images with c in (1, 3, 4), got {a.shape}"
            )
        a = a[..., :3] / 255.0 if a.dtype == np.uint8 else a[..., :3].astype(np.float64)
        ih, iw = a.shape[:2]
        if ih * w > iw * h:  # too tall: crop rows
            ch = max(1, round(iw * h / w))
            a = a[(ih - ch) // 2 : (ih - ch) // 2 + ch]
        elif ih * w < iw * h:
            cw = max(1, round(ih * w / h))
            a = a[:, (iw - cw) // 2 : (iw - cw) // 2 + cw]
        if c == 1 and a.shape[-1] == 3:
            a = a @ _GREY[:, None]
        elif c == 3 and a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        r = jax.image.resize(jnp.asarray(a, jnp.float32), (h, w, c), "linear", antialias=True)
        out[i] = np.clip(np.asarray(r), 0.0, 1.0)
    return 1.0 - out if invert else out


def transformed(images: np.ndarray, n_levels: int, *, seed: int) -> dict[str, np.ndarray]:
    """{"inverted": n_levels - 1 - k, "noise": i.i.d. uniform levels}, each shaped and typed like
    `images` (integer levels k in [0, n_levels)); the noise is drawn from default_rng(seed)."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"images: expected integer pixel levels, got dtype {images.dtype}")
    noise = np.random.default_rng(seed).integers(0, n_levels, size=images.shape)
    inverted = n_levels - 1 - images.astype(np.int64)
    return {"inverted": inverted.astype(images.dtype), "noise": noise.astype(images.dtype)}
