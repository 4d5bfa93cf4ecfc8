"""The embedded default data: scikit-learn's 8x8 digits (1,797 images, 10 classes).

Pixels are integers 0..16 (17 levels). The split is fixed and documented: a
stratified shuffle with seed 0 puts 1,437 images in `train` and 360 in `test`
(20%, 36 per class) -- the same rows on every machine, since it depends only on
the labels and the seed. Split "all" is every image in scikit-learn's order (an OOD set).
"""

from __future__ import annotations

import numpy as np

N_LEVELS = 17  # pixel values 0..16
NUM_CLASSES = 10
SPLITS = ("train", "test", "all")


def _split_indices() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    labels = load_digits().target
    rng = np.random.default_rng(0)
    test = []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        test.extend(rng.permutation(rows)[:36])
    test = np.sort(np.asarray(test))
    train = np.setdiff1d(np.arange(labels.size), test)
    return {"train": train, "test": test}


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 8, 8, 1) uint8 in 0..16 and labels (N,) int32 for `split` in SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.arange(d.target.size) if split == "all" else _split_indices()[split]
    images = d.images[idx].astype(np.uint8)[..., None]
    return images, d.target[idx].astype(np.int32)
