"""Training loop: resume after a kill is bit-identical; bad settings, missing or corrupt
checkpoints give clear ValueErrors; a corrupt newest checkpoint falls back to the previous one;
a failed run overwrites nothing; a trained model learns; atomic writes give normal file modes."""

import collections
import glob
import hashlib
import json
import logging
import os
import stat
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej import io
from jaxrej.models.mlp import ConditionalMLP
from jaxrej.models.score import init_params, make_score_fn
from jaxrej.sde import VPSDE
from jaxrej.training import checkpoint
from jaxrej.training.checkpoint import CHECKPOINT_DIR, restore_checkpoint
from jaxrej.training.loop import (
    TrainOptions,
    batch_indices,
    data_mesh,
    init_train_state,
    make_batch_train_step,
    make_optimizer,
    make_train_step,
    optimizer_from_options,
    shift_augment,
    train,
)
from jaxrej.training.losses import (
    class_bound_logits,
    class_ce_loss,
    class_denoising_losses,
    label_gap,
)

NET = ConditionalMLP(num_classes=2, hidden=16, n_blocks=1, emb_dim=8)
SDE = VPSDE()
EVENT = (2, 2, 1)
SCORE_FN = make_score_fn(NET, SDE)  # one object, so runs with equal options share one compilation


def _data(n=40, levels=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    x = np.clip(rng.integers(0, 3, (n, *EVENT)) + 2 * y[:, None, None, None], 0, levels - 1)
    return x.astype(np.uint8), y


def _opts(**kw):
    base = dict(n_iters=12, batch_size=8, lr=1e-2, warmup=3, log_every=2, eval_every=6,
                checkpoint_every=4, max_to_keep=5, ema_decay=0.9)  # fmt: skip
    base.update(kw)
    return TrainOptions(**base)


def _run(workdir, opts, on_step=None, key_seed=0):
    x, y = _data()
    return train(
        workdir=workdir, score_fn=SCORE_FN, sde=SDE,
        init_params=init_params(NET, EVENT, key=jax.random.key(1)), images=x, labels=y, n_levels=5,
        opts=opts, key=jax.random.key(key_seed), eval_images=x[:10], eval_labels=y[:10],
        progress=False, on_step=on_step,
    )  # fmt: skip


class Killed(Exception):
    pass


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_resume_after_kill_is_bit_identical(tmp_path):
    full_dir, kill_dir = str(tmp_path / "full"), str(tmp_path / "killed")
    os.makedirs(full_dir), os.makedirs(kill_dir)
    full, _ = _run(full_dir, _opts())

    def die(state):
        if int(state.step) == 7:  # after the step-4 checkpoint, before the step-8 one
            raise Killed

    with pytest.raises(Killed):
        _run(kill_dir, _opts(), on_step=die)
    steps = sorted(
        int(os.path.basename(p)) for p in glob.glob(os.path.join(kill_dir, CHECKPOINT_DIR, "*"))
    )
    assert steps == [4]
    resumed, summary = _run(kill_dir, _opts())
    assert summary["start_step"] == 4 and int(resumed.step) == 12
    _leaves_equal(resumed.params, full.params)
    _leaves_equal(resumed.ema_params, full.ema_params)
    _leaves_equal(resumed.opt_state, full.opt_state)
    # metrics: one row per logged step, same as the uninterrupted run (rows after 4 were rewritten)
    rows = lambda d: [json.loads(s) for s in open(os.path.join(d, "metrics.jsonl"))]  # noqa: E731
    assert (
        [r["step"] for r in rows(kill_dir)]
        == [r["step"] for r in rows(full_dir)]
        == [2, 4, 6, 8, 10, 12]
    )
    np.testing.assert_allclose(
        [r["loss"] for r in rows(kill_dir)], [r["loss"] for r in rows(full_dir)], rtol=1e-6
    )
    # the runs moved away from the initial params (the comparison above is not vacuous)
    init = init_params(NET, EVENT, key=jax.random.key(1))
    assert not np.array_equal(
        np.asarray(jax.tree_util.tree_leaves(init)[-1]),
        np.asarray(jax.tree_util.tree_leaves(full.params)[-1]),
    )


def test_batches_are_epoch_permutations():
    key = jax.random.key(0)
    n, b = 10, 3  # 3 steps per epoch, 1 row skipped per epoch
    rows = [np.asarray(batch_indices(jnp.int32(s), n, b, key=key)) for s in range(6)]
    for epoch in (0, 1):
        seen = np.concatenate(rows[3 * epoch : 3 * epoch + 3])
        assert len(set(seen.tolist())) == 9 and seen.max() < n


def test_ema_and_warmup():
    params = {"w": jnp.zeros(3)}
    opt = make_optimizer(lr=0.1, warmup=4, grad_clip=1e9)
    state = opt.init(params)
    g = {"w": jnp.ones(3)}
    upd, state = opt.update(g, state, params)  # step 0 of the warm-up: lr = 0
    np.testing.assert_array_equal(upd["w"], np.zeros(3))
    upd, state = opt.update(g, state, params)  # lr = 0.025, Adam's first steps move by ~lr
    np.testing.assert_allclose(upd["w"], -0.025 * np.ones(3), rtol=1e-3)
    clip = make_optimizer(lr=0.1, warmup=0, grad_clip=0.5)
    s2 = clip.init(params)
    _, s2 = clip.update({"w": jnp.array([3.0, 4.0, 0.0])}, s2, params)
    # clipped to norm 0.5 before Adam: its first moment is 0.1 * clipped gradient
    np.testing.assert_allclose(s2[1][0].mu["w"], 0.1 * np.array([0.3, 0.4, 0.0]), rtol=1e-5)
    assert init_train_state(params, opt).ema_params["w"] is not params["w"]


@pytest.mark.parametrize(
    "field,value",
    [("lr", -1.0), ("lr", float("nan")), ("n_iters", 0), ("batch_size", 2.5), ("ema_decay", 1.0),
     ("weighting", "l2"), ("reduce", "max"), ("warmup", -1), ("eps", 0.0), ("grad_clip", 0.0),
     ("data_parallel", 1), ("label_gap_rows", -1), ("augment_shift", -1),
     ("class_ce_weight", -0.5), ("class_ce_rows", 0), ("class_ce_t_min", 1.5),
     ("class_ce_t_max", 0.005), ("class_ce_t_max", 1.5)],
)  # fmt: skip
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"training.{field}"):
        TrainOptions(**{field: value})
    with pytest.raises(ValueError, match="importance_sampling"):
        TrainOptions(importance_sampling=True, weighting="plain")


def test_class_ce_term_is_added_to_the_dsm_loss():
    """With class_ce_weight w the step's loss is dsm + w * class_ce, and its dsm part equals the
    loss of the same step without the term (same batch, same keys); the term needs the classes."""
    x, y = _data()
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = init_params(NET, EVENT, key=jax.random.key(0))
    out = {}
    for w in (0.0, 0.7):
        opts = _opts(class_ce_weight=w, class_ce_rows=4, num_classes=2)
        state = init_train_state(params, optimizer_from_options(opts))
        step = make_train_step(SCORE_FN, SDE, opts, n_levels=5)
        out[w] = jax.device_get(step(state, x, y, jax.random.key(3))[1])
    assert "class_ce" not in out[0.0]
    np.testing.assert_allclose(out[0.7]["dsm"], out[0.0]["loss"], rtol=1e-6)
    np.testing.assert_allclose(out[0.7]["loss"], out[0.7]["dsm"] + 0.7 * out[0.7]["class_ce"],
                               rtol=1e-6)  # fmt: skip
    assert 0.0 < out[0.7]["class_ce"] < 10.0
    with pytest.raises(ValueError, match="num_classes"):
        TrainOptions(class_ce_weight=1.0)


def test_missing_workdir_and_bad_data(tmp_path):
    with pytest.raises(ValueError, match="workdir"):
        _run(str(tmp_path / "nope"), _opts())
    with pytest.raises(ValueError, match="batch_size"):
        _run(str(tmp_path), _opts(batch_size=100))


def _hash_tree(folder):
    h = {}
    for p in sorted(glob.glob(os.path.join(folder, "**"), recursive=True)):
        if os.path.isfile(p):
            h[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return h


def test_missing_and_corrupt_checkpoints(tmp_path):
    wd = str(tmp_path)
    state, _ = _run(wd, _opts(n_iters=4))
    ckpt = os.path.join(wd, CHECKPOINT_DIR)
    target = init_train_state(
        init_params(NET, EVENT, key=jax.random.key(5)),
        make_optimizer(lr=1e-2, warmup=3, grad_clip=1.0),
    )
    restored, step = restore_checkpoint(ckpt, target)
    assert step == 4
    _leaves_equal(restored.params, state.params)
    with pytest.raises(ValueError, match="no checkpoint folder"):
        restore_checkpoint(str(tmp_path / "absent"), target)
    with pytest.raises(ValueError, match="no step 3"):
        restore_checkpoint(ckpt, target, step=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no checkpoint in"):
        restore_checkpoint(str(empty), target)
    # a checkpoint of a different model
    wrong = init_train_state(init_params(ConditionalMLP(num_classes=2, hidden=8, n_blocks=1, emb_dim=8), EVENT,
                                         key=jax.random.key(0)), make_optimizer(lr=1e-2, warmup=3, grad_clip=1.0))  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint"):
        restore_checkpoint(ckpt, wrong)
    # corrupt every data file of the checkpoint
    for p in glob.glob(os.path.join(ckpt, "4", "**"), recursive=True):
        if os.path.isfile(p) and not p.endswith(("_CHECKPOINT_METADATA",)):
            with open(p, "wb") as f:
                f.write(b"\x00garbage\xff" * 3)
    with pytest.raises(ValueError, match="cannot restore step 4"):
        restore_checkpoint(ckpt, target)


def _corrupt(step_dir):
    for p in glob.glob(os.path.join(step_dir, "**"), recursive=True):
        if os.path.isfile(p) and not p.endswith("_CHECKPOINT_METADATA"):
            with open(p, "wb") as f:
                f.write(b"\x00garbage\xff" * 3)


def test_corrupt_newest_checkpoint_falls_back_and_training_resumes(tmp_path, capsys):
    full_dir, wd = str(tmp_path / "full"), str(tmp_path / "run")
    os.makedirs(full_dir), os.makedirs(wd)
    full, _ = _run(full_dir, _opts())

    def die(state):
        if int(state.step) == 11:  # after the step-8 checkpoint
            raise Killed

    with pytest.raises(Killed):
        _run(wd, _opts(), on_step=die)
    ckpt = os.path.join(wd, CHECKPOINT_DIR)
    target = init_train_state(init_params(NET, EVENT, key=jax.random.key(5)),
                              make_optimizer(lr=1e-2, warmup=3, grad_clip=1.0))  # fmt: skip
    at4, _ = restore_checkpoint(ckpt, target, step=4)
    _corrupt(os.path.join(ckpt, "8"))
    capsys.readouterr()
    restored, step = restore_checkpoint(ckpt, target)
    assert step == 4 and "step 8" in capsys.readouterr().err
    _leaves_equal(restored.params, at4.params)
    with pytest.raises(ValueError, match="cannot restore step 8"):  # asked for: no fallback
        restore_checkpoint(ckpt, target, step=8)
    # training resumes from step 4, sets the corrupt step 8 aside, and ends where an
    # uninterrupted run ends
    resumed, summary = _run(wd, _opts())
    assert summary["start_step"] == 4 and int(resumed.step) == 12
    _leaves_equal(resumed.params, full.params)
    assert os.listdir(os.path.join(wd, checkpoint.CORRUPT_DIR)) == ["8"]
    assert sorted(os.listdir(ckpt)) == ["12", "4", "8"]
    assert restore_checkpoint(ckpt, target, step=8)[1] == 8  # the new step 8 is intact
    # nothing intact: the error names the newest and says the older ones failed too
    for s in ("4", "8", "12"):
        _corrupt(os.path.join(ckpt, s))
    with pytest.raises(
        ValueError, match=r"cannot restore step 12 .*older checkpoint\(s\) \[4, 8\]"
    ):
        restore_checkpoint(ckpt, target)


def test_failed_restore_leftovers_are_dropped_and_nothing_else(monkeypatch, caplog):
    """A failed orbax restore leaves reads in flight that report RuntimeError('Event loop is
    closed') from tensorstore threads (sys.unraisablehook) and, through asyncio's logger, that
    error or the other reads' own tensorstore errors: only those go."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    monkeypatch.setattr(checkpoint, "_QUIETED", False)
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    checkpoint._quiet_read_leftovers()
    Unraisable = collections.namedtuple(
        "Unraisable", "exc_type exc_value exc_traceback err_msg object"
    )
    closed, other = RuntimeError("Event loop is closed"), RuntimeError("something else")
    read = ValueError("DATA_LOSS: Error opening \"zarr\" driver [tensorstore_spec='{}']")
    for e in (closed, read, other):
        sys.unraisablehook(Unraisable(type(e), e, None, None, None))
    assert seen == [other]
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for msg, e in [("Task", closed), ("Future", read), ("Task", other)]:
            logging.getLogger("asyncio").error(f"{msg} exception was never retrieved",
                                               exc_info=(type(e), e, None))  # fmt: skip
    assert [r.exc_info[1] for r in caplog.records] == [other]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.atomic_write_text(str(tmp_path / "a.txt"), "text")
        io.atomic_write_json(str(tmp_path / "a.json"), {"x": np.float32(1.5), "n": np.int64(2),
                                                               "v": jnp.arange(2), "b": np.bool_(True)})  # fmt: skip
        io.atomic_save_npz(str(tmp_path / "a.npz"), x=np.arange(3))
        with open(tmp_path / "plain.txt", "w") as f:  # what a plain open() gives
            f.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.txt", "a.json", "a.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    assert (tmp_path / "a.txt").read_text() == "text"
    assert json.loads((tmp_path / "a.json").read_text()) == {
        "x": 1.5,
        "n": 2,
        "v": [0, 1],
        "b": True,
    }
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["x"], np.arange(3))
    # an existing file keeps its mode (as open(path, "w") would); a failed write keeps its text
    os.chmod(tmp_path / "a.txt", 0o640)
    io.atomic_write_text(str(tmp_path / "a.txt"), "new")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(str(tmp_path / "a.txt"), fail)
    assert (tmp_path / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npz", "a.txt", "plain.txt"]


def test_diverged_run_writes_no_checkpoint(tmp_path):
    wd = str(tmp_path)
    _run(wd, _opts(n_iters=4))
    before = _hash_tree(os.path.join(wd, CHECKPOINT_DIR))
    x, y = _data()
    bad = init_params(NET, EVENT, key=jax.random.key(1))
    bad = jax.tree_util.tree_map(lambda p: p * jnp.nan, bad)
    wd2 = str(tmp_path / "second")
    os.makedirs(wd2)
    import shutil

    shutil.copytree(os.path.join(wd, CHECKPOINT_DIR), os.path.join(wd2, CHECKPOINT_DIR))
    # resume from the good checkpoint with a huge lr: the loss blows up -> ValueError, no new checkpoint
    with pytest.raises(ValueError, match="diverged"):
        train(workdir=wd2, score_fn=SCORE_FN, sde=SDE, init_params=init_params(NET, EVENT, key=jax.random.key(1)),
              images=x, labels=y, n_levels=5, opts=_opts(n_iters=12, lr=1e30, grad_clip=1e30),
              key=jax.random.key(0), progress=False)  # fmt: skip
    assert _hash_tree(os.path.join(wd2, CHECKPOINT_DIR)) == before
    del bad


def test_training_learns_the_score_of_gaussian_classes(tmp_path):
    """DSM on two 4-D Gaussian classes: the EMA model's score approaches the exact score of the
    (dequantized) data far better than at initialisation."""
    n, levels = 2000, 256
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n).astype(np.int32)
    centres = np.array([64, 192])
    x = np.clip(np.round(centres[y][:, None] + 16 * rng.standard_normal((n, 4))), 0, 255).astype(
        np.uint8
    )
    net = ConditionalMLP(num_classes=2, hidden=64, n_blocks=2, emb_dim=32)
    sde = VPSDE()
    params0 = init_params(net, (4,), key=jax.random.key(0))
    state, _ = train(workdir=str(tmp_path), score_fn=make_score_fn(net, sde), sde=sde, init_params=params0,
                     images=x, labels=y, n_levels=levels, progress=False, key=jax.random.key(1),
                     eval_images=x[:64], eval_labels=y[:64],
                     opts=TrainOptions(n_iters=600, batch_size=128, lr=3e-3, warmup=50, ema_decay=0.95,
                                       log_every=100, eval_every=1000, checkpoint_every=600,
                                       label_gap_rows=64))  # fmt: skip
    # the label diagnostic in metrics.jsonl: the two classes are far apart, so the true label's
    # denoising bound is many nats better and picks the class of every row
    last = [json.loads(r) for r in open(tmp_path / "metrics.jsonl")][-1]
    assert last["step"] == 600 and last["label_acc"] == 1.0 and last["label_gap_nats"] > 5.0
    # exact score of p_t for x0 ~ N(mu_y, s^2 I) (the dequantized data is that to ~1e-3)
    mu, s = (centres + 0.5) / levels, 16 / levels
    score_fn = jax.jit(jax.vmap(make_score_fn(net, sde), in_axes=(None, 0, 0, 0)))
    t = jnp.full((400,), 0.3)
    yy = jnp.asarray(rng.integers(0, 2, 400), jnp.int32)
    m, sd = sde.mean_coeff(0.3), sde.std(0.3)
    var = m**2 * s**2 + sd**2
    xt = m * jnp.asarray(mu)[yy][:, None] + jnp.sqrt(var) * jax.random.normal(
        jax.random.key(2), (400, 4)
    )
    exact = -(xt - m * jnp.asarray(mu)[yy][:, None]) / var

    def err(p):
        sq = jnp.sum((score_fn(p, xt, t, yy) - exact) ** 2, 1)
        return float(jnp.mean(sq) / jnp.mean(jnp.sum(exact**2, 1)))

    assert err(params0) > 0.9  # zero output at init: relative error 1
    assert err(state.ema_params) < 0.05


def _diag_gauss_score(sde):
    """Exact score of class c ~ N(mu_c, diag(s2_c)) under the SDE: params = (mu (C, D), s2 (C, D))."""

    def score_fn(params, x, t, y):
        mu, s2 = params
        m, std = sde.mean_coeff(t), sde.std(t)
        return -(x - m * mu[y]) / (m**2 * s2[y] + std**2)

    return score_fn


def _quadrature_losses(sde, mu, s2, x, eps, weighting, t_max=1.0):
    """E over z of ||eps_theta - z||^2 in closed form for the exact Gaussian score, integrated over
    t in [eps, t_max] by the trapezoid rule on a geometric grid: the bound's class terms, (B, C)."""
    t = np.geomspace(eps, t_max, 40001)
    b = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
    m, var0 = np.exp(-0.5 * b), 1.0 - np.exp(-b)
    std = np.sqrt(var0)
    out = np.zeros((len(x), len(mu)))
    for i, xi in enumerate(x):
        for c in range(len(mu)):
            var = m[:, None] ** 2 * s2[c] + var0[:, None]
            mean_part = (std[:, None] * m[:, None] * (xi - mu[c]) / var) ** 2
            noise_part = (var0[:, None] / var - 1.0) ** 2
            e = (mean_part + noise_part).sum(1)  # E ||eps_theta - z||^2, (T,)
            if weighting == "likelihood":
                w = (sde.beta_min + (sde.beta_max - sde.beta_min) * t) / var0
                out[i, c] = 0.5 * np.trapezoid(w * e, t)
            else:
                out[i, c] = np.trapezoid(e / x.shape[1], t) / (t_max - eps)
    return out


@pytest.mark.parametrize("weighting", ["likelihood", "plain"])
def test_class_denoising_losses_match_the_integral(weighting):
    """Monte Carlo (shared, stratified draws) against the closed-form expectation integrated by
    quadrature, for exact Gaussian class scores; and the class differences, which carry less
    noise because the draws are shared."""
    sde, eps = VPSDE(), 1e-3
    mu = np.array([[0.2, 0.5, 0.8], [0.7, 0.3, 0.4]])
    s2 = np.array([[0.01, 0.02, 0.015], [0.03, 0.01, 0.02]])
    x = np.array([[0.25, 0.45, 0.75], [0.6, 0.35, 0.5]])
    params = (jnp.asarray(mu, jnp.float32), jnp.asarray(s2, jnp.float32))
    got = np.asarray(
        jax.jit(
            lambda p, x: class_denoising_losses(
                _diag_gauss_score(sde), p, sde, x, num_classes=2, key=jax.random.key(0),
                n_samples=65536, weighting=weighting, eps=eps,
            )
        )(params, jnp.asarray(x, jnp.float32))
    )  # fmt: skip
    want = _quadrature_losses(sde, mu, s2, x, eps, weighting)
    np.testing.assert_allclose(got, want, rtol=0.03)
    # the true classes (0 for row 0, 1 for row 1) have the smaller bound, as in the truth
    np.testing.assert_allclose(got[:, 1] - got[:, 0], want[:, 1] - want[:, 0], rtol=0.05)
    g = label_gap(jnp.asarray(got), jnp.array([0, 1]))
    np.testing.assert_allclose(g.gap, [want[0, 1] - want[0, 0], want[1, 0] - want[1, 1]], rtol=0.05)
    assert bool(g.correct.all())


def test_class_bound_logits_are_unbiased_and_rank_by_the_integral():
    """The one-draw logits of the cross-entropy term average to minus the class losses on
    [t_min, T] (closed-form expectation by quadrature, exact Gaussian class scores); the
    cross-entropy of a label-blind score is log C exactly."""
    sde, t_min = VPSDE(), 0.01
    mu = np.array([[0.2, 0.5, 0.8], [0.7, 0.3, 0.4]])
    s2 = np.array([[0.01, 0.02, 0.015], [0.03, 0.01, 0.02]])
    x = np.array([[0.25, 0.45, 0.75], [0.6, 0.35, 0.5]])
    params = (jnp.asarray(mu, jnp.float32), jnp.asarray(s2, jnp.float32))
    reps = 40_000
    xs = jnp.asarray(np.repeat(x, reps, axis=0), jnp.float32)
    logits = jax.jit(
        lambda p, xx: class_bound_logits(_diag_gauss_score(sde), p, sde, xx,
                                         key=jax.random.key(1), num_classes=2, t_min=t_min)
    )(params, xs)  # fmt: skip
    got = np.asarray(logits).reshape(2, reps, 2).mean(1)
    want = -_quadrature_losses(sde, mu, s2, x, t_min, "likelihood")
    np.testing.assert_allclose(got, want, rtol=0.03)
    # the window [t_min, t_max] (the cross-entropy of a scorer's label window): its own integral,
    # which is far from the whole one's
    t_max = 0.1
    window = jax.jit(
        lambda p, xx: class_bound_logits(_diag_gauss_score(sde), p, sde, xx, key=jax.random.key(3),
                                         num_classes=2, t_min=t_min, t_max=t_max)
    )(params, xs)  # fmt: skip
    got_w = np.asarray(window).reshape(2, reps, 2).mean(1)
    want_w = -_quadrature_losses(sde, mu, s2, x, t_min, "likelihood", t_max=t_max)
    np.testing.assert_allclose(got_w, want_w, rtol=0.03)
    diff = got_w[:, 1] - got_w[:, 0]  # the class differences: 11-18% below the whole integral's
    np.testing.assert_allclose(diff, want_w[:, 1] - want_w[:, 0], rtol=0.03)
    assert np.all(np.abs(diff - (want[:, 1] - want[:, 0])) > 0.05 * np.abs(want[:, 1] - want[:, 0]))
    with pytest.raises(ValueError, match="t_max"):
        class_bound_logits(_diag_gauss_score(sde), params, sde, xs[:2], key=jax.random.key(3),
                           num_classes=2, t_min=t_min, t_max=t_min)  # fmt: skip
    blind = lambda p, x, t, y: _diag_gauss_score(sde)(p, x, t, 0)  # noqa: E731
    ce = class_ce_loss(blind, params, sde, xs[:8], jnp.zeros(8, jnp.int32),
                       key=jax.random.key(2), num_classes=3, t_min=t_min)  # fmt: skip
    np.testing.assert_allclose(float(ce), np.log(3.0), rtol=1e-6)


def test_shift_augment_translates_each_image_within_the_bound():
    """Every output is one of the (2k+1)^2 zero-filled translations of its input (numpy slicing
    as the truth), and over a large batch every translation occurs."""
    k, n = 2, 600
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 256, (n, 6, 5, 1)).astype(np.int32)
    out = np.asarray(shift_augment(jnp.asarray(imgs), k, key=jax.random.key(0)))
    padded = np.pad(imgs, ((0, 0), (k, k), (k, k), (0, 0)))
    seen = set()
    for i in range(n):
        hits = [(dy, dx) for dy in range(2 * k + 1) for dx in range(2 * k + 1)
                if np.array_equal(out[i], padded[i, dy:dy + 6, dx:dx + 5])]  # fmt: skip
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == (2 * k + 1) ** 2
    with pytest.raises(ValueError, match="augment_shift"):
        shift_augment(jnp.zeros((4, 6)), 1, key=jax.random.key(0))


def test_label_gap_of_a_loss_table():
    losses = jnp.array([[1.0, 3.0, 5.0], [2.0, 1.0, 0.0]])
    g = label_gap(losses, jnp.array([0, 1]))
    np.testing.assert_allclose(g.gap, [3.0, 0.0])  # (3 + 5) / 2 - 1 ; (2 + 0) / 2 - 1
    np.testing.assert_array_equal(g.correct, [True, False])
    with pytest.raises(ValueError, match="num_classes"):
        class_denoising_losses(SCORE_FN, None, SDE, jnp.zeros((1, 4)), num_classes=1,
                               key=jax.random.key(0))  # fmt: skip


def test_batch_step_equals_gathering_step():
    """make_batch_train_step on the batch make_train_step gathers, with its step key, gives the
    same state; one device, so data_mesh is None whatever data_parallel says."""
    x, y = _data()
    opts = _opts()
    assert data_mesh(opts) is None
    p0 = init_params(NET, EVENT, key=jax.random.key(1))
    key = jax.random.key(3)
    a, _ = make_train_step(SCORE_FN, SDE, opts, n_levels=5)(
        init_train_state(p0, optimizer_from_options(opts)), jnp.asarray(x), jnp.asarray(y), key
    )
    data_key, step_key = jax.random.split(key)
    idx = np.asarray(batch_indices(jnp.int32(0), len(x), opts.batch_size, key=data_key))
    b, _ = make_batch_train_step(SCORE_FN, SDE, opts, n_levels=5)(
        init_train_state(p0, optimizer_from_options(opts)), jnp.asarray(x[idx]),
        jnp.asarray(y[idx]), jax.random.fold_in(step_key, 0),
    )  # fmt: skip
    _leaves_equal(a.params, b.params)
