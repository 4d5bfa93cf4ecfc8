"""jaxrej.abs with decoder='conv': the matmul-written 3x3 convolution against lax's, the
depth-to-space upsampling against its index formula, and the class bounds of the stacked,
vmapped conv decoders against a direct computation with one class's own parameters (and
batch invariance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import abs as A
from jaxrej.abs.model import class_params, conv3x3, depth_to_space


@pytest.mark.parametrize("c_in,c_out", [(3, 4), (8, 1)])  # im2col; matmul, then shifted sums
def test_conv3x3_is_laxs_same_convolution(c_in, c_out):
    kx, kk, kb = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(kx, (2, 5, 6, c_in))
    kernel = jax.random.normal(kk, (9 * c_in, c_out))
    bias = jax.random.normal(kb, (c_out,))
    w = kernel.reshape(3, 3, c_in, c_out)
    want = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias  # fmt: skip
    np.testing.assert_allclose(np.asarray(conv3x3(h, kernel, bias)), np.asarray(want),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_depth_to_space_puts_channel_block_ab_at_pixel_2i_a_2j_b():
    h = np.arange(3 * 2 * 4 * 5, dtype=np.float32).reshape(3, 2, 4 * 5)
    got = np.asarray(depth_to_space(jnp.asarray(h)))
    assert got.shape == (6, 4, 5)
    for i in range(3):
        for j in range(2):
            for a in range(2):
                for b in range(2):
                    blk = 2 * a + b
                    np.testing.assert_array_equal(got[2 * i + a, 2 * j + b],
                                                  h[i, j, 5 * blk : 5 * blk + 5])  # fmt: skip


def _conv_model():
    model = A.ABSModel(num_classes=3, event_shape=(8, 8, 1), latent_dim=2, decoder="conv",
                       channels=(4, 3, 2), encoder_hidden=(8,), sigma=0.3)  # fmt: skip
    return model, A.init_params(model, key=jax.random.key(0))


def test_conv_decoder_bounds_are_each_classs_own_and_batch_invariant():
    model, params = _conv_model()
    assert jax.tree_util.tree_leaves(params["dec"])[0].shape[0] == 3  # stacked on a class axis
    bank = A.latent_bank(model, params, n=16, key=jax.random.key(1))
    x = jax.random.uniform(jax.random.key(2), (5, 8, 8, 1))
    opts = A.LatentOptions(steps=10, n_starts=2)
    f = jax.jit(lambda xb: A.class_bounds(model, params, bank, xb, options=opts))
    res = f(x[jnp.array([0, 1, 2])])
    assert res.score.shape == (3, 3) and res.z.shape == (3, 3, 2)

    # the score of class c is the linearised ELBO of class c's own decoder at its latent
    def direct(c, xb, z):
        raw = lambda zz: A.decode_raw(model, class_params(params["dec"], c), zz)  # noqa: E731
        return A.linearised_elbo(model, raw, xb.reshape(-1), z)

    direct = jax.jit(direct)
    for b in range(3):
        for c in range(3):
            want = float(direct(c, x[b], res.z[b, c]))
            assert float(res.score[b, c]) == pytest.approx(want, rel=1e-5, abs=1e-3)
    other = f(x[jnp.array([0, 3, 4])])  # same row 0, other neighbours, same shape
    np.testing.assert_array_equal(np.asarray(res.score[0]), np.asarray(other.score[0]))
    recon = A.latent.reconstructions(model, params, res.z)
    assert recon.shape == (3, 3, 8, 8, 1) and bool(jnp.all((recon > 0) & (recon < 1)))


def test_conv_decoder_trains_with_lax_convolutions_to_the_matmul_forms_values():
    """Training decodes class by class with lax's convolutions (`training.decode_class_rows`):
    the same raw outputs as the latent search's matmul form, class c on class c's params."""
    from jaxrej.abs.training import decode_class_rows

    model, params = _conv_model()
    z = jax.random.normal(jax.random.key(3), (3, 4, 2))
    got = decode_class_rows(model, params["dec"], z)
    want = jax.vmap(jax.vmap(lambda p, zi: A.decode_raw(model, p, zi), in_axes=(None, 0)))(
        params["dec"], z
    )
    assert got.shape == (3, 4, 64)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_conv_decoder_names_a_bad_setting():
    with pytest.raises(ValueError, match="event_shape"):
        A.ABSModel(event_shape=(10, 10, 1), decoder="conv", channels=(4, 3, 2))
    with pytest.raises(ValueError, match="decoder"):
        A.ABSModel(decoder="deconv")
    with pytest.raises(ValueError, match="channels"):
        A.ABSModel(decoder="conv", channels=(4, 0))
