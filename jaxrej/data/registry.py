"""One entry point for every dataset: `load_dataset(name, split, ...)`.

Returns a `Dataset` of integer images (N, H, W, C) (uint8 levels), int32 labels (N,),
n_levels (pixel levels, 17 for digits, 256 otherwise) and num_classes.

names:  "digits" (embedded, scikit-learn), "mnist", "fashion_mnist", "cifar10", "svhn_cropped",
        "cifar10_corrupted/<corruption>_<severity>" (tfds, via tfds.data_source),
        "npz" and "idx" (local files: `path` is a format string with "{split}").
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrej.data import digits


@dataclasses.dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # (N, H, W, C) integer levels
    labels: np.ndarray  # (N,) int32
    n_levels: int
    num_classes: int


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    path: str | None = None,
    download: bool = False,
    n_levels: int | None = None,
    num_classes: int | None = None,
) -> Dataset:
    """Load split `split` of dataset `name` (see module doc). Raises ValueError naming bad input."""
    from jaxrej.data import local, tfds_sources

    if name == "digits":
        x, y = digits.load(split)
        return Dataset(x, y, digits.N_LEVELS, digits.NUM_CLASSES)
    if name in ("npz", "idx"):
        if not path:
            raise ValueError(f"data.path: dataset {name!r} needs a path (with '{{split}}')")
        if name == "npz":
            p = path.format(split=split)
            x, y = local.load_npz(p)
        else:
            if "{kind}" not in path:
                raise ValueError(
                    "data.path: an idx path needs '{kind}' (images|labels) and '{split}'"
                )
            p = path.format(split=split, kind="images")
            x = local.read_idx(p)
            y = local.read_idx(path.format(split=split, kind="labels"))
            if x.ndim == 3:
                x = x[..., None]
        x, y = local.check_arrays(x, y, name=p)
        levels = n_levels or 256
        classes = num_classes or int(y.max()) + 1
        return Dataset(x, y, levels, classes)
    x, y = tfds_sources.load(name, split, data_dir=data_dir, download=download)
    return Dataset(x, y, 256, tfds_sources.num_classes(name))
