"""tensorflow-datasets loaders through `tfds.data_source` (random access, no TensorFlow).

Supported: mnist, fashion_mnist, cifar10, svhn_cropped, and cifar10_corrupted/<c>_<s> for every
corruption c in CORRUPTIONS and severity s in 1..5 (test split only). Never downloads unless
download=True (tests use tfds.testing.mock_data).
"""

from __future__ import annotations

import numpy as np

DATASETS = {
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "svhn_cropped": 10,
    "cifar10_corrupted": 10,
}
CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost", "frosted_glass_blur",
    "gaussian_blur", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur",
    "pixelate", "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)  # fmt: skip
SEVERITIES = (1, 2, 3, 4, 5)


def corrupted_names() -> list[str]:
    """Every cifar10_corrupted config: 19 corruptions x 5 severities."""
    return [f"cifar10_corrupted/{c}_{s}" for c in CORRUPTIONS for s in SEVERITIES]


def _check_name(name: str) -> None:
    base, _, cfg = name.partition("/")
    if base not in DATASETS:
        raise ValueError(
            f"data.dataset: expected 'digits', 'npz', 'idx' or one of {sorted(DATASETS)}, got {name!r}"
        )
    if base == "cifar10_corrupted":
        if cfg not in {f"{c}_{s}" for c in CORRUPTIONS for s in SEVERITIES}:
            raise ValueError(
                f"data.dataset: cifar10_corrupted needs '/<corruption>_<severity>' with a corruption in "
                f"{CORRUPTIONS} and severity 1..5, got {name!r}"
            )
    elif cfg:
        raise ValueError(f"data.dataset: {base!r} takes no config, got {name!r}")


def num_classes(name: str) -> int:
    _check_name(name)
    return DATASETS[name.partition("/")[0]]


def load(
    name: str, split: str, *, data_dir: str | None = None, download: bool = False, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, C), labels int32 (N,)) of `split` read through tfds.data_source."""
    _check_name(name)
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(
            name, split=split, data_dir=data_dir, download=download, builder_kwargs=None
        )
    except Exception as e:  # tfds raises several types for a missing/unprepared dataset
        raise ValueError(
            f"data.dataset: cannot open {name!r} split {split!r} with tfds.data_source "
            f"(data_dir={data_dir!r}, download={download}): {type(e).__name__}: {e}"
        ) from e
    n = len(source)
    images, labels = [], []
    for start in range(0, n, chunk):
        keys = list(range(start, min(start + chunk, n)))
        try:
            rows = source.__getitems__(keys)  # one batched read of array_record files
        except (AttributeError, TypeError):  # e.g. tfds.testing.mock_data's source
            rows = [source[k] for k in keys]
        for r in rows:
            images.append(np.asarray(r["image"], dtype=np.uint8))
            labels.append(int(r["label"]))
    if not images:
        raise ValueError(f"data.dataset: {name!r} split {split!r} is empty")
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    return x, np.asarray(labels, dtype=np.int32)
