"""`jaxrej heads` end to end on digits (small settings), checked against scikit-learn; the
protocol's data (jaxrej.eval.heads.load_heads_data) against the registry and preprocessing."""

import json
import os
import stat

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from jaxrej import cli
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


def test_writes_json_and_scores_and_keeps_other_files(run_dir):
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "heads.json",
        "heads_scores.npz",
        "notes.txt",
    ]
    res = json.loads((run_dir / "heads.json").read_text())
    assert res["n"] == {"fit": 1221, "val": 216, "test": 360, "ood/inverted": 360, "ood/noise": 360}
    t = res["table"]
    assert 0.5 < t["base_accuracy"] <= 1.0
    # a higher percentile gives higher thresholds: it rejects a superset
    assert t["rejection_rate_p1"] <= t["rejection_rate_p2"]
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
    from jaxrej.commands import heads

    data, options, seed = heads.settings(cli.load_config(str(CONFIGS / f"{name}_heads.py")))
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
    with pytest.raises(ValueError, match="data.dataset"):
        load_heads_data("digits", ood=("nope",), val_fraction=0.1, seed=0)
