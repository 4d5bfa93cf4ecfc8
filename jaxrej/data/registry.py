"""One dataset string everywhere: `load_dataset(spec, split, *, data_dir=None, download=False)`.

Returns a `Dataset`: integer images (N, H, W, C) (uint8 levels), int32 labels (N,) or None for an
unlabelled local set (usable as an OOD set), n_levels (17 for digits, 256 otherwise) and
num_classes (0 when unlabelled).

spec (config field `data.dataset`, `ood.datasets`, flags `--test` / `--ood`):
  "digits"                 embedded 8x8 digits (`data.digits`; splits train, test, all)
  tfds names               mnist, fashion_mnist, kmnist, cifar10, cifar100, svhn_cropped,
                           mnist_corrupted/<corruption>, cifar10_corrupted/<corruption>_<severity>
                           (`data.tfds_sources`, read with tfds.data_source, never downloaded
                           unless download=True; split: any tfds split, e.g. train, test, all)
  "idx:IMAGES[,LABELS]"    IDX files (the MNIST format), raw or .gz; LABELS optional
  "npz:PATH"               an .npz with array "images" (else "x") and optionally "labels"
                           (else "y")
Relative paths resolve against the current directory.

Local sets (idx, npz) have the fixed split `local_split_indices(N)`: a permutation of the N rows
by numpy `default_rng(0)`; its first N // 4 rows are "test", the next N // 8 "validation", the
rest "train" (each kept in file order); "all" is every row in file order. For the 8,000 MNIST
rows in ../shared/data: 5,000 train, 1,000 validation, 2,000 test. The rule depends only on N, so
a transformed copy of a file (corrupted images in the same order) splits into the same rows.

`parse_named("name=SPEC")` -> (name, spec) for flags that name a set; `spec_name(spec)` is the
default name (used in result file names).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from jaxrej.data import digits

LOCAL_SPLITS = ("train", "validation", "test", "all")
SPLIT_SEED = 0
FORMS = "'digits', a tfds name (e.g. 'mnist'), 'idx:IMAGES[,LABELS]' or 'npz:PATH'"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # (N, H, W, C) integer levels
    labels: np.ndarray | None  # (N,) int32; None for an unlabelled local set
    n_levels: int
    num_classes: int  # 0 when unlabelled
    spec: str = ""


def local_split_indices(n: int) -> dict[str, np.ndarray]:
    """Row indices of each split of a local set with n rows (module doc): sorted, disjoint,
    train + validation + test = all."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test, n_val = n // 4, n // 8
    return {
        "train": np.sort(perm[n_test + n_val :]),
        "validation": np.sort(perm[n_test : n_test + n_val]),
        "test": np.sort(perm[:n_test]),
        "all": np.arange(n),
    }


def parse_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """spec -> (kind, arguments): ("digits", ()), ("tfds", (name,)), ("idx", (images, labels?)),
    ("npz", (path,)). ValueError naming the string for a malformed one."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset {spec!r}: expected a non-empty string: {FORMS}")
    spec = spec.strip()
    if spec in ("idx", "npz"):
        form = "idx:IMAGES[,LABELS]" if spec == "idx" else "npz:PATH"
        raise ValueError(f"dataset {spec!r}: expected {form!r}, the files named after the colon")
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("idx", "npz"):
        parts = tuple(p.strip() for p in rest.split(","))
        if not parts[0] or any(not p for p in parts) or len(parts) > (2 if kind == "idx" else 1):
            form = "idx:IMAGES[,LABELS]" if kind == "idx" else "npz:PATH"
            raise ValueError(f"dataset {spec!r}: expected {form!r}")
        return kind, parts
    if spec == "digits":
        return "digits", ()
    if sep:
        raise ValueError(f"dataset {spec!r}: unknown prefix {kind + ':'!r}; expected {FORMS}")
    return "tfds", (spec,)


def is_local(spec: str) -> bool:
    """True for 'idx:...' and 'npz:...' sets (they have the fixed local split)."""
    return parse_spec(spec)[0] in ("idx", "npz")


def spec_name(spec: str) -> str:
    """A short file-name-safe name: 'mnist_corrupted/shot_noise' -> 'mnist_corrupted-shot_noise',
    'idx:dir/fashion-images-idx3-ubyte.gz,...' -> 'fashion-images-idx3-ubyte'."""
    kind, args = parse_spec(spec)
    if kind in ("idx", "npz"):
        base = os.path.basename(args[0])
        for ext in (".gz", ".npz", ".idx"):
            base = base[: -len(ext)] if base.endswith(ext) else base
        name = base
    else:
        name = spec.strip() if kind == "tfds" else kind
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "set"


def parse_named(arg: str) -> tuple[str, str]:
    """'name=SPEC' -> (name, SPEC); a bare SPEC -> (spec_name(SPEC), SPEC)."""
    head, sep, rest = arg.partition("=")
    if sep:
        if not _NAME.match(head):
            raise ValueError(f"{arg!r}: a set name is letters, digits, '_', '.' or '-'")
        parse_spec(rest)
        return head, rest.strip()
    return spec_name(arg), arg.strip()


def _resolve(spec: str, path: str) -> str:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise ValueError(
            f"dataset {spec!r}: no such file {full!r} (relative paths resolve against the "
            f"current directory {os.getcwd()!r})"
        )
    return full


def _local(spec: str, kind: str, args: tuple[str, ...]):
    from jaxrej.data import local

    if kind == "idx":
        images = local.read_idx(_resolve(spec, args[0]))
        labels = local.read_idx(_resolve(spec, args[1])) if len(args) > 1 else None
    else:
        images, labels = local.load_npz(_resolve(spec, args[0]))
    return local.check_arrays(images, labels, name=f"dataset {spec!r}")


def load_dataset(
    spec: str, split: str, *, data_dir: str | None = None, download: bool = False
) -> Dataset:
    """Split `split` of the dataset named by `spec` (module doc). Raises ValueError naming the
    string: a malformed one, a missing file (with the path looked for), an unprepared tfds
    dataset (with the directory looked in), a split the set does not have."""
    from jaxrej.data import tfds_sources

    kind, args = parse_spec(spec)
    if kind == "digits":
        if split not in digits.SPLITS:
            raise ValueError(
                f"dataset 'digits': split expected one of {digits.SPLITS}, got {split!r}"
            )
        x, y = digits.load(split)
        return Dataset(x, y, digits.N_LEVELS, digits.NUM_CLASSES, spec)
    if kind == "tfds":
        x, y = tfds_sources.load(args[0], split, data_dir=data_dir, download=download)
        return Dataset(x, y, 256, tfds_sources.num_classes(args[0]), spec)
    if split not in LOCAL_SPLITS:
        raise ValueError(f"dataset {spec!r}: split expected one of {LOCAL_SPLITS}, got {split!r}")
    x, y = _local(spec, kind, args)
    if x.size and x.max() > 255:
        raise ValueError(f"dataset {spec!r}: expected pixel levels in [0, 255], max is {x.max()}")
    idx = local_split_indices(x.shape[0])[split]
    classes = int(y.max()) + 1 if y is not None and y.size else 0
    return Dataset(x[idx].astype(np.uint8), None if y is None else y[idx], 256, classes, spec)


def load_train_and_eval(dataset: str, train_split: str, eval_dataset: str | None, eval_split: str | None,
                        *, data_dir: str | None = None) -> tuple[Dataset, Dataset | None]:  # fmt: skip
    """(train, eval or None): split `train_split` of `dataset` (labelled) and split `eval_split` of
    `eval_dataset` (default `dataset`; no eval set when eval_split is empty). ValueErrors name the
    config field: data.dataset or data.eval_dataset."""
    try:
        train = load_dataset(dataset, train_split, data_dir=data_dir)
    except ValueError as e:
        raise ValueError(f"data.dataset: {e}") from e
    if train.labels is None:
        raise ValueError(f"data.dataset: {dataset!r} has no labels; training needs them")
    if not eval_split:
        return train, None
    try:
        return train, load_dataset(eval_dataset or dataset, eval_split, data_dir=data_dir)
    except ValueError as e:
        raise ValueError(f"data.eval_dataset: {e}") from e
