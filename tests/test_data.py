"""Data: tfds loaders on mock data, IDX/.npz round trips, digits split, dequantization, the
classifiers' pixel scaling, OOD sets made from a split, batching."""

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej.data import digits, local, ood, tfds_sources
from jaxrej.data.batching import num_batches, padded_batches, unpad
from jaxrej.data.preprocessing import (
    center,
    check_images,
    dequantize,
    quantize,
    to_model_input,
    to_unit_interval,
)
from jaxrej.data.registry import load_dataset


@pytest.mark.parametrize(
    "name,split,shape",
    [("mnist", "train", (28, 28, 1)), ("fashion_mnist", "test", (28, 28, 1)), ("cifar10", "train", (32, 32, 3)),
     ("svhn_cropped", "test", (32, 32, 3)), ("cifar10_corrupted/gaussian_noise_3", "test", (32, 32, 3))],
)  # fmt: skip
def test_tfds_loaders_on_mock_data(name, split, shape, tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
        ds = load_dataset(name, split)
        expected = [
            (np.asarray(r["image"]), int(r["label"])) for r in tfds.data_source(name, split=split)
        ]
    assert ds.images.shape == (6, *shape) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32 and ds.labels.shape == (6,)
    assert ds.n_levels == 256 and ds.num_classes == 10
    # the same rows, in order, as reading the source directly
    np.testing.assert_array_equal(ds.images, np.stack([e[0].reshape(shape) for e in expected]))
    np.testing.assert_array_equal(ds.labels, [e[1] for e in expected])


def test_corrupted_names_and_bad_names():
    names = tfds_sources.corrupted_names()
    assert len(names) == 19 * 5 == len(set(names))
    assert "cifar10_corrupted/zoom_blur_5" in names
    for bad in ("imagenet", "cifar10_corrupted/fog_6", "cifar10_corrupted", "mnist/extra"):
        with pytest.raises(ValueError, match="data.dataset"):
            load_dataset(bad, "test")


def test_tfds_missing_files_fail_fast_without_download(tmp_path):
    with pytest.raises(ValueError, match="cannot open 'mnist'"):
        load_dataset("mnist", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.int16])
def test_idx_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(0)
    a = (rng.integers(0, 200, (5, 3, 4)) * (1.5 if dtype == np.float32 else 1)).astype(dtype)
    p = str(tmp_path / ("a.idx" + (".gz" if gz else "")))
    local.write_idx(p, a)
    b = local.read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_matches_the_published_format(tmp_path):
    """Bytes written by hand as in the MNIST page: magic 0x00000803, sizes, then pixels."""
    raw = (
        bytes([0, 0, 8, 3])
        + (2).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + (3).to_bytes(4, "big")
    )
    raw += bytes(range(12))
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(
        local.read_idx(str(p)), np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    )
    lab = tmp_path / "labels.idx"
    lab.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    np.testing.assert_array_equal(local.read_idx(str(lab)), [7, 0, 9])
    bad = tmp_path / "bad.idx"
    bad.write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        local.read_idx(str(bad))
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        local.read_idx(str(bad))
    with pytest.raises(ValueError, match="no such file"):
        local.read_idx(str(tmp_path / "missing.idx"))


def test_local_datasets_through_the_registry(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (7, 4, 4)).astype(np.uint8)
    y = rng.integers(0, 3, 7).astype(np.int64)
    local.write_idx(str(tmp_path / "train-images.idx"), x)
    local.write_idx(str(tmp_path / "train-labels.idx"), y.astype(np.uint8))
    ds = load_dataset("idx", "train", path=str(tmp_path / "{split}-{kind}.idx"))
    np.testing.assert_array_equal(ds.images, x[..., None])
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.labels.dtype == np.int32 and ds.num_classes == int(y.max()) + 1
    np.savez(tmp_path / "test.npz", images=x[..., None], labels=y)
    ds = load_dataset(
        "npz", "test", path=str(tmp_path / "{split}.npz"), n_levels=256, num_classes=5
    )
    np.testing.assert_array_equal(ds.images, x[..., None])
    assert ds.num_classes == 5
    np.savez(tmp_path / "bad.npz", pixels=x)
    with pytest.raises(ValueError, match="needs arrays"):
        load_dataset("npz", "bad", path=str(tmp_path / "{split}.npz"))
    np.savez(tmp_path / "float.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(ValueError, match="integer pixel levels"):
        load_dataset("npz", "float", path=str(tmp_path / "{split}.npz"))
    with pytest.raises(ValueError, match="data.path"):
        load_dataset("npz", "test")


def test_digits_split_is_fixed_stratified_and_disjoint():
    from sklearn.datasets import load_digits

    xtr, ytr = digits.load("train")
    xte, yte = digits.load("test")
    assert xtr.shape == (1437, 8, 8, 1) and xte.shape == (360, 8, 8, 1)
    assert np.bincount(yte).tolist() == [36] * 10
    assert xtr.max() == 16 and xtr.dtype == np.uint8
    ds = load_dataset("digits", "test")
    assert ds.n_levels == digits.N_LEVELS == 17
    np.testing.assert_array_equal(ds.images, xte)
    # together the splits are exactly scikit-learn's images (as multisets of rows)
    full = load_digits()
    allx = np.concatenate([xtr, xte]).reshape(1797, 64)
    key = lambda a: sorted(map(bytes, a.astype(np.uint8)))  # noqa: E731
    assert key(allx) == key(full.images.reshape(1797, 64))


def test_dequantization_conventions():
    k = jnp.asarray(np.arange(17, dtype=np.uint8).repeat(500))
    x = dequantize(k, 17, key=jax.random.key(0))
    assert x.dtype == jnp.float32
    assert bool(jnp.all(x >= k / 17)) and bool(jnp.all(x < (k + 1) / 17))
    np.testing.assert_array_equal(quantize(x, 17), k)  # round trip
    u = np.asarray(x * 17 - k)
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005  # U[0, 1)
    np.testing.assert_allclose(center(k, 17), (np.asarray(k) + 0.5) / 17, rtol=1e-6)
    np.testing.assert_array_equal(to_model_input(k, 17, mode="center"), center(k, 17))
    with pytest.raises(ValueError, match="key"):
        to_model_input(k, 17, mode="uniform")
    with pytest.raises(ValueError, match="dequantize"):
        to_model_input(k, 17, mode="nearest")
    with pytest.raises(ValueError, match="levels"):
        check_images(np.array([0, 17]), 17)
    with pytest.raises(ValueError, match="integer"):
        check_images(np.array([0.5]), 17)


@pytest.mark.parametrize("levels", [17, 256])
def test_unit_interval_scaling_and_transformed_ood_sets(levels):
    k = np.arange(levels, dtype=np.uint8).reshape(1, -1, 1, 1)
    x = to_unit_interval(k, levels)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x, k / (levels - 1), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(to_unit_interval(jnp.asarray(k), levels)), x, rtol=1e-6)
    images = np.random.default_rng(0).integers(0, levels, (50, 4, 4, 1)).astype(np.uint8)
    sets = ood.transformed(images, levels, seed=3)
    np.testing.assert_array_equal(sets["inverted"], levels - 1 - images.astype(int))
    for name, a in sets.items():
        assert a.dtype == images.dtype and a.shape == images.shape, name
    noise = sets["noise"]
    assert noise.min() >= 0 and noise.max() <= levels - 1
    assert abs(noise.mean() - (levels - 1) / 2) < 0.1 * levels  # uniform levels: mean (L - 1) / 2
    np.testing.assert_array_equal(ood.transformed(images, levels, seed=3)["noise"], noise)
    assert not np.array_equal(ood.transformed(images, levels, seed=4)["noise"], noise)
    with pytest.raises(ValueError, match="images"):
        ood.transformed(images / 1.0, levels, seed=0)


@pytest.mark.parametrize("n,b", [(10, 4), (8, 4), (3, 5), (1, 1)])
def test_padded_batches(n, b):
    a = np.arange(n * 2).reshape(n, 2)
    lab = np.arange(n)
    batches = list(padded_batches(a, lab, batch_size=b))
    assert len(batches) == num_batches(n, b)
    assert all(
        xb.shape == (b, 2) and yb.shape == (b,) and m.shape == (b,) for (xb, yb), m in batches
    )
    assert sum(int(m.sum()) for _, m in batches) == n
    np.testing.assert_array_equal(unpad([xb for (xb, _), _ in batches], [m for _, m in batches]), a)
    # padding repeats real rows (edge padding), never zeros or garbage
    (xb, _), m = batches[-1]
    np.testing.assert_array_equal(xb[~m], np.repeat(a[-1:], int((~m).sum()), 0))
    with pytest.raises(ValueError, match="batch_size"):
        next(padded_batches(a, batch_size=0))
    with pytest.raises(ValueError, match="lengths"):
        next(padded_batches(a, lab[:-1], batch_size=2))
