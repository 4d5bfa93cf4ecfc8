"""`jaxrej train` then `jaxrej score` end to end at toy size (digits, and a U-Net on mock mnist),
plus the failure modes: bad config values, missing workdir, corrupt checkpoints, config clash,
a finished run trained again; result files readable by others; `--help` imports no command
it does not run."""

import glob
import hashlib
import json
import math
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from jaxrej.cli import main
from tests.conftest import CONFIGS, ROOT

pytestmark = pytest.mark.slow

DIGITS = str(CONFIGS / "digits_sbgc.py")

TINY = [
    "--config.model.hidden=16", "--config.model.n_blocks=1", "--config.model.emb_dim=8",
    "--config.training.n_iters=6", "--config.training.batch_size=32", "--config.training.log_every=2",
    "--config.training.eval_every=3", "--config.training.checkpoint_every=3",
    # a loose, small-batch scorer, stored in the run's config (a score-time override would tag
    # the files' names)
    "--config.eval.rtol=0.001", "--config.eval.atol=0.001", "--config.eval.batch_size=4",
]  # fmt: skip


def _hashes(folder):
    return {
        os.path.relpath(p, folder): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in sorted(glob.glob(os.path.join(folder, "**"), recursive=True))
        if os.path.isfile(p)
    }


def test_train_then_score_digits(tmp_path, capsys):
    # every class gets the accurate solve (no screens): one compiled solve per `jaxrej score`
    # call instead of the screens' and the accurate one's; nothing here is about screens
    # (test_score_test_and_ood_sets_write_their_own_files and tests/test_cli_evaluate use them)
    tiny = [*TINY, "--config.eval.screen=none"]
    wd = str(tmp_path / "run")
    assert main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress", *tiny]) == 0
    train = json.load(open(os.path.join(wd, "train.json")))
    assert train["final_step"] == 6 and train["n_train"] == 1221  # 1,437 less 15% of each class
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6"]
    rows = [json.loads(s) for s in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 3, 4, 6] and all(
        math.isfinite(r.get("loss", 0)) for r in rows
    )
    assert all("time_s" in r for r in rows)  # the evaluation-only row at step 3 too

    assert (
        main(
            [
                "score",
                "--workdir",
                wd,
                "--split",
                "test",
                "--limit",
                "6",
                "--no-progress",
            ]
        )
        == 0
    )
    s = json.load(open(os.path.join(wd, "score_test_limit6.json")))
    assert s["n"] == 6 and s["split"] == "test" and s["eval"]["rtol"] == 0.001
    assert s["ood"] == {} and "no OOD set given" in s["notes"][0]
    z = np.load(os.path.join(wd, "score_test_limit6.npz"))
    lp, labels, pred = z["class_logp"], z["labels"], z["pred"]
    assert lp.shape == (6, 10) and np.all(np.isfinite(lp))
    # the summary is what the saved class log-likelihoods say (independent recomputation)
    np.testing.assert_array_equal(pred, lp.argmax(1))
    assert s["accuracy"] == pytest.approx(np.mean(pred == labels))
    lse = np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1)) + lp.max(1) - np.log(10)
    bpd = -lse / (64 * np.log(2)) + np.log2(17)
    assert s["bits_per_dim"] == pytest.approx(bpd.mean(), rel=1e-5)
    out = capsys.readouterr().out
    assert '"accuracy"' in out and '"bits_per_dim"' in out

    # result files get the mode a plain open() gives (0o666 & ~umask), not mkstemp's 0o600
    umask = os.umask(0)
    os.umask(umask)
    for f in ("config.json", "train.json", "score_test_limit6.json", "score_test_limit6.npz"):
        assert stat.S_IMODE(os.stat(os.path.join(wd, f)).st_mode) == 0o666 & ~umask, f

    # training a finished run again changes nothing and reports the original numbers
    before = _hashes(wd)
    first = json.load(open(os.path.join(wd, "train.json")))
    assert main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress", *tiny]) == 0
    captured = capsys.readouterr()
    assert "already trained to step 6" in captured.err
    assert json.loads(captured.out) == first and first["last_metrics"]["step"] == 6
    assert _hashes(wd) == before

    # resuming with more steps continues from step 6; a different model is refused, nothing changes
    rc = main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress",
               *tiny, "--config.model.hidden=32"])  # fmt: skip
    assert rc == 2 and "model.hidden" in capsys.readouterr().err
    assert _hashes(wd) == before
    assert main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress",
                 *tiny, "--config.training.n_iters=9"]) == 0  # fmt: skip
    train = json.load(open(os.path.join(wd, "train.json")))
    assert train["start_step"] == 6 and train["final_step"] == 9
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6", "9"]
    capsys.readouterr()

    # --init-from: a new run starts from wd's checkpoint 6 under other training settings (a
    # fine-tune): that checkpoint and the metrics up to it are copied, wd is left as it was; a
    # different model is refused before anything is written
    ft, before = str(tmp_path / "ft"), _hashes(wd)
    assert main(["train", "--config", DIGITS, "--workdir", ft, "--no-progress", *tiny,
                 "--config.training.n_iters=8", "--config.training.lr=0.0005",
                 "--init-from", f"{wd}@6"]) == 0  # fmt: skip
    train = json.load(open(os.path.join(ft, "train.json")))
    assert train["start_step"] == 6 and train["final_step"] == 8
    assert train["init_from"] == {"run": os.path.abspath(wd), "step": 6}
    assert _hashes(os.path.join(ft, "checkpoints", "6")) == _hashes(os.path.join(wd, "checkpoints", "6"))  # fmt: skip
    assert [json.loads(r)["step"] for r in open(os.path.join(ft, "metrics.jsonl"))][:4] == [
        2,
        3,
        4,
        6,
    ]
    assert json.load(open(os.path.join(ft, "config.json")))["training"]["lr"] == 0.0005
    assert _hashes(wd) == before
    capsys.readouterr()
    rc = main(["train", "--config", DIGITS, "--workdir", str(tmp_path / "ft2"), "--no-progress",
               *tiny, "--config.model.hidden=32", "--init-from", wd])  # fmt: skip
    assert rc == 2 and "model.hidden" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "ft2")

    # a corrupt newest checkpoint: score falls back to step 6, says so, and records the step
    _corrupt(os.path.join(wd, "checkpoints", "9"))
    assert main(["score", "--workdir", wd, "--limit", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "step 9" in err and "using step 6" in err
    assert json.load(open(os.path.join(wd, "score_test_limit2.json")))["checkpoint_step"] == 6
    # ... and train resumes from step 6, moving the corrupt one aside
    assert main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress",
                 *tiny, "--config.training.n_iters=9"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "step 9" in err and os.path.join("corrupt_checkpoints", "9") in err
    train = json.load(open(os.path.join(wd, "train.json")))
    assert train["start_step"] == 6 and train["final_step"] == 9
    assert os.listdir(os.path.join(wd, "corrupt_checkpoints")) == ["9"]
    assert main(["score", "--workdir", wd, "--limit", "2", "--no-progress"]) == 0
    assert "using step" not in capsys.readouterr().err  # no checkpoint was skipped
    assert json.load(open(os.path.join(wd, "score_test_limit2.json")))["checkpoint_step"] == 9

    # --step 3 scores that checkpoint into its own files: the numbers of a copy of the run whose
    # newest checkpoint is 3; an absent step is named, nothing written
    assert main(["score", "--workdir", wd, "--limit", "2", "--step", "3", "--no-progress"]) == 0  # fmt: skip
    assert json.load(open(os.path.join(wd, "score_test_limit2_step3.json")))["checkpoint_step"] == 3
    cut = str(tmp_path / "cut")
    shutil.copytree(wd, cut)
    for step in ("6", "9"):
        shutil.rmtree(os.path.join(cut, "checkpoints", step))
    assert main(["score", "--workdir", cut, "--limit", "2", "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(os.path.join(wd, "score_test_limit2_step3.npz"))["class_logp"],
                                  np.load(os.path.join(cut, "score_test_limit2.npz"))["class_logp"])  # fmt: skip
    capsys.readouterr()
    assert main(["score", "--workdir", wd, "--limit", "2", "--step", "4", "--no-progress"]) == 2
    assert "4" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(wd, "score_test_limit2_step4.json"))

    # every checkpoint corrupt: score fails with one clear line (no orbax tracebacks after it)
    # and leaves its results as they were
    before_score = open(os.path.join(wd, "score_test_limit2.json")).read()
    for step in ("3", "6", "9"):
        _corrupt(os.path.join(wd, "checkpoints", step))
    proc = subprocess.run(
        [sys.executable, "-m", "jaxrej.cli", "score", "--workdir", wd, "--limit", "2",
         "--no-progress"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxrej score: error: checkpoint"), proc.stderr
    assert "step 9" in lines[0] and "[3, 6]" in lines[0]
    assert open(os.path.join(wd, "score_test_limit2.json")).read() == before_score


def test_score_test_and_ood_sets_write_their_own_files(tmp_path, capsys):
    """--test and --ood sets (local files the test writes) get their own files; a --limit run
    and another set's run leave a full run's files byte-identical; the OOD AUROC is the one of
    the saved log p(x). The net hides the label below t = 0.1, so the ELBO scorer splits there."""
    from sklearn.metrics import roc_auc_score

    import jaxrej
    from jaxrej.data import digits, local

    wd = str(tmp_path / "run")
    gated = [*TINY, "--config.model.label_cutoff=0.1"]
    assert main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress", *gated]) == 0
    x, y = digits.load("test")
    local.write_idx(str(tmp_path / "im.gz"), x[:8, ..., 0])
    local.write_idx(str(tmp_path / "lab.gz"), y[:8].astype(np.uint8))
    np.savez(tmp_path / "noise.npz", images=np.random.default_rng(0).integers(0, 17, (3, 8, 8, 1)))
    small = f"small=idx:{tmp_path / 'im.gz'},{tmp_path / 'lab.gz'}"
    score = ["score", "--workdir", wd, "--no-progress"]
    assert (
        main([*score, "--test", small, "--split", "all", "--ood", f"npz:{tmp_path / 'noise.npz'}"])
        == 0
    )
    full = _hashes(wd)
    s = json.load(open(os.path.join(wd, "score_small_all.json")))
    assert s["n"] == 8 and s["dataset"] == small.split("=", 1)[1] and s["limit"] is None
    z = np.load(os.path.join(wd, "score_small_all.npz"))
    np.testing.assert_array_equal(z["labels"], y[:8])
    o = np.load(os.path.join(wd, "score_ood_noise.npz"))
    assert o["class_logp"].shape == (3, 10) and s["ood"]["noise"]["n"] == 3
    lse = lambda a: np.log(np.mean(np.exp(a - a.max(1, keepdims=True)), 1)) + a.max(1)  # noqa: E731
    np.testing.assert_allclose(o["log_px"], lse(o["class_logp"]), rtol=1e-5)
    pos = np.r_[np.ones(8), np.zeros(3)]
    # log p(x) of the scored rows by the library's float32 logsumexp, as the saved OOD log_px:
    # this toy model's log p(x) spread over ~0.003 nats, where another rounding reorders rows
    log_px = np.asarray(jaxrej.marginal_log_likelihood(z["class_logp"]))
    np.testing.assert_allclose(log_px, lse(z["class_logp"]), rtol=1e-5)
    auroc = roc_auc_score(pos, np.r_[log_px, o["log_px"]])
    assert s["ood"]["noise"]["auroc"] == pytest.approx(auroc, abs=1e-9)
    assert "in-distribution" in s["ood_score"] and s["notes"] == []
    capsys.readouterr()
    # a limited run of the same set: new files, the full run's byte-identical
    assert main([*score, "--test", small, "--split", "all", "--limit", "2"]) == 0
    after = _hashes(wd)
    assert {k: after[k] for k in full} == full
    new = sorted(set(after) - set(full))
    assert new == ["score_small_all_limit2.json", "score_small_all_limit2.npz"]
    assert json.load(open(os.path.join(wd, "score_small_all_limit2.json")))["n"] == 2
    # the ELBO scorer: its own files (the ODE run's unchanged), the library's bound split at the
    # net's cutoff on the same dequantized inputs, 4 draws per class above the cutoff and 4
    # shared below it; the trivial baseline is the digits train split's pixel histogram
    # (an eval override tags the files' names: no run with other settings overwrites them)
    assert main([*score, "--test", small, "--split", "all", "--scorer", "elbo",
                 "--config.eval.elbo_n_times=4"]) == 0  # fmt: skip
    assert {k: v for k, v in _hashes(wd).items() if k in after} == after
    assert sorted(set(_hashes(wd)) - set(after)) == [
        "score_small_all_elbo_elbo_n_times4.json", "score_small_all_elbo_elbo_n_times4.npz"]  # fmt: skip
    e = json.load(open(os.path.join(wd, "score_small_all_elbo_elbo_n_times4.json")))
    ze = np.load(os.path.join(wd, "score_small_all_elbo_elbo_n_times4.npz"))
    assert e["scorer"] == "elbo" and ze["class_logp"].shape == (8, 10)
    assert e["eval"]["elbo_label_cutoff"] == 0.1
    np.testing.assert_array_equal(ze["nfe"].sum(1), np.full(8, 11 * 4))
    _check_elbo_file(wd, x[:8], ze["class_logp"], n_times=4)
    train_x = digits.load("train")[0]
    want = _histogram_bpd(train_x, x[:8], 17)
    assert e["baseline_bits_per_dim"] == pytest.approx(want, rel=1e-9)
    assert s["baseline_bits_per_dim"] == pytest.approx(want, rel=1e-9)
    # a set that does not exist, or of the wrong image size: one clear line naming the flag
    assert main([*score, "--ood", f"npz:{tmp_path / 'absent.npz'}"]) == 2
    err = capsys.readouterr().err
    assert "--ood absent" in err and "no such file" in err and str(tmp_path / "absent.npz") in err
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 9, 9), np.uint8))
    assert main([*score, "--test", f"npz:{tmp_path / 'big.npz'}", "--split", "all"]) == 2
    assert "differ from the run's" in capsys.readouterr().err


def _histogram_bpd(train, images, n_levels):
    """Mean bits/dim under add-one per-pixel histograms, counted with a Python loop."""
    tr, x = train.reshape(len(train), -1), images.reshape(len(images), -1)
    total = 0.0
    for d in range(tr.shape[1]):
        counts = np.bincount(tr[:, d], minlength=n_levels) + 1.0
        total -= np.log2(counts[x[:, d]] / counts.sum()).sum()
    return total / x.size


def _check_elbo_file(wd, images, class_logp, *, n_times):
    """The saved ELBO scores equal jaxrej.class_elbos of each row ALONE on its uniformly
    dequantised levels (k + u) / 17, its keys those of the judge (key(seed + 1) split into the
    noise's and the draws', each folded with a hash of the row's pixels k / 16), split at the
    net's label cutoff: a row's score does not depend on the batch the command scored it in."""
    import jax
    import jax.numpy as jnp

    import jaxrej
    from jaxrej.data.preprocessing import row_ids
    from jaxrej.training.workdir import load_trained

    score_fn, params, sde, _, _, cutoff = load_trained(wd)
    with open(os.path.join(wd, "config.json")) as f:  # the stored settings, read independently
        cfg = json.load(f)
    dq_key, draw_key = jax.random.split(jax.random.key(cfg["seed"] + 1))
    ids = row_ids(jnp.asarray(images, jnp.float32) / 16)
    for i in range(len(images)):
        u = jax.random.uniform(jax.random.fold_in(dq_key, ids[i]), images.shape[1:])
        x = (jnp.asarray(images[i : i + 1], jnp.float32) + u) / 17
        want = jaxrej.class_elbos(score_fn, params, sde, x, num_classes=10, n_times=n_times,
                                  key=draw_key, ids=ids[i : i + 1], eps=cfg["eval"]["eps"],
                                  label_cutoff=cutoff)  # fmt: skip
        np.testing.assert_allclose(class_logp[i : i + 1], want, rtol=1e-5, atol=1e-3)


def test_score_and_evaluate_give_a_row_the_same_scores(tmp_path, capsys):
    """`jaxrej score`'s saved class log-likelihoods equal the clean-table scores `jaxrej evaluate`
    computes (its scorers and score cache: jaxrej.eval.runs.load_scorers, eval.protocol) of the
    same run and test rows, for the ODE and the ELBO scorer: one judge
    (jaxrej.scorers.sbgc.run_judge) with the run's uniform dequantisation and per-row keys, so
    that other batches (4 rows there, 5 here) change nothing either. Every class gets the
    accurate solve (screen none: with screens, which rows a batch's spare solves refine depends
    on the batch). 60 steps make log p(x | y) move with x by ~1 nat (after 6, by 0.01): bin
    centres instead of the noise, or positional keys, in either path move it by ~0.6 nats."""
    import jax
    import jax.numpy as jnp

    from jaxrej import scorers
    from jaxrej.eval import protocol, runs

    wd = str(tmp_path / "run")
    tiny = [*TINY, "--config.training.n_iters=60", "--config.training.eval_every=60",
            "--config.training.checkpoint_every=60", "--config.eval.screen=none",
            "--config.eval.elbo_n_times=4"]  # fmt: skip
    assert main(["train", "--config", DIGITS, "--workdir", wd, "--no-progress", *tiny]) == 0
    for scorer in ("ode", "elbo"):
        assert main(["score", "--workdir", wd, "--limit", "6", "--scorer", scorer,
                     "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    found = scorers.find_runs(wd)
    data, _, _ = runs.eval_data(found, test=None, ood=None, limit=6)
    judges = runs.load_scorers(found, sbgc_batch=5) | {
        "elbo": scorers.load(wd, "elbo", batch_size=5)
    }
    assert set(judges) == {"sbgc", "elbo"}
    got = protocol.population_scores(judges, {"test": data.test[0]},
                                     out_dir=str(tmp_path / "evaluate"), progress=False)  # fmt: skip
    for name, stem in (("sbgc", "score_test_limit6"), ("elbo", "score_test_elbo_limit6")):
        z = np.load(os.path.join(wd, f"{stem}.npz"))
        np.testing.assert_array_equal(z["labels"], data.test[1])
        assert np.all(np.isfinite(z["class_logp"])) and z["ok"].all()
        np.testing.assert_allclose(got[name]["test"], z["class_logp"], rtol=0, atol=1e-3)
    # `--attack-fresh-probes`: the same judge, an attack view that takes a key (fresh probes)
    fresh = runs.load_scorers(found, sbgc_batch=5, fresh=True)["sbgc"]
    assert fresh.settings == judges["sbgc"].settings
    labels = data.test[1][:1]
    assert not judges["sbgc"].for_attack(labels=labels).stochastic
    view = fresh.for_attack(labels=labels)
    x = jnp.asarray(data.test[0][:1], jnp.float32)
    a, b = (np.asarray(view.fn(x, jax.random.key(k))) for k in (1, 2))
    assert view.stochastic and np.all(np.isfinite(a)) and not np.allclose(a, b)


def _corrupt(step_dir):
    """Overwrite every data file of one orbax checkpoint (its metadata stays valid)."""
    for p in glob.glob(os.path.join(step_dir, "**"), recursive=True):
        if os.path.isfile(p) and "METADATA" not in p:
            with open(p, "wb") as f:
                f.write(b"not a checkpoint")


@pytest.mark.parametrize(
    "override,message",
    [("--config.training.lr=-0.1", "training.lr"), ("--config.sde.name='cosine'", "sde.name"),
     ("--config.model.name='resnet'", "model.name"), ("--config.data.dataset='imagenet'", "data.dataset"),
     ("--config.eval.divergence='trace'", "eval.divergence"), ("--config.sde.beta_max=0.01", "beta_max"),
     ("--config.training.batch_size=5000", "batch_size"), ("--config.model.hiden=3", "hiden")],
)  # fmt: skip
def test_bad_config_values(tmp_path, capsys, override, message):
    wd = tmp_path / "run"
    rc = main(
        [
            "train",
            "--config",
            DIGITS,
            "--workdir",
            str(wd),
            "--no-progress",
            *TINY,
            override,
        ]
    )
    assert rc == 2 and message in capsys.readouterr().err
    assert not (wd / "checkpoints").exists()


def test_resume_is_refused_for_a_changed_setting_by_name_and_accepted_for_equal_ones(
    tmp_path, capsys
):
    """A second `train` in a run's folder: a changed model/data/sde/fixed training setting is
    refused, naming the key with its stored and new value, and nothing is touched; only the
    resumable fields (training.n_iters, ..., eval.*) may change; a key absent on one side and
    None on the other is the same setting (jaxrej.config.config_diff), any other value is not."""
    wd = str(tmp_path / "run")
    short = [*TINY, "--config.training.n_iters=2", "--config.training.checkpoint_every=2"]
    train = ["train", "--config", DIGITS, "--workdir", wd, "--no-progress", *short]
    assert main(train) == 0
    capsys.readouterr()
    before = _hashes(wd)
    for override, named in [("--config.model.hidden=32", "model.hidden: 16 -> 32"),
                            ("--config.training.lr=0.002", "training.lr: 0.001 -> 0.002"),
                            ("--config.seed=1", "seed: 0 -> 1")]:  # fmt: skip
        assert main([*train, override]) == 2, override
        err = capsys.readouterr().err
        assert "different config" in err and named in err, err
        assert _hashes(wd) == before
    # a stored field the config no longer has: None is the same run, 0 is not
    path = os.path.join(wd, "config.json")
    stored = json.load(open(path))
    for extra, refused in ((0, True), (None, False)):
        json.dump({**stored, "model": {**stored["model"], "extra": extra}}, open(path, "w"))
        rc = main([*train, "--config.training.n_iters=3", "--config.eval.rtol=0.01"])
        err = capsys.readouterr().err
        assert (rc == 2) == refused and ("model.extra: 0 -> None" in err) == refused, err
    summary = json.load(open(os.path.join(wd, "train.json")))
    assert summary["start_step"] == 2 and summary["final_step"] == 3  # resumed, not restarted


def test_missing_workdir_and_missing_checkpoint(tmp_path, capsys):
    assert main(["score", "--workdir", str(tmp_path / "absent")]) == 2
    assert "workdir" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{broken")
    assert main(["score", "--workdir", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_unet_toy_on_mock_mnist(tmp_path, capsys):
    """The cifar10/mnist code path (U-Net, tfds source) at toy size on mock data."""
    import tensorflow_datasets as tfds

    wd = str(tmp_path / "run")
    toy = ["--config.data.dataset=mnist", "--config.model.unet.nf=4", "--config.model.unet.ch_mult=(1,)",
           "--config.model.unet.num_res_blocks=1", "--config.model.unet.attn_resolutions=(28,)",
           "--config.training.n_iters=2", "--config.training.batch_size=4",
           "--config.training.log_every=1", "--config.training.eval_every=2", "--config.training.checkpoint_every=2",
           "--config.training.warmup=1", "--config.data.eval_split=''"]  # fmt: skip
    with tfds.testing.mock_data(num_examples=8, data_dir=str(tmp_path / "tfds")):
        assert (
            main(
                [
                    "train",
                    "--config",
                    str(CONFIGS / "mnist_sbgc_large.py"),
                    "--workdir",
                    wd,
                    "--no-progress",
                    *toy,
                ]
            )
            == 0
        )
    t = json.load(open(os.path.join(wd, "train.json")))
    assert (
        t["final_step"] == 2 and t["n_train"] == 7
    )  # data.val_fraction 0.15: one of the four 7s held out
    cfg = json.load(open(os.path.join(wd, "config.json")))
    assert cfg["model"]["name"] == "unet" and cfg["data"]["event_shape"] == [28, 28, 1]
    assert (
        cfg["training"]["weighting"] == "likelihood"
        and cfg["training"]["importance_sampling"] is True
    )


def test_large_config_takes_a_step_and_scores_at_its_real_size(tmp_path):
    """configs/mnist_sbgc_large.py as a GPU user runs it (its U-Net unchanged): one training step
    (batch 2) and the default ODE scorer on one image, all classes, at loose tolerances; on
    8 random 28x28 images written here, so no data file is needed. No evaluation rows in
    training (data.eval_split ''): the end-of-run eval loss and label gap would compile two more
    real-size programs (~40 s on a 2-core CPU) that nothing here checks."""
    from jaxrej.data import local

    rng = np.random.default_rng(0)
    local.write_idx(str(tmp_path / "im.gz"), rng.integers(0, 256, (8, 28, 28)).astype(np.uint8))
    local.write_idx(str(tmp_path / "lab.gz"), np.arange(8, dtype=np.uint8) % 2)
    spec = f"idx:{tmp_path / 'im.gz'},{tmp_path / 'lab.gz'}"
    wd = str(tmp_path / "run")
    step = [f"--config.data.dataset={spec}", f"--config.data.eval_dataset={spec}",
            "--config.data.eval_split=''", "--config.training.n_iters=1",
            "--config.training.batch_size=2",
            "--config.training.warmup=1", "--config.training.eval_every=1000"]  # fmt: skip
    large = str(CONFIGS / "mnist_sbgc_large.py")
    assert main(["train", "--config", large, "--workdir", wd, "--no-progress", *step]) == 0
    t = json.load(open(os.path.join(wd, "train.json")))
    cfg = json.load(open(os.path.join(wd, "config.json")))
    from jaxrej.training.workdir import build_net

    want = build_net("unet", num_classes=2, **configs_model(large))
    assert cfg["model"]["name"] == "unet" and t["final_step"] == 1
    assert "eval_loss_ema" not in t["last_metrics"]
    assert t["n_params"] == _n_params(want, (28, 28, 1))
    loose = ["--config.eval.rtol=0.1", "--config.eval.atol=0.1", "--config.eval.batch_size=1",
             "--config.eval.screen=none"]  # fmt: skip
    assert main(["score", "--workdir", wd, "--no-progress", "--limit", "1", *loose]) == 0
    (path,) = glob.glob(os.path.join(wd, "score_test_limit1*.npz"))  # tagged by the overrides
    z = np.load(path)
    assert z["class_logp"].shape == (1, 2) and np.all(np.isfinite(z["class_logp"]))


def configs_model(path):
    """The model section of a config file's get_config(), as plain values."""
    from jaxrej.config import load_config

    return {k: v for k, v in load_config(path, []).to_dict()["model"].items() if k != "name"}


def _n_params(net, event_shape):
    """The parameter count of init_params's tree, from its shapes (eval_shape: compiling the
    real-size U-Net's init would take a minute on CPU)."""
    import jax

    from jaxrej.models.score import init_params

    params = jax.eval_shape(lambda: init_params(net, event_shape, key=jax.random.key(0)))
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def test_help_imports_only_the_command_it_shows():
    """`jaxrej --help` imports no command module; `jaxrej NAME --help` only NAME's, and nothing
    heavy of its own (the library it calls is imported by run())."""
    code = """if True:
        import sys
        from jaxrej import cli
        def loaded():
            return sorted(m for m in sys.modules
                          if m.startswith(("jaxrej.commands.", "jaxrej.eval", "jaxrej.training", "orbax")))
        for argv in (["--help"], ["heads", "--help"], ["train", "--help"], ["score", "--help"]):
            try:
                cli.main(argv)
            except SystemExit:
                pass
            print(" ".join(argv), loaded(), file=sys.stderr)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "--help []",
        "heads --help ['jaxrej.commands.heads']",
        "train --help ['jaxrej.commands.heads', 'jaxrej.commands.train']",
        "score --help ['jaxrej.commands.heads', 'jaxrej.commands.score', 'jaxrej.commands.train']",
    ], proc.stderr
    assert "usage: jaxrej heads" in proc.stdout and "--workdir" in proc.stdout
