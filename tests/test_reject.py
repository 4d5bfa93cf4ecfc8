"""Thresholds and decisions of jaxrej.reject against np.percentile on hand-made examples; its
re-exported metrics against scikit-learn and scipy."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from jaxrej import metrics, reject


def _hand_made():
    # 3 classes; rows whose argmax matches the label are "correct".
    s = np.array(
        [
            [5.0, 0.0, 0.0],  # y=0 correct, s0=5
            [3.0, 1.0, 0.0],  # y=0 correct, s0=3
            [1.0, 0.0, 0.0],  # y=0 correct, s0=1
            [0.0, 9.0, 0.0],  # y=0 WRONG (pred 1) -> excluded
            [0.0, 2.0, 1.0],  # y=1 correct, s1=2
            [0.0, 4.0, 1.0],  # y=1 correct, s1=4
            [0.0, np.nan, 7.0],  # y=1 failed solve -> excluded
            [0.0, 0.0, 6.0],  # y=2 correct, s2=6
            [0.0, 0.0, 8.0],  # y=2 correct, s2=8
            [0.0, 0.0, 10.0],  # y=2 correct, s2=10
            [0.0, 0.0, 12.0],  # y=2 correct, s2=12
        ],
        np.float32,
    )
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2], np.int32)
    return s, y


@pytest.mark.parametrize("k", [1.0, 2.0, 25.0, 50.0, 99.0])
def test_thresholds_reproduce_percentile_rule(k):
    s, y = _hand_made()
    th = np.asarray(reject.fit_class_thresholds(s, y, percentile=k))
    expected = [
        np.percentile([5.0, 3.0, 1.0], k),
        np.percentile([2.0, 4.0], k),
        np.percentile([6.0, 8.0, 10.0, 12.0], k),
    ]
    np.testing.assert_allclose(th, expected, rtol=1e-6)


def test_first_percentile_exact_value():
    s, y = _hand_made()
    th = np.asarray(reject.fit_class_thresholds(s, y, percentile=1.0))
    # linear interpolation: class 0 sorted (1, 3, 5): 1 + 0.02 * (3 - 1) = 1.04
    np.testing.assert_allclose(th, [1.04, 2.02, 6.06], rtol=1e-6)


def test_decide():
    th = jnp.array([1.0, 2.0, 3.0])
    s = jnp.array(
        [
            [2.0, 0.0, 0.0],  # pred 0, 2 >= 1 accept
            [0.5, 0.0, 0.0],  # pred 0, 0.5 < 1 reject
            [0.0, 2.0, 1.0],  # pred 1, equal to threshold -> accept
            [0.0, 1.0, 2.9],  # pred 2, 2.9 < 3 reject
            [9.0, jnp.nan, 0.0],  # failed solve in one class -> reject, pred still 0
            [jnp.nan, jnp.nan, jnp.nan],  # failed everywhere -> reject
        ]
    )
    pred, rej = reject.decide(s, th)
    np.testing.assert_array_equal(np.asarray(pred)[:5], [0, 0, 1, 2, 0])
    np.testing.assert_array_equal(np.asarray(rej), [False, True, False, True, True, True])
    # a scalar threshold applies to every class
    _, rej = reject.decide(s, jnp.float32(1.5))
    np.testing.assert_array_equal(np.asarray(rej), [False, True, False, False, True, True])


def test_training_rows_are_accepted_at_the_rate_the_percentile_says():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4000, 4)).astype(np.float32)
    y = np.argmax(s, 1).astype(np.int32)  # all correct
    th = reject.fit_class_thresholds(s, y, percentile=2.0)
    _, rej = reject.decide(s, th)
    assert abs(float(np.mean(rej)) - 0.02) < 0.003


def test_global_threshold():
    s = np.arange(1.0, 21.0)  # 20 in-distribution validation scores
    t = float(reject.fit_global_threshold(s, tpr=0.95))
    assert t == 2.0  # accepts 19 / 20
    rej = np.asarray(reject.reject_below(jnp.asarray([1.0, 2.0, np.nan, 3.0]), t))
    np.testing.assert_array_equal(rej, [True, False, True, False])
    rng = np.random.default_rng(1)
    v = rng.normal(size=1001)
    t = float(reject.fit_global_threshold(v, tpr=0.9))
    assert np.mean(v >= t) >= 0.9 and np.mean(v > t) < 0.9


def test_bad_input_names_the_argument():
    s, y = _hand_made()
    for k in (0.0, 100.0, -1.0, 150.0, float("nan")):
        with pytest.raises(ValueError, match="percentile"):
            reject.fit_class_thresholds(s, y, percentile=k)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        y2 = y.copy()
        y2[4:6] = 0  # class 1 has no correct rows left
        s2 = s.copy()
        s2[6] = [0.0, 0.0, 7.0]
        y2[6] = 0  # and no wrong ones either; class 1 absent entirely
        reject.fit_class_thresholds(s2, y2)
    with pytest.raises(ValueError, match="class_scores"):
        reject.fit_class_thresholds(s[:, 0], y)
    with pytest.raises(ValueError, match="labels"):
        reject.fit_class_thresholds(s, y[:-1])
    with pytest.raises(ValueError, match="labels"):
        reject.fit_class_thresholds(s, y + 5)
    with pytest.raises(ValueError, match="thresholds"):
        reject.decide(s, jnp.zeros(4))
    with pytest.raises(ValueError, match="tpr"):
        reject.fit_global_threshold(np.arange(3.0), tpr=0.0)


def test_reexported_metrics_agree_with_sklearn_and_scipy():
    """The metrics every scorer reaches through `reject` are the right numbers."""
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(1.0, size=50), np.round(rng.normal(size=40), 1)
    s = np.r_[s_in, s_out]
    pos = np.r_[np.ones(50, bool), np.zeros(40, bool)]
    assert metrics.auroc(s, pos) == pytest.approx(roc_auc_score(pos, s), abs=1e-12)
    assert metrics.aupr_in(s, pos) == pytest.approx(average_precision_score(pos, s), abs=1e-12)
    u, p = metrics.mann_whitney_u(s_in, s_out)
    ref = stats.mannwhitneyu(s_in, s_out, method="asymptotic")
    assert u == pytest.approx(ref.statistic, abs=1e-9) and p == pytest.approx(ref.pvalue, rel=1e-9)
    pred, labels = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    rejected = np.array([False, True, False, False])
    assert metrics.summarize(pred, labels, rejected) == {
        "accuracy": 0.75, "acc_left": 2 / 3, "rejection_rate": 0.25,
    }  # fmt: skip
