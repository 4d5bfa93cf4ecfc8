"""`jaxrej evaluate` end to end on digits at toy size: a briefly trained score model and heads in
one workdir; the report against the saved scores (reject.decide), resume from the cache, and
other sets written beside, never over, the full run."""

import json
import os
import shutil

import numpy as np
import pytest

from jaxrej import cli, reject
from tests.conftest import CONFIGS

# xdist_group: one worker runs the module fixture
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli_evaluate")]

SBGC = ["--config.training.n_iters=40", "--config.training.batch_size=32",
        "--config.training.log_every=20", "--config.training.eval_every=40",
        "--config.training.checkpoint_every=40", "--config.training.warmup=1",
        "--config.model.hidden=64", "--config.eval.divergence='rademacher'",
        "--config.eval.rtol=1e-2", "--config.eval.atol=1e-2"]  # fmt: skip
HEADS = ["--config.train.epochs=8", "--config.sdim.epochs=20", "--config.sdim.learning_rate=5e-3",
         "--config.sdim.batch_size=50", "--config.gmm.n_init=1", "--config.gmm.max_iter=20",
         "--config.gmm.n_components=4"]  # fmt: skip
EVAL = ["--no-attack", "--no-progress", "--corruptions", "gaussian_noise,contrast",
        "--severities", "1,5", "--n-corrupt", "6", "--limit", "24"]  # fmt: skip
# the result folder's name: the test set's limit, then a tag per option off its default
TAGS = "_corrupt-gaussian_noise-contrast_sev15_nc6_noattack"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate")
    assert cli.main(["train", "--config", str(CONFIGS / "digits_sbgc.py"), "--workdir",
                     str(d / "sbgc"), "--no-progress", *SBGC]) == 0  # fmt: skip
    assert cli.main(["heads", "--config", str(CONFIGS / "digits_heads.py"), "--workdir",
                     str(d / "heads"), "--no-progress", *HEADS]) == 0  # fmt: skip
    assert cli.main(["evaluate", "--workdir", str(d), *EVAL]) == 0
    return d


def test_report_matches_the_saved_scores(workdir):
    out = workdir / f"evaluate_limit24{TAGS}"
    rep = json.loads((out / "evaluate.json").read_text())
    assert set(rep["scorers"]) == {"sbgc", "msp", "msp_temperature", "sdim_logit", "gmm_cc", "gmm",
                                   "mahalanobis"}  # fmt: skip
    assert rep["n_test"] == 24 and len(rep["figures"]) >= 5
    assert all(os.path.getsize(p) > 1000 for p in rep["figures"])
    for name, r in rep["scorers"].items():
        with np.load(out / "scores" / name / "test.npz") as z:
            s = z["scores"]
        th = np.asarray(r["thresholds"]["p1"])
        pred, rej = (np.asarray(a) for a in reject.decide(s, th))
        assert r["clean"]["p1"]["rejection_rate"] == pytest.approx(rej.mean())
        assert set(r["ood"]) == {
            "uniform_noise",
            "gaussian_noise",
            "constant",
            "inverted",
            "photos",
        }
        assert set(r["corruptions"]["rows"]) == {"gaussian_noise", "contrast"}
        assert r["ood"]["uniform_noise"]["positive"] == "in-distribution"
    assert "interpolation" in rep["scorers"]["sbgc"]
    assert (out / "evaluate.md").read_text().startswith("### Clean test set")


def test_rerun_reads_the_cache_and_other_sets_keep_their_own_folder(workdir):
    out = workdir / f"evaluate_limit24{TAGS}"
    before = (out / "evaluate.json").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "scores").rglob("*.npz")}
    assert cli.main(["evaluate", "--workdir", str(workdir), *EVAL]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "scores").rglob("*.npz")} == stamps
    after = json.loads((out / "evaluate.json").read_text())
    old = json.loads(before)
    assert after["scorers"] == old["scorers"]  # same numbers from the cache
    argv = ["evaluate", "--workdir", str(workdir), *EVAL[:-1], "12"]
    assert cli.main(argv) == 0
    assert (workdir / f"evaluate_limit12{TAGS}" / "evaluate.json").is_file()
    assert (out / "evaluate.json").read_text() == json.dumps(after, indent=2, sort_keys=True) + "\n"


def test_adversarial_tables_are_judged_by_the_clean_tables_scorer(workdir, capsys):
    """Two heads (--attack-scorers: the discriminative msp and the generative gmm_cc) attacked on
    all 24 test rows (L-inf and L2): each row's clean accuracy and clean rejection equal the clean
    table's (the same judge and thresholds, all rows); every rate is monotone in eps; every row
    has n and an interval; the clean tables print before the first adversarial row; the other
    heads stay in the clean tables only. The score model is in the clean tables only
    (--attack-sbgc-n 0): its clean scores are the fixture run's (the same judge, validation, test
    and OOD rows), handed over in its score cache (`jaxrej.eval.cache`: keyed by the images and
    the scorer's settings), not solved again."""
    out = workdir / "evaluate_limit24_corrupt-none_atksbgc0_linf0.05-0.3_l21_atkonly-msp-gmm_cc"
    cache = out / "scores" / "sbgc"
    shutil.copytree(workdir / f"evaluate_limit24{TAGS}" / "scores" / "sbgc", cache)
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npz")}
    argv = ["evaluate", "--workdir", str(workdir), "--no-progress", "--corruptions", "none",
            "--limit", "24", "--attack-sbgc-n", "0", "--linf-eps", "0.05,0.3", "--l2-eps", "1",
            "--attack-scorers", "msp,gmm_cc"]  # fmt: skip
    assert cli.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npz")} == stamps  # read, not rescored
    err = capsys.readouterr().err
    assert err.index("### Clean test set") < err.index("| msp | p1 | 0.05 | 24 |")
    rep = json.loads((out / "evaluate.json").read_text())
    adv = rep["adversarial"]
    assert set(adv) == {"linf", "l2"} and "sbgc" not in adv["linf"]
    for results in adv.values():
        assert set(results) == {"msp", "gmm_cc"} < set(rep["scorers"]) - {"sbgc"}
        for name, r in results.items():
            clean = rep["scorers"][name]["clean"]
            assert r["clean"]["p1"]["accuracy"]["rate"] == pytest.approx(clean["accuracy"])
            assert r["clean"]["p1"]["rejected"]["rate"] == pytest.approx(
                clean["p1"]["rejection_rate"]
            )
            rows = [r["eps"][e]["p1"] for e in r["eps"]]
            fooled = [x["fooled_accepted"]["rate"] for x in rows]
            acc = [x["accuracy"]["rate"] for x in rows]
            assert fooled == sorted(fooled) and acc == sorted(acc, reverse=True)
            assert all(x["n"] == 24 and x["fooled_accepted"]["ci"][0] <= x["fooled_accepted"]["rate"]
                       for x in rows)  # fmt: skip
    # per-example levels live beside each scorer's result, not in evaluate.json; they give its rates
    assert not any("levels" in r for results in adv.values() for r in results.values())
    saved = json.loads((out / "adversarial" / "linf_msp.json").read_text())["result"]
    lv = np.asarray(saved["levels"]["independent"]["p1"])  # (eps, rows)
    worst = np.maximum.accumulate(np.maximum(lv, saved["levels"]["clean"]["p1"]), axis=0)
    fooled = [
        adv["linf"]["msp"]["eps"][e]["p1"]["fooled_accepted"]["rate"] for e in ("0.05", "0.3")
    ]
    np.testing.assert_allclose(fooled, np.mean(worst == 3, axis=1))  # 3: fooled and accepted
    md = (out / "evaluate.md").read_text()
    assert "### Adversarial inputs, L-inf" in md and "### Adversarial inputs, L2" in md
