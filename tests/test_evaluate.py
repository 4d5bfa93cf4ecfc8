"""The evaluation protocol: reject tables against numpy, resumable cached scoring, figures."""

import os

import numpy as np
import pytest

from jaxrej import reject
from jaxrej.eval import tables
from jaxrej.eval.cache import cached_scores
from jaxrej.eval.protocol import EvalData, EvalOptions, evaluate
from jaxrej.scorers import Scorer


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
    th = reject.fit_thresholds(sv, yv, percentiles=(1.0, 5.0))
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
    sc = {"exact": Scorer(name="exact", fn=lambda b: _gaussian_scores(np.asarray(b), means),
                          num_classes=3, batch_size=32, settings="exact-v1", jit=False)}  # fmt: skip
    rep = evaluate(sc, data, options=EvalOptions(), out_dir=str(tmp_path), progress=False)
    r = rep["scorers"]["exact"]
    assert r["ood"]["shifted"]["auroc"] > 0.99
    # every rule's clean rejection rate, recomputed with numpy from the exact scores and the
    # thresholds numpy fits on the validation rows (per-class percentiles; 99% of the correct
    # rows accepted)
    sv, st = _gaussian_scores(data.val[0], means), _gaussian_scores(data.test[0], means)
    yv, yt = data.val[1], data.test[1]
    ok = sv.argmax(1) == yv
    own = sv[np.arange(len(yv)), yv]
    t99 = np.sort(own[ok])[::-1][int(np.ceil(0.99 * ok.sum())) - 1]
    want = {"p1": [np.percentile(own[ok & (yv == c)], 1) for c in range(3)],
            "p2": [np.percentile(own[ok & (yv == c)], 2) for c in range(3)], "tpr99": [t99] * 3}  # fmt: skip
    assert set(r["thresholds"]) == set(want)
    for k, t in want.items():
        np.testing.assert_allclose(r["thresholds"][k], t, rtol=1e-6)
        rej = st.max(1) < np.asarray(t)[st.argmax(1)]
        assert r["clean"][k]["rejection_rate"] == pytest.approx(rej.mean())
    assert r["clean"]["accuracy"] == pytest.approx(np.mean(st.argmax(1) == yt))
    assert all(os.path.getsize(p) > 1000 for p in rep["figures"])
    md = tables.markdown(rep, rules=("p1", "p2", "tpr99"))
    assert "| exact | shifted |" in md and "rejected tpr99" in md
