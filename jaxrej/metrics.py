"""Reject-option metrics: accuracy, acc-left, rejection rate, AUROC, AUPR, FPR@TPR, AURC, U test,
and the Wilson score interval of a rate.

Conventions (every function):
* A score is a confidence: higher = more in-distribution / more likely correct.
* The *positive* population is the one a reject rule should ACCEPT: in-distribution examples
  for OOD detection, correctly classified examples for mistake detection. AUROC, AUPR-in and
  FPR@95%TPR use this convention (AUPR-out flips it: positives are the OOD / wrong ones and
  the score is negated).
* Non-finite scores (a failed likelihood solve) are treated as -inf: least confident, first to
  be rejected.

These are evaluation summaries computed once on the host, so they run in NumPy float64 with
exact tie handling (ties give half credit, as scikit-learn and scipy do); they accept jax or
numpy arrays.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = [
    "accuracy",
    "acc_left",
    "rejection_rate",
    "auroc",
    "average_precision",
    "aupr_in",
    "aupr_out",
    "fpr_at_tpr",
    "risk_coverage",
    "aurc",
    "mann_whitney_u",
    "summarize",
    "ood_detection",
    "mistake_detection",
    "wilson_interval",
    "label_dependence",
]


def _vec(x, name, dtype=None):
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D (N,) array, got shape {a.shape}")
    return a


def _scores(scores, name="scores"):
    s = _vec(scores, name, np.float64)
    return np.where(np.isfinite(s) | (s == np.inf), s, -np.inf)


def _same_len(**arrays):
    sizes = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"expected equal lengths, got {sizes}")


def _binary(positive, n):
    p = _vec(positive, "positive")
    if p.dtype != bool:
        if not np.all((p == 0) | (p == 1)):
            raise ValueError("positive: expected a boolean (or 0/1) array")
        p = p.astype(bool)
    if p.shape[0] != n:
        raise ValueError(f"positive: expected shape ({n},) like scores, got {p.shape}")
    if p.all() or not p.any():
        raise ValueError("positive: expected both populations (some True and some False)")
    return p


def accuracy(pred, labels) -> float:
    """Fraction of pred == labels, with no rejection."""
    pred, labels = _vec(pred, "pred"), _vec(labels, "labels")
    _same_len(pred=pred, labels=labels)
    return float(np.mean(pred == labels))


def acc_left(pred, labels, rejected) -> float:
    """Accuracy on the accepted examples (NaN when everything is rejected)."""
    pred, labels, rejected = _vec(pred, "pred"), _vec(labels, "labels"), _vec(rejected, "rejected")
    _same_len(pred=pred, labels=labels, rejected=rejected)
    keep = ~rejected.astype(bool)
    return float(np.mean(pred[keep] == labels[keep])) if keep.any() else float("nan")


def rejection_rate(rejected) -> float:
    """Fraction of rejected examples."""
    return float(np.mean(_vec(rejected, "rejected").astype(bool)))


def _sorted_counts(scores, positive):
    """Cumulative (tp, fp) at each distinct threshold, thresholds descending (ROC points)."""
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group
    tp = np.cumsum(p)[last].astype(np.float64)
    fp = (last + 1 - tp).astype(np.float64)
    return tp, fp, s[last]


def auroc(scores, positive) -> float:
    """Area under the ROC curve: P(s_pos > s_neg) + P(s_pos = s_neg) / 2.

    scores (N,) confidences; positive (N,) bool, True for the population to accept.
    Equals `sklearn.metrics.roc_auc_score(positive, scores)`.
    """
    s = _scores(scores)
    p = _binary(positive, s.shape[0])
    pos, neg = np.sort(s[p]), np.sort(s[~p])
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float(np.sum(below + 0.5 * ties) / (pos.size * neg.size))


def average_precision(scores, positive) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds (descending).

    Equals `sklearn.metrics.average_precision_score(positive, scores)`.
    """
    s = _scores(scores)
    p = _binary(positive, s.shape[0])
    tp, fp, _ = _sorted_counts(s, p)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(scores, in_dist) -> float:
    """AUPR with the in-distribution (accepted) population positive and the score as is."""
    return average_precision(scores, in_dist)


def aupr_out(scores, in_dist) -> float:
    """AUPR with the out-of-distribution (rejected) population positive, scored by -score."""
    return average_precision(-_scores(scores), ~_binary(in_dist, np.shape(scores)[0]))


def fpr_at_tpr(scores, positive, tpr: float = 0.95) -> float:
    """FPR at the first ROC threshold whose TPR reaches `tpr` (default 95%).

    Positive = the population to accept (in-distribution / correct). Returns the fraction of
    negatives (OOD / mistakes) still accepted when at least `tpr` of positives are accepted:
    the smallest FPR over thresholds with TPR >= tpr (the ROC curve is monotone).
    """
    if not (isinstance(tpr, (int, float)) and 0.0 < tpr <= 1.0):
        raise ValueError(f"tpr: expected a number in (0, 1], got {tpr!r}")
    s = _scores(scores)
    p = _binary(positive, s.shape[0])
    tp, fp, _ = _sorted_counts(s, p)
    i = np.searchsorted(tp / tp[-1], tpr - 1e-12, side="left")
    return float(fp[i] / fp[-1])


def risk_coverage(scores, errors) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve (Geifman & El-Yaniv 2017): accept score >= t for every distinct t.

    Returns (coverage, risk), each (M,) for the M distinct thresholds in descending order:
    coverage = |{score >= t}| / N, risk = errors among the accepted / accepted.
    errors (N,) bool: True where the prediction is wrong.
    """
    s = _scores(scores)
    e = _vec(errors, "errors").astype(bool)
    _same_len(scores=s, errors=e)
    if s.size == 0:
        raise ValueError("scores: expected at least one example")
    n_err, n_ok, _ = _sorted_counts(s, e)  # cumulative errors / correct among the accepted
    accepted = n_err + n_ok
    return accepted / s.size, n_err / accepted


def aurc(scores, errors) -> float:
    """Area under the risk-coverage curve, sum_j (cov_j - cov_{j-1}) risk_j (cov_0 = 0).

    Without ties this is (1/N) sum_k risk(top-k), Geifman et al.'s AURC. Lower is better.
    """
    cov, risk = risk_coverage(scores, errors)
    return float(np.sum(np.diff(np.r_[0.0, cov]) * risk))


def mann_whitney_u(x, y) -> tuple[float, float]:
    """Mann-Whitney U test between populations x (n1,) and y (n2,): (U_x, two-sided p).

    U_x = sum of ranks of x in the pooled sample (average ranks for ties) - n1 (n1 + 1) / 2.
    p from the normal approximation with tie correction and continuity correction:
    z = (max(U_x, U_y) - n1 n2 / 2 - 1/2) / sqrt(n1 n2 / 12 ((n + 1) - sum(t^3 - t) / (n (n - 1)))),
    p = 2 (1 - Phi(z)) -- scipy.stats.mannwhitneyu(..., method="asymptotic").
    """
    x, y = _vec(x, "x", np.float64), _vec(y, "y", np.float64)
    if x.size == 0 or y.size == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x, y: expected non-empty arrays of finite values")
    n1, n2 = x.size, y.size
    pooled = np.sort(np.r_[x, y])
    lo = np.searchsorted(pooled, x, side="left")
    hi = np.searchsorted(pooled, x, side="right")
    ranks_x = (lo + hi + 1) / 2.0  # average 1-based rank of each x
    u_x = float(ranks_x.sum() - n1 * (n1 + 1) / 2.0)
    u_y = n1 * n2 - u_x
    n = n1 + n2
    _, t = np.unique(pooled, return_counts=True)
    tie_term = float(np.sum(t.astype(np.float64) ** 3 - t))
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0.0:
        return u_x, 1.0
    z = (max(u_x, u_y) - n1 * n2 / 2.0 - 0.5) / sigma
    p = min(1.0, math.erfc(z / math.sqrt(2.0)))
    return u_x, p


def summarize(pred, labels, rejected) -> dict:
    """{'accuracy', 'acc_left', 'rejection_rate'} for one reject rule."""
    return {
        "accuracy": accuracy(pred, labels),
        "acc_left": acc_left(pred, labels, rejected),
        "rejection_rate": rejection_rate(rejected),
    }


def ood_detection(scores_in, scores_out) -> dict:
    """OOD detection, positive = in-distribution: scores_in (N,) of in-distribution examples
    against scores_out (M,). {'auroc', 'aupr_in', 'aupr_out', 'fpr_at_95_tpr',
    'mann_whitney_u', 'mann_whitney_p'} (the U test of in vs out)."""
    s_in, s_out = _vec(scores_in, "scores_in"), _vec(scores_out, "scores_out")
    s = np.r_[s_in, s_out]
    pos = np.r_[np.ones(s_in.size, bool), np.zeros(s_out.size, bool)]
    u, p = mann_whitney_u(s_in, s_out)
    return {
        "auroc": auroc(s, pos),
        "aupr_in": aupr_in(s, pos),
        "aupr_out": aupr_out(s, pos),
        "fpr_at_95_tpr": fpr_at_tpr(s, pos, 0.95),
        "mann_whitney_u": u,
        "mann_whitney_p": p,
    }


def mistake_detection(scores, correct) -> dict:
    """Mistake detection, positive = correctly classified: scores (N,), correct (N,) bool.
    {'aurc', 'n_errors', 'auroc', 'fpr_at_95_tpr'}; AUROC and FPR are None when every example
    is correct or every one wrong (one population only)."""
    correct = _vec(correct, "correct").astype(bool)
    out = {"aurc": aurc(scores, ~correct), "n_errors": int((~correct).sum())}
    if correct.all() or not correct.any():
        return out | {"auroc": None, "fpr_at_95_tpr": None}
    return out | {
        "auroc": auroc(scores, correct),
        "fpr_at_95_tpr": fpr_at_tpr(scores, correct, 0.95),
    }


def wilson_interval(successes, n, confidence: float = 0.95):
    """Wilson score interval (Wilson 1927) for a binomial rate successes / n: (lo, hi).

    With p = k / n and z the two-sided normal quantile of `confidence`,
    center = (p + z^2 / (2n)) / (1 + z^2 / n),
    half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2)),
    lo, hi = center -/+ half, clipped to [0, 1] (lo = 0 at k = 0, hi = 1 at k = n).
    Equals `scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")`.
    successes, n: non-negative integers (or integer arrays of one shape), successes <= n;
    n = 0 gives the uninformative (0, 1). Returns floats, or arrays for array inputs.
    """
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    k, m = np.asarray(successes), np.asarray(n)
    for name, a in (("successes", k), ("n", m)):
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            if not (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a))):
                raise ValueError(f"{name}: expected non-negative integers, got {a!r}")
        if np.any(a < 0):
            raise ValueError(f"{name}: expected non-negative integers, got {a!r}")
    if np.any(k > m):
        raise ValueError(f"successes: expected successes <= n, got {k!r} > {m!r}")
    k, m = k.astype(np.float64), m.astype(np.float64)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    safe = np.maximum(m, 1.0)
    p = k / safe
    denom = 1.0 + z * z / safe
    center = (p + z * z / (2.0 * safe)) / denom
    half = z / denom * np.sqrt(p * (1.0 - p) / safe + z * z / (4.0 * safe * safe))
    lo = np.where(k == 0, 0.0, np.clip(center - half, 0.0, 1.0))
    hi = np.where(k == m, 1.0, np.clip(center + half, 0.0, 1.0))
    lo, hi = np.where(m == 0, 0.0, lo), np.where(m == 0, 1.0, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def label_dependence(class_logp: np.ndarray) -> dict:
    """How much class scores log p(x | y) (N, C) depend on y: class_spread (median over rows of
    the std over classes), example_spread (std over rows of the class mean), and their ratio;
    failed rows are left out; None where fewer than 2 rows are left."""
    lp = np.asarray(class_logp, np.float64)
    lp = lp[np.all(np.isfinite(lp), axis=1)]
    if lp.shape[0] < 2 or lp.shape[1] < 2:
        return {"class_spread": None, "example_spread": None, "ratio": None}
    cs = float(np.median(np.std(lp, axis=1)))
    es = float(np.std(np.mean(lp, axis=1)))
    return {"class_spread": cs, "example_spread": es, "ratio": cs / es if es > 0 else math.inf}
