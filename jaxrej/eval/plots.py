"""PNG figures of an evaluation (matplotlib, Agg backend); each writes one file atomically.

risk_coverage({scorer: (confidence (N,), errors (N,))}, path)
score_histograms({population: confidence (N_i,)}, path, title=...)
severity_curves({scorer: corruption_rows(...)}, path, threshold="p1")
decision_grid(images (N, H, W, C), rows {scorer: (pred (N,), rejected (N,))}, path, ...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxrej import metrics
from jaxrej.io import save_png


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def risk_coverage(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str) -> str:
    """Risk (error rate among accepted) against coverage (accepted fraction), one line per
    scorer, accepting by confidence; AURC in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (conf, errors) in curves.items():
        cov, risk = metrics.risk_coverage(conf, errors)
        ax.plot(cov, 100 * risk, label=f"{name} (AURC {100 * metrics.aurc(conf, errors):.2f}%)")
    ax.set(xlabel="coverage (accepted fraction)", ylabel="risk (% errors among accepted)",
           title="Risk-coverage, clean test set", xlim=(0, 1))  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def score_histograms(
    populations: Mapping[str, np.ndarray],
    path: str,
    *,
    title: str,
    threshold: float | None = None,
    xlabel: str = "confidence max_c s_c(x)",
) -> str:
    """Overlaid density histograms of each population's confidence (non-finite values dropped
    and counted in the legend); `threshold` draws a vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = {k: np.asarray(v, np.float64) for k, v in populations.items()}
    allv = np.concatenate([v[np.isfinite(v)] for v in finite.values()] or [np.zeros(1)])
    lo, hi = np.percentile(allv, [0.5, 99.5]) if allv.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 50)
    for name, v in finite.items():
        ok = np.isfinite(v)
        label = name + (f" ({(~ok).sum()} non-finite)" if (~ok).any() else "")
        ax.hist(np.clip(v[ok], bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                linewidth=1.4, label=label)  # fmt: skip
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def severity_curves(corruptions: Mapping[str, Mapping], path: str, *, threshold: str) -> str:
    """Accuracy without rejection and rejection rate at `threshold` against severity (mean over
    corruptions, `tables.corruption_rows(...)['mean']`), one colour per scorer."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, cr in corruptions.items():
        sev = sorted(cr["mean"])
        line = a1.plot(sev, [100 * cr["mean"][s]["accuracy"] for s in sev], "o-", label=name)[0]
        a2.plot(sev, [100 * cr["mean"][s][threshold]["rejection_rate"] for s in sev], "o-",
                color=line.get_color(), label=name)  # fmt: skip
    a1.set(xlabel="severity", ylabel="accuracy (%)", title="Accuracy under corruption (no reject)")
    a2.set(
        xlabel="severity", ylabel="rejected (%)", title=f"Rejection rate ({threshold} thresholds)"
    )
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return save_png(fig, path)


def decision_grid(
    images: np.ndarray,
    rows: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str,
    *,
    column_titles: Sequence[str],
    labels: np.ndarray | None = None,
) -> str:
    """A grid of images (N, H, W, C) in [0, 1]: each column an image (titled), each row of text
    under it a scorer's decision -- the predicted label, red and struck 'rej' when rejected,
    green when accepted and correct, orange when accepted and wrong (or unlabelled)."""
    plt = _pyplot()
    n = len(images)
    k = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(1.25 * n, 1.6 + 0.22 * k), squeeze=False)
    for j, ax in enumerate(axes[0]):
        img = np.asarray(images[j], np.float32)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(column_titles[j], fontsize=7)
        for i, (name, (pred, rejected)) in enumerate(rows.items()):
            if rejected[j]:
                text, colour = f"{name}: rej", "red"
            else:
                good = labels is not None and labels[j] >= 0 and pred[j] == labels[j]
                text, colour = f"{name}: {int(pred[j])}", "green" if good else "darkorange"
            ax.text(0.5, -0.08 - 0.16 * i, text, transform=ax.transAxes, ha="center", va="top",
                    fontsize=5.5, color=colour)  # fmt: skip
    return save_png(fig, path)
