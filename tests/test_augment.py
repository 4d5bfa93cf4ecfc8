"""jaxrej.data.augment against numpy's exact image operations (rot90, slicing, a point map)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej.data.augment import affine_warp, random_affine


def _img(h=7, w=7, ch=2, seed=0):
    return np.random.default_rng(seed).random((h, w, ch)).astype(np.float32)


def test_quarter_turn_is_numpys_rot90():
    x = _img()
    out = affine_warp(jnp.asarray(x), jnp.float32(np.pi / 2), jnp.float32(1.0), jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(out), np.rot90(x, -1), atol=1e-6)


def test_integer_translation_is_slicing_with_zero_fill():
    x = _img(6, 8)
    out = np.asarray(
        affine_warp(jnp.asarray(x), jnp.float32(0), jnp.float32(1), jnp.array([2.0, -3.0]))
    )
    want = np.zeros_like(x)
    want[2:, :5] = x[:-2, 3:]
    np.testing.assert_array_equal(out, want)


def test_scale_reads_the_point_the_inverse_map_names():
    """Scale 2 about the centre: output pixel p reads c + (p - c) / 2; on an image linear in
    (row, col) bilinear interpolation is exact, so the output is that linear function there."""
    h = w = 9
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = (0.3 * r + 0.7 * c + 1.0).astype(np.float32)[..., None]
    out = np.asarray(affine_warp(jnp.asarray(x), jnp.float32(0), jnp.float32(2.0), jnp.zeros(2)))
    ctr = (h - 1) / 2
    want = 0.3 * (ctr + (r - ctr) / 2) + 0.7 * (ctr + (c - ctr) / 2) + 1.0
    np.testing.assert_allclose(out[..., 0], want, rtol=1e-6)


def test_random_affine_draws_per_image_and_zero_ranges_are_the_identity():
    x = jnp.asarray(np.stack([_img(seed=s) for s in range(4)]))
    key = jax.random.key(3)
    np.testing.assert_array_equal(np.asarray(random_affine(x, key)), np.asarray(x))
    a = np.asarray(random_affine(x, key, max_rotate=15.0, max_scale=0.1, max_shift=1.0))
    assert a.shape == x.shape and not np.allclose(a, x)
    # every row draws its own map: the same image twice in one batch is warped two ways
    same = np.asarray(random_affine(jnp.concatenate([x, x]), key, max_rotate=15.0))
    assert not np.allclose(same[0], same[4])  # rows draw their own maps


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"max_rotate": -1.0}, "max_rotate"),
        ({"max_scale": 1.0}, "max_scale"),
        ({"max_shift": float("nan")}, "max_shift"),
    ],  # fmt: skip
)
def test_bad_ranges_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        random_affine(jnp.zeros((1, 4, 4, 1)), jax.random.key(0), **kw)
