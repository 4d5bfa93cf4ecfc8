"""Synthetic OOD sets (jaxrej.data.ood): shapes, ranges, determinism, and photo patches that
look like natural images (neighbouring pixels strongly correlated, unlike noise)."""

import numpy as np
import pytest

from jaxrej.data import ood


def _neighbour_correlation(x):
    """Correlation of horizontally adjacent pixels over a set (N, H, W, C)."""
    a, b = x[:, :, :-1].ravel(), x[:, :, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("shape", [(8, 8, 1), (12, 10, 3)])
def test_generators_shape_range_determinism(shape):
    for fn in (ood.uniform_noise, ood.gaussian_noise, ood.constant_images, ood.photo_patches):
        x = fn(6, shape, seed=3)
        assert x.shape == (6, *shape) and x.dtype == np.float32, fn.__name__
        assert 0.0 <= x.min() and x.max() <= 1.0, fn.__name__
        np.testing.assert_array_equal(fn(6, shape, seed=3), x)
        assert not np.array_equal(fn(6, shape, seed=4), x), fn.__name__
    c = ood.constant_images(6, shape, seed=0)
    assert np.all(c == c[:, :1, :1])  # one value per image and channel
    g = ood.gaussian_noise(4000, (2, 2, 1), seed=0)
    # clip(N(0.5, 0.25^2)): 2.3% of the mass on each bound, mean 0.5
    assert abs(g.mean() - 0.5) < 0.01 and abs((g == 0).mean() - 0.0228) < 0.006


def test_photo_patches_are_natural_image_like():
    photos = ood.photo_patches(64, (8, 8, 1), seed=0)
    noise = ood.uniform_noise(64, (8, 8, 1), seed=0)
    assert _neighbour_correlation(photos) > 0.8  # measured 0.96 (seed 0)
    assert abs(_neighbour_correlation(noise)) < 0.1
    assert photos.std() > 0.1  # not flat: the crops differ in content
    rgb = ood.photo_patches(8, (16, 16, 3), seed=0)
    assert _neighbour_correlation(rgb) > 0.8
    # the grey patch is the BT.601 luma of the colour one (same seed: same crops)
    grey = ood.photo_patches(8, (16, 16, 1), seed=0)
    np.testing.assert_allclose(grey[..., 0], rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-5)


def test_synthetic_sets_and_inversion():
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
    sets = ood.synthetic_ood_sets(x, seed=1)
    assert tuple(sets) == ood.SYNTHETIC
    for name, s in sets.items():
        assert s.shape == x.shape and s.dtype == np.float32, name
        assert 0.0 <= s.min() and s.max() <= 1.0, name
    np.testing.assert_allclose(sets["inverted"], 1 - x)
    np.testing.assert_array_equal(ood.synthetic_ood_sets(x, seed=1)["photos"], sets["photos"])
    assert set(ood.SUGGESTED_OOD) == {"digits", "mnist", "cifar10"}
    assert "omniglot" in ood.SUGGESTED_OOD["mnist"] and "dtd" in ood.SUGGESTED_OOD["cifar10"]
    with pytest.raises(ValueError, match="test_images"):
        ood.synthetic_ood_sets(np.zeros((2, 8, 8, 1), np.uint8), seed=0)
    with pytest.raises(ValueError, match="shape"):
        ood.uniform_noise(3, (8, 8, 2), seed=0)


def test_match_shape_resizes_greys_and_crops():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    omni = rng.integers(0, 256, (3, 105, 105, 3), dtype=np.uint8)  # omniglot-like
    out = ood.match_shape(omni, (28, 28, 1), invert=True)
    assert out.shape == (3, 28, 28, 1) and out.dtype == np.float32
    grey = omni / 255.0 @ np.array([0.299, 0.587, 0.114])
    ref = jax.image.resize(jnp.asarray(grey[0, ..., None], jnp.float32), (28, 28, 1), "linear",
                           antialias=True)  # fmt: skip
    np.testing.assert_allclose(out[0], 1 - np.asarray(ref), atol=1e-5)
    # varying sizes (dtd): a wide image is centre-cropped to a square before resizing
    wide = np.zeros((40, 120, 3))
    wide[:, 40:80] = 1.0  # the centre square is white, the sides black
    tall = np.full((90, 30, 1), 0.25)
    res = ood.match_shape([wide, tall], (10, 10, 3))
    assert res.shape == (2, 10, 10, 3)
    np.testing.assert_allclose(res[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(res[1], 0.25, atol=1e-6)  # grey replicated to 3 channels


def test_transformed_still_serves_eval_heads():
    levels = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1)).astype(np.uint8)
    t = ood.transformed(levels, 17, seed=0)
    np.testing.assert_array_equal(t["inverted"], 16 - levels)
    assert t["noise"].dtype == np.uint8 and t["noise"].max() < 17
