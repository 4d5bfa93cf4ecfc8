"""The reject module every scorer uses: thresholds and decisions (the metrics: `jaxrej.metrics`).

A scorer gives either class scores `(N, C)` (higher = more likely, e.g. log p(x | y) or an
SDIM-logit class log-likelihood) or one confidence score `(N,)` per example (e.g. a GMM's
log p(features), the maximum softmax probability). Two threshold rules:

* per class (SDIM-logit, Xiao et al. 2020, Sec. 3.3): t_c = the k-th percentile of s_c(x) over
  the correctly classified training examples of class c; an example predicted as c is rejected
  when s_c(x) < t_c (`fit_class_thresholds`, `decide`);
* accept-correct (Stutz et al. 2020, confidence-calibrated adversarial training): one
  threshold for every class, the largest at which a fraction q (0.99) of the correctly
  classified validation rows is accepted (`fit_thresholds`' "tpr99");
* global (the GMM-head rule): one threshold t chosen on validation data so that a target
  fraction (true-positive rate) of in-distribution examples is accepted, score >= t
  (`fit_global_threshold`, `reject_below`).

A failed likelihood solve shows up as NaN (the likelihood engine returns NaN for a failed
solve): any non-finite class score in a row makes that row rejected, and such rows never
enter a threshold fit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "predict",
    "fit_class_thresholds",
    "fit_thresholds",
    "threshold_key",
    "missing_classes",
    "decide",
    "fit_global_threshold",
    "reject_below",
]


def _check_class_scores(class_scores, name="class_scores"):
    shape = jnp.shape(class_scores)
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"{name}: expected a (N, C) array with C >= 1, got shape {shape}")


def _check_percentile(percentile):
    if not (isinstance(percentile, (int, float)) and math.isfinite(percentile)):
        raise ValueError(f"percentile: expected a number in (0, 100), got {percentile!r}")
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"percentile: expected a number in (0, 100), got {percentile!r}")


@jax.jit
def predict(class_scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pred, ok): argmax over classes of `class_scores` (N, C), and ok = every score finite.

    Non-finite scores are treated as -inf for the argmax, so a row with one failed class
    still has a prediction; `ok` is False for it.
    """
    finite = jnp.isfinite(class_scores)
    pred = jnp.argmax(jnp.where(finite, class_scores, -jnp.inf), axis=-1).astype(jnp.int32)
    return pred, jnp.all(finite, axis=-1)


@jax.jit
def _class_percentiles(class_scores, labels, q):
    pred, ok = predict(class_scores)
    correct = ok & (pred == labels)
    num_classes = class_scores.shape[1]
    own = jnp.take_along_axis(class_scores, labels[:, None], axis=1)[:, 0]  # s_{y_i}(x_i)

    def one(c):
        v = jnp.where(correct & (labels == c), own, jnp.nan)
        return jnp.nanpercentile(v, q, method="linear")

    counts = jnp.zeros(num_classes, jnp.int32).at[labels].add(correct.astype(jnp.int32))
    return jax.vmap(one)(jnp.arange(num_classes)), counts


def fit_class_thresholds(
    class_scores: jax.Array, labels: jax.Array, percentile: float = 1.0
) -> jax.Array:
    """Per-class thresholds t_c (C,): the `percentile`-th percentile of s_c over correct rows.

    t_c = percentile_k { s_c(x_i) : y_i = c, argmax_j s_j(x_i) = c, all s(x_i) finite }
    (SDIM-logit's rejection rule, Xiao et al. 2020; k = 1 and 2 in the paper). Percentiles use
    linear interpolation between order statistics, exactly as `np.percentile(v, k)`.

    class_scores: (N, C) float, labels: (N,) int in [0, C). Raises ValueError for a bad
    shape, a percentile outside (0, 100), labels out of range, or a class with no correctly
    classified example (its threshold would be undefined).
    """
    _check_class_scores(class_scores)
    _check_percentile(percentile)
    labels_np = np.asarray(labels)
    n, num_classes = jnp.shape(class_scores)
    if labels_np.shape != (n,) or not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(
            f"labels: expected an int array of shape ({n},), got {labels_np.dtype} "
            f"{labels_np.shape}"
        )
    if n and (labels_np.min() < 0 or labels_np.max() >= num_classes):
        raise ValueError(f"labels: expected values in [0, {num_classes}), got out-of-range labels")
    scores = jnp.asarray(class_scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.float32)
    th, counts = _class_percentiles(scores, jnp.asarray(labels_np, jnp.int32), float(percentile))
    empty = np.flatnonzero(np.asarray(counts) == 0)
    if empty.size:
        raise ValueError(
            f"class_scores/labels: class(es) {empty.tolist()} have no correctly classified "
            "example with finite scores; a per-class threshold needs at least one"
        )
    return th


@jax.jit
def _decide(class_scores, thresholds):
    pred, ok = predict(class_scores)
    s_pred = jnp.take_along_axis(class_scores, pred[:, None], axis=1)[:, 0]
    t_pred = jnp.broadcast_to(thresholds, (class_scores.shape[1],))[pred]
    rejected = ~ok | ~(s_pred >= t_pred)
    return pred, rejected


def decide(class_scores: jax.Array, thresholds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pred (N,) int32, rejected (N,) bool) for class scores (N, C) and thresholds (C,) or ().

    pred = argmax_c s_c(x); rejected = s_pred(x) < t_pred, or any score of the row is NaN/inf
    (a failed likelihood solve). A scalar threshold applies to every class.
    """
    _check_class_scores(class_scores)
    c = jnp.shape(class_scores)[1]
    if jnp.shape(thresholds) not in ((c,), ()):
        raise ValueError(
            f"thresholds: expected shape ({c},) or () for {c} classes, got {jnp.shape(thresholds)}"
        )
    return _decide(jnp.asarray(class_scores), jnp.asarray(thresholds))


def fit_global_threshold(scores: jax.Array, *, tpr: float = 0.95) -> float:
    """One threshold t for in-distribution validation scores (N,) at a target TPR.

    Positive = in-distribution (accepted when score >= t). t is the largest value with
    mean(scores >= t) >= tpr, i.e. the ceil(tpr * N)-th largest finite score; non-finite
    scores count as positives that are always rejected (they stay in N).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores: expected a non-empty (N,) array, got shape {s.shape}")
    if not (isinstance(tpr, (int, float)) and 0.0 < tpr <= 1.0):
        raise ValueError(f"tpr: expected a number in (0, 1], got {tpr!r}")
    k = math.ceil(tpr * s.size - 1e-9)
    finite = np.sort(s[np.isfinite(s)])[::-1]
    if k > finite.size:
        raise ValueError(
            f"scores: only {finite.size} of {s.size} scores are finite; cannot accept "
            f"a fraction tpr={tpr}"
        )
    return float(finite[k - 1])


@jax.jit
def reject_below(scores: jax.Array, threshold: jax.Array) -> jax.Array:
    """rejected (N,) bool = not (scores >= threshold); NaN scores are rejected."""
    return ~(scores >= threshold)


def threshold_key(rule: float | str) -> str:
    """The one spelling of a threshold rule's key: a percentile p -> "p1", "p2", "p0.5"; an
    accept-correct fraction given as "tpr99" stays as it is."""
    if isinstance(rule, str):
        if not (rule.startswith("tpr") or rule.startswith("p")):
            raise ValueError(f"rule: expected a percentile or 'tprNN', got {rule!r}")
        return rule
    return f"p{rule:g}"


def missing_classes(class_scores, labels) -> list[int]:
    """Classes with no correctly classified row of finite scores (`fit_thresholds` falls back
    for them)."""
    pred, ok = (np.asarray(a) for a in predict(jnp.asarray(class_scores)))
    y = np.asarray(labels)
    return [c for c in range(np.shape(class_scores)[1]) if not (ok & (pred == y) & (y == c)).any()]


def fit_thresholds(
    class_scores, labels, *, percentiles=(1.0, 2.0), accept_correct=(0.99,)
) -> dict[str, np.ndarray]:
    """Every reject threshold of a scorer from its VALIDATION class scores (N, C), labels (N,):
    {threshold_key: thresholds (C,) float64}.

    "p<k>" for k in `percentiles`: per class, the k-th percentile of s_c over the correctly
    classified rows of class c (`fit_class_thresholds`); a class with no such row (a poor model)
    gets the k-th percentile over every correct row, or -inf (never rejected) when no row is
    correct (`missing_classes` says which). "tpr<100 q>" for q in `accept_correct`: one threshold
    for every class, the largest t with a fraction >= q of the correctly classified rows accepted
    (s_pred >= t); -inf when no row is correct. The only threshold function of the library: every
    scorer (`jaxrej.scorers`) and table uses it."""
    s = np.asarray(class_scores, np.float64)
    _check_class_scores(s)
    y = np.asarray(labels)
    if y.shape != s.shape[:1] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected an int array of shape ({s.shape[0]},), got {y.shape}")
    c = s.shape[1]
    pred, ok = (np.asarray(a) for a in predict(jnp.asarray(s)))
    correct = ok & (pred == y)
    own = s[np.arange(len(y)), np.clip(y, 0, c - 1)]
    out: dict[str, np.ndarray] = {}
    for p in percentiles:
        _check_percentile(p)
        pooled = np.percentile(own[correct], p) if correct.any() else -np.inf
        out[threshold_key(p)] = np.array([
            np.percentile(own[correct & (y == k)], p) if (correct & (y == k)).any() else pooled
            for k in range(c)
        ])  # fmt: skip
    for q in accept_correct:
        if not (isinstance(q, (int, float)) and 0.0 < q <= 1.0):
            raise ValueError(f"accept_correct: expected fractions in (0, 1], got {q!r}")
        t = fit_global_threshold(own[correct], tpr=q) if correct.any() else -np.inf
        out[f"tpr{100 * q:g}"] = np.full(c, t)
    return out
