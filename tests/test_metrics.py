"""Every metric against scikit-learn / scipy on random and hand-made inputs."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jaxrej import metrics as M


def _random(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    pos = rng.random(n) < 0.6
    s = rng.normal(size=n) + 0.8 * pos
    if ties:
        s = np.round(s, 1)  # many tied scores across both populations
    return s, pos


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_auroc_and_ap_match_sklearn(seed, ties):
    s, pos = _random(seed, ties=ties)
    assert M.auroc(s, pos) == pytest.approx(skm.roc_auc_score(pos, s), abs=1e-12)
    assert M.aupr_in(s, pos) == pytest.approx(skm.average_precision_score(pos, s), abs=1e-12)
    assert M.aupr_out(s, pos) == pytest.approx(skm.average_precision_score(~pos, -s), abs=1e-12)


def test_auroc_hand_made():
    # positives {3, 2}, negatives {2, 1}: pairs (3>2, 3>1, 2=2 -> 1/2, 2>1) = 3.5 / 4
    assert M.auroc([3, 2, 2, 1], [True, True, False, False]) == 0.875


@pytest.mark.parametrize("seed,ties", [(0, False), (3, True)])
@pytest.mark.parametrize("tpr", [0.95, 0.5, 0.8])
def test_fpr_at_tpr_matches_sklearn_roc_curve(seed, ties, tpr):
    s, pos = _random(seed, ties=ties)
    fpr, tprs, _ = skm.roc_curve(pos, s, drop_intermediate=False)
    expected = fpr[np.argmax(tprs >= tpr)]
    assert M.fpr_at_tpr(s, pos, tpr) == pytest.approx(expected, abs=1e-12)


def test_fpr_at_tpr_hand_made():
    # 20 positives scored 1..20, 4 negatives scored 0.5, 1.5, 2.5, 30.
    # 95% TPR needs 19 positives accepted: threshold 2 -> negatives 2.5 and 30 accepted: 2/4.
    s = np.r_[np.arange(1, 21), [0.5, 1.5, 2.5, 30.0]]
    pos = np.r_[np.ones(20, bool), np.zeros(4, bool)]
    assert M.fpr_at_tpr(s, pos) == 0.5


def _aurc_brute(s, err):
    total, prev = 0.0, 0.0
    for t in np.sort(np.unique(s))[::-1]:
        acc = s >= t
        cov = acc.mean()
        total += (cov - prev) * err[acc].mean()
        prev = cov
    return total


@pytest.mark.parametrize("ties", [False, True])
def test_risk_coverage_and_aurc(ties):
    s, ok = _random(5, n=120, ties=ties)
    err = ~ok
    cov, risk = M.risk_coverage(s, err)
    assert cov[-1] == 1.0 and risk[-1] == pytest.approx(err.mean())
    assert M.aurc(s, err) == pytest.approx(_aurc_brute(s, err), abs=1e-12)
    if not ties:  # Geifman's definition: mean of the top-k risks
        order = np.argsort(-s)
        topk = np.cumsum(err[order]) / np.arange(1, s.size + 1)
        assert M.aurc(s, err) == pytest.approx(topk.mean(), abs=1e-12)


def test_aurc_hand_made():
    # sorted by confidence: correct, wrong, correct, wrong -> risks 0, 1/2, 1/3, 1/2
    s = [4.0, 3.0, 2.0, 1.0]
    err = [False, True, False, True]
    assert M.aurc(s, err) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


@pytest.mark.parametrize("ties", [False, True])
def test_mann_whitney_matches_scipy(ties):
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=40), rng.normal(0.5, size=55)
    if ties:
        x, y = np.round(x), np.round(y)
    u, p = M.mann_whitney_u(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    assert u == pytest.approx(ref.statistic, abs=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_accuracy_acc_left_rejection_rate():
    pred = np.array([0, 1, 2, 2, 1])
    lab = np.array([0, 1, 1, 2, 0])
    rej = np.array([False, False, True, False, True])
    assert M.accuracy(pred, lab) == 0.6
    assert M.acc_left(pred, lab, rej) == 1.0
    assert M.rejection_rate(rej) == 0.4
    assert np.isnan(M.acc_left(pred, lab, np.ones(5, bool)))


def test_nan_scores_are_least_confident():
    s = np.array([np.nan, 0.1, 0.9, 0.5])
    pos = np.array([False, True, True, False])
    assert M.auroc(s, pos) == pytest.approx(skm.roc_auc_score(pos, [-1e300, 0.1, 0.9, 0.5]))


def test_bad_input():
    with pytest.raises(ValueError, match="positive"):
        M.auroc([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="tpr"):
        M.fpr_at_tpr([1.0, 2.0], [True, False], tpr=1.5)
    with pytest.raises(ValueError, match="scores"):
        M.auroc(np.zeros((2, 2)), [True, False])


def test_detection_bundles_match_sklearn_and_scipy():
    s, pos = _random(4, ties=True)
    d = M.ood_detection(s[pos], s[~pos])
    y = np.r_[np.ones(pos.sum()), np.zeros((~pos).sum())]
    pooled = np.r_[s[pos], s[~pos]]
    assert d["auroc"] == pytest.approx(skm.roc_auc_score(y, pooled), abs=1e-12)
    assert d["aupr_in"] == pytest.approx(skm.average_precision_score(y, pooled), abs=1e-12)
    assert d["aupr_out"] == pytest.approx(skm.average_precision_score(1 - y, -pooled), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(y, pooled, drop_intermediate=False)
    assert d["fpr_at_95_tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    ref = stats.mannwhitneyu(s[pos], s[~pos], method="asymptotic")
    assert d["mann_whitney_u"] == pytest.approx(ref.statistic)
    assert d["mann_whitney_p"] == pytest.approx(ref.pvalue, rel=1e-9)

    m = M.mistake_detection(s, pos)
    assert m["n_errors"] == int((~pos).sum())
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(pos, s), abs=1e-12)
    assert m["aurc"] == M.aurc(s, ~pos)
    only_right = M.mistake_detection(s, np.ones_like(pos))
    assert only_right["auroc"] is None and only_right["n_errors"] == 0


@pytest.mark.parametrize("k,n", [(0, 20), (7, 20), (20, 20), (1, 1), (50, 64), (3, 1000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_interval_matches_scipy_binomtest(k, n, confidence):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = M.wilson_interval(k, n, confidence)
    assert lo == pytest.approx(float(ref.low), abs=1e-12)
    assert hi == pytest.approx(float(ref.high), abs=1e-12)


def test_wilson_interval_closed_form_and_arrays():
    # k = 5, n = 10, z = 1.959964: center 1/2, half = z / (1 + z^2/10) * sqrt(1/40 + z^2/400)
    z = 1.959963984540054
    half = z / (1 + z * z / 10) * np.sqrt(0.025 + z * z / 400)
    assert M.wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    lo, hi = M.wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo.shape == (3,) and lo[0] == 0.0 and hi[2] == 1.0
    assert (lo[1], hi[1]) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert M.wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    "args,name",
    [((3, 2), "successes"), ((-1, 5), "successes"), ((1, -2), "n"), ((0.5, 2), "successes")],
)
def test_wilson_interval_rejects_bad_counts(args, name):
    with pytest.raises(ValueError, match=name):
        M.wilson_interval(*args)
    with pytest.raises(ValueError, match="confidence"):
        M.wilson_interval(1, 2, confidence=1.5)
