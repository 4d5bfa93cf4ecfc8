"""jaxrej.gwin: gradient penalty vs finite differences, the critic's real examples, resume,
MC-dropout certainty, transform-and-reclassify on an arbitrary scorer, the tau table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import classifiers
from jaxrej.gwin import mc_dropout, protocol, transform, wgan

C, SHAPE = 3, (4, 4, 1)


def tiny_critic():
    return wgan.Critic(num_classes=C, channels=(4,), dense=8)


def tiny_classifier(dropout=0.25):
    return mc_dropout.MCDropoutCNN(num_classes=C, channels=(4,), kernel=3, padding=("SAME",),
                                   dense=(8,), dropout=dropout)  # fmt: skip


def test_gradient_penalty_matches_finite_difference_gradient_norms(x64):
    critic = tiny_critic()
    x = jax.random.uniform(jax.random.key(0), (3, *SHAPE), jnp.float64)
    y = jnp.array([0, 2, 1])
    params = critic.init(jax.random.key(1), x, y)["params"]
    params = jax.tree_util.tree_map(lambda p: 3.0 * p, params)  # norms away from 1

    def d(x_, y_):
        return critic.apply({"params": params}, x_, y_)

    # central differences, all 2 * D perturbations of every example in one call
    h, b, dim = 1e-6, x.shape[0], int(np.prod(SHAPE))
    steps = h * np.eye(dim).reshape(dim, *SHAPE)
    pts = np.concatenate([np.asarray(x)[:, None] + steps, np.asarray(x)[:, None] - steps], 1)
    vals = np.asarray(d(jnp.asarray(pts.reshape(-1, *SHAPE)), jnp.repeat(y, 2 * dim)))
    vals = vals.reshape(b, 2, dim)
    fd_norms = np.linalg.norm((vals[:, 0] - vals[:, 1]) / (2 * h), axis=-1)
    assert np.all(np.abs(fd_norms - 1.0) > 0.05)  # the penalty is not trivially ~0
    np.testing.assert_allclose(wgan.gradient_norms(d, x, y), fd_norms, rtol=1e-6)
    np.testing.assert_allclose(
        wgan.gradient_penalty(d, x, y), np.mean((fd_norms - 1.0) ** 2), rtol=1e-6
    )


def test_interpolate_is_a_per_example_convex_combination():
    a = jnp.zeros((5, *SHAPE))
    b = jnp.ones((5, *SHAPE))
    x = wgan.interpolate(a, b, key=jax.random.key(0))
    e = 1.0 - x[:, 0, 0, 0]
    assert np.all((e >= 0) & (e <= 1)) and np.unique(np.asarray(e)).size == 5
    np.testing.assert_allclose(x, (1.0 - e)[:, None, None, None] * jnp.ones_like(x))


def _toy_set(n=48, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n).astype(np.int32)
    pred = np.where(rng.random(n) < 0.8, labels, (labels + 1) % C).astype(np.int32)
    certainty = rng.uniform(0.5, 1.0, n)
    certainty[:6] = 0.95  # the boundary is included
    return labels, pred, certainty


def test_critic_pool_is_exactly_the_confident_and_correct_subset():
    labels, pred, certainty = _toy_set()
    n = labels.size
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *SHAPE))
    pool = wgan.critic_pool(images, labels, pred, certainty, tau_star=0.95)
    want = {i for i in range(n) if pred[i] == labels[i] and certainty[i] >= 0.95}
    rows = np.asarray(pool.images[:, 0, 0, 0]).astype(int)
    assert sorted(rows) == sorted(want)
    np.testing.assert_array_equal(pool.labels, labels[rows])
    # sample_real draws only pool rows, of the requested class, and every one of them eventually
    y = jnp.asarray(np.repeat(np.arange(C), 400), jnp.int32)
    drawn = np.asarray(wgan.sample_real(pool, y, key=jax.random.key(3))[:, 0, 0, 0]).astype(int)
    assert set(drawn) == want
    np.testing.assert_array_equal(labels[drawn], np.asarray(y))
    with pytest.raises(ValueError, match="class"):
        wgan.critic_pool(images, labels, pred, certainty, tau_star=1.0)


def _train(tmp, name, images, labels, pool, on_step=None, n_steps=4):
    clf = tiny_classifier()
    clf_params = classifiers.init(clf, images[:1], key=jax.random.key(5)).params
    # every random part of a step on: generator-input corruption and the MC-dropout penalty
    opts = wgan.GanOptions(n_steps=n_steps, batch_size=8, n_critic=2, noise_dim=3, log_every=1,
                           checkpoint_every=2, lr=1e-3, clf_samples=2, input_noise=0.1,
                           input_shift=1)  # fmt: skip
    return wgan.train(
        ckpt_dir=str(tmp / name),
        generator=wgan.Generator(event_shape=SHAPE, hidden=(8,)),
        critic=tiny_critic(),
        classifier=clf,
        clf_params=clf_params,
        gen_images=images,
        gen_labels=labels,
        pool=pool,
        opts=opts,
        key=jax.random.key(7),
        progress=False,
        on_step=on_step,
    )


def test_training_resumes_to_the_same_params_and_critic_sees_only_the_pool(tmp_path):
    labels, pred, certainty = _toy_set()
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(labels.size, *SHAPE)).astype(np.float32)
    # rows the critic must never see are NaN in the array the pool is built from: one of them
    # reaching the critic would make its parameters NaN
    poisoned = images.copy()
    poisoned[~((pred == labels) & (certainty >= 0.95))] = np.nan
    pool = wgan.critic_pool(poisoned, labels, pred, certainty, tau_star=0.95)

    full, log = _train(tmp_path, "full", images, labels, pool)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    leaves = jax.tree_util.tree_leaves((full.g_params, full.d_params))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in leaves)

    class Kill(Exception):
        pass

    def kill_after_3(state):
        if int(state.step) == 3:
            raise Kill

    with pytest.raises(Kill):
        _train(tmp_path, "resumed", images, labels, pool, on_step=kill_after_3)
    seen = []
    resumed, log2 = _train(tmp_path, "resumed", images, labels, pool, on_step=lambda s: seen.append(int(s.step)))  # fmt: skip
    assert seen == [3, 4]  # restarted from the checkpoint at step 2
    assert int(resumed.step) == 4
    for a, b in zip(leaves, jax.tree_util.tree_leaves((resumed.g_params, resumed.d_params)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    # a finished run asked for fewer steps refuses instead of silently keeping the longer one
    with pytest.raises(ValueError, match="shortened"):
        _train(tmp_path, "full", images, labels, pool, n_steps=2)


def test_mc_certainty_is_the_mean_probability_of_the_predicted_class():
    x = jax.random.uniform(jax.random.key(0), (6, *SHAPE))
    model = tiny_classifier(dropout=0.5)
    params = classifiers.init(model, x[:1], key=jax.random.key(1)).params
    key, t = jax.random.key(2), 7
    res = mc_dropout.mc_predict(model, params, x, key=key, n_samples=t, batch_size=4)
    # independent loop: sample network t applied to one example at a time
    one = jax.jit(lambda xi, k: model.apply({"params": params}, xi, train=True, rngs={"dropout": k})[0])  # fmt: skip
    probs = np.zeros((6, C))
    for s in range(t):
        for i in range(6):
            out = one(x[i : i + 1], jax.random.fold_in(key, s))
            probs[i] += np.asarray(jax.nn.softmax(out[0])) / t
    np.testing.assert_allclose(res.probs, probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.pred, probs.argmax(-1))
    np.testing.assert_allclose(res.certainty, probs.max(-1), rtol=1e-5)
    # an example's result does not depend on its neighbours
    perm = np.array([5, 3, 1, 0, 2, 4])
    again = mc_dropout.mc_predict(model, params, x[perm], key=key, n_samples=t, batch_size=256)
    np.testing.assert_allclose(again.probs, res.probs[perm], rtol=1e-5, atol=1e-6)
    # no dropout: every sample is the deterministic network, certainty = max softmax
    det = model.clone(dropout=0.0)
    res0 = mc_dropout.mc_predict(det, params, x, key=key, n_samples=3)
    soft = jax.nn.softmax(mc_dropout.logits(det, params, x))
    np.testing.assert_allclose(res0.certainty, np.max(soft, -1), rtol=1e-5)


def test_transform_and_reclassify_works_for_any_scorer():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(C, 5)).astype(np.float32)

    def scores(x):  # a nearest-mean scorer: -||x - mu_c||^2, not a probability
        return -jnp.sum((x[:, None, :] - mu[None]) ** 2, axis=-1)

    def transform_fn(x, keys):  # move to mean 0 plus key noise: a known target class
        noise = jax.vmap(lambda k: 1e-3 * jax.random.normal(k, (5,)))(keys)
        return jnp.broadcast_to(mu[0], x.shape) + noise

    x = rng.normal(size=(9, 5)).astype(np.float32)
    s = scores(jnp.asarray(x))
    rejected = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1], bool)
    r = transform.transform_and_reclassify(scores, transform_fn, x, s, rejected,
                                           key=jax.random.key(0), batch_size=2)  # fmt: skip
    before = np.asarray(s).argmax(-1)
    np.testing.assert_array_equal(r.pred_before, before)
    np.testing.assert_array_equal(r.pred_after, np.where(rejected, 0, -1))
    np.testing.assert_array_equal(r.pred, np.where(rejected, 0, before))
    np.testing.assert_array_equal(np.asarray(r.x_transformed)[~rejected], x[~rejected])
    # the transformation of a row depends on its index and the key, not on the batching
    r2 = transform.transform_and_reclassify(scores, transform_fn, x, s, rejected,
                                            key=jax.random.key(0), batch_size=256)  # fmt: skip
    np.testing.assert_array_equal(r.x_transformed, r2.x_transformed)
    with pytest.raises(ValueError, match="rejected"):
        transform.transform_and_reclassify(scores, transform_fn, x, s, rejected.astype(int),
                                           key=jax.random.key(0))  # fmt: skip


def test_tau_table_against_a_hand_count():
    labels = np.array([0, 1, 2, 0, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6],
                      [0.96, 0.02, 0.02], [0.1, 0.85, 0.05]], np.float32)  # fmt: skip
    pred_after = np.array([0, 1, 1, -1, 1])  # row 3 (certainty 0.96) is never rejected below
    rows = protocol.tau_table(labels, probs, pred_after, taus=(0.5, 0.7, 0.95))
    # tau 0.5: nothing rejected; tau 0.7: rows 1 (wrong -> right) and 2 (right -> wrong);
    # tau 0.95: rows 0, 1, 2, 4
    assert rows[0]["rejected_frac"] == 0.0 and rows[0]["acc_rejected_before"] is None
    assert rows[0]["acc_with_transform"] == pytest.approx(0.8)
    assert rows[1] == {"tau": 0.7, "rejected_frac": 0.4, "n_rejected": 2,
                       "acc_rejected_before": 0.5, "acc_rejected_after": 0.5,
                       "acc_with_reject": 1.0, "acc_with_transform": 0.8}  # fmt: skip
    assert rows[2]["n_rejected"] == 4 and rows[2]["acc_rejected_before"] == 0.75
    assert rows[2]["acc_rejected_after"] == 0.75 and rows[2]["acc_with_reject"] == 1.0
    with pytest.raises(ValueError, match="pred_after"):
        protocol.tau_table(labels, probs, pred_after, taus=(0.99,))
    assert "| 0.7 | 40.0 | 50.0 | 50.0 | 100.0 | 80.0 |" in protocol.markdown(rows)


def test_transformation_penalty_is_the_nll_of_the_mc_dropout_predictive():
    x = jax.random.uniform(jax.random.key(0), (5, *SHAPE))
    y = jnp.array([0, 1, 2, 1, 0])
    clf = tiny_classifier(dropout=0.5)
    params = classifiers.init(clf, x[:1], key=jax.random.key(1)).params
    key, k = jax.random.key(2), 4
    penalty = jax.jit(wgan.transformation_penalty, static_argnums=(0, 4))
    got = penalty(clf, params, x, y, k, key=key)
    draw = jax.jit(lambda kt: clf.apply({"params": params}, x, train=True, rngs={"dropout": kt})[0])
    probs = np.zeros((5, C))  # independent loop over the k dropout draws
    for t in range(k):
        probs += np.asarray(jax.nn.softmax(draw(jax.random.fold_in(key, t)))) / k
    np.testing.assert_allclose(got, -np.mean(np.log(probs[np.arange(5), y])), rtol=1e-5)
    det = np.asarray(jax.nn.log_softmax(clf.apply({"params": params}, x, train=False)[0]))
    want0 = -np.mean(det[np.arange(5), y])
    np.testing.assert_allclose(penalty(clf, params, x, y, 0, key=key), want0, rtol=1e-5)
    assert abs(float(got) - want0) > 1e-3  # dropout on is a different loss
    # without dropout every draw is the deterministic network
    no_drop = clf.clone(dropout=0.0)
    np.testing.assert_allclose(penalty(no_drop, params, x, y, 3, key=key), want0, rtol=1e-5)


def test_corrupt_translates_with_zero_fill_and_adds_clipped_noise():
    x = jax.random.uniform(jax.random.key(0), (64, 5, 5, 1))
    key = jax.random.key(1)
    assert wgan.corrupt(x, 0, 0.0, key=key) is x
    out = np.asarray(wgan.corrupt(x, 1, 0.0, key=key))
    pad = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    seen = set()
    for i in range(64):  # each output is the input moved by some (dy, dx) in {-1, 0, 1}^2
        hits = [(dy, dx) for dy in range(3) for dx in range(3)
                if np.array_equal(out[i], pad[i, dy : dy + 5, dx : dx + 5])]  # fmt: skip
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == 9
    half = jnp.full((4000, 2, 2, 1), 0.5)
    noisy = np.asarray(wgan.corrupt(half, 0, 0.1, key=key))
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert abs(np.std(noisy - 0.5) - 0.1) < 0.005 and abs(np.mean(noisy - 0.5)) < 0.005


def test_generator_inputs_are_all_rows_or_those_outside_the_pool():
    labels, pred, certainty = _toy_set()
    np.testing.assert_array_equal(wgan.generator_inputs(pred, certainty, labels), np.arange(labels.size))  # fmt: skip
    rows = wgan.generator_inputs(pred, certainty, labels, which="uncertain", tau_star=0.95)
    pool = (pred == labels) & (certainty >= 0.95)
    np.testing.assert_array_equal(rows, np.flatnonzero(~pool))
    with pytest.raises(ValueError, match="which"):
        wgan.generator_inputs(pred, certainty, labels, which="some")


def test_heldout_split_partitions_the_rows_class_by_class():
    labels = np.repeat(np.arange(4), [10, 7, 3, 21])
    np.random.default_rng(0).shuffle(labels)
    clf, held = wgan.heldout_split(labels, 0.3, seed=5)
    assert np.intersect1d(clf, held).size == 0  # disjoint ...
    np.testing.assert_array_equal(np.sort(np.concatenate([clf, held])), np.arange(labels.size))
    for c, n_c in enumerate((10, 7, 3, 21)):  # ... and stratified: round(0.3 n_c) per class
        assert np.sum(labels[held] == c) == round(0.3 * n_c)
    again, held2 = wgan.heldout_split(labels, 0.3, seed=5)
    np.testing.assert_array_equal(held, held2)  # a pure function of (labels, fraction, seed)
    assert not np.array_equal(held, wgan.heldout_split(labels, 0.3, seed=6)[1])
    for bad in (0.0, 1.0, True, "0.2"):
        with pytest.raises(ValueError, match="heldout_fraction"):
            wgan.heldout_split(labels, bad, seed=0)
