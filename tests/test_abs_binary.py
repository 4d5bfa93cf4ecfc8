"""Binary ABS (`ABSModel.binarize`): the score of x is the plain model's score of [x > t]; the
attack view's gradient is the plain model's gradient at [x > t] (straight through), the judge's
is zero; training on gray images equals training on their thresholded copies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import abs as A
from jaxrej.abs.latent import binarize
from jaxrej.abs.scorer import ABSScorer


def _models():
    kw = dict(num_classes=3, event_shape=(4, 4, 1), latent_dim=2, hidden=(8,), encoder_hidden=(8,),
              likelihood="bernoulli")  # fmt: skip
    plain = A.ABSModel(**kw)
    return plain, A.ABSModel(**kw, binarize=0.5), A.init_params(plain, key=jax.random.key(0))


def test_binarize_values_and_gradients():
    x = jnp.array([0.1, 0.5, 0.51, 0.9])
    np.testing.assert_array_equal(np.asarray(binarize(x, 0.5)), [0, 0, 1, 1])
    np.testing.assert_array_equal(np.asarray(binarize(x, 0.5, straight_through=True)), [0, 0, 1, 1])
    w = jnp.array([1.0, -2.0, 3.0, 4.0])
    g = jax.grad(lambda v: jnp.dot(w, binarize(v, 0.5)))(x)
    g_st = jax.grad(lambda v: jnp.dot(w, binarize(v, 0.5, straight_through=True)))(x)
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    np.testing.assert_array_equal(np.asarray(g_st), np.asarray(w))


def test_binary_scores_and_straight_through_gradient_are_the_plain_models_at_the_threshold():
    plain, binary, params = _models()
    bank = A.latent_bank(plain, params, n=16, key=jax.random.key(1))
    opts = A.LatentOptions(steps=2)
    x = jax.random.uniform(jax.random.key(2), (2, 4, 4, 1))
    hard = (x > 0.5).astype(jnp.float32)
    judge = ABSScorer(params=params, bank=bank, model=binary, options=opts)
    view = judge.replace(straight_through=True)
    ref = ABSScorer(params=params, bank=bank, model=plain, options=opts)
    np.testing.assert_allclose(np.asarray(judge(x)), np.asarray(ref(hard)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(view(x)), np.asarray(ref(hard)), rtol=1e-6)
    loss = lambda f: lambda v: jnp.sum(f(v)[:, 1] - f(v)[:, 0])  # noqa: E731
    g_ref = jax.grad(loss(ref))(hard)
    assert float(jnp.abs(g_ref).max()) > 0
    np.testing.assert_allclose(np.asarray(jax.grad(loss(view))(x)), np.asarray(g_ref), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(jax.grad(loss(judge))(x)), 0.0)


def test_training_on_gray_rows_is_training_on_their_thresholded_copies(tmp_path):
    plain, binary, params = _models()
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(24, 4, 4, 1)).astype(np.uint8)
    labels = np.arange(24) % 3
    opts = A.ABSTrainOptions(n_iters=3, per_class=4, log_every=1, checkpoint_every=3)
    out = []
    for name, model, imgs in (
        ("b", binary, gray),
        ("p", plain, (gray > 127.5).astype(np.uint8) * 255),
    ):
        (tmp_path / name).mkdir()
        state, _ = A.train(workdir=str(tmp_path / name), model=model, init_params=params, images=imgs,
                           labels=labels, opts=opts, key=jax.random.key(3), progress=False)  # fmt: skip
        out.append(jax.tree_util.tree_leaves(state.params))
    (tmp_path / "g").mkdir()  # the planted defect: the plain model on the gray rows
    state, _ = A.train(workdir=str(tmp_path / "g"), model=plain, init_params=params, images=gray,
                       labels=labels, opts=opts, key=jax.random.key(3), progress=False)  # fmt: skip
    out.append(jax.tree_util.tree_leaves(state.params))

    def gap(a, b):
        return max(
            float(np.abs(np.asarray(u) - np.asarray(v)).max()) for u, v in zip(a, b, strict=True)
        )

    assert gap(out[0], out[1]) < 1e-6 < 1e-3 < gap(out[0], out[2])  # equal up to rounding


def test_bad_threshold_names_the_field():
    for bad in (0.0, 1.0, True, "0.5"):
        with pytest.raises(ValueError, match="binarize"):
            A.ABSModel(binarize=bad)
