"""`jaxrej heads` end to end on digits (small settings), checked against scikit-learn; the
protocol's data (jaxrej.eval.heads.load_heads_data) against the registry and preprocessing."""

import json
import os
import stat

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from jaxrej import cli
from jaxrej.config import load_config
from tests.conftest import CONFIGS

pytestmark = pytest.mark.slow

CONFIG = str(CONFIGS / "digits_heads.py")
FAST = [
    "--config.train.epochs=8",
    "--config.sdim.epochs=20",
    "--config.sdim.learning_rate=5e-3",
    "--config.sdim.batch_size=50",
    "--config.gmm.n_init=1",
    "--config.gmm.max_iter=20",
    "--config.gmm.n_components=4",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    (d / "notes.txt").write_text("mine")  # a user's file must survive
    rc = cli.main(["heads", "--config", CONFIG, "--workdir", str(d), *FAST])
    assert rc == 0
    return d


def test_other_sets_write_their_own_files_and_keep_the_full_run(run_dir, tmp_path):
    """--test / --ood runs write heads_<test>_ood_<name>.json; heads.json stays byte-identical."""
    import shutil

    wd = tmp_path / "w"
    shutil.copytree(
        run_dir, wd
    )  # the full run's folder, copied: run_dir stays as the fixture made it
    before = {p.name: p.read_bytes() for p in wd.iterdir()}
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", x=rng.integers(0, 256, (30, 8, 8)).astype(np.uint8))
    tiny = [*FAST, "--config.train.epochs=4", "--config.sdim.epochs=8", "--config.gmm.max_iter=5",
            "--config.gmm.n_components=2", "--no-progress"]  # fmt: skip
    argv = ["heads", "--config", CONFIG, "--workdir", str(wd), "--test", "again=digits",
            "--ood", f"blobs=npz:{tmp_path / 'blobs.npz'}", "--ood", "digits", *tiny]  # fmt: skip
    assert cli.main(argv) == 0
    assert {p.name: p.read_bytes() for p in wd.iterdir() if p.name in before} == before
    new = sorted(p.name for p in wd.iterdir() if p.name not in before)
    assert new == ["heads_again_ood_blobs_digits.json", "heads_again_ood_blobs_digits_scores.npz"]
    res = json.loads((wd / new[0]).read_text())
    assert res["n"]["ood/blobs"] == 30 and res["n"]["ood/digits"] == 360 and res["notes"] == []
    assert (
        res["sets"]["ood/blobs"].endswith("[all]") and res["sets"]["ood/digits"] == "digits [test]"
    )
    for entry in res["scorers"].values():
        assert set(entry["ood"]) == {"blobs", "digits"}
        assert {"accuracy", "acc_left", "rejection_rate"} <= set(entry["global_threshold"])
    assert "in-distribution" in res["ood_positive"]
    # the digits run named no OOD set: it says so, and used the transformed test split
    full = json.loads(before["heads.json"])
    assert "no OOD set given" in full["notes"][0]


def test_writes_json_and_scores_and_keeps_other_files(run_dir):
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "adversarial_heads.json",  # the fitted classifier and heads (jaxrej.scorers.heads)
        "adversarial_heads.msgpack",
        "heads.json",
        "heads_scores.npz",
        "notes.txt",
    ]
    res = json.loads((run_dir / "heads.json").read_text())
    assert res["n"] == {"fit": 1221, "val": 216, "test": 360, "ood/inverted": 360, "ood/noise": 360}
    t = res["table"]
    # the SDIM-logit table recomputed from the saved per-example arrays: reject when the
    # predicted class's score falls below that class's threshold
    s = np.load(run_dir / "heads_scores.npz")
    conf, pred, y = s["sdim_logit/test"], s["sdim_pred_test"], s["labels_test"]
    for k in ("p1", "p2"):
        th = np.asarray(res["sdim_logit_per_class"][k]["thresholds"])
        rej = conf < th[pred]
        assert t[f"rejection_rate_{k}"] == pytest.approx(rej.mean())
        assert t[f"acc_left_{k}"] == pytest.approx(np.mean(pred[~rej] == y[~rej]))
    assert t["sdim_logit_accuracy"] == pytest.approx(np.mean(pred == y))
    assert res["config"]["train"]["epochs"] == 8


def test_reported_metrics_match_sklearn_on_the_saved_scores(run_dir):
    res = json.loads((run_dir / "heads.json").read_text())
    s = np.load(run_dir / "heads_scores.npz")
    for name, entry in res["scorers"].items():
        test, correct = s[f"{name}/test"], s[f"{name}/correct_test"]
        if 0 < correct.sum() < correct.size:
            assert entry["mistakes"]["auroc"] == pytest.approx(
                roc_auc_score(correct, test), abs=1e-12
            )
        for ood, m in entry["ood"].items():
            o = s[f"{name}/ood/{ood}"]
            y = np.r_[np.ones(test.size), np.zeros(o.size)]
            sc = np.nan_to_num(np.r_[test, o].astype(np.float64), nan=-1e300, neginf=-1e300)
            assert m["auroc"] == pytest.approx(roc_auc_score(y, sc), abs=1e-12)
            assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y, -sc), abs=1e-12)
    acc = np.mean(s["base_pred_test"] == s["labels_test"])
    assert res["table"]["base_accuracy"] == pytest.approx(acc)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--config.reject.percentiles=(0.0, 2.0)"], "reject.percentiles"),
        (["--config.data.val_fraction=1.5"], "val_fraction"),
        (["--config.nope=1"], "nope"),
        (["--config.data.dataset=idx"], "IMAGES"),
        (["--config.data.dataset='idx:absent.gz'"], "no such file"),
        (["--ood", "npz:absent.npz"], "ood 'absent'"),
        (["--test", "bad name=digits"], "set name"),
    ],
)
def test_bad_config_exits_2_with_a_message(tmp_path, capsys, extra, message):
    rc = cli.main(["heads", "--config", CONFIG, "--workdir", str(tmp_path / "w"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_workdir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["heads", "--config", CONFIG, "--workdir", str(f)]) == 2
    assert "--workdir" in capsys.readouterr().err
    assert f.read_text() == "x"


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10"])
def test_every_heads_config_validates(name):
    from jaxrej.config import heads_settings

    data, options, seed = heads_settings(load_config(str(CONFIGS / f"{name}_heads.py")))
    assert options.percentiles == (1.0, 2.0) and options.tpr == 0.95 and seed == 0
    assert options.model in ("mlp", "cnn", "resnet")
    assert (data["dataset"] == "digits") == (not data["ood"])  # tfds datasets name an OOD set


def test_result_files_are_readable_like_any_other_file(run_dir):
    umask = os.umask(0)
    os.umask(umask)
    for f in ("heads.json", "heads_scores.npz"):
        assert stat.S_IMODE((run_dir / f).stat().st_mode) == 0o666 & ~umask


def test_heads_data_is_the_registry_data_scaled_by_preprocessing():
    from jaxrej.data import digits
    from jaxrej.data.registry import load_dataset
    from jaxrej.eval.heads import load_heads_data

    d = load_heads_data("digits", val_fraction=0.15, seed=0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    # fit and val partition the training rows, stratified: 15% of each class in val
    x_fit, y_fit = d.fit
    x_val, y_val = d.val
    assert len(y_fit) + len(y_val) == len(train.labels)
    for c in range(10):
        assert np.sum(y_val == c) == round(0.15 * np.sum(train.labels == c))
    # pixels k / (levels - 1): 0 and 16 map to 0 and 1 exactly
    np.testing.assert_array_equal(d.test[0], test.images / 16.0)
    assert d.test[0].dtype == np.float32 and d.test[0].min() == 0.0 and d.test[0].max() == 1.0
    rows = {r.tobytes(): y for r, y in zip(train.images / 16.0, train.labels, strict=True)}
    assert all(rows[r.astype(np.float64).tobytes()] == y for r, y in zip(x_val, y_val, strict=True))
    # digits names no OOD set: the test split inverted (16 - k) and uniform noise levels
    np.testing.assert_array_equal(d.ood["inverted"], (16 - test.images) / 16.0)
    levels = d.ood["noise"] * 16
    np.testing.assert_array_equal(levels, np.round(levels))
    assert set(np.unique(levels)) == set(range(digits.N_LEVELS))
    assert d.num_classes == 10


def test_heads_data_names_a_bad_value():
    from jaxrej.eval.heads import load_heads_data

    with pytest.raises(ValueError, match="data.val_fraction"):
        load_heads_data("digits", val_fraction=0.0, seed=0)
    with pytest.raises(ValueError, match="ood 'nope': dataset 'nope': unknown name"):
        load_heads_data("digits", ood=("nope",), val_fraction=0.1, seed=0)


def test_heads_data_from_local_files_uses_the_fixed_split(tmp_path, monkeypatch):
    """idx:/npz: sets: fit = the registry's train rows, val = its validation rows, test = its
    test rows (never tuned on), an OOD file whole; val_fraction plays no part."""
    from jaxrej.data import local
    from jaxrej.data.registry import local_split_indices
    from jaxrej.eval.heads import load_heads_data

    n = 48
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 6, 6)).astype(np.uint8)
    x[:, 0, 0] = np.arange(n)  # the row number, to read the rows back
    y = np.arange(n) % 3
    monkeypatch.chdir(tmp_path)
    local.write_idx("im.gz", x)
    local.write_idx("lab.gz", y.astype(np.uint8))
    np.savez("o.npz", images=rng.integers(0, 256, (7, 6, 6, 1)).astype(np.uint8))
    d = load_heads_data("idx:im.gz,lab.gz", ood=("o=npz:o.npz",), val_fraction=0.5, seed=3)
    idx = local_split_indices(n)
    for got, split in ((d.fit, "train"), (d.val, "validation"), (d.test, "test")):
        rows = np.round(got[0][:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(rows, idx[split])
        np.testing.assert_array_equal(got[1], y[rows])
        np.testing.assert_allclose(got[0][..., 0], x[rows] / 255.0, rtol=1e-6)
    assert d.ood["o"].shape == (7, 6, 6, 1) and d.num_classes == 3
    assert (
        d.sources["val"] == "idx:im.gz,lab.gz [validation]"
        and d.sources["ood/o"] == "npz:o.npz [all]"
    )
    # --test: another set's test split; an unlabelled one is refused, as is another image size
    d2 = load_heads_data("idx:im.gz,lab.gz", val_fraction=0.5, seed=3, test="t=idx:im.gz,lab.gz")
    np.testing.assert_array_equal(d2.test[1], d.test[1])
    assert set(d2.ood) == {"inverted", "noise"}
    with pytest.raises(ValueError, match="no labels"):
        load_heads_data("idx:im.gz,lab.gz", val_fraction=0.5, seed=3, test="npz:o.npz")
    with pytest.raises(ValueError, match="image shape"):
        load_heads_data("idx:im.gz,lab.gz", ood=("digits",), val_fraction=0.5, seed=3)
