"""Out-of-distribution sets made from an in-distribution split, for datasets without a natural
OOD partner (the embedded digits): the same images inverted, and images of pure noise."""

from __future__ import annotations

import numpy as np


def transformed(images: np.ndarray, n_levels: int, *, seed: int) -> dict[str, np.ndarray]:
    """{"inverted": n_levels - 1 - k, "noise": i.i.d. uniform levels}, each shaped and typed like
    `images` (integer levels k in [0, n_levels)); the noise is drawn from default_rng(seed)."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"images: expected integer pixel levels, got dtype {images.dtype}")
    noise = np.random.default_rng(seed).integers(0, n_levels, size=images.shape)
    inverted = n_levels - 1 - images.astype(np.int64)
    return {"inverted": inverted.astype(images.dtype), "noise": noise.astype(images.dtype)}
