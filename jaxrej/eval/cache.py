"""Resumable scoring: a scorer's class scores of a named image set, kept on disk.

    s = cached_scores(path, images, score_batch, batch_size=64, fingerprint=f)   # (N, C)

The file `path` (.npz) holds the scores with a fingerprint of the images and of the scorer's
settings; a later call with the same fingerprint reads it instead of scoring, a different
fingerprint scores again (and replaces it). While scoring, the rows done so far are saved every
`save_every_s` seconds to `path + ".partial.npz"`, so a killed run continues where it stopped.
Batches are padded to `batch_size` (`data.batching`) so one compilation serves them all.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import numpy as np

from jaxrej.data.batching import padded_batches
from jaxrej.io import atomic_save_npz


def fingerprint(images: np.ndarray, settings: str) -> str:
    """sha1 of the images' shape, dtype and bytes and of the scorer's `settings` string."""
    a = np.ascontiguousarray(images)
    h = hashlib.sha1(f"{a.shape}|{a.dtype}|{settings}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _read(path: str, fp: str) -> np.ndarray | None:
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) == fp:
                return np.asarray(z["scores"])
    except (OSError, KeyError, ValueError):  # absent, unreadable or an older layout: rescore
        pass
    return None


def cached_scores(
    path: str,
    images: np.ndarray,
    score_batch: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int,
    settings: str,
    desc: str = "",
    progress: bool = True,
    save_every_s: float = 30.0,
) -> np.ndarray:
    """Class scores (N, C) of `images` (N, ...) by `score_batch` ((batch_size, ...) -> (batch_size,
    C)), read from `path` when its fingerprint matches (see module doc), else computed, saved and
    returned."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    fp = fingerprint(images, settings)
    done = _read(path, fp)
    if done is not None:
        return done
    partial = path + ".partial.npz"
    rows = _read(partial, fp)
    parts = [rows] if rows is not None and len(rows) else []
    start = len(rows) if rows is not None else 0
    n = len(images)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=start, desc=desc or os.path.basename(path), unit="img",
                   dynamic_ncols=True, leave=False)  # fmt: skip
    last = time.monotonic()
    batches = padded_batches(images[start:], batch_size=batch_size) if start < n else ()
    for i, ((xb,), mask) in enumerate(batches):
        parts.append(np.asarray(score_batch(xb))[mask])
        if bar is not None:
            bar.update(int(mask.sum()))
        if time.monotonic() - last > save_every_s and start + (i + 1) * batch_size < n:
            atomic_save_npz(partial, scores=np.concatenate(parts), fingerprint=fp)
            last = time.monotonic()
    if bar is not None:
        bar.close()
    scores = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    atomic_save_npz(path, scores=scores, fingerprint=fp)
    if os.path.exists(partial):
        os.unlink(partial)
    return scores
