"""The 15 common corruptions of Hendrycks & Dietterich (2019) x 5 severities, in JAX, for any
image size and 1 or 3 channels:

    y = jaxrej.corruptions.corrupt("fog", x, 3, key=key)   # x: (B, H, W, C) float in [0, 1]

`corrupt` is jitted: one compilation per name, shape and scale serves every severity (the
parameters listed in DYNAMIC travel traced; defocus, zoom blur and pixelate compile per severity,
cheaply). Example i uses the key `fold_in(key, i)` (any key type), so it never depends on its
batch neighbours and the same key gives the same output. The functions for one image with explicit parameters live in `noise`, `blur`, `weather`,
`digital`; `filters` holds the shared resampling helpers.

Parameters. The severity tables are CIFAR-10-C's (Hendrycks' make_cifar_c.py, the generator of
tfds `cifar10_corrupted`), written for 32x32 images. (`imagecorruptions` carries the
ImageNet-C tables, written for 224x224; its parameters can be passed to the per-family
functions directly, as the tests do.)

Size rule. With s = sqrt(H * W) / 32 (`spatial_scale`; `scale=` overrides it) every parameter
that is a length in pixels is multiplied by s, so a corruption does at H x W what it does to the
same scene at 32x32: defocus radius and anti-alias sigma, glass-blur sigma, motion-blur radius
and sigma, snow flake zoom (kept >= 1) and its motion radius and sigma, the elastic transform's
smoothing sigma and affine jitter, the frost texture's pixel size, and the pixelate block size
(down-sampled size int(H * c / s), at most H). Integer lengths (glass-blur displacement,
motion radii) round half up to an integer; a length that rounds to 0 switches that part off,
as it would be invisible at that resolution. The elastic amplitude alpha scales as s^2: the displacement is smoothed white noise
whose amplitude falls as 1 / sigma, so alpha * s^2 / (sigma * s) keeps it at s times the
CIFAR displacement. Unscaled, because they are dimensionless: the noises (per pixel),
brightness, contrast, JPEG quality (8x8 blocks at every size), zoom-blur factors, and fog (the
plasma map always spans the image: its coarse octaves keep their amplitude and only detail
finer than a pixel is lost). The tables at s = 1 reproduce CIFAR-10-C; at s = 7 (224x224) they
come close to the ImageNet-C ones (defocus radius 2.1-10.5 vs 3-10). For the 8x8 digits
(s = 0.25) defocus, glass blur and pixelate vanish and the other spatial ones are mild: that is
what the same damage to the 32x32 bitmaps the digits were averaged from would leave; pass
scale=1.0 for CIFAR-pixel-sized damage.

Departures from the originals: frost uses a procedural texture (`weather.frost_texture`)
instead of the six photographs; JPEG is a DCT round trip in JAX with chroma at full resolution
(`digital`); pixelate and the other resamplings stay in floating point (Pillow rounds to
8 bits between steps); motion blur is imagecorruptions' shift-and-add version (CIFAR-10-C used
ImageMagick's).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej.corruptions import blur, digital, noise, weather

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
NOISE_CORRUPTIONS = CORRUPTIONS[:3]
SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 32

# CIFAR-10-C (make_cifar_c.py), severity 1..5
TABLE = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [
        np.arange(1, 1.06, 0.01),
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.01),
        np.arange(1, 1.26, 0.01),
    ],
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    # (alpha, sigma, affine) = 32 * (0, 0, .08), (.05, .2, .07), (.08, .06, .06), ...
    "elastic_transform": [
        (0.0, 0.0, 2.56),
        (1.6, 6.4, 2.24),
        (2.56, 1.92, 1.92),
        (3.2, 1.28, 1.6),
        (3.2, 0.96, 0.96),
    ],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}

_FUNCTIONS = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": weather.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}


def spatial_scale(height: int, width: int) -> float:
    """s = sqrt(H * W) / 32: pixel lengths of the CIFAR-10-C table are multiplied by s."""
    return math.sqrt(height * width) / REFERENCE_SIZE


def _check_name_severity(name, severity):
    if name not in TABLE:
        raise ValueError(f"name: expected one of {', '.join(CORRUPTIONS)}, got {name!r}")
    if severity not in SEVERITIES or isinstance(severity, bool):
        raise ValueError(f"severity: expected an integer in 1..5, got {severity!r}")


def parameters(name: str, severity: int, *, shape: tuple[int, int], scale: float | None = None):
    """Keyword arguments of the per-image function for `name` at `severity` on images of
    spatial `shape` (H, W), after the size rule (module doc)."""
    _check_name_severity(name, severity)
    h, w = int(shape[0]), int(shape[1])
    s = spatial_scale(h, w) if scale is None else float(scale)
    if not s > 0:
        raise ValueError(f"scale: expected a positive number, got {scale!r}")
    c = TABLE[name][severity - 1]
    if name == "gaussian_noise":
        return {"std": float(c)}
    if name == "shot_noise":
        return {"rate": float(c)}
    if name == "impulse_noise":
        return {"amount": float(c)}
    if name == "defocus_blur":
        return {"radius": c[0] * s, "alias_blur": c[1] * s}
    if name == "glass_blur":
        return {"sigma": c[0] * s, "max_delta": int(c[1] * s + 0.5), "iterations": c[2]}
    if name == "motion_blur":
        return {"radius": int(c[0] * s + 0.5), "sigma": c[1] * s}
    if name == "zoom_blur":
        return {"zooms": tuple(float(z) for z in c)}
    if name == "snow":
        return {
            "loc": c[0],
            "scale": c[1],
            "zoom": max(1.0, c[2] * s),
            "threshold": c[3],
            "radius": int(c[4] * s + 0.5),
            "sigma": c[5] * s,
            "blend": c[6],
        }
    if name == "frost":
        return {"image_weight": float(c[0]), "frost_weight": float(c[1]), "scale": s}
    if name == "fog":
        return {"amount": float(c[0]), "wibbledecay": float(c[1])}
    if name == "brightness":
        return {"amount": float(c)}
    if name == "contrast":
        return {"factor": float(c)}
    if name == "elastic_transform":
        return {"alpha": c[0] * s * s, "sigma": c[1] * s, "affine": c[2] * s}
    if name == "pixelate":
        return {"size": (min(h, max(1, int(h * c / s))), min(w, max(1, int(w * c / s))))}
    return {"quality": int(c)}


# parameters passed traced (one compilation serves every severity); the others shape the graph
DYNAMIC = {
    "gaussian_noise": ("std",),
    "shot_noise": ("rate",),
    "impulse_noise": ("amount",),
    "glass_blur": ("sigma", "iterations"),
    "motion_blur": ("radius", "sigma"),
    "snow": ("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend"),
    "frost": ("image_weight", "frost_weight"),
    "fog": ("amount", "wibbledecay"),
    "brightness": ("amount",),
    "contrast": ("factor",),
    "elastic_transform": ("alpha", "sigma", "affine"),
    "jpeg_compression": ("quality",),
}


def _bounds(name, shape, scale):
    """Static bounds over the 5 severities for the parameters passed traced (DYNAMIC)."""
    every = [parameters(name, s, shape=shape, scale=scale) for s in SEVERITIES]
    if name in ("glass_blur", "elastic_transform"):
        out = {"max_sigma": max(p["sigma"] for p in every)}
        if name == "glass_blur":
            out["max_iterations"] = max(p["iterations"] for p in every)
        return out
    if name in ("motion_blur", "snow"):
        return {"max_radius": max(p["radius"] for p in every)}
    return {}


@functools.partial(jax.jit, static_argnames=("name", "static"))
def _corrupt(x, key, dynamic, *, name, static):
    fn = _FUNCTIONS[name]
    kw = dict(static) | dynamic
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    return jax.vmap(lambda xi, ki: fn(xi, key=ki, **kw))(x, keys).astype(x.dtype)


def corrupt(name: str, x, severity: int, *, key, scale: float | None = None):
    """Corruption `name` (one of CORRUPTIONS) at `severity` (1..5) of images x: (B, H, W, C),
    float in [0, 1], C in {1, 3}, H, W >= 4; returns the same shape and dtype, in [0, 1].
    Example i uses fold_in(key, i). scale: the size factor s (default sqrt(H W) / 32)."""
    _check_name_severity(name, severity)
    x = jnp.asarray(x)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape[1:3]) < 4:
        raise ValueError(f"x: expected (B, H, W, C) with C in (1, 3) and H, W >= 4, got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected floating images in [0, 1], got dtype {x.dtype}")
    if scale is not None and not float(scale) > 0:
        raise ValueError(f"scale: expected a positive number, got {scale!r}")
    kw = parameters(name, int(severity), shape=x.shape[1:3], scale=scale)
    return _dispatch(name, x, key, kw, _bounds(name, x.shape[1:3], scale))


def _dispatch(name, x, key, kw, bounds):
    dyn = DYNAMIC.get(name, ())
    dynamic = {k: jnp.asarray(v, x.dtype) for k, v in kw.items() if k in dyn}
    static = tuple(sorted((k, v) for k, v in (kw | bounds).items() if k not in dyn))
    return _corrupt(x, key, dynamic, name=name, static=static)


def corrupt_with(name: str, x, *, key, **params):
    """Corruption `name` with explicit parameters (the keywords of its per-image function in
    `noise`, `blur`, `weather`, `digital`, in pixels of x: no size rule), e.g. imagecorruptions'
    ImageNet-C values; batched, jitted and keyed like `corrupt` (and sharing its compilations
    when the static bounds agree)."""
    _check_name_severity(name, 1)
    x = jnp.asarray(x)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"x: expected float (B, H, W, C) with C in (1, 3), got {x.dtype} {x.shape}"
        )
    table = _bounds(name, x.shape[1:3], None)
    bounds = {}
    for b, v in table.items():
        p = {"max_sigma": "sigma", "max_iterations": "iterations", "max_radius": "radius"}[b]
        bounds[b] = max(v, params[p]) if p in params else v
    return _dispatch(name, x, key, dict(params), bounds)
