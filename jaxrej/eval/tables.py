"""Reject tables from class scores: clean, corrupted and out-of-distribution populations.

Every scorer is reduced to class scores s (N, C) (log-likelihoods, head scores, softmax
probabilities, ...) and one reject rule, `jaxrej.reject`: predict argmax_c s_c, reject when
s_pred < t_pred with thresholds fitted on held-out validation rows (`reject.fit_thresholds`:
per class at percentile k, SDIM-logit's rule with k = 1 and 2 in the paper, and "tpr99", one
threshold accepting 99% of the correct rows). A scorer's confidence is s_pred = max_c s_c.

    th = reject.fit_thresholds(val_scores, val_labels)     # {"p1", "p2", "tpr99"}
    clean_row(test_scores, test_labels, th)          # the SDIM-logit paper's Table 1
    corruption_rows({("fog", 3): scores, ...}, labels, th)   # its Table 2
    ood_row(test_scores, ood_scores, th)             # its Table 3 + OpenOOD's metrics

Numbers are fractions in [0, 1]; the markdown renders percentages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxrej import metrics, reject
from jaxrej.corruptions import NOISE_CORRUPTIONS


def confidence(class_scores) -> np.ndarray:
    """(N,) max_c s_c, -inf where a row has a non-finite score (it is always rejected)."""
    s = np.asarray(class_scores, np.float64)
    return np.where(np.all(np.isfinite(s), axis=1), np.max(s, axis=1), -np.inf)


def decide(class_scores, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred (N,), rejected (N,)) numpy, through `jaxrej.reject.decide`."""
    pred, rej = reject.decide(np.asarray(class_scores), th)
    return np.asarray(pred), np.asarray(rej)


def clean_row(class_scores, labels, th: Mapping[str, np.ndarray]) -> dict:
    """{'accuracy', pct: {'acc_left', 'rejection_rate'}} of a labelled population."""
    labels = np.asarray(labels)
    out = {"n": int(labels.size)}
    for k, t in th.items():
        pred, rej = decide(class_scores, t)
        s = metrics.summarize(pred, labels, rej)
        out["accuracy"] = s["accuracy"]
        out[k] = {"acc_left": s["acc_left"], "rejection_rate": s["rejection_rate"]}
    return out


def corruption_rows(
    scores: Mapping[tuple[str, int], np.ndarray], labels, th: Mapping[str, np.ndarray]
) -> dict:
    """Per corruption and severity `clean_row`, and the means over corruptions per severity with
    and without the noise corruptions (the SBGC paper's Table 2 split).

    scores: {(corruption, severity): class scores (N, C)} of the same N labelled test rows.
    Returns {'rows': {name: {severity: row}}, 'mean': {severity: row}, 'mean_no_noise': ...}.
    """
    rows: dict = {}
    for (name, sev), s in sorted(scores.items()):
        rows.setdefault(name, {})[sev] = clean_row(s, labels, th)
    out = {"rows": rows}
    for key, keep in (
        ("mean", lambda n: True),
        ("mean_no_noise", lambda n: n not in NOISE_CORRUPTIONS),
    ):
        names = [n for n in rows if keep(n)]
        sevs = sorted({sev for n in names for sev in rows[n]})
        out[key] = {
            sev: _mean_rows([rows[n][sev] for n in names if sev in rows[n]]) for sev in sevs
        }
    return out


def _mean_rows(rows: Sequence[dict]) -> dict:
    """Mean of the numeric leaves of `clean_row` dicts (acc_left NaN-ignoring: it is undefined
    when everything is rejected)."""
    out: dict = {"n_sets": len(rows)}
    for k, v in rows[0].items():
        if isinstance(v, dict):
            out[k] = {kk: _nanmean([r[k][kk] for r in rows]) for kk in v}
        elif k == "accuracy":
            out[k] = float(np.mean([r[k] for r in rows]))
    return out


def _nanmean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def ood_row(test_scores, ood_scores, th: Mapping[str, np.ndarray]) -> dict:
    """Rejection rate of an OOD set at each threshold, and OOD detection by the confidence
    max_c s_c with positive = in-distribution test example (AUROC, AUPR-in, AUPR-out,
    FPR at 95% TPR; `metrics.ood_detection`)."""
    out = {"n": int(np.shape(ood_scores)[0]), "positive": "in-distribution"}
    for k, t in th.items():
        out[k] = {"rejection_rate": float(np.mean(decide(ood_scores, t)[1]))}
    det = metrics.ood_detection(_finite(confidence(test_scores)), _finite(confidence(ood_scores)))
    out.update({k: det[k] for k in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")})
    return out


def _finite(conf: np.ndarray) -> np.ndarray:
    """Confidences with -inf (failed rows) replaced by a value below every finite one: a failed
    row ranks as the least confident."""
    finite = conf[np.isfinite(conf)]
    floor = (finite.min() - 1.0) if finite.size else 0.0
    return np.where(np.isfinite(conf), conf, floor)


def _pct(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def markdown(report: Mapping, *, rules: Sequence[str]) -> str:
    """Clean, corruption (means per severity) and OOD tables of `evaluate`'s report, per scorer,
    at the threshold rules `rules` (keys of `reject.fit_thresholds`)."""
    ks = list(rules)
    lines = ["### Clean test set", ""]
    head = "| scorer | accuracy | " + " | ".join(f"acc-left {k} | rejected {k}" for k in ks)
    lines += [head + " |", "|---" * (2 + 2 * len(ks)) + "|"]
    for name, r in report["scorers"].items():
        c = r["clean"]
        cells = [f"{_pct(c[k]['acc_left'])} | {_pct(c[k]['rejection_rate'])}" for k in ks]
        lines.append(f"| {name} | {_pct(c['accuracy'])} | " + " | ".join(cells) + " |")
    if any("corruptions" in r for r in report["scorers"].values()):
        lines += ["", f"### Corruptions (mean over corruptions; rejected at {ks[0]})", ""]
        lines += ["| scorer | severity | accuracy | acc-left | rejected | accuracy w/o noise | rejected w/o noise |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in report["scorers"].items():
            cr = r.get("corruptions")
            if not cr:
                continue
            for sev, m in cr["mean"].items():
                mn = cr["mean_no_noise"].get(sev, {})
                lines.append(
                    f"| {name} | {sev} | {_pct(m['accuracy'])} | {_pct(m[ks[0]]['acc_left'])} | "
                    f"{_pct(m[ks[0]]['rejection_rate'])} | {_pct(mn.get('accuracy'))} | "
                    f"{_pct(mn.get(ks[0], {}).get('rejection_rate'))} |"
                )
    if any(r.get("ood") for r in report["scorers"].values()):
        lines += ["", "### Out-of-distribution sets (positive = in-distribution)", ""]
        lines += ["| scorer | set | " + " | ".join(f"rejected {k}" for k in ks)
                  + " | AUROC | AUPR-in | AUPR-out | FPR@95%TPR |",
                  "|---" * (6 + len(ks)) + "|"]  # fmt: skip
        for name, r in report["scorers"].items():
            for s, o in r.get("ood", {}).items():
                rej = " | ".join(_pct(o[k]["rejection_rate"]) for k in ks)
                lines.append(
                    f"| {name} | {s} | {rej} | {o['auroc']:.3f} | {o['aupr_in']:.3f} | "
                    f"{o['aupr_out']:.3f} | {_pct(o['fpr_at_95_tpr'])} |"
                )
    return "\n".join(lines) + "\n"
