"""Data: the one dataset string (tfds names on mock data, idx:/npz: files the test writes, the
fixed local split, errors that name the string), IDX/.npz round trips, digits split,
dequantization, the classifiers' pixel scaling, OOD sets made from a split, batching."""

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
from jaxrej.data.registry import (
    load_dataset,
    local_split_indices,
    parse_named,
    parse_spec,
    spec_name,
)


@pytest.mark.parametrize(
    "name,split,shape",
    [("mnist", "train", (28, 28, 1)), ("fashion_mnist", "test", (28, 28, 1)), ("cifar10", "train", (32, 32, 3)),
     ("svhn_cropped", "test", (32, 32, 3)), ("cifar10_corrupted/gaussian_noise_3", "test", (32, 32, 3)),
     ("mnist_corrupted/shot_noise", "test", (28, 28, 1)), ("kmnist", "all", (28, 28, 1))],
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
    for bad in ("imagenet", "cifar10_corrupted/fog_6", "cifar10_corrupted", "mnist/extra",
                "mnist_corrupted/fog_3", "foo:bar", "", "idx:", "npz:a.npz,b.npz"):  # fmt: skip
        with pytest.raises(ValueError, match=f"dataset {bad!r}"):
            load_dataset(bad, "test")


def test_tfds_missing_files_fail_fast_naming_the_folder(tmp_path):
    """No tfds riddle ("already prepared ... TFRECORD"): the string and the folder looked in."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="no prepared tfds files") as e:
        load_dataset("mnist_corrupted/shot_noise", "test", data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 30  # no download retries
    msg = str(e.value)
    assert "'mnist_corrupted/shot_noise'" in msg
    assert str(tmp_path / "mnist_corrupted" / "shot_noise") in msg and "TFRECORD" not in msg


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


def _rows(n, shape=(4, 4)):
    """Images whose pixel (0, 0) is the row number (so a split's rows can be read back), labels."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, *shape)).astype(np.uint8)
    x[:, 0, 0] = np.arange(n)
    return x, rng.integers(0, 3, n).astype(np.uint8)


def test_local_split_rule_is_the_documented_one():
    """test = sorted first N//4 of default_rng(0).permutation(N), validation the next N//8, train
    the rest; deterministic, disjoint, covering; 8,000 rows -> 5,000 / 1,000 / 2,000."""
    for n in (8, 37, 8000):
        perm = np.random.default_rng(0).permutation(n)
        idx = local_split_indices(n)
        np.testing.assert_array_equal(idx["test"], np.sort(perm[: n // 4]))
        np.testing.assert_array_equal(idx["validation"], np.sort(perm[n // 4 : n // 4 + n // 8]))
        parts = np.concatenate([idx["train"], idx["validation"], idx["test"]])
        np.testing.assert_array_equal(np.sort(parts), np.arange(n))  # disjoint and covering
        np.testing.assert_array_equal(idx["all"], np.arange(n))
        again = local_split_indices(n)
        assert all(np.array_equal(idx[k], again[k]) for k in idx)
    sizes = {k: v.size for k, v in local_split_indices(8000).items()}
    assert sizes == {"train": 5000, "validation": 1000, "test": 2000, "all": 8000}


@pytest.mark.parametrize("fmt", ["idx", "idx.gz", "npz", "npz-xy"])
def test_local_strings_round_trip_files_the_test_writes(tmp_path, monkeypatch, fmt):
    n = 40
    x, y = _rows(n)
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the current directory
    (tmp_path / "d").mkdir()
    if fmt.startswith("idx"):
        gz = ".gz" if fmt.endswith("gz") else ""
        local.write_idx(f"d/images-idx3-ubyte{gz}", x)
        local.write_idx(f"d/labels-idx1-ubyte{gz}", y)
        spec = f"idx:d/images-idx3-ubyte{gz},d/labels-idx1-ubyte{gz}"
    else:
        keys = ("images", "labels") if fmt == "npz" else ("x", "y")
        np.savez("d/set.npz", **{keys[0]: x[..., None], keys[1]: y})
        spec = "npz:d/set.npz"
    seen = []
    for split in ("train", "validation", "test", "all"):
        ds = load_dataset(spec, split)
        rows = ds.images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(rows, local_split_indices(n)[split])
        np.testing.assert_array_equal(ds.images[..., 0], x[rows])  # the file's pixels, unchanged
        np.testing.assert_array_equal(ds.labels, y[rows])
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
        assert ds.n_levels == 256 and ds.num_classes == int(y.max()) + 1 and ds.spec == spec
        seen.append(set(rows.tolist()))
    assert [len(r) for r in seen] == [25, 5, 10, 40]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # the same spec from another directory: the file is looked for there, and named
    monkeypatch.chdir(tmp_path / "d")
    with pytest.raises(ValueError, match="no such file") as e:
        load_dataset(spec, "train")
    assert spec in str(e.value) and str(tmp_path / "d" / "d") in str(e.value)


def test_unlabelled_local_sets_for_ood(tmp_path):
    x, _ = _rows(12)
    local.write_idx(str(tmp_path / "ood.gz"), x)
    ds = load_dataset(f"idx:{tmp_path / 'ood.gz'}", "all")
    assert ds.labels is None and ds.num_classes == 0
    np.testing.assert_array_equal(ds.images[..., 0], x)
    np.savez(tmp_path / "o.npz", x=x)
    ds = load_dataset(f"npz:{tmp_path / 'o.npz'}", "test")
    assert ds.labels is None and ds.images.shape == (3, 4, 4, 1)


def test_local_errors_name_the_string(tmp_path):
    x, y = _rows(8)
    local.write_idx(str(tmp_path / "im"), x)
    local.write_idx(str(tmp_path / "lab"), y[:5])
    np.savez(tmp_path / "bad.npz", pixels=x)
    np.savez(tmp_path / "float.npz", x=x.astype(np.float32), y=y)
    np.savez(tmp_path / "big.npz", x=x.astype(np.int32) * 2)
    cases = [
        (f"idx:{tmp_path / 'im'},{tmp_path / 'missing'}", "train", "no such file"),
        (f"idx:{tmp_path / 'im'},{tmp_path / 'lab'}", "train", "labels of shape"),
        (f"idx:{tmp_path / 'im'}", "valid", "split expected one of"),
        (f"npz:{tmp_path / 'bad.npz'}", "train", "needs an array 'images'"),
        (f"npz:{tmp_path / 'float.npz'}", "train", "integer pixel levels"),
        (f"npz:{tmp_path / 'big.npz'}", "all", r"levels in \[0, 255\]"),
        ("idx", "train", "IMAGES"),
        ("npz", "train", "npz:PATH"),
        ("digits", "validation", "split expected one of"),
    ]
    for spec, split, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            load_dataset(spec, split)
        assert repr(spec) in str(e.value) or "npz:" in str(e.value), (spec, str(e.value))


def test_spec_parsing_and_names():
    assert parse_spec("digits") == ("digits", ())
    assert parse_spec("cifar10_corrupted/fog_3") == ("tfds", ("cifar10_corrupted/fog_3",))
    assert parse_spec("idx:a/b.gz, c.gz") == ("idx", ("a/b.gz", "c.gz"))
    assert parse_spec("npz:x.npz") == ("npz", ("x.npz",))
    assert spec_name("mnist_corrupted/shot_noise") == "mnist_corrupted-shot_noise"
    assert (
        spec_name("idx:../d/fashion-2k-images-idx3-ubyte.gz,l.gz") == "fashion-2k-images-idx3-ubyte"
    )
    assert spec_name("npz:dir/my set.npz") == "my-set"
    assert parse_named("fashion=idx:a.gz") == ("fashion", "idx:a.gz")
    assert parse_named("svhn_cropped") == ("svhn_cropped", "svhn_cropped")
    with pytest.raises(ValueError, match="set name"):
        parse_named("a b=digits")


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
    everything = load_dataset("digits", "all")
    np.testing.assert_array_equal(everything.images[..., 0], load_digits().images.astype(np.uint8))
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
