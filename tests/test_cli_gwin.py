"""`jaxrej gwin` end to end on digits (tiny settings): the files, the table's arithmetic, resume,
and refusal to overwrite another run's results."""

import json

import numpy as np
import pytest

from jaxrej import cli
from tests.conftest import CONFIGS

# xdist_group: one worker runs the module fixture
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli_gwin")]

CONFIG = str(CONFIGS / "digits_gwin.py")
FAST = [
    "--config.classifier.epochs=10",
    "--config.classifier.learning_rate=0.003",
    "--config.classifier.dropout=0.1",
    "--config.classifier.mc_samples=4",
    "--config.gan.n_steps=4",
    "--config.gan.checkpoint_every=2",
    "--config.gan.log_every=2",
    "--config.gan.batch_size=16",
    "--config.gan.tau_star=0.3",
    "--config.gan.generator_hidden=(32,)",
    "--config.gan.critic_channels=(8,)",
    "--config.gan.critic_dense=16",
]
KEYS = {"tau", "rejected_frac", "acc_rejected_before", "acc_rejected_after", "acc_with_reject",
        "acc_with_transform", "n_rejected"}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gwin")
    (d / "notes.txt").write_text("mine")
    assert cli.main(["gwin", "--config", CONFIG, "--workdir", str(d), "--no-progress", *FAST]) == 0
    return d


def test_files_and_table(run_dir):
    assert (run_dir / "notes.txt").read_text() == "mine"
    names = {p.name for p in run_dir.iterdir()}
    assert {"gwin.json", "gwin_run.json", "gwin_config.json", "gwin_curves.png", "gwin_grid.png",
            "gwin_classifier", "gwin_checkpoints"} <= names  # fmt: skip
    for png in ("gwin_curves.png", "gwin_grid.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((run_dir / "gwin.json").read_text())
    assert [r["tau"] for r in rows] == [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
    assert all(set(r) == KEYS for r in rows)
    fracs = [r["rejected_frac"] for r in rows]
    assert fracs == sorted(fracs) and fracs[0] == 0.0  # certainty >= 1/C = 0.1 always
    n = json.loads((run_dir / "gwin_run.json").read_text())["n"]["test"]
    for r in rows:  # the whole-set accuracy splits into the accepted and rejected parts
        assert r["n_rejected"] == round(r["rejected_frac"] * n)
        acc = (1 - r["rejected_frac"]) * (r["acc_with_reject"] or 0.0) + r["rejected_frac"] * (
            r["acc_rejected_after"] or 0.0
        )
        assert r["acc_with_transform"] == pytest.approx(acc)


def test_refuses_another_run_and_resumes_the_same(run_dir, capsys):
    before = (run_dir / "gwin.json").read_text()
    rc = cli.main(["gwin", "--config", CONFIG, "--workdir", str(run_dir), "--no-progress",
                   *FAST, "--config.seed=1"])  # fmt: skip
    assert rc == 2 and "seed" in capsys.readouterr().err
    assert (run_dir / "gwin.json").read_text() == before
    longer = [*FAST[:4], "--config.gan.n_steps=6", *FAST[5:]]
    assert cli.main(["gwin", "--config", CONFIG, "--workdir", str(run_dir), "--no-progress", *longer]) == 0  # fmt: skip
    info = json.loads((run_dir / "gwin_run.json").read_text())
    assert info["resumed"] and info["classifier_restored"]
    assert [r["step"] for r in info["gan_log"]] == [6]  # steps 5-6 only: resumed from step 4


def test_heldout_rows_train_the_generator_and_never_the_classifier(tmp_path, monkeypatch):
    """gen_inputs="heldout": the arrays the command hands to the classifier's and the generator's
    training are, row for row, a partition of the digits training rows outside the validation
    rows (checked against the dataset itself), with round(0.25 n_c) generator rows per class."""
    from jaxrej import classifiers
    from jaxrej.data.preprocessing import to_unit_interval
    from jaxrej.data.registry import load_dataset
    from jaxrej.gwin import wgan
    from jaxrej.gwin.pipeline import validation_split

    seen = {}
    clf_train, gan_train = classifiers.train, wgan.train

    def spy_clf(model, state, images, labels, **kw):
        seen["clf"] = (np.asarray(images), np.asarray(labels))
        return clf_train(model, state, images, labels, **kw)

    def spy_gan(**kw):
        seen["gen"] = (np.asarray(kw["gen_images"]), np.asarray(kw["gen_labels"]))
        return gan_train(**kw)

    monkeypatch.setattr(classifiers, "train", spy_clf)
    monkeypatch.setattr(wgan, "train", spy_gan)
    args = ["--config.gan.gen_inputs=heldout", "--config.gan.heldout_fraction=0.25"]
    assert cli.main(["gwin", "--config", CONFIG, "--workdir", str(tmp_path), "--no-progress",
                     *FAST, *args]) == 0  # fmt: skip
    train = load_dataset("digits", "train")
    fit, _ = validation_split(np.asarray(train.labels), 0.2, seed=0)  # the rest: validation
    x = to_unit_interval(np.asarray(train.images), train.n_levels)[fit]
    y = np.asarray(train.labels)[fit]

    def rows(images, labels):  # each row as bytes, so that rows compare as a multiset
        return sorted(i.tobytes() + bytes([int(c)]) for i, c in zip(images, labels, strict=True))

    assert sorted(rows(*seen["clf"]) + rows(*seen["gen"])) == rows(x, y)
    assert not set(rows(*seen["clf"])) & set(rows(*seen["gen"]))
    counts = np.bincount(seen["gen"][1], minlength=10)
    assert counts.tolist() == [round(0.25 * n) for n in np.bincount(y, minlength=10)]
    n = json.loads((tmp_path / "gwin_run.json").read_text())["n"]
    assert (n["classifier_train"], n["generator_inputs"]) == (len(seen["clf"][1]), counts.sum())


@pytest.mark.parametrize(
    "override, named",
    [("--config.gan.gen_inputs=bogus", "gan.gen_inputs"),
     ("--config.classifier.name=vgg", "classifier.name"),
     ("--config.classifier.mc_samples=0", "classifier.mc_samples"),
     ("--config.gan.b1=1.0", "gan.b1"),
     ("--config.eval.taus=()", "eval.taus")],
)  # fmt: skip
def test_a_bad_field_is_named_before_anything_is_written(tmp_path, capsys, override, named):
    rc = cli.main(["gwin", "--config", CONFIG, "--workdir", str(tmp_path / "w"), "--no-progress", override])  # fmt: skip
    assert rc == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
