"""Tests of tfprune.data: IDX reading, offline loading, determinism, augmentation, errors."""

import dataclasses
import gzip
import socket
import struct
import subprocess
import sys
import time
import types
from pathlib import Path

import _procs
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

from tfprune import data
from tfprune.data import (
    DatasetInfo,
    dataset_info,
    eval_dataset,
    pipeline,
    pruning_data,
    specs,
    train_dataset,
)
from tfprune.data.sources import tfds as tfds_source
from tfprune.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def _refuse(*args, **kwargs):
    raise OSError("network access is blocked in this test")


@pytest.fixture
def no_network(monkeypatch):
    """Makes every connection attempt fail at once."""
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    # TFDS downloads through requests, whose adapter retries failed connections with a backoff
    # of minutes in total: fail before the retry loop so a download attempt ends at once.
    requests_adapters = pytest.importorskip("requests.adapters")
    monkeypatch.setattr(requests_adapters.HTTPAdapter, "send", _refuse)


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


# ------------------------------------------------------------------------------------------------
# IDX files


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_folder(folder: Path, train_x, train_y, test_x, test_y) -> Path:
    """Writes the four MNIST-named IDX files: the train ones gzip'd, the test ones not."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(train_x)))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(train_y)))
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(test_x))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(test_y))
    return folder


def test_read_idx_handwritten_bytes(tmp_path):
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(0, 240, 20))
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(raw)
    images = data._read_idx(path, 3)
    np.testing.assert_array_equal(
        images, [[[0, 20, 40], [60, 80, 100]], [[120, 140, 160], [180, 200, 220]]]
    )
    assert images.dtype == np.uint8
    assert data._read_idx(path, 3, header_only=True) == (2, 2, 3)
    gz = tmp_path / "tiny-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(data._read_idx(gz, 3), images)


@pytest.mark.parametrize(
    "raw, message",
    [
        (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2]), "magic number"),  # labels magic, images expected
        (bytes([7, 7, 8, 3]) + bytes(12), "magic number"),
        (bytes([0, 0, 8, 3, 0, 0]), "truncated"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(11), "truncated"),
    ],
)
def test_read_idx_corrupt_file_names_it(tmp_path, raw, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as error:
        data._read_idx(path, 3)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_read_idx_truncated_gzip_names_it(tmp_path):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((4, 5, 5))))[:-12])
    with pytest.raises(DataError, match="bad-idx3-ubyte.gz"):
        data._read_idx(path, 3)


def test_idx_folder_in_data_dir_gives_exact_pixels(tmp_path):
    train_x = np.arange(2 * 3 * 3).reshape(2, 3, 3) * 10
    folder = _write_idx_folder(
        tmp_path / "mnist", train_x, np.array([7, 2]), np.full((1, 3, 3), 255), np.array([9])
    )
    assert dataset_info("mnist", data_dir=str(tmp_path)) == DatasetInfo(
        "mnist", (3, 3, 1), 10, 2, 1
    )
    assert dataset_info("mnist", data_dir=str(folder)).num_train == 2
    ((x, y),) = _batches(eval_dataset("mnist", 8, split="train", data_dir=str(folder)))
    # x / 255 in float32: one rounding, or two if taken as x * (1 / 255).
    np.testing.assert_allclose(x[..., 0], train_x / 255.0, **tolerance(np.float32, 2))
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, [7, 2])
    ((x, y),) = _batches(eval_dataset("mnist", 8, data_dir=str(folder)))
    np.testing.assert_array_equal(x, np.ones((1, 3, 3, 1), np.float32))
    np.testing.assert_array_equal(y, [9])


def test_idx_folder_with_missing_file_says_which(tmp_path):
    folder = _write_idx_folder(
        tmp_path, np.zeros((2, 3, 3)), np.zeros(2), np.zeros((1, 3, 3)), np.zeros(1)
    )
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        eval_dataset("mnist", 8, data_dir=str(folder))


def test_idx_label_out_of_range(tmp_path):
    folder = _write_idx_folder(
        tmp_path, np.zeros((2, 3, 3)), np.array([1, 12]), np.zeros((1, 3, 3)), np.zeros(1)
    )
    with pytest.raises(DataError, match="label 12"):
        eval_dataset("mnist", 8, split="train", data_dir=str(folder))


# ------------------------------------------------------------------------------------------------
# Fashion-MNIST offline (Debian's dataset-fashion-mnist)


def test_fashion_mnist_info():
    assert dataset_info("fashion_mnist") == DatasetInfo(
        "fashion_mnist", (28, 28, 1), 10, 60_000, 10_000
    )


def test_fashion_mnist_loads_with_network_blocked(no_network):
    x, y = next(iter(train_dataset("fashion_mnist", 256, seed=0)))
    assert x.shape == (256, 28, 28, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    batches = _batches(eval_dataset("fashion_mnist", 2500, limit=5000))
    assert [len(y) for _, y in batches] == [2500, 2500]
    for x, y in batches:
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
        assert 0 <= y.min() and y.max() <= 9
    assert set(np.concatenate([y for _, y in batches])) == set(range(10))
    x, y = pruning_data("fashion_mnist", 2, seed=0)
    assert x.shape == (20, 28, 28, 1)


def test_idx_path_never_imports_tfds_nor_connects():
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('blocked')\n"
        "socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse\n"
        "from tfprune import data\n"
        "next(iter(data.train_dataset('fashion_mnist', 64, seed=1, limit=256)))\n"
        "next(iter(data.eval_dataset('fashion_mnist', 64, limit=256)))\n"
        "data.pruning_data('fashion_mnist', 1, seed=1)\n"
        "data.dataset_info('fashion_mnist')\n"
        "assert 'tensorflow_datasets' not in sys.modules, 'tensorflow_datasets was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# Determinism of the training order


def test_same_seed_and_epoch_give_same_batches():
    first = next(iter(train_dataset("fashion_mnist", 128, seed=3, epoch=2)))
    again = next(iter(train_dataset("fashion_mnist", 128, seed=3, epoch=2)))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other_epoch = next(iter(train_dataset("fashion_mnist", 128, seed=3, epoch=3)))
    other_seed = next(iter(train_dataset("fashion_mnist", 128, seed=4, epoch=2)))
    assert not np.array_equal(first[0], other_epoch[0])
    assert not np.array_equal(first[0], other_seed[0])


def test_epoch_is_a_permutation_and_skip_batches_resumes_exactly():
    full = _batches(train_dataset("fashion_mnist", 100, seed=5, limit=1050))
    assert [len(y) for _, y in full] == [100] * 10 + [50]
    reference = _batches(eval_dataset("fashion_mnist", 1050, split="train", limit=1050))[0]
    np.testing.assert_array_equal(
        np.sort(np.concatenate([y for _, y in full])), np.sort(reference[1])
    )
    resumed = _batches(train_dataset("fashion_mnist", 100, seed=5, limit=1050, skip_batches=7))
    assert len(resumed) == 4
    for (x, y), (rx, ry) in zip(full[7:], resumed, strict=True):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)


# ------------------------------------------------------------------------------------------------
# Pruning data (SPEC §2)


def test_pruning_data_is_balanced_and_seeded():
    x, y = pruning_data("fashion_mnist", 10, seed=7)
    assert x.shape == (100, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.bincount(y, minlength=10).tolist() == [10] * 10
    assert not np.all(np.diff(y) >= 0), "examples should be shuffled, not sorted by class"
    assert 0.0 <= x.min() and x.max() <= 1.0
    x2, y2 = pruning_data("fashion_mnist", 10, seed=7)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = pruning_data("fashion_mnist", 10, seed=8)
    assert not np.array_equal(x, x3)


def test_pruning_data_too_few_examples(tmp_path):
    folder = _write_idx_folder(
        tmp_path, np.zeros((3, 2, 2)), np.array([0, 0, 1]), np.zeros((1, 2, 2)), np.zeros(1)
    )
    with pytest.raises(DataError, match="examples_per_class"):
        pruning_data("mnist", 1, seed=0, data_dir=str(folder))  # classes 2..9 have none


# ------------------------------------------------------------------------------------------------
# Augmentation functions


def _image(h=32, w=32, c=3, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0.1, 1.0, (h, w, c)), tf.float32)


def test_pad_crop_flip_is_a_shifted_window_of_the_zero_padded_image():
    image = _image()
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    windows = {
        (dy, dx, flip): window[:, ::-1] if flip else window
        for dy in range(9)
        for dx in range(9)
        for flip in (False, True)
        for window in [padded[dy : dy + 32, dx : dx + 32]]
    }
    seen = set()
    for i in range(40):
        seed = tf.constant([11, i], tf.int64)
        out = data._pad_crop_flip(image, seed).numpy()
        assert out.shape == (32, 32, 3)
        np.testing.assert_array_equal(out, data._pad_crop_flip(image, seed).numpy())
        match = [key for key, window in windows.items() if np.array_equal(out, window)]
        assert match, "output is not a crop (or mirrored crop) of the padded image"
        seen.add(match[0])
    assert len({(dy, dx) for dy, dx, _ in seen}) > 5
    assert {flip for _, _, flip in seen} == {False, True}


def test_flip_flips():
    image = _image(4, 5, 3)
    outputs = [data._pad_crop_flip(image, tf.constant([0, i]), pad=0).numpy() for i in range(20)]
    flipped = [np.array_equal(o, image.numpy()[:, ::-1]) for o in outputs]
    same = [np.array_equal(o, image.numpy()) for o in outputs]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert any(flipped) and any(same)


def test_random_resized_crop_and_center_crop_shapes():
    seed = tf.constant([1, 2], tf.int64)
    out = data._random_resized_crop_flip(_image(64, 64), seed, 64)
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, data._random_resized_crop_flip(_image(64, 64), seed, 64))
    assert data._random_resized_crop_flip(_image(300, 400), seed, 224).shape == (224, 224, 3)
    crop = data._resize_center_crop(_image(300, 400), 256, 224)
    assert crop.shape == (224, 224, 3)


class _FakeCifar(data._Source):
    """CIFAR-10's recipe on synthetic in-memory arrays, so no download is needed."""

    name = "cifar10"
    recipe = data._RECIPES["cifar10"]

    def __init__(self, n=50):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.labels = (np.arange(n) % 10).astype(np.int32)

    def info(self):
        return DatasetInfo("cifar10", (32, 32, 3), 10, len(self.labels), len(self.labels))

    def split(self, split):
        return data._Split(tf.constant(self.images), self.labels)


def test_cifar_pipeline_normalises_augments_and_resumes(monkeypatch):
    source = _FakeCifar()
    monkeypatch.setattr(pipeline, "open_source", lambda name, data_dir: source)
    ((x, y),) = _batches(eval_dataset("cifar10", 64))
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    # float32: x / 255 (2 roundings at most), mean and std rounded, the difference and the
    # quotient: 6. The difference cancels, so the error is held to (x / 255 + mean) / std.
    bounds = tolerance(np.float32, 6, scale=(1.0 + mean.max()) / std.min())
    np.testing.assert_allclose(x, (source.images / 255.0 - mean) / std, **bounds)
    full = _batches(train_dataset("cifar10", 8, seed=1, epoch=4))
    again = _batches(train_dataset("cifar10", 8, seed=1, epoch=4))
    resumed = _batches(train_dataset("cifar10", 8, seed=1, epoch=4, skip_batches=5))
    for a, b in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    plain = _batches(train_dataset("cifar10", 8, seed=1, epoch=4, augment=False))
    np.testing.assert_array_equal(plain[0][1], full[0][1])
    assert not np.array_equal(plain[0][0], full[0][0]), "augmentation changed nothing"


# ------------------------------------------------------------------------------------------------
# Tiny ImageNet folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny-imagenet-200 layout: 3 classes, 4 train JPEGs each, 6 val JPEGs."""
    root = tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # sorted: n01 -> 0, n02 -> 1, n03 -> 2
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")

    def jpeg(value, channels=3):
        pixels = tf.fill([64, 64, channels], tf.constant(value, tf.uint8))
        return tf.io.encode_jpeg(pixels, quality=100).numpy()

    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(4):
            channels = 1 if (wnid, i) == ("n03", 3) else 3  # Tiny ImageNet has grayscale JPEGs
            (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg(10 * i + 50, channels))
    lines = []
    for i, wnid in enumerate(["n03", "n01", "n02", "n02", "n01", "n03"]):
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(jpeg(40 * i))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tiny_imagenet_folder(tiny_folder):
    assert dataset_info("tiny_imagenet", data_dir=str(tiny_folder)) == DatasetInfo(
        "tiny_imagenet", (64, 64, 3), 3, 12, 6
    )
    assert dataset_info("tiny_imagenet", data_dir=str(tiny_folder.parent)).num_train == 12
    assert dataset_info("tiny_imagenet").num_classes == 200
    ((x, y),) = _batches(eval_dataset("tiny_imagenet", 16, data_dir=str(tiny_folder)))
    np.testing.assert_array_equal(y, [2, 0, 1, 1, 0, 2])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (np.arange(6)[:, None] * 40 / 255.0 - mean) / std
    np.testing.assert_allclose(x.mean(axis=(1, 2)), expected, atol=0.03)
    full = _batches(train_dataset("tiny_imagenet", 5, seed=0, data_dir=str(tiny_folder)))
    assert [x.shape for x, _ in full] == [(5, 64, 64, 3), (5, 64, 64, 3), (2, 64, 64, 3)]
    resumed = _batches(
        train_dataset("tiny_imagenet", 5, seed=0, skip_batches=1, data_dir=str(tiny_folder))
    )
    for a, b in zip(full[1:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    x, y = pruning_data("tiny_imagenet", 2, seed=0, data_dir=str(tiny_folder))
    assert x.shape == (6, 64, 64, 3) and np.bincount(y).tolist() == [2, 2, 2]


def test_tiny_imagenet_needs_its_folder(tmp_path):
    with pytest.raises(DataError, match="tiny-imagenet-200"):
        train_dataset("tiny_imagenet", 8, seed=0)
    with pytest.raises(DataError, match="tiny-imagenet-200"):
        eval_dataset("tiny_imagenet", 8, data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Errors


def test_unknown_dataset_name(tmp_path, no_network):
    with pytest.raises(DataError, match="unknown dataset 'cifar_10'.*cifar10"):
        dataset_info("cifar_10")
    with pytest.raises(DataError, match="unknown dataset"):
        train_dataset("no_such_dataset", 8, seed=0)
    with pytest.raises(DataError, match="not an image-classification dataset"):
        eval_dataset("imdb_reviews", 8, data_dir=str(tmp_path))


def test_dataset_not_on_disk_fails_fast_and_says_how_to_get_it(tmp_path, no_network):
    start = time.monotonic()
    with pytest.raises(DataError, match="mnist.*data_dir") as error:
        train_dataset("mnist", 8, seed=0, data_dir=str(tmp_path))
    assert time.monotonic() - start < 30
    assert "\n" not in str(error.value)
    # Not on disk, but known: its info needs neither the data nor the network.
    assert dataset_info("mnist", data_dir=str(tmp_path)).num_train == 60_000


def test_manual_download_dataset_says_where_to_put_files(tmp_path, no_network):
    with pytest.raises(DataError, match="ILSVRC2012_img_train.tar.*downloads/manual"):
        eval_dataset("imagenet2012", 8, data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: train_dataset("fashion_mnist", 0, seed=0), "batch_size"),
        (lambda: train_dataset("fashion_mnist", 2.5, seed=0), "batch_size"),
        (lambda: train_dataset("fashion_mnist", 8, seed=-1), "seed"),
        (lambda: train_dataset("fashion_mnist", 8, seed=0, epoch=-1), "epoch"),
        (lambda: train_dataset("fashion_mnist", 8, seed=0, limit=0), "limit"),
        (lambda: train_dataset("fashion_mnist", 8, seed=0, augment="yes"), "augment"),
        (lambda: train_dataset("fashion_mnist", 8, seed=0, skip_batches=10**6), "skip_batches"),
        (lambda: eval_dataset("fashion_mnist", 8, split="validation"), "split"),
        (lambda: pruning_data("fashion_mnist", 0, seed=0), "examples_per_class"),
        (lambda: eval_dataset("", 8), "dataset name"),
    ],
)
def test_bad_arguments_raise_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_normalize_flag_for_fashion_mnist():
    ((plain, _),) = _batches(eval_dataset("fashion_mnist", 100, limit=100))
    ((norm, _),) = _batches(eval_dataset("fashion_mnist", 100, limit=100, normalize=True))
    # From the same float32 x / 255: mean and std rounded, the difference and the quotient.
    expected = (plain.astype(np.float64) - 0.2860) / 0.3530
    bounds = tolerance(np.float32, 4, scale=(1.0 + 0.2860) / 0.3530)
    np.testing.assert_allclose(norm, expected, **bounds)


class _FakeImagenet(data._Source):
    """ImageNet's recipe on a stream of synthetic images of varying size."""

    name = "imagenet2012"
    recipe = data._RECIPES["imagenet2012"]
    in_memory = False

    def __init__(self):
        rng = np.random.default_rng(0)
        sizes = [(240 + 8 * i, 300 - 6 * i) for i in range(12)]
        self.images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
        self.labels = np.arange(12, dtype=np.int32) % 3

    def info(self):
        return DatasetInfo("imagenet2012", (224, 224, 3), 3, 12, 12)

    def stream(self, split, *, shuffle_key, limit):
        ds = tf.data.Dataset.from_generator(
            lambda: zip(self.images, self.labels, strict=True),
            output_signature=(
                tf.TensorSpec([None, None, 3], tf.uint8),
                tf.TensorSpec([], tf.int32),
            ),
        )
        ds = ds if limit is None else ds.take(limit)
        return ds if shuffle_key is None else ds.shuffle(64, seed=shuffle_key)


def test_streamed_pipeline_crops_to_224_and_resumes(monkeypatch):
    monkeypatch.setattr(pipeline, "open_source", lambda name, data_dir: _FakeImagenet())
    full = _batches(train_dataset("imagenet2012", 4, seed=2))
    assert [x.shape for x, _ in full] == [(4, 224, 224, 3)] * 3
    resumed = _batches(train_dataset("imagenet2012", 4, seed=2, skip_batches=2))
    np.testing.assert_array_equal(full[2][0], resumed[0][0])
    np.testing.assert_array_equal(full[2][1], resumed[0][1])
    ((x, y),) = _batches(eval_dataset("imagenet2012", 16, limit=5))
    assert x.shape == (5, 224, 224, 3)
    np.testing.assert_array_equal(y, [0, 1, 2, 0, 1])
    x, y = pruning_data("imagenet2012", 2, seed=0)
    assert x.shape == (6, 224, 224, 3) and np.bincount(y).tolist() == [2, 2, 2]
    with pytest.raises(DataError, match="examples_per_class"):
        pruning_data("imagenet2012", 5, seed=0)


# ------------------------------------------------------------------------------------------------
# A dataset that is not on disk: offline, fail within seconds and leave nothing behind

HOW = "prepare it once with TFDS on a machine with network access and pass that data_dir"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _route_through_proxy(monkeypatch, port: int) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")


class _FailingBuilder:
    """A TFDS builder of a dataset not on disk whose preparation writes parts, then fails."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = None

    def __init__(self, root: Path, url_infos=None):
        self.data_dir_root = str(root)
        self.url_infos = url_infos
        self.calls = 0

    def is_prepared(self):
        return False

    def download_and_prepare(self):
        self.calls += 1
        root = Path(self.data_dir_root)
        for path in (
            "downloads/cifar100/cifar-100-binary.tar.gz.tmp.f9a3",
            "downloads/mnist/new.tmp",
            "downloads/extracted/TAR_GZ.cifar-100/a/b.bin",
            "cifar100/incomplete.AFZA5V_3.0.2/cifar100-train.tfrecord-00000-of-00001",
        ):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(b"partial")
        raise ConnectionError("connection reset by peer")


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.is_file() and p.read_bytes() for p in root.rglob("*")}


def test_train_on_a_dataset_not_on_disk_fails_offline_in_seconds_and_writes_nothing(tmp_path):
    # Downloads go through a proxy that refuses every connection: offline on any machine.
    port = _closed_port()
    env = {k: v for k, v in _procs.ENV.items() if k.lower() != "no_proxy"}
    env.update(dict.fromkeys(PROXY_VARIABLES, f"http://127.0.0.1:{port}"))
    data_dir, run_dir = tmp_path / "tfds", tmp_path / "run"
    start = time.monotonic()
    proc = _procs.run(
        "tfprune.train",
        "--gin_bindings=experiment.dataset = 'cifar100'",
        "--gin_bindings=experiment.model = 'resnet20'",
        f"--gin_bindings=experiment.data_dir = '{data_dir}'",
        f"--output_dir={run_dir}",
        env=env,
        timeout=60,  # a guard against minutes of retries, not a benchmark
    )
    assert time.monotonic() - start < 60
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tfprune.train: error: cifar100 is not in {data_dir} and cannot be downloaded (no "
        f"connection to 127.0.0.1:{port}: Connection refused): {HOW}"
    )
    assert not run_dir.exists()
    assert not data_dir.exists()


def test_failed_tfds_preparation_removes_only_what_it_created(tmp_path):
    root = tmp_path / "tfds"
    for path in ("downloads/mnist/mnist.tar.gz", "downloads/extracted/OLD/x", "mnist/3.0.1/x"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"kept")
    before = _tree(root)
    builder = _FailingBuilder(root)
    with pytest.raises(DataError) as error:
        data._prepare(builder, "cifar100")
    assert builder.calls == 1
    assert str(error.value) == (
        f"cifar100 is not in {root} and TFDS could not prepare it (ConnectionError: connection "
        f"reset by peer): {HOW}"
    )
    assert _tree(root) == before
    # A data_dir that TFDS had to create goes entirely, with the folders above it.
    with pytest.raises(DataError):
        data._prepare(_FailingBuilder(tmp_path / "new" / "tfds"), "cifar100")
    assert not (tmp_path / "new").exists()


def test_download_is_tried_only_when_a_download_host_answers(tmp_path, monkeypatch):
    builder = _FailingBuilder(tmp_path / "tfds", {"https://data.example/cifar.tar.gz": None})
    closed = _closed_port()
    _route_through_proxy(monkeypatch, closed)
    with pytest.raises(DataError) as error:
        data._prepare(builder, "cifar100")
    assert builder.calls == 0
    assert f"cannot be downloaded (no connection to 127.0.0.1:{closed}: " in str(error.value)
    assert not (tmp_path / "tfds").exists()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _route_through_proxy(monkeypatch, listener.getsockname()[1])
        with pytest.raises(DataError, match="TFDS could not prepare it"):
            data._prepare(builder, "cifar100")
    assert builder.calls == 1


def test_prepared_data_is_used_without_a_connection_attempt(tmp_path, no_network):
    class Prepared(_FailingBuilder):
        def is_prepared(self):
            return True

    builder = Prepared(tmp_path, {"https://data.example/cifar.tar.gz": None})
    assert data._prepare(builder, "cifar100") is builder
    folder = _write_idx_folder(
        tmp_path / "mnist", np.zeros((3, 2, 2)), np.arange(3), np.zeros((1, 2, 2)), np.ones(1)
    )
    assert data.prepare("mnist", str(folder)) == DatasetInfo("mnist", (2, 2, 1), 10, 3, 1)


# ------------------------------------------------------------------------------------------------
# The table of known datasets, and describing a dataset without TensorFlow

PUBLISHED = {
    "mnist": ((28, 28, 1), 10, 60_000, 10_000),
    "fashion_mnist": ((28, 28, 1), 10, 60_000, 10_000),
    "cifar10": ((32, 32, 3), 10, 50_000, 10_000),
    "cifar100": ((32, 32, 3), 100, 50_000, 10_000),
    "tiny_imagenet": ((64, 64, 3), 200, 100_000, 10_000),
    "imagenet2012": ((224, 224, 3), 1000, 1_281_167, 50_000),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_known_dataset_not_on_disk_gets_its_published_sizes(name, tmp_path, no_network):
    expected = DatasetInfo(name, *PUBLISHED[name])
    assert data.spec(name).info == expected
    # Tiny ImageNet is described from its published sizes only when no folder is given.
    data_dir = None if name == "tiny_imagenet" else str(tmp_path)
    assert dataset_info(name, data_dir=data_dir) == expected


def test_unknown_name_lists_the_table_in_order(no_network):
    assert data.spec("cifar_10") is None
    with pytest.raises(DataError) as error:
        dataset_info("cifar_10")
    assert str(error.value).endswith(
        "? use mnist, fashion_mnist, cifar10, cifar100, tiny_imagenet, imagenet2012 or another "
        "TFDS image-classification dataset"
    )


def test_describing_a_dataset_imports_no_tensorflow(tmp_path):
    folder = _write_idx_folder(
        tmp_path / "idx", np.zeros((3, 4, 5)), np.arange(3), np.zeros((2, 4, 5)), np.arange(2)
    )
    empty = tmp_path / "tfds"
    empty.mkdir()
    code = (
        "import sys\n"
        # What `python -m tfprune.<command>` does: the package is imported while argv[0] is
        # "-m", and so without the Keras layers that `import tfprune` registers otherwise.
        "sys.argv[:1] = ['-m']\n"
        "from tfprune.data import dataset_info, spec\n"
        "print(dataset_info('fashion_mnist'))\n"
        f"print(dataset_info('cifar10', data_dir={str(empty)!r}))\n"
        f"print(dataset_info('mnist', data_dir={str(folder)!r}))\n"
        "print(spec('imagenet2012').info)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        repr(DatasetInfo("fashion_mnist", (28, 28, 1), 10, 60_000, 10_000)),
        repr(DatasetInfo("cifar10", (32, 32, 3), 10, 50_000, 10_000)),
        repr(DatasetInfo("mnist", (4, 5, 1), 10, 3, 2)),
        repr(DatasetInfo("imagenet2012", (224, 224, 3), 1000, 1_281_167, 50_000)),
    ]
    assert not any(empty.iterdir())


def test_tfds_folders_that_may_hold_the_data_are_left_to_tfds(tmp_path, monkeypatch):
    absent = tfds_source._surely_not_on_disk
    assert absent("cifar10", str(tmp_path))
    (tmp_path / "cifar10").mkdir()
    assert not absent("cifar10", str(tmp_path))
    assert not absent("cifar10", tmp_path)  # a Path as well as a str
    assert not absent("cifar100", "gs://bucket/tfds")
    # Without a data_dir: TFDS_DATA_DIR, unless TFDS is imported (folders may be registered).
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow_datasets", raising=False)
    assert not absent("cifar10", None)
    assert absent("cifar100", None)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.ModuleType("stand-in"))
    assert not absent("cifar100", None)


def test_a_dataset_read_by_an_existing_source_is_one_table_entry(tmp_path, monkeypatch):
    entry = dataclasses.replace(
        data.spec("mnist"), name="digits", sources=("idx",), how_to_get="add its IDX files"
    )
    monkeypatch.setitem(specs.SPECS, "digits", entry)
    for call in (
        lambda: dataset_info("digits", data_dir=str(tmp_path)),
        lambda: eval_dataset("digits", 8, data_dir=str(tmp_path)),
    ):
        with pytest.raises(DataError) as error:
            call()
        assert str(error.value) == f"digits is not on disk in {tmp_path}: add its IDX files"
    train_x, train_y = np.full((2, 3, 3), 51), np.array([4, 1])
    _write_idx_folder(tmp_path / "digits", train_x, train_y, np.zeros((1, 3, 3)), np.zeros(1))
    assert dataset_info("digits", str(tmp_path)) == DatasetInfo("digits", (3, 3, 1), 10, 2, 1)
    ((x, y),) = _batches(eval_dataset("digits", 8, split="train", data_dir=str(tmp_path)))
    np.testing.assert_allclose(x, np.full((2, 3, 3, 1), 0.2), **tolerance(np.float32, 2))
    np.testing.assert_array_equal(y, [4, 1])


def test_arrays_dataset_gives_the_batches_train_dataset_gives_for_the_same_examples():
    """Arrays in memory with a known dataset's recipe: the same order, preprocessing and
    augmentation as that dataset's own training batches (here the first 512 of
    Fashion-MNIST, read from its IDX files)."""
    folder = "/usr/share/datasets/fashion-mnist"
    images = data._read_idx(Path(folder) / "train-images-idx3-ubyte.gz", 3)[:512, :, :, None]
    labels = data._read_idx(Path(folder) / "train-labels-idx1-ubyte.gz", 1)[:512]
    ours = data.arrays_dataset(images, labels, 128, like="fashion_mnist", seed=3, epoch=2)
    theirs = data.train_dataset("fashion_mnist", 128, seed=3, epoch=2, limit=512)
    pairs = list(zip(ours, theirs, strict=True))
    assert len(pairs) == 4
    for (x, y), (x_ref, y_ref) in pairs:
        np.testing.assert_array_equal(x.numpy(), x_ref.numpy())
        np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
    with pytest.raises(DataError, match=r"images must be uint8 of shape \(n, 32, 32, 3\)"):
        data.arrays_dataset(images, labels, 128, like="cifar10", seed=0)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        data.arrays_dataset(images, labels + 10, 128, like="fashion_mnist", seed=0)
    with pytest.raises(ConfigError, match="like='nodata' is not a dataset of the table"):
        data.arrays_dataset(images, labels, 128, like="nodata", seed=0)
