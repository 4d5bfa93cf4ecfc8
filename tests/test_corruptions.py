"""Common corruptions (jaxrej.corruptions): every corruption keeps shape, dtype and [0, 1] and
is deterministic given its key; damage grows with severity on average; and a cross-check with
the reference implementation `imagecorruptions` 1.1.2 on 32x32 RGB at its own (ImageNet-C)
parameters: exact for the deterministic maths (brightness, contrast, defocus, zoom, motion blur
at a fixed angle), within one 8-bit level for pixelate (Pillow rounds between its resizes),
close for JPEG (libjpeg's integer DCT; colour differs by chroma subsampling), and in
distribution for the random ones (noises, glass blur, fog, snow: means and spreads within five
standard errors)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import corruptions as C
from jaxrej.corruptions import blur, digital, noise, weather
from jaxrej.data import ood

# rbg keys compile ~3x faster than threefry on CPU; the default key type is tested below
KEY = jax.random.key(0, impl="rbg")
LUMA = np.array([0.299, 0.587, 0.114])


def _photos32(n=6):
    return ood.photo_patches(n, (32, 32, 3), seed=5, min_crop=32, max_crop=96)


def _setups():
    """Two image settings: grey 8x8 digits at the default scale (s = 0.25) and RGB 32x32 photo
    patches (s = 1: the CIFAR-10-C table as written), the latter for the corruptions that are
    cross-checked in distribution below (which then reuse these compilations)."""
    from sklearn.datasets import load_digits

    grey = (load_digits().images[:3, :, :, None] / 16.0).astype(np.float32)
    rgb = _photos32(3).astype(np.float32)
    return jnp.asarray(grey), jnp.asarray(rgb)


RGB = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "snow", "fog",
       "contrast", "pixelate"}  # fmt: skip


def test_registry_shapes_ranges_determinism_and_damage_grows_with_severity():
    grey, rgb = _setups()
    damage = np.zeros((len(C.CORRUPTIONS), 5))
    for i, name in enumerate(C.CORRUPTIONS):
        x = rgb if name in RGB else grey
        for sev in C.SEVERITIES:
            y = C.corrupt(name, x, sev, key=KEY)
            assert y.shape == x.shape and y.dtype == x.dtype, name
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0, name
            damage[i, sev - 1] = float(jnp.abs(y - x).mean())
        np.testing.assert_array_equal(C.corrupt(name, x, 5, key=KEY), y)
    mean = damage.mean(0)
    assert np.all(np.diff(mean) > 0), mean
    assert mean[4] > 2 * mean[0]
    # the noises, brightness, contrast, fog, JPEG and zoom grow at every step
    for name in ("gaussian_noise", "shot_noise", "brightness", "contrast", "fog", "zoom_blur"):
        assert np.all(np.diff(damage[C.CORRUPTIONS.index(name)]) > 0), name
    # at s = 0.25 defocus and pixelate are below a pixel (module doc); at s = 1 they are not
    assert damage[C.CORRUPTIONS.index("defocus_blur")].max() < 1e-6
    assert damage[C.CORRUPTIONS.index("pixelate"), 4] > 0.01


def test_keys_fold_in_per_example_and_default_keys():
    x = jnp.full((3, 8, 8, 1), 0.5, jnp.float32)
    k = jax.random.PRNGKey(1)  # raw threefry key
    y = C.corrupt("gaussian_noise", x, 3, key=k)
    np.testing.assert_array_equal(C.corrupt("gaussian_noise", x, 3, key=k), y)
    assert not np.array_equal(y[0], y[1])  # identical images, own keys fold_in(key, i)
    assert not np.array_equal(C.corrupt("gaussian_noise", x, 3, key=jax.random.PRNGKey(2)), y)
    np.testing.assert_array_equal(C.corrupt("gaussian_noise", x[:1], 3, key=k), y[:1])
    # the per-image function with the folded key and the table's parameter gives the same
    one = noise.gaussian_noise(x[2], key=jax.random.fold_in(k, 2), std=C.TABLE["gaussian_noise"][2])
    np.testing.assert_allclose(y[2], one, atol=1e-6)


def test_bad_input():
    x = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="name"):
        C.corrupt("speckle_noise", x, 1, key=KEY)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt("fog", x, 6, key=KEY)
    with pytest.raises(ValueError, match="x: expected"):
        C.corrupt("fog", jnp.zeros((2, 8, 8, 2)), 1, key=KEY)
    with pytest.raises(ValueError, match="x: expected floating"):
        C.corrupt("fog", jnp.zeros((2, 8, 8, 1), jnp.uint8), 1, key=KEY)
    with pytest.raises(ValueError, match="scale"):
        C.corrupt("fog", x, 1, key=KEY, scale=0.0)


def test_size_rule():
    assert C.spatial_scale(32, 32) == 1.0 and C.spatial_scale(8, 8) == 0.25
    p32 = C.parameters("defocus_blur", 5, shape=(32, 32))
    assert p32 == {"radius": 1.5, "alias_blur": 0.1}  # CIFAR-10-C unchanged at 32x32
    p224 = C.parameters("defocus_blur", 5, shape=(224, 224))
    assert p224["radius"] == pytest.approx(10.5)  # ImageNet-C uses 10 at 224x224
    assert C.parameters("pixelate", 5, shape=(32, 32)) == {"size": (20, 20)}
    assert C.parameters("elastic_transform", 4, shape=(16, 16))["alpha"] == pytest.approx(0.8)
    assert C.parameters("gaussian_noise", 2, shape=(8, 8)) == {"std": 0.06}  # per pixel: unscaled


# ---- cross-check with imagecorruptions (ImageNet-C parameters, 32x32 RGB) ----


@pytest.fixture(scope="module")
def ic():
    """imagecorruptions' module, for the cross-checks that need it (the others run without)."""
    return pytest.importorskip("imagecorruptions.corruptions")


def _pil(x):
    from PIL import Image

    return Image.fromarray(np.round(x * 255).astype(np.uint8))


def test_deterministic_corruptions_match_imagecorruptions_exactly(ic):
    xs = _photos32(3)
    xs = np.round(xs * 255) / 255  # the reference works on 8-bit images
    for x in xs:
        img = _pil(x)
        for sev in C.SEVERITIES:
            c = [0.1, 0.2, 0.3, 0.4, 0.5][sev - 1]
            ref = ic.brightness(img, sev) / 255
            np.testing.assert_allclose(weather.brightness(jnp.asarray(x), amount=c), ref, atol=1e-5)
            c = [0.4, 0.3, 0.2, 0.1, 0.05][sev - 1]
            np.testing.assert_allclose(
                digital.contrast(jnp.asarray(x), factor=c), ic.contrast(img, sev) / 255, atol=1e-5
            )
        for sev in (1, 3, 5):
            r, a = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][sev - 1]
            np.testing.assert_allclose(
                blur.defocus_blur(jnp.asarray(x), radius=r, alias_blur=a),
                ic.defocus_blur(img, sev) / 255,
                atol=1e-5,
            )
            zooms = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                     np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][sev - 1]  # fmt: skip
            np.testing.assert_allclose(
                blur.zoom_blur(jnp.asarray(x), zooms=tuple(zooms)), ic.zoom_blur(img, sev) / 255,
                atol=1e-5,
            )  # fmt: skip
        for angle in (-37.3, 12.9):  # imagecorruptions draws it; here it is given
            ref = ic._motion_blur(np.asarray(img), radius=15, sigma=5, angle=angle) / 255
            out = blur.motion_blur_at(jnp.asarray(x), angle, radius=15, sigma=5)
            np.testing.assert_allclose(out, ref, atol=1e-5)


def test_pixelate_and_jpeg_match_imagecorruptions_closely(ic):
    jpeg = jax.jit(lambda x, q: digital.jpeg_compression(x, quality=q))  # quality traced
    for x in _photos32(3):
        img = _pil(x)
        x8 = np.asarray(img) / 255.0
        for sev in C.SEVERITIES:
            c = [0.6, 0.5, 0.4, 0.3, 0.25][sev - 1]
            ref = np.asarray(ic.pixelate(img, sev)) / 255
            out = digital.pixelate(jnp.asarray(x8), size=(int(32 * c),) * 2, upsample="nearest")
            assert np.abs(np.asarray(out) - ref).max() <= 1.0001 / 255  # Pillow's 8-bit rounding
            # JPEG, grey: libjpeg and this DCT differ only by integer-DCT rounding
            q = [25, 18, 15, 10, 7][sev - 1]
            grey = np.asarray(img.convert("L"))
            ref = np.asarray(ic.jpeg_compression(_pil(grey / 255.0), sev), np.float64)
            out = np.asarray(jpeg(jnp.asarray(grey[..., None] / 255.0), q))[..., 0] * 255
            diff = np.abs(out - ref)
            # a DCT coefficient on a rounding boundary flips a whole 8x8 block: allow two of 16
            blocks_off = (diff.reshape(4, 8, 4, 8).max((1, 3)) > 1.5).sum()
            assert diff.mean() < 0.5 and blocks_off <= 2, (q, diff.mean(), blocks_off)
            # colour: libjpeg subsamples chroma 2x2, this keeps it: compare the luma (BT.601)
            ref = np.asarray(ic.jpeg_compression(img, sev), np.float64) / 255 @ LUMA
            out = np.asarray(jpeg(jnp.asarray(x8), q)) @ LUMA
            assert np.abs(out - ref).mean() < 1.0 / 255, q  # measured <= 0.71 levels
            d_ref, d_out = np.abs(ref - x8 @ LUMA).mean(), np.abs(out - x8 @ LUMA).mean()
            assert abs(d_out / d_ref - 1) < 0.1, (q, d_out, d_ref)  # measured <= 7%


def _agree(a, b, what):
    """Means of two samples of i.i.d. values within five standard errors."""
    a, b = np.ravel(a), np.ravel(b)
    se = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(a.mean() - b.mean()) < 5 * se + 1e-9, (what, a.mean(), b.mean(), se)


def test_random_corruptions_match_imagecorruptions_in_distribution(ic, monkeypatch):
    import skimage.filters

    # imagecorruptions' glass_blur passes skimage's removed `multichannel`, its fog numpy 2's
    # removed np.float_: patch both back for the reference (nothing else changes)
    def gaussian(image, sigma, multichannel=False, **kw):
        return skimage.filters.gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)  # fmt: skip

    monkeypatch.setattr(ic, "gaussian", gaussian)
    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    xs = np.round(_photos32(3) * 255) / 255
    np.random.seed(0)  # noqa: NPY002 (imagecorruptions draws from numpy's global state)
    snow = dict(zip(("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend"),
                    (0.2, 0.3, 2, 0.5, 12, 4, 0.7), strict=True))  # fmt: skip
    cases = [  # (name, severity, imagecorruptions' parameters at that severity)
        ("gaussian_noise", 3, {"std": 0.18}),
        ("shot_noise", 3, {"rate": 12.0}),
        ("impulse_noise", 3, {"amount": 0.09}),
        ("glass_blur", 2, {"sigma": 0.9, "max_delta": 2, "iterations": 1}),
        ("fog", 3, {"amount": 2.5, "wibbledecay": 1.7}),
        ("snow", 2, snow),
    ]
    xs32 = jnp.asarray(xs, jnp.float32)
    draws = 4  # independent draws of the 3 images on each side
    for name, sev, kw in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.stack(
                [getattr(ic, name)(_pil(x), sev) / 255 for _ in range(draws) for x in xs]
            )
        out = np.concatenate([
            np.asarray(C.corrupt_with(name, xs32, key=jax.random.fold_in(KEY, d), **kw))
            for d in range(draws)
        ])  # fmt: skip
        x_rep = np.concatenate([xs] * draws)
        if name in ("glass_blur", "fog", "snow"):  # spatially correlated: per-image statistics
            _agree(np.abs(out - x_rep).mean((1, 2, 3)), np.abs(ref - x_rep).mean((1, 2, 3)), name)
            _agree(out.std((1, 2, 3)), ref.std((1, 2, 3)), name + " std")
        else:  # i.i.d. per pixel: the pixel differences
            _agree(out - x_rep, ref - x_rep, name)
            _agree(np.abs(out - x_rep), np.abs(ref - x_rep), name + " |.|")


def test_frost_texture_and_elastic_properties():
    tex = weather.frost_texture()
    assert tex.shape == (weather.FROST_SIZE,) * 2 and tex.min() == 0.0 and tex.max() == 1.0
    np.testing.assert_array_equal(weather.frost_texture.__wrapped__(), tex)  # fixed seed
    x = jnp.asarray(_photos32(1)[0])
    np.testing.assert_allclose(
        weather.frost(x, key=KEY, image_weight=1.0, frost_weight=0.0, scale=1.0), x, atol=1e-6
    )
    still = digital.elastic_transform(x, key=KEY, alpha=0.0, sigma=0.0, affine=0.0)
    np.testing.assert_allclose(still, x, atol=1e-5)  # no affine jitter, no displacement
