"""The evaluation protocol: reject tables against numpy, resumable cached scoring, figures."""

import os

import numpy as np
import pytest

from jaxrej.eval import tables
from jaxrej.eval.cache import cached_scores
from jaxrej.eval.protocol import EvalData, EvalOptions, Scorer, evaluate


def _gaussian_scores(x, means):
    """Exact class log-densities (up to a constant) of unit-variance Gaussian classes."""
    d = x.reshape(len(x), -1)
    return -0.5 * ((d[:, None, :] - means[None]) ** 2).sum(-1)


def _data(rng, n, means, shift=0.0):
    y = rng.integers(0, len(means), n).astype(np.int32)
    x = means[y] + rng.normal(size=(n, means.shape[1])) + shift
    return x.reshape(n, 2, 2, 1).astype(np.float32), y


def test_tables_match_numpy_percentiles():
    rng = np.random.default_rng(0)
    means = rng.normal(scale=2.0, size=(3, 4))
    xv, yv = _data(rng, 300, means)
    xt, yt = _data(rng, 200, means)
    sv, st = _gaussian_scores(xv, means), _gaussian_scores(xt, means)
    th = tables.thresholds(sv, yv, percentiles=(1.0, 5.0))
    for p, k in ((1.0, "p1"), (5.0, "p5")):
        own = sv[np.arange(len(yv)), yv]
        ok = sv.argmax(1) == yv
        expect = [np.percentile(own[ok & (yv == c)], p) for c in range(3)]
        np.testing.assert_allclose(th[k], expect, rtol=1e-5)
        pred = st.argmax(1)
        rej = st.max(1) < th[k][pred]
        row = tables.clean_row(st, yt, th)
        assert row["accuracy"] == pytest.approx(np.mean(pred == yt))
        assert row[k]["rejection_rate"] == pytest.approx(rej.mean())
        assert row[k]["acc_left"] == pytest.approx(np.mean(pred[~rej] == yt[~rej]))
    far = _gaussian_scores(xt + 50.0, means)  # far away: every row rejected, AUROC 1
    o = tables.ood_row(st, far, th)
    assert (
        o["p1"]["rejection_rate"] == 1.0
        and o["auroc"] == 1.0
        and o["positive"] == "in-distribution"
    )


def test_thresholds_fall_back_for_a_class_never_right():
    s = np.array([[0.0, -1.0, -2.0], [-3.0, 0.0, -1.0], [-1.0, 0.0, -5.0], [0.5, -1.0, -2.0]])
    y = np.array([0, 1, 2, 0])  # class 2's only row is predicted 1
    th = tables.thresholds(s, y, percentiles=(50.0,))["p50"]
    own = np.array([0.0, 0.0, 0.5])  # the correct rows' own scores
    np.testing.assert_allclose(th, [np.percentile([0.0, 0.5], 50), 0.0, np.percentile(own, 50)])
    assert tables.missing_classes(s, y) == [2]


def test_corruption_rows_means_split_noise():
    th = {"p1": np.full(2, -1.0)}
    labels = np.array([0, 1])
    good = np.array([[0.0, -5.0], [-5.0, 0.0]])  # correct, accepted
    bad = np.array([[-5.0, -2.0], [-2.0, -5.0]])  # wrong, rejected
    rows = tables.corruption_rows({("gaussian_noise", 1): bad, ("fog", 1): good}, labels, th)
    assert rows["rows"]["fog"][1]["accuracy"] == 1.0
    assert rows["mean"][1]["accuracy"] == 0.5 and rows["mean"][1]["p1"]["rejection_rate"] == 0.5
    assert rows["mean_no_noise"][1]["accuracy"] == 1.0


class _Killed(Exception):
    pass


def test_cached_scores_resume_after_kill(tmp_path):
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    calls = []

    def score(xb, kill_at=None):
        calls.append(len(calls))
        if kill_at is not None and len(calls) > kill_at:
            raise _Killed
        assert xb.shape == (4, 3)  # padded to one shape
        return np.stack([xb.sum(1), -xb.sum(1)], 1)

    path = str(tmp_path / "s.npz")
    with pytest.raises(_Killed):
        cached_scores(path, x, lambda b: score(b, kill_at=2), batch_size=4, settings="a",
                      progress=False, save_every_s=0.0)  # fmt: skip
    assert os.path.exists(path + ".partial.npz") and not os.path.exists(path)
    calls.clear()
    s = cached_scores(path, x, score, batch_size=4, settings="a", progress=False)
    assert len(calls) == 1  # only the last batch (rows 8, 9) was left
    np.testing.assert_array_equal(s[:, 0], x.sum(1))
    calls.clear()
    cached_scores(path, x, score, batch_size=4, settings="a", progress=False)
    assert calls == []  # finished: read back
    cached_scores(path, x, score, batch_size=4, settings="b", progress=False)
    assert len(calls) == 3  # other settings: scored again


def test_evaluate_writes_report_and_figures(tmp_path):
    rng = np.random.default_rng(1)
    means = rng.normal(scale=2.0, size=(3, 4))
    data = EvalData(val=_data(rng, 200, means), test=_data(rng, 100, means),
                    ood={"shifted": _data(rng, 50, means, shift=8.0)[0]})  # fmt: skip
    sc = {"exact": Scorer("exact", lambda b: _gaussian_scores(b, means), 32, "exact-v1")}
    rep = evaluate(sc, data, options=EvalOptions(), out_dir=str(tmp_path), progress=False)
    r = rep["scorers"]["exact"]
    assert r["ood"]["shifted"]["auroc"] > 0.99
    assert r["clean"]["p2"]["rejection_rate"] >= r["clean"]["p1"]["rejection_rate"]
    assert all(os.path.getsize(p) > 1000 for p in rep["figures"])
    md = tables.markdown(rep, percentiles=(1.0, 2.0))
    assert "| exact | shifted |" in md
