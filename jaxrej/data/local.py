"""Local files: IDX (the MNIST file format, optionally gzipped) and .npz.

IDX: magic 0x00 0x00 <type> <ndim>, then ndim big-endian uint32 sizes, then the data in
big-endian order (type 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64).
.npz: array "images" (else "x") and, optionally, "labels" (else "y").
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_TYPES.items()}


def _open(path: str, mode: str):
    return gzip.open(path, mode) if path.endswith(".gz") else open(path, mode)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (".gz" is decompressed) into a native-endian array."""
    if not os.path.isfile(path):
        raise ValueError(f"idx: no such file {path!r}")
    with _open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"idx: {path!r} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"idx: {path!r} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != header + count * dtype.itemsize:
        raise ValueError(
            f"idx: {path!r} holds {len(raw) - header} data bytes, expected "
            f"{count * dtype.itemsize} for shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzipped if `path` ends in ".gz")."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=").str
    if native not in _IDX_CODES:
        raise ValueError(f"array: dtype {array.dtype} has no IDX type code")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with _open(path, "wb") as f:
        f.write(header + array.astype(_IDX_TYPES[code]).tobytes())


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from an .npz with array "images" (else "x") and optionally
    "labels" (else "y")."""
    if not os.path.isfile(path):
        raise ValueError(f"npz: no such file {path!r}")
    with np.load(path) as f:
        keys = set(f.files)
        ik = "images" if "images" in keys else "x" if "x" in keys else None
        lk = "labels" if "labels" in keys else "y" if "y" in keys else None
        if ik is None:
            raise ValueError(
                f"npz: {path!r} needs an array 'images' (or 'x'), and optionally 'labels' "
                f"(or 'y'); it has {sorted(keys)}"
            )
        return f[ik], (None if lk is None else f[lk])


def check_arrays(images, labels, *, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate and normalise: images (N, H, W, C) or (N, H, W) integer -> (N, H, W, C);
    labels (N,) integer >= 0 -> int32, or None (an unlabelled set)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{name}: expected images (N, H, W, C) or (N, H, W), got shape {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"{name}: expected integer pixel levels, got dtype {images.dtype}")
    if images.size and images.min() < 0:
        raise ValueError(f"{name}: expected pixel levels >= 0, got {images.min()}")
    if labels is None:
        return images, None
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name}: expected integer labels of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {labels.min()}")
    return images, labels.astype(np.int32)
