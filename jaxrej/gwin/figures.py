"""GWIN figures as PNG files (written atomically): the tau curves and the image grid."""

from __future__ import annotations

import numpy as np

from jaxrej.gwin.protocol import COLUMNS
from jaxrej.io import save_png

__all__ = ["curves_png", "grid_png"]

_LABELS = {
    "rejected_frac": "rejected fraction",
    "acc_rejected_before": "acc. on rejected, before",
    "acc_rejected_after": "acc. on rejected, after transform",
    "acc_with_reject": "acc. with reject option (accepted)",
    "acc_with_transform": "acc. with transform (all)",
}


def curves_png(path: str, rows: list[dict], *, title: str = "GWIN") -> None:
    """Each column of the tau table (`protocol.COLUMNS`) against tau; None plotted as a gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = [r["tau"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for col in COLUMNS[1:]:
        v = [np.nan if r[col] is None else r[col] for r in rows]
        ax.plot(taus, v, marker="o", ls="--" if col == "rejected_frac" else "-",
                label=_LABELS[col])  # fmt: skip
    ax.set_xlabel("certainty threshold tau")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    save_png(fig, path, dpi=120)


def grid_png(
    path: str, x, x_transformed, labels, pred_before, pred_after, *, title: str = ""
) -> None:
    """Rejected inputs x (K, H, W, Ch) in [0, 1] (left) beside their transformations (right), two
    pairs per row, captioned 'y=<label> <pred_before> -> <pred_after>'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, x_transformed = np.asarray(x), np.asarray(x_transformed)
    k = x.shape[0]
    pairs_per_row = 2
    nrows = max(1, -(-k // pairs_per_row))
    fig, axes = plt.subplots(nrows, 2 * pairs_per_row, figsize=(2 * pairs_per_row * 1.3, nrows * 1.45),
                             squeeze=False, layout="constrained")  # fmt: skip
    for a in axes.ravel():
        a.axis("off")
    for i in range(k):
        r, c = divmod(i, pairs_per_row)
        for j, img in enumerate((x[i], x_transformed[i])):
            a = axes[r, 2 * c + j]
            a.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if j == 0:
                a.set_title(f"y={labels[i]} pred {pred_before[i]}", fontsize=7)
            else:
                ok = "ok" if pred_after[i] == labels[i] else "x"
                a.set_title(f"-> {pred_after[i]} ({ok})", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    save_png(fig, path, dpi=120)
