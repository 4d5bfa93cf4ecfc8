"""tensorflow-datasets loaders through `tfds.data_source` (random access, no TensorFlow).

Supported: mnist, fashion_mnist, kmnist, cifar10, cifar100, svhn_cropped,
mnist_corrupted/<c> for c in MNIST_C (MNIST-C), and cifar10_corrupted/<c>_<s> for every
corruption c in CORRUPTIONS and severity s in 1..5 (test split only). Never downloads unless
download=True (tests use tfds.testing.mock_data). A dataset tfds cannot open gets an error naming
it and the directory looked in (tfds' own message for an unprepared dataset is misleading).
"""

from __future__ import annotations

import os

import numpy as np

DATASETS = {
    "mnist": 10,
    "fashion_mnist": 10,
    "kmnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "svhn_cropped": 10,
    "mnist_corrupted": 10,
    "cifar10_corrupted": 10,
}
CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost", "frosted_glass_blur",
    "gaussian_blur", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur",
    "pixelate", "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)  # fmt: skip
SEVERITIES = (1, 2, 3, 4, 5)
MNIST_C = (
    "identity", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale",
    "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag",
    "canny_edges",
)  # fmt: skip


def corrupted_names() -> list[str]:
    """Every cifar10_corrupted config: 19 corruptions x 5 severities."""
    return [f"cifar10_corrupted/{c}_{s}" for c in CORRUPTIONS for s in SEVERITIES]


def _check_name(name: str) -> None:
    base, _, cfg = name.partition("/")
    if base not in DATASETS:
        raise ValueError(
            f"dataset {name!r}: unknown name; expected 'digits', 'idx:IMAGES[,LABELS]', "
            f"'npz:PATH' or a tfds name from {sorted(DATASETS)}"
        )
    if base == "cifar10_corrupted":
        if cfg not in {f"{c}_{s}" for c in CORRUPTIONS for s in SEVERITIES}:
            raise ValueError(
                f"dataset {name!r}: cifar10_corrupted needs '/<corruption>_<severity>' with a "
                f"corruption in {CORRUPTIONS} and severity 1..5"
            )
    elif base == "mnist_corrupted":
        if cfg not in MNIST_C:
            raise ValueError(
                f"dataset {name!r}: mnist_corrupted needs '/<corruption>' with one of {MNIST_C}"
            )
    elif cfg:
        raise ValueError(f"dataset {name!r}: {base!r} takes no config")


def num_classes(name: str) -> int:
    _check_name(name)
    return DATASETS[name.partition("/")[0]]


def _prepared_dir(name: str, data_dir: str | None) -> tuple[str, bool]:
    """(the folder tfds reads `name` from, whether it holds a prepared dataset_info.json)."""
    import tensorflow_datasets as tfds

    try:
        folder = tfds.builder(name, data_dir=data_dir).data_dir
    except Exception:  # noqa: BLE001  (only used to word the error)
        from tensorflow_datasets.core import constants

        folder = os.path.join(data_dir or constants.DATA_DIR, *name.split("/"))
    return str(folder), os.path.isfile(os.path.join(str(folder), "dataset_info.json"))


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
        folder, prepared = _prepared_dir(name, data_dir)
        if not prepared and not download:
            raise ValueError(
                f"dataset {name!r}: no prepared tfds files in {folder!r} (looked for "
                "dataset_info.json there); nothing is downloaded: prepare it with tfds, set "
                "data.data_dir to the folder holding it, or give local files as "
                "'idx:IMAGES[,LABELS]' or 'npz:PATH'"
            ) from e
        raise ValueError(
            f"dataset {name!r}: cannot open split {split!r} with tfds.data_source "
            f"(folder {folder!r}, download={download}): {type(e).__name__}: {e}"
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
        raise ValueError(f"dataset {name!r}: split {split!r} is empty")
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    return x, np.asarray(labels, dtype=np.int32)
