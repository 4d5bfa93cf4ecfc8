"""The picture of what an ABS classifier "sees": every class's reconstruction of each input.

    reconstruction_grid({"clean": (x, z, scores, member), "fashion": (...)}, model, params, path)

One row per input: the input, then the C class reconstructions G_c(z_c*) at the latents the
search found (by the class's best member), each titled with its bound relative to the best class (0 = the prediction, framed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxrej.abs.latent import reconstructions
from jaxrej.abs.model import ABSModel
from jaxrej.eval.plots import _pyplot
from jaxrej.io import save_png


def reconstruction_grid(
    groups: Mapping[str, tuple], model: ABSModel, params: dict,
    path: str, *, title: str = "ABS: per-class reconstructions",
) -> str:  # fmt: skip
    """groups: name -> (x (N, *event) in [0, 1], z (N, C, d), scores (N, C), member (N, C) or
    None); writes `path`."""
    import jax.numpy as jnp

    plt = _pyplot()
    C = model.num_classes
    n_rows = sum(len(g[0]) for g in groups.values())
    fig, axes = plt.subplots(n_rows, C + 1, figsize=(0.9 * (C + 1), 1.0 * n_rows + 0.4))
    axes = np.atleast_2d(axes)
    r = 0
    for name, (x, z, s, member) in groups.items():
        rec = np.asarray(reconstructions(model, params, jnp.asarray(z), member))
        for i in range(len(x)):
            ax = axes[r, 0]
            ax.imshow(np.asarray(x[i])[..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_ylabel(name, fontsize=7)
            ax.set_title("input", fontsize=6)
            rel = s[i] - s[i].max()
            for c in range(C):
                ax = axes[r, c + 1]
                ax.imshow(np.clip(rec[i, c][..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{c}: {rel[c]:.0f}", fontsize=6,
                             color="tab:red" if rel[c] == 0 else "black")  # fmt: skip
                if rel[c] == 0:
                    for sp in ax.spines.values():
                        sp.set_edgecolor("tab:red")
                        sp.set_linewidth(2)
            r += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + " (title: class, bound - best bound, nats)", fontsize=8)
    return save_png(fig, path)
