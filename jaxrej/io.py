"""Atomic file writes, the package's one writer of result files: JSON, text, npz, PNG.

Each writes a temporary file beside the target and renames it onto the target, so a crash (or
a kill) leaves the previous file whole.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Callable

import numpy as np


def atomic_write(path: str, write: Callable, *, binary: bool = True) -> None:
    """Call `write(f)` on a temporary file beside `path`, then os.replace it onto `path`.

    A crash leaves the previous file whole. The file gets the mode a plain open() gives it:
    an existing file keeps its mode, a new one gets 0o666 & ~umask.
    """
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    while True:
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(4)}-{name}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str, obj) -> None:
    """`obj` as indented JSON (sorted keys; numpy and jax values as numbers/lists) to `path`."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npz(path: str, **arrays) -> None:
    """np.savez(`arrays`) to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _json_default(o):
    if isinstance(o, np.generic) or hasattr(o, "__array__"):  # numpy / jax scalars and arrays
        return np.asarray(o).tolist()
    return str(o)


def save_png(fig, path: str, *, dpi: int = 110) -> str:
    """Render the matplotlib figure `fig` as PNG to `path` atomically, close it; returns path."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path
