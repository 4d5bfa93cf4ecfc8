"""Base classifiers: shapes, the logits/feature relation, padded batching, training on digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import classifiers as C
from jaxrej.data import digits

SMALL = {
    "mlp": {"hidden": (32, 16)},
    "cnn": {"channels": (4, 8), "dense": 16},
    "resnet": {"channels": (4, 8), "blocks": 1},
}


@pytest.fixture(scope="module")
def data():
    x, y = digits.load("train")
    xt, yt = digits.load("test")
    return x / 16.0, y, xt / 16.0, yt


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_shapes_and_logits_are_linear_in_features(name, data):
    x = jnp.asarray(data[0][:10], jnp.float32)
    m = C.make_model(name, 10, **SMALL[name])
    st = C.init(m, x[:2], key=jax.random.key(0))
    logits, feats = C.apply(m, st, x, batch_size=4)  # 10 rows in padded batches of 4
    width = SMALL[name].get("dense") or (SMALL[name].get("hidden") or SMALL[name]["channels"])[-1]
    assert logits.shape == (10, 10) and feats.shape == (10, width)
    # the last layer is Dense: logits = features @ W + b, with W, b read from the params
    dense = [k for k in st.params if k.startswith("Dense")]
    last = st.params[sorted(dense, key=lambda k: int(k.split("_")[1]))[-1]]
    np.testing.assert_allclose(logits, feats @ last["kernel"] + last["bias"], rtol=1e-5, atol=1e-5)
    # padded batching = one direct call on the whole batch (eval mode)
    variables = {"params": st.params} | ({"batch_stats": st.batch_stats} if st.batch_stats else {})
    direct, _ = m.apply(variables, x, train=False)
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)


def test_mlp_training_learns_digits(data):
    x, y, xt, yt = data
    m = C.make_model("mlp", 10, hidden=(64,))
    st = C.init(m, x[:2], key=jax.random.key(0))
    st = C.train(m, st, x, y, key=jax.random.key(1), epochs=15, batch_size=64, learning_rate=3e-3)
    losses = np.asarray(st.losses)
    assert losses.shape == (15,) and losses[-1] < 0.25 * losses[0]
    assert float(np.mean(np.asarray(C.predict(m, st, xt)) == yt)) > 0.9


def test_resnet_batchnorm_statistics_are_trained(data):
    x, y, _, _ = data
    m = C.make_model("resnet", 10, **SMALL["resnet"])
    st0 = C.init(m, x[:2], key=jax.random.key(0))
    st = C.train(m, st0, x[:256], y[:256], key=jax.random.key(1), epochs=1, batch_size=64)
    mean0 = jax.tree.leaves(st0.batch_stats)[0]
    mean1 = jax.tree.leaves(st.batch_stats)[0]
    assert float(jnp.max(jnp.abs(mean1 - mean0))) > 1e-4
    # eval mode: an example's output does not depend on the rest of its batch
    a, _ = C.apply(m, st, x[:8], batch_size=8)
    b, _ = C.apply(m, st, x[:1], batch_size=8)
    np.testing.assert_allclose(a[:1], b, rtol=1e-5, atol=1e-5)


def test_shift_images_is_a_translation_with_edge_fill():
    from jaxrej.classifiers.train import shift_images

    x = np.random.default_rng(0).random((16, 6, 5, 2)).astype(np.float32)
    key = jax.random.key(3)
    out = np.asarray(shift_images(jnp.asarray(x), key, 2))
    # independent truth: numpy's edge padding and the same offsets (randint as shift_images)
    offsets = np.asarray(jax.random.randint(key, (16, 2), 0, 5))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for i, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(out[i], padded[i, dy : dy + 6, dx : dx + 5])
    assert len({tuple(o) for o in offsets}) > 4  # the offsets differ per image
    np.testing.assert_array_equal(np.asarray(shift_images(jnp.asarray(x), key, 0)), x)


def test_cosine_schedule_scales_adams_second_step_by_the_cosine(data):
    """Adam's moments do not depend on the learning rate, so with one full batch per epoch the
    second update under `lr_schedule="cosine"` over 2 steps is the constant-rate second update
    times the schedule's factor 0.5 (1 + cos(pi * 1 / 2)) = 0.5; the first updates agree."""
    x, y, _, _ = data
    x, y = x[:64], y[:64]
    m = C.make_model("mlp", 10, **SMALL["mlp"])
    st0 = C.init(m, x[:2], key=jax.random.key(0))
    kw = dict(key=jax.random.key(1), batch_size=64, learning_rate=1e-2)
    one = C.train(m, st0, x, y, epochs=1, **kw).params
    const = C.train(m, st0, x, y, epochs=2, **kw).params
    cos = C.train(m, st0, x, y, epochs=2, lr_schedule="cosine", **kw).params
    factor = 0.5 * (1 + np.cos(np.pi * 1 / 2))
    for a1, ac, ak in zip(*(jax.tree.leaves(p) for p in (one, const, cos)), strict=True):
        np.testing.assert_allclose(ak - a1, factor * (ac - a1), rtol=1e-3, atol=1e-6)
    assert max(float(jnp.max(jnp.abs(ac - a1))) for a1, ac in
               zip(jax.tree.leaves(one), jax.tree.leaves(const), strict=True)) > 1e-3  # fmt: skip


def test_augmentation_changes_training_and_bad_options(data):
    x, y, xt, yt = data
    x4 = x.reshape(-1, 8, 8, 1)
    m = C.make_model("cnn", 10, **SMALL["cnn"])
    st0 = C.init(m, x4[:2], key=jax.random.key(0))
    kw = dict(key=jax.random.key(1), epochs=3, batch_size=64, learning_rate=3e-3)
    plain = C.train(m, st0, x4, y, **kw)
    aug = C.train(m, st0, x4, y, augment_shift=1, **kw)
    # augmentation changes the training inputs, so the parameters differ; both learn
    diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), plain.params, aug.params)
    assert max(jax.tree.leaves(diff)) > 1e-3
    assert float(aug.losses[-1]) < float(aug.losses[0])
    with pytest.raises(ValueError, match="augment_shift"):
        C.train(m, st0, x4.reshape(len(x4), -1), y, augment_shift=1, **kw)  # flat images
    with pytest.raises(ValueError, match="lr_schedule"):
        C.train(m, st0, x4, y, lr_schedule="linear", **kw)


def test_bad_input(data):
    x, y, _, _ = data
    m = C.make_model("mlp", 10)
    st = C.init(m, x[:2], key=jax.random.key(0))
    with pytest.raises(ValueError, match="labels"):
        C.train(m, st, x, y[:-1], key=jax.random.key(0), epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        C.train(m, st, x, y, key=jax.random.key(0), epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="model"):
        C.make_model("vit", 10)
