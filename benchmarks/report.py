"""Writing a benchmark's results: NAME.json, NAME.md (and NAME.png), each replaced atomically."""

from __future__ import annotations

import os
from collections.abc import Callable

from jaxrej.training.checkpoint import atomic_write_json, atomic_write_text


def write_report(stem: str, out: dict, results: str, render: Callable[[dict], str],
                 plot: Callable[[dict, str], None] | None = None) -> str:  # fmt: skip
    """Write results/stem.json (out), stem.md (render(out)) and, with `plot`, stem.png; print and
    return the markdown. A crash mid-write leaves the previous files whole."""
    os.makedirs(results, exist_ok=True)
    atomic_write_json(os.path.join(results, f"{stem}.json"), out)
    md = render(out)
    atomic_write_text(os.path.join(results, f"{stem}.md"), md)
    if plot is not None:
        plot(out, os.path.join(results, f"{stem}.png"))
    print(md)
    return md
