"""The GWIN table (Cosentino & Zhu 2019, Table 1): for each certainty threshold tau,

    rejected_frac        fraction of test inputs with certainty < tau (`jaxrej.reject.decide`)
    acc_rejected_before  accuracy of the classifier on the rejected subset
    acc_rejected_after   accuracy on the rejected subset after transform-and-reclassify
    acc_with_reject      accuracy on the accepted subset (the reject option)
    acc_with_transform   accuracy on the whole test set, rejected inputs transformed

An accuracy over an empty subset is None. Rows for any scorer come from `gwin_row`; `tau_table`
applies the tau-rule to class probabilities (certainty = the probability of the predicted class).
"""

from __future__ import annotations

import math

import numpy as np

from jaxrej.reject import decide

__all__ = ["TAUS", "COLUMNS", "gwin_row", "tau_table", "markdown"]

TAUS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
COLUMNS = (
    "tau",
    "rejected_frac",
    "acc_rejected_before",
    "acc_rejected_after",
    "acc_with_reject",
    "acc_with_transform",
)


def _acc(correct, mask):
    return float(np.mean(correct[mask])) if mask.any() else None


def gwin_row(labels, pred_before, rejected, pred_after) -> dict:
    """One row (module doc) for labels, pred_before, rejected (bool) and pred_after (N,) each;
    pred_after must be a class (>= 0) wherever rejected is True. Also returns n_rejected."""
    labels, pred_before, rejected, pred_after = map(
        np.asarray, (labels, pred_before, rejected, pred_after)
    )
    n = labels.shape[0]
    for name, a in (("pred_before", pred_before), ("rejected", rejected), ("pred_after", pred_after)):  # fmt: skip
        if a.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if np.any(pred_after[rejected] < 0):
        raise ValueError("pred_after: a rejected input has no prediction after transformation")
    before = pred_before == labels
    final = np.where(rejected, pred_after, pred_before) == labels
    return {
        "rejected_frac": float(np.mean(rejected)),
        "n_rejected": int(rejected.sum()),
        "acc_rejected_before": _acc(before, rejected),
        "acc_rejected_after": _acc(final, rejected),
        "acc_with_reject": _acc(before, ~rejected),
        "acc_with_transform": float(np.mean(final)),
    }


def tau_table(labels, probs, pred_after, taus=TAUS) -> list[dict]:
    """Rows for each tau of `taus`: rejected = certainty < tau via `jaxrej.reject.decide(probs,
    tau)` (probs (N, C) class probabilities); pred_after (N,) must cover the rows rejected at
    max(taus), a superset of every other tau's."""
    rows = []
    for tau in taus:
        if not (isinstance(tau, (int, float)) and 0.0 <= tau <= 1.0):
            raise ValueError(f"taus: expected numbers in [0, 1], got {tau!r}")
        pred, rejected = decide(probs, np.float32(tau))
        rows.append({"tau": float(tau), **gwin_row(labels, pred, rejected, pred_after)})
    return rows


def _pct(v):
    return "--" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown(rows) -> str:
    """The rows as a markdown table (percentages)."""
    head = ("| tau | rejected % | rejected acc. before | rejected acc. after | "
            "acc. with reject | acc. with transform |")  # fmt: skip
    lines = [head, "|" + "---:|" * 6]
    for r in rows:
        cells = [f"{r['tau']:g}", *(_pct(r[c]) for c in COLUMNS[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
