"""Fixed-size padded batches: every batch has the same shape, so one compilation serves all.

The last batch is filled by repeating real rows (edge padding, so padded rows are ordinary
inputs for any solver) and a boolean `mask` marks the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def padded_batches(
    *arrays: np.ndarray, batch_size: int
) -> Iterator[tuple[tuple[np.ndarray, ...], np.ndarray]]:
    """Yield ((a[i:i+B] for a in arrays), mask (B,) bool), the last batch padded to B rows."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if not arrays:
        raise ValueError("arrays: expected at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays: expected equal lengths, got {[len(a) for a in arrays]}")
    if n == 0:
        raise ValueError("arrays: expected at least one row")
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = idx < n
        idx = np.minimum(idx, n - 1)
        yield tuple(np.asarray(a)[idx] for a in arrays), mask


def unpad(chunks, masks) -> np.ndarray:
    """Concatenate per-batch outputs and drop padded rows."""
    return np.concatenate(
        [np.asarray(c)[np.asarray(m)] for c, m in zip(chunks, masks, strict=True)]
    )
