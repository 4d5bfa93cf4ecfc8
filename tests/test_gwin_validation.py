"""GWIN's settings are chosen on validation rows: the split is a stratified part of the training
rows that nothing trains on, the test rows are not read while choosing, and the diagnostics that
explain the generator (its move, the two terms' gradients, what transformation did) are right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import classifiers
from jaxrej.data.registry import Dataset
from jaxrej.gwin import mc_dropout, pipeline, wgan
from jaxrej.gwin.mc_dropout import MCPrediction


def test_validation_split_is_stratified_disjoint_and_its_own_stream():
    labels = np.repeat(np.arange(5), [40, 13, 7, 90, 1])
    np.random.default_rng(0).shuffle(labels)
    fit, val = pipeline.validation_split(labels, 0.2, seed=3)
    assert np.intersect1d(fit, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, val])), np.arange(labels.size))
    for c, n_c in enumerate((40, 13, 7, 90, 1)):
        assert np.sum(labels[val] == c) == round(0.2 * n_c)
    np.testing.assert_array_equal(val, pipeline.validation_split(labels, 0.2, seed=3)[1])
    # not the generator's held-out rows of the same seed: a stream of its own
    assert not np.array_equal(val, wgan.heldout_split(labels, 0.2, seed=3)[1])


def test_transform_stats_against_a_hand_count():
    labels = np.array([0, 1, 2, 0])
    pb = np.array([[0.5, 0.4, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.99, 0.005, 0.005]])
    pa = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]])

    def pred(p):
        p = jnp.asarray(p, jnp.float32)
        return MCPrediction(probs=p, pred=jnp.argmax(p, -1), certainty=jnp.max(p, -1))

    x = np.zeros((4, 2, 2, 1), np.float32)
    xt = x.copy()
    xt[0, 0, 0, 0] = 0.3  # ||G(x) - x|| = 0.3, 0.4 (3-4-5: 0.5) , 0 on the three rejected rows
    xt[1, 0, 0, 0], xt[1, 1, 1, 0] = 0.3, 0.4
    xt[3] = 1.0  # never rejected at 0.9: ignored
    st = pipeline.transform_stats(labels, pred(pb), pred(pa), x, xt, taus=(0.55, 0.9))
    # rejected at 0.9: rows 0 (right -> wrong), 1 (wrong -> right), 2 (right, unchanged)
    assert st["n"] == 3 and st["changed"] == 2 and st["fixed"] == 1 and st["broken"] == 1
    assert st["wrong_before"] == 1
    assert st["move_l2"] == pytest.approx((0.3 + 0.5 + 0.0) / 3)
    assert st["move_l2_max"] == pytest.approx(0.5)
    assert st["certainty_before"] == pytest.approx((0.5 + 0.6 + 0.8) / 3)
    assert st["certainty_after"] == pytest.approx((0.7 + 0.8 + 0.8) / 3)
    assert st["p_true_before"] == pytest.approx((0.5 + 0.3 + 0.8) / 3)
    assert st["p_true_after"] == pytest.approx((0.2 + 0.8 + 0.8) / 3)
    r55, r90 = st["rows"]  # tau 0.55 rejects row 0 only: right before, wrong after
    assert (r55["n_rejected"], r55["acc_rejected_before"], r55["acc_rejected_after"]) == (
        1,
        1.0,
        0.0,
    )
    assert r90["acc_rejected_before"] == pytest.approx(2 / 3)
    assert r90["acc_rejected_after"] == pytest.approx(2 / 3)


SHAPE = (4, 4, 1)


def _step_metrics(lambda_loss, images):
    clf = mc_dropout.MCDropoutCNN(num_classes=3, channels=(4,), kernel=3, padding=("SAME",),
                                  dense=(8,), dropout=0.25)  # fmt: skip
    clf_params = classifiers.init(clf, images[:1], key=jax.random.key(5)).params
    gen = wgan.Generator(event_shape=SHAPE, hidden=(8,), residual=True)
    critic = wgan.Critic(num_classes=3, channels=(4,), dense=8)
    opts = wgan.GanOptions(
        n_steps=1, batch_size=8, n_critic=1, noise_dim=3, lambda_loss=lambda_loss
    )
    labels = jnp.arange(images.shape[0]) % 3
    pool = wgan.critic_pool(images, labels, labels, np.ones(images.shape[0]), tau_star=0.5)
    state = wgan.init_state(gen, critic, images[:1], opts, key=jax.random.key(0))
    step = wgan.make_train_step(gen, critic, clf, opts)
    _, m = step(state, jnp.asarray(images), labels, pool, clf_params, jax.random.key(1))
    return {k: float(v) for k, v in m.items()}


def test_generator_step_logs_its_move_and_each_terms_gradient():
    zeros = np.zeros((12, *SHAPE), np.float32)
    m1 = _step_metrics(1.0, zeros)
    # the residual generator starts at x clipped to [0.01, 0.99]: all-zero inputs move by
    # 0.01 per pixel, ||G(x) - x||_2 = 0.01 sqrt(D)
    assert m1["move"] == pytest.approx(0.01 * np.sqrt(np.prod(SHAPE)), rel=1e-4)
    # the penalty's gradient is lambda_Loss times that of the cross-entropy; the critic's is not
    # touched by lambda_Loss (the critic steps before the generator's do not depend on it)
    m3 = _step_metrics(3.0, zeros)
    assert m1["grad_penalty"] > 0 and m1["grad_adv"] > 0
    assert m3["grad_penalty"] == pytest.approx(3 * m1["grad_penalty"], rel=1e-4)
    assert m3["grad_adv"] == pytest.approx(m1["grad_adv"], rel=1e-5)
    assert m3["g_loss"] - m1["g_loss"] == pytest.approx(2 * m1["clf_loss"], rel=1e-4)


def _fake_digits(n, num_classes, *, seed, offset):
    """Separable 8x8 'digits' (class c: a bright column c), every image unique (a row id in the
    last pixel) so that a row can be recognised wherever it goes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n // num_classes).astype(np.int32)
    rng.shuffle(labels)
    images = rng.integers(0, 100, size=(n, 8, 8, 1))
    images[np.arange(n), :, 2 * labels, 0] = 900
    images[:, 7, 7, 0] = 200 + offset + np.arange(n)
    return Dataset(images=images.astype(np.int32), labels=labels, n_levels=1001,
                   num_classes=num_classes)  # fmt: skip


def _tiny_options(test):
    from jaxrej.gwin.pipeline import ClassifierOptions, GwinOptions

    return GwinOptions(
        dataset="fake", seed=1,
        classifier=ClassifierOptions(name="small", dropout=0.1, epochs=15, batch_size=16,
                                     learning_rate=3e-3, weight_decay=0.0, mc_samples=2),
        gan=wgan.GanOptions(n_steps=2, batch_size=8, n_critic=1, noise_dim=2, log_every=1),
        tau_star=0.0, gen_inputs="heldout", heldout_fraction=0.3, generator_hidden=(8,),
        residual=True, critic_channels=(4,), critic_dense=8, taus=(0.5, 0.99), grid_tau=0.99,
        grid_size=4, batch_size=32, val_fraction=0.25, test=test,
    )  # fmt: skip


def test_pipeline_chooses_on_validation_rows_nothing_trains_on(tmp_path, monkeypatch):
    """Every row the classifier, the critic's pool or the generator sees is a training row outside
    the validation rows; without opts.test the test split is never loaded."""
    import jaxrej.data.registry as registry

    train = _fake_digits(60, 3, seed=0, offset=0)
    test = _fake_digits(30, 3, seed=1, offset=100)
    loaded = []

    def load(spec, split):
        loaded.append(split)
        return {"train": train, "test": test}[split]

    def ids(x):  # the row id of each image in [0, 1]
        return set(np.rint(np.asarray(x)[:, 7, 7, 0] * 1000).astype(int) - 200)

    seen = {}
    real_clf_train, real_gan_train = classifiers.train, wgan.train

    def clf_train(model, state, x, y, **kw):
        seen["classifier"] = ids(x)
        return real_clf_train(model, state, x, y, **kw)

    def gan_train(**kw):
        seen["generator"], seen["pool"] = ids(kw["gen_images"]), ids(kw["pool"].images)
        return real_gan_train(**kw)

    monkeypatch.setattr(registry, "load_dataset", load)
    monkeypatch.setattr(classifiers, "train", clf_train)
    monkeypatch.setattr(wgan, "train", gan_train)
    res = pipeline.run(str(tmp_path / "val"), _tiny_options(test=False), progress=False)
    assert loaded == ["train"] and res.rows is None and res.accuracy is None
    fit, val = pipeline.validation_split(train.labels, 0.25, seed=1)
    assert res.n["validation"] == val.size == 15
    for who in ("classifier", "generator", "pool"):
        assert seen[who] and not (seen[who] & set(val.tolist())), who
        assert seen[who] <= set(fit.tolist()), who
    assert not (seen["classifier"] & seen["generator"])  # the generator's rows are held out
    assert res.grid["split"] == "validation" and ids(res.grid["x"]) <= set(val.tolist())
    assert [t["step"] for t in res.trace] == [1, 2]
    assert res.val_rows[-1]["n_rejected"] == res.stats["validation"]["n"]
    # the same run with opts.test resumes (nothing retrained) and reads the test rows once
    loaded.clear()
    again = pipeline.run(str(tmp_path / "val"), _tiny_options(test=True), progress=False)
    assert loaded == ["train", "test"] and again.classifier_restored
    assert again.val_rows == res.val_rows and again.n["test"] == 30
    assert ids(again.grid["x"]) <= set(range(100, 130))
