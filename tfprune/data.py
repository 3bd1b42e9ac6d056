"""Image-classification datasets as deterministic `tf.data` pipelines.

Where the data comes from, in order:

- `mnist` and `fashion_mnist`: the four IDX files (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each gzip'd or
  not) in `data_dir/<name>/` or `data_dir/`, then, for Fashion-MNIST, in the folder of Debian's
  `dataset-fashion-mnist` package. Reading them needs neither the network nor TFDS.
- `tiny_imagenet`: the `tiny-imagenet-200` folder given as `data_dir`; its `val` split serves as
  the test split.
- Every other name, and MNIST/Fashion-MNIST without IDX files: TensorFlow Datasets (TFDS) in
  `data_dir` (TFDS' default folder if `None`). Prepared data is read offline; the network is tried
  only when the data is not on disk, and a failure raises `DataError` saying how to get the data.

Preprocessing (SPEC §5): MNIST-like data is scaled to [0, 1]; CIFAR-10/100 get fixed per-channel
mean/std normalisation and zero padding by 4 + random 32x32 crop + horizontal flip; ImageNet and
Tiny ImageNet get a random resized crop (scale 0.1-1, ratio 0.8-1.25) + flip for training, a resize
to 256 + center crop to 224 (ImageNet) or nothing (Tiny, already 64x64) for evaluation, and
ImageNet mean/std. Other TFDS datasets are scaled to [0, 1] without augmentation.

Determinism: the order of a training epoch is a pure function of `(seed, epoch)` and the
augmentation of an example a pure function of `(seed, epoch, position in the epoch)` (stateless
random ops), so a run resumed at any batch replays exactly the data it would have seen.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import gzip
import math
import os
import shutil
import socket
import struct
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfprune import streams
from tfprune.errors import ConfigError, DataError

_AUTOTUNE = tf.data.AUTOTUNE
_SPLITS = ("train", "test")
# Datasets whose training split (as uint8) is larger than this are streamed from TFDS files
# instead of being held in memory.
_MAX_IN_MEMORY_BYTES = 4 * 2**30
# Shuffle buffer of streamed datasets (ImageNet): files are also read in a seeded order.
_STREAM_SHUFFLE_BUFFER = 16_384

_IDX_NAMES = ("mnist", "fashion_mnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08
_DEBIAN_IDX_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
_HOW_TO_GET = {
    "fashion_mnist": "apt-get install dataset-fashion-mnist, or pass data_dir= a folder holding "
    "the four Fashion-MNIST IDX files",
    "mnist": "pass data_dir= a folder holding the four MNIST IDX files "
    "(train-images-idx3-ubyte.gz, ...), or prepare it once with TFDS on a machine with network "
    "access and pass that data_dir",
}

# Before TFDS downloads, one connection attempt of this many seconds to the download hosts (and
# TFDS' own bucket): offline, TFDS would retry for minutes before failing.
_PROBE_SECONDS = 5.0
_TFDS_BUCKET = "https://storage.googleapis.com"

_TINY = "tiny_imagenet"
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_FOLDER = "tiny-imagenet-200"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Shape and size of an image-classification dataset.

    Args:
        name: dataset name, as passed to the functions of this module.
        input_shape: (height, width, channels) of one preprocessed example.
        num_classes: number of classes; labels are in [0, num_classes).
        num_train: examples in the training split.
        num_test: examples in the test split (Tiny ImageNet: its `val` folder).

    Example:
        >>> dataset_info("fashion_mnist").input_shape
        (28, 28, 1)
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    num_train: int
    num_test: int


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """How a dataset is preprocessed: shape, normalisation constants and augmentation."""

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    normalize: bool
    augment: str  # "none", "pad_crop_flip" or "random_resized_crop"
    eval_resize: int | None = None  # shorter side before the center crop; None: identity


_RECIPES = {
    # MNIST-like constants are only used with normalize=True; SPEC §5 default is [0, 1].
    "mnist": _Recipe((28, 28, 1), (0.1307,), (0.3081,), False, "none"),
    "fashion_mnist": _Recipe((28, 28, 1), (0.2860,), (0.3530,), False, "none"),
    "cifar10": _Recipe(
        (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, "pad_crop_flip"
    ),
    "cifar100": _Recipe(
        (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, "pad_crop_flip"
    ),
    "imagenet2012": _Recipe(
        (224, 224, 3), _IMAGENET_MEAN, _IMAGENET_STD, True, "random_resized_crop", 256
    ),
    _TINY: _Recipe((64, 64, 3), _IMAGENET_MEAN, _IMAGENET_STD, True, "random_resized_crop"),
}

# Returned by `dataset_info` for a known dataset that is not on disk yet.
_KNOWN_INFO = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, 60_000, 10_000),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, 60_000, 10_000),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, 50_000, 10_000),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100, 50_000, 10_000),
    "imagenet2012": DatasetInfo("imagenet2012", (224, 224, 3), 1000, 1_281_167, 50_000),
    _TINY: DatasetInfo(_TINY, (64, 64, 3), 200, 100_000, 10_000),
}


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_int(what: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{what} must be {bound}, got {value!r}")
    return int(value)


def _check_limit(limit: Any) -> int | None:
    return None if limit is None else _check_int("limit", limit, 1)


def _check_split(split: Any) -> str:
    if split not in _SPLITS:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"dataset name must be a non-empty string, got {name!r}")
    if name in _RECIPES:
        return name
    known = _tfds().list_builders(with_community_datasets=False)
    if name not in known:
        close = difflib.get_close_matches(name, [*known, _TINY], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise DataError(
            f"unknown dataset {name!r}: {hint}use mnist, fashion_mnist, cifar10, cifar100, "
            f"{_TINY}, imagenet2012 or another TFDS image-classification dataset"
        )
    return name


def _tfds():
    """Imports tensorflow_datasets on first use: slow to import, and the IDX path needs none."""
    import tensorflow_datasets as tfds

    return tfds


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


# ---------------------------------------------------------------------------------------------
# Sources: where the examples of a split come from


@dataclasses.dataclass(frozen=True)
class _Split:
    """One split held in memory: uint8 NHWC images and int32 labels."""

    images: tf.Tensor
    labels: np.ndarray


class _Source:
    """A dataset on disk. In-memory sources implement `split`, streamed ones `stream`."""

    name: str
    recipe: _Recipe
    in_memory: bool = True

    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def split(self, split: str) -> _Split:
        raise NotImplementedError

    def stream(self, split: str, *, shuffle_key: int | None, limit: int | None) -> tf.data.Dataset:
        raise NotImplementedError

    def num_examples(self, split: str) -> int:
        info = self.info()
        return info.num_train if split == "train" else info.num_test


# --- IDX files (MNIST, Fashion-MNIST)


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_idx_header(raw: bytes, path: Path, ndim: int) -> tuple[int, ...]:
    header = 4 + 4 * ndim
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path} is not an IDX file of bytes with {ndim} dimensions (magic number "
            f"{raw[:4].hex() or 'missing'}): replace it with an intact copy"
        )
    if len(raw) < header:
        raise DataError(f"{path} is truncated in its IDX header: replace it with an intact copy")
    return struct.unpack(f">{ndim}I", raw[4:header])


def _read_idx(path: Path, ndim: int, *, header_only: bool = False) -> np.ndarray | tuple:
    """Reads an IDX file of unsigned bytes; returns its dims if `header_only`, else the array."""
    try:
        with _open_idx(path) as f:
            raw = f.read(4 + 4 * ndim) if header_only else f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {path} ({_first_line(e)}): replace it with an intact copy"
        ) from e
    dims = _parse_idx_header(raw, path, ndim)
    if header_only:
        return dims
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(dims):
        raise DataError(
            f"{path} holds {len(raw) - offset} data bytes but its header announces "
            f"{math.prod(dims)}: the file is truncated or corrupt, replace it with an intact copy"
        )
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_idx_files(name: str, data_dir: str | None) -> dict[str, tuple[Path, Path]] | None:
    folders = []
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(
                f"data_dir {data_dir!r} is not a directory: give the folder holding the {name} "
                "IDX files, or leave data_dir unset to use the installed copy"
            )
        folders += [Path(data_dir) / name, Path(data_dir)]
    if name in _DEBIAN_IDX_DIRS:
        folders.append(_DEBIAN_IDX_DIRS[name])
    for folder in folders:
        found = {
            split: tuple(_find_idx_file(folder, stem) for stem in stems)
            for split, stems in _IDX_FILES.items()
        }
        present = [p for pair in found.values() for p in pair if p is not None]
        if len(present) == 4:
            return found
        if present:
            missing = [
                stem
                for split, stems in _IDX_FILES.items()
                for stem, path in zip(stems, found[split], strict=True)
                if path is None
            ]
            raise DataError(
                f"{folder} holds only some IDX files of {name}: add {', '.join(missing)} "
                "(gzip'd or not)"
            )
    return None


@functools.lru_cache(maxsize=4)
def _idx_split(images_path: Path, labels_path: Path, num_classes: int) -> _Split:
    images = _read_idx(images_path, 3)
    labels = _read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels: "
            "use files of the same release"
        )
    if labels.size and labels.max() >= num_classes:
        raise DataError(
            f"{labels_path} has label {labels.max()}, outside [0, {num_classes}): "
            "replace it with an intact copy"
        )
    return _Split(tf.constant(images[..., None]), labels.astype(np.int32))


class _IdxSource(_Source):
    def __init__(self, name: str, files: dict[str, tuple[Path, Path]]):
        self.name = name
        self.files = files
        self.recipe = _RECIPES[name]

    def info(self) -> DatasetInfo:
        n, h, w = _read_idx(self.files["train"][0], 3, header_only=True)
        n_test = _read_idx(self.files["test"][0], 3, header_only=True)[0]
        return DatasetInfo(self.name, (h, w, 1), 10, n, n_test)

    def split(self, split: str) -> _Split:
        return _idx_split(*self.files[split], 10)


# --- Tiny ImageNet folder


def _find_tiny_root(data_dir: str | None) -> Path:
    if data_dir is None:
        raise DataError(
            f"{_TINY} is read from a folder: unzip {_TINY_URL} and pass "
            f"data_dir=path/to/{_TINY_FOLDER}"
        )
    for folder in (Path(data_dir), Path(data_dir) / _TINY_FOLDER):
        if (folder / "wnids.txt").is_file():
            return folder
    raise DataError(
        f"{data_dir} is not a {_TINY_FOLDER} folder (no wnids.txt): unzip {_TINY_URL} and pass "
        f"data_dir=path/to/{_TINY_FOLDER}"
    )


@functools.lru_cache(maxsize=4)
def _tiny_listing(root: Path, split: str) -> tuple[tuple[str, ...], np.ndarray, int]:
    """Returns (JPEG paths, int32 labels, number of classes); classes are the sorted wnids."""
    wnids = sorted({line.strip() for line in (root / "wnids.txt").read_text().split() if line})
    if not wnids:
        raise DataError(f"{root / 'wnids.txt'} lists no class: replace it with an intact copy")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for wnid in wnids:
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise DataError(f"{folder} is missing: unpack {_TINY_FOLDER} completely")
            files = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".JPEG"))
            paths += [str(folder / f) for f in files]
            labels += [index[wnid]] * len(files)
    else:
        annotations = root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DataError(f"{annotations} is missing: unpack {_TINY_FOLDER} completely")
        for line in annotations.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(
                    f"{annotations} has a line that names no class of wnids.txt: {line[:80]!r}"
                )
            paths.append(str(root / "val" / "images" / fields[0]))
            labels.append(index[fields[1]])
    if not paths:
        raise DataError(f"{root} has no {split} image: unpack {_TINY_FOLDER} completely")
    return tuple(paths), np.asarray(labels, np.int32), len(wnids)


@functools.lru_cache(maxsize=2)
def _tiny_split(root: Path, split: str) -> _Split:
    paths, labels, _ = _tiny_listing(root, split)
    size = _RECIPES[_TINY].input_shape

    def decode(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.ensure_shape(image, size)

    files = tf.data.Dataset.from_tensor_slices(list(paths))
    batches = files.map(decode, num_parallel_calls=_AUTOTUNE).batch(4096)
    try:
        images = np.concatenate([b.numpy() for b in batches])
    except tf.errors.OpError as e:
        raise DataError(
            f"cannot read the {split} images of {root} as {size[0]}x{size[1]} JPEGs "
            f"({_first_line(e)}): replace the damaged files"
        ) from e
    return _Split(tf.constant(images), labels)


class _TinySource(_Source):
    def __init__(self, root: Path):
        self.name = _TINY
        self.root = root
        self.recipe = _RECIPES[_TINY]

    def info(self) -> DatasetInfo:
        train, _, num_classes = _tiny_listing(self.root, "train")
        test, _, _ = _tiny_listing(self.root, "test")
        return DatasetInfo(_TINY, self.recipe.input_shape, num_classes, len(train), len(test))

    def split(self, split: str) -> _Split:
        return _tiny_split(self.root, split)


# --- TensorFlow Datasets


def _tfds_builder(name: str, data_dir: str | None):
    try:
        return _tfds().builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises many types here; all mean "cannot use this dataset"
        raise DataError(f"TFDS cannot open {name!r} in {data_dir} ({_first_line(e)})") from e


def _prepare(builder, name: str):
    """Returns `builder` with its data on disk, downloading only if it is not there yet."""
    if builder.is_prepared():
        return builder
    manual_dir = Path(builder.data_dir_root) / "downloads" / "manual"
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
        manual_dir.is_dir() and any(manual_dir.iterdir())
    ):
        what = (
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org)"
            if name == "imagenet2012"
            else "the files its TFDS catalog page lists"
        )
        raise DataError(
            f"{name} must be downloaded by hand: place {what} in {manual_dir} and run again, "
            "TFDS then prepares it offline"
        )
    root = Path(builder.data_dir_root)
    how = _HOW_TO_GET.get(
        name, "prepare it once with TFDS on a machine with network access and pass that data_dir"
    )
    unreachable = _unreachable(builder)
    if unreachable:
        raise DataError(
            f"{name} is not in {root} and cannot be downloaded ({unreachable}): {how}"
        )
    logging.info("%s is not prepared in %s: preparing it with TFDS", name, root)
    created = _Created(root)
    try:
        builder.download_and_prepare()
    except Exception as e:  # network, checksum, missing optional module, ...: all user-fixable
        created.remove()
        raise DataError(
            f"{name} is not in {root} and TFDS could not prepare it ({_first_line(e)}): {how}"
        ) from e
    return builder


def _unreachable(builder) -> str | None:
    """Why none of the hosts a TFDS download would use answers, or None if one does.

    None too when the dataset names no download URL: there is then nothing to try.
    """
    urls = list(builder.url_infos or ())
    if not urls:
        return None
    reasons = []
    for address in dict.fromkeys(_address(url) for url in (*urls, _TFDS_BUCKET)):
        try:
            socket.create_connection(address, timeout=_PROBE_SECONDS).close()
            return None
        except OSError as error:
            reasons.append(f"{address[0]}:{address[1]}: {error.strerror or error}")
    return "no connection to " + ", ".join(reasons)


def _address(url: str) -> tuple[str, int]:
    """The (host, port) a download of `url` connects to: its proxy's, if one is set for it."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default = {"https": 443, "ftp": 21}.get(parts.scheme, 80)
    return parts.hostname or "", parts.port or default


class _Created:
    """What a TFDS preparation adds under its data dir, to remove it again if it fails.

    Paths are compared up to three levels below the data dir (`downloads/<dataset>/<file>`,
    `<dataset>/incomplete.<id>`), and folders above it that did not exist go too.
    """

    _DEPTH = 3

    def __init__(self, root: Path):
        top = root
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        self.top = None if top.exists() else top
        self.root = root
        self.before = self._paths()

    def _paths(self) -> set[Path]:
        paths, level = set(), [self.root]
        for _ in range(self._DEPTH):
            level = [p for d in level if d.is_dir() and not d.is_symlink() for p in d.iterdir()]
            paths.update(level)
        return paths

    def remove(self) -> None:
        if self.top is not None:
            shutil.rmtree(self.top, ignore_errors=True)
            return
        new = self._paths() - self.before
        for path in sorted(new):
            if path.parent in new:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _tfds_recipe(name: str, builder) -> tuple[_Recipe, str, str]:
    """Returns the recipe and the (image, label) feature keys of a TFDS dataset."""
    tfds = _tfds()
    keys = builder.info.supervised_keys
    features = builder.info.features
    if (
        not keys
        or len(keys) != 2
        or not isinstance(keys[0], str)
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise DataError(f"{name} is not an image-classification dataset: pick one that is")
    if name in _RECIPES:
        return _RECIPES[name], keys[0], keys[1]
    shape = features[keys[0]].shape
    if None in shape:
        raise DataError(
            f"{name} has images of varying size, which only imagenet2012 supports: pick a "
            "dataset with fixed-size images"
        )
    return _Recipe(tuple(shape), None, None, False, "none"), keys[0], keys[1]


def _tfds_split_name(builder, name: str, split: str) -> str:
    splits = builder.info.splits
    for candidate in (split,) if split == "train" else ("test", "validation"):
        if candidate in splits:
            return candidate
    raise DataError(
        f"{name} has no {split} split (it has {', '.join(splits)}): pick another dataset"
    )


@functools.lru_cache(maxsize=4)
def _tfds_split(name: str, data_dir: str | None, split: str) -> _Split:
    builder = _tfds_builder(name, data_dir)
    _, image_key, label_key = _tfds_recipe(name, builder)
    arrays = _tfds().as_numpy(
        builder.as_dataset(split=_tfds_split_name(builder, name, split), batch_size=-1)
    )
    return _Split(tf.constant(arrays[image_key]), arrays[label_key].astype(np.int32))


class _TfdsSource(_Source):
    def __init__(self, name: str, data_dir: str | None, builder):
        self.name = name
        self.data_dir = data_dir
        self.builder = builder
        self.recipe, image_key, self.label_key = _tfds_recipe(name, builder)
        shape = builder.info.features[image_key].shape
        self.in_memory = None not in shape and (
            self.num_examples("train") * math.prod(shape) <= _MAX_IN_MEMORY_BYTES
        )

    def info(self) -> DatasetInfo:
        splits = self.builder.info.splits
        return DatasetInfo(
            self.name,
            self.recipe.input_shape,
            self.builder.info.features[self.label_key].num_classes,
            splits[_tfds_split_name(self.builder, self.name, "train")].num_examples,
            splits[_tfds_split_name(self.builder, self.name, "test")].num_examples,
        )

    def split(self, split: str) -> _Split:
        return _tfds_split(self.name, self.data_dir, split)

    def stream(self, split: str, *, shuffle_key: int | None, limit: int | None) -> tf.data.Dataset:
        tfds = _tfds()
        shuffle = shuffle_key is not None
        ds = self.builder.as_dataset(
            split=_tfds_split_name(self.builder, self.name, split),
            as_supervised=True,
            shuffle_files=shuffle and limit is None,
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_key),
        )
        if limit is not None:
            ds = ds.take(limit)
        if shuffle:
            ds = ds.shuffle(
                _STREAM_SHUFFLE_BUFFER, seed=shuffle_key, reshuffle_each_iteration=False
            )
        return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))


def _source(name: str, data_dir: str | None) -> _Source:
    name = _check_name(name)
    if name in _IDX_NAMES:
        files = _find_idx_files(name, data_dir)
        if files is not None:
            return _IdxSource(name, files)
    if name == _TINY:
        return _TinySource(_find_tiny_root(data_dir))
    builder = _tfds_builder(name, data_dir)
    _tfds_recipe(name, builder)  # a dataset of another kind fails here, before any download
    return _TfdsSource(name, data_dir, _prepare(builder, name))


# ---------------------------------------------------------------------------------------------
# Preprocessing and augmentation (float32 images in [0, 1], one example at a time)


def _pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """CIFAR augmentation: zero padding by `pad`, random crop back to size, random h-flip.

    Args:
        image: float32 [H, W, C] image.
        seed: int32/int64 [2] stateless seed; the same seed gives the same crop and flip.
        pad: pixels of zeros added on every side before cropping.

    Returns:
        float32 [H, W, C] image.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _random_resized_crop_flip(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    scale: tuple[float, float] = (0.1, 1.0),
    ratio: tuple[float, float] = (0.8, 1.25),
) -> tf.Tensor:
    """ImageNet augmentation: crop of random area and aspect ratio, resized to `size`, h-flip.

    If no crop within `scale`/`ratio` is found in 10 tries, the whole image is used.

    Args:
        image: float32 [H, W, C] image of any size.
        seed: int32/int64 [2] stateless seed.
        size: side of the square output.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's width / height.

    Returns:
        float32 [size, size, C] image.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=crop_seed,
        min_object_covered=scale[0],
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.image.resize(tf.slice(image, begin, extent), [size, size])
    return tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)


def _resize_center_crop(image: tf.Tensor, resize: int, size: int) -> tf.Tensor:
    """Resizes the shorter side to `resize` (aspect kept), then crops the `size`x`size` center."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.cast(tf.round(hw * (resize / tf.reduce_min(hw))), tf.int32)
    image = tf.image.resize(image, new_hw)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


class _Preprocess:
    """The preprocessing of one dataset, resolved from its recipe and the caller's flags."""

    def __init__(self, recipe: _Recipe, name: str, normalize: bool | None):
        if normalize is not None and not isinstance(normalize, bool):
            raise ConfigError(f"normalize must be True, False or None, got {normalize!r}")
        self.recipe = recipe
        self.normalize = recipe.normalize if normalize is None else normalize
        if self.normalize and recipe.mean is None:
            raise ConfigError(f"{name} has no mean/std constants: pass normalize=False or None")

    def finish(self, image: tf.Tensor) -> tf.Tensor:
        """uint8 or [0, 1] float image(s) → normalised float32, for one image or a batch."""
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        if self.normalize:
            image = (image - tf.constant(self.recipe.mean)) / tf.constant(self.recipe.std)
        return image

    def eval_one(self, image: tf.Tensor) -> tf.Tensor:
        image = tf.cast(image, tf.float32) / 255.0
        if self.recipe.eval_resize is not None:
            image = _resize_center_crop(image, self.recipe.eval_resize, self.recipe.input_shape[0])
        return self.finish(image)

    def train_one(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        image = tf.cast(image, tf.float32) / 255.0
        if self.recipe.augment == "pad_crop_flip":
            image = _pad_crop_flip(image, seed)
        elif self.recipe.augment == "random_resized_crop":
            image = _random_resized_crop_flip(image, seed, self.recipe.input_shape[0])
        return self.finish(image)


def _in_memory_examples(
    split: _Split,
    order: np.ndarray,
    batch_size: int,
    skip: int,
    prep: _Preprocess,
    augment_key: int | None,
) -> tf.data.Dataset:
    """Batches of `split` in `order` from example `skip` on, augmented if `augment_key` is set."""
    images, labels = split.images, tf.constant(split.labels)
    ds = tf.data.Dataset.from_tensor_slices((order[skip:], np.arange(skip, len(order))))
    if augment_key is None:
        # Every in-memory image already has the input shape: preprocess whole batches.
        ds = ds.batch(batch_size).map(
            lambda i, _: (prep.finish(tf.gather(images, i)), tf.gather(labels, i)),
            num_parallel_calls=_AUTOTUNE,
        )
    else:
        key = tf.constant(augment_key, tf.int64)
        ds = ds.map(
            lambda i, p: (
                prep.train_one(tf.gather(images, i), tf.stack([key, p])),
                tf.gather(labels, i),
            ),
            num_parallel_calls=_AUTOTUNE,
        ).batch(batch_size)
    return ds.prefetch(_AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Public API


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Shape, classes and split sizes of a dataset, read from disk when the data is there.

    A known dataset (mnist, fashion_mnist, cifar10, cifar100, imagenet2012, tiny_imagenet) that
    is not on disk yet gets its published sizes without touching the network; any other TFDS
    dataset is prepared first (which may download it).

    Args:
        name: dataset name: mnist, fashion_mnist, cifar10, cifar100, tiny_imagenet, imagenet2012
            or another TFDS image-classification dataset.
        data_dir: folder holding the data (IDX files, a tiny-imagenet-200 folder or a TFDS data
            dir); None for the defaults.

    Returns:
        The dataset's `DatasetInfo`.

    Example:
        >>> info = dataset_info("fashion_mnist")
        >>> info.num_classes, info.num_train, info.num_test
        (10, 60000, 10000)
    """
    name = _check_name(name)
    if name in _IDX_NAMES:
        files = _find_idx_files(name, data_dir)
        if files is not None:
            return _IdxSource(name, files).info()
    if name == _TINY:
        return _KNOWN_INFO[_TINY] if data_dir is None else _source(name, data_dir).info()
    builder = _tfds_builder(name, data_dir)
    if name in _KNOWN_INFO and not builder.is_prepared():
        return _KNOWN_INFO[name]
    return _TfdsSource(name, data_dir, _prepare(builder, name)).info()


def prepare(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Makes sure a dataset is on disk, downloading it with TFDS if needed, and describes it.

    Unlike `dataset_info`, which answers for a known dataset from its published sizes, this
    finds the files (call it before writing anything that needs them). The network is tried
    only when the data is not on disk: offline, it fails within seconds; a failed download
    leaves nothing behind in `data_dir`.

    Args:
        name: dataset name (see `dataset_info`).
        data_dir: folder holding the data (see `dataset_info`).

    Returns:
        The dataset's `DatasetInfo`, read from disk.

    Raises:
        DataError: the data is not on disk and cannot be downloaded; the message says how to
            get it.
    """
    return _source(name, data_dir).info()


def train_dataset(
    name: str,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    skip_batches: int = 0,
    augment: bool = True,
    data_dir: str | None = None,
    limit: int | None = None,
    normalize: bool | None = None,
) -> tf.data.Dataset:
    """One epoch of shuffled, augmented training batches.

    The order is a permutation that depends only on `(seed, epoch)`, and an example's
    augmentation only on `(seed, epoch, its position in the epoch)`, so the same arguments always
    give the same batches and `skip_batches=k` gives exactly batches k, k+1, ... of the epoch.
    (ImageNet, too large for memory, is streamed: its files are read in a seeded order through a
    seeded shuffle buffer of 16384 examples.)

    Args:
        name: dataset name (see `dataset_info`).
        batch_size: examples per batch; the last batch may be smaller.
        seed: non-negative integer seed of the run.
        epoch: index of the epoch (0-based).
        skip_batches: batches of this epoch to skip, to resume mid-epoch.
        augment: apply the dataset's training augmentation (none for grayscale datasets).
        data_dir: folder holding the data (see `dataset_info`).
        limit: keep only the first `limit` training examples (before shuffling).
        normalize: mean/std normalisation; None for the dataset's default (SPEC §5).

    Returns:
        A `tf.data.Dataset` of (x float32 [B, H, W, C], y int32 [B]).

    Example:
        >>> ds = train_dataset("fashion_mnist", 128, seed=0, epoch=3)
        >>> x, y = next(iter(ds))
        >>> x.shape, y.dtype
        (TensorShape([128, 28, 28, 1]), tf.int32)
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    epoch = _check_int("epoch", epoch, 0)
    skip_batches = _check_int("skip_batches", skip_batches, 0)
    limit = _check_limit(limit)
    if not isinstance(augment, bool):
        raise ConfigError(f"augment must be True or False, got {augment!r}")
    source = _source(name, data_dir)
    prep = _Preprocess(source.recipe, source.name, normalize)
    n = source.num_examples("train")
    n = n if limit is None else min(n, limit)
    if skip_batches > math.ceil(n / batch_size):
        raise ConfigError(
            f"skip_batches={skip_batches} is past the end of an epoch of "
            f"{math.ceil(n / batch_size)} batches: resume from a step inside the epoch"
        )
    key = streams.key31(seed, "augmentation", epoch)
    augmenting = augment and source.recipe.augment != "none"
    skip = skip_batches * batch_size
    if source.in_memory:
        order = streams.generator(seed, "data_order", epoch).permutation(n)
        return _in_memory_examples(
            source.split("train"), order, batch_size, skip, prep, key if augmenting else None
        )
    shuffle_key = streams.key31(seed, "data_order", epoch)
    ds = source.stream("train", shuffle_key=shuffle_key, limit=limit).enumerate().skip(skip)
    tf_key = tf.constant(key, tf.int64)
    ds = ds.map(
        lambda p, xy: (
            prep.train_one(xy[0], tf.stack([tf_key, p])) if augmenting else prep.eval_one(xy[0]),
            xy[1],
        ),
        num_parallel_calls=_AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(_AUTOTUNE)


def eval_dataset(
    name: str,
    batch_size: int,
    *,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    normalize: bool | None = None,
) -> tf.data.Dataset:
    """Batches of a split in its stored order, without augmentation.

    Args:
        name: dataset name (see `dataset_info`).
        batch_size: examples per batch; the last batch may be smaller.
        split: "test" (Tiny ImageNet: its val folder; ImageNet: its validation split) or "train".
        data_dir: folder holding the data (see `dataset_info`).
        limit: keep only the first `limit` examples.
        normalize: mean/std normalisation; None for the dataset's default (SPEC §5).

    Returns:
        A `tf.data.Dataset` of (x float32 [B, H, W, C], y int32 [B]).

    Example:
        >>> acc = model.evaluate(eval_dataset("fashion_mnist", 1000))
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    split = _check_split(split)
    limit = _check_limit(limit)
    source = _source(name, data_dir)
    prep = _Preprocess(source.recipe, source.name, normalize)
    if source.in_memory:
        n = source.num_examples(split)
        order = np.arange(n if limit is None else min(n, limit))
        return _in_memory_examples(source.split(split), order, batch_size, 0, prep, None)
    ds = source.stream(split, shuffle_key=None, limit=limit)
    ds = ds.map(lambda x, y: (prep.eval_one(x), y), num_parallel_calls=_AUTOTUNE)
    return ds.batch(batch_size).prefetch(_AUTOTUNE)


def pruning_data(
    name: str,
    examples_per_class: int = 10,
    *,
    seed: int,
    data_dir: str | None = None,
    normalize: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The examples SNIP and GraSP score with (SPEC §2): N per class from the training split.

    The examples are drawn by `seed` (same seed, same examples), exactly `examples_per_class` of
    every class, preprocessed as for evaluation (no augmentation) and returned in a seeded
    shuffled order. (ImageNet, too large to index, takes the first N of each class met in a
    seeded shuffled stream.)

    Args:
        name: dataset name (see `dataset_info`).
        examples_per_class: N, examples of each class.
        seed: non-negative integer seed of the run.
        data_dir: folder holding the data (see `dataset_info`).
        normalize: mean/std normalisation; None for the dataset's default (SPEC §5).

    Returns:
        (x float32 [N * classes, H, W, C], y int32 [N * classes]).

    Example:
        >>> x, y = pruning_data("fashion_mnist", 10, seed=0)
        >>> x.shape, np.bincount(y).tolist()
        ((100, 28, 28, 1), [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    per_class = _check_int("examples_per_class", examples_per_class, 1)
    seed = _check_int("seed", seed, 0)
    source = _source(name, data_dir)
    prep = _Preprocess(source.recipe, source.name, normalize)
    num_classes = source.info().num_classes
    rng = streams.generator(seed, "pruning_data")
    if source.in_memory:
        split = source.split("train")
        counts = np.bincount(split.labels, minlength=num_classes)
        chosen = []
        for c in range(num_classes):
            if counts[c] < per_class:
                raise _too_few(source.name, c, counts[c], per_class)
            chosen.append(rng.choice(np.flatnonzero(split.labels == c), per_class, replace=False))
        index = rng.permutation(np.concatenate(chosen))
        x = prep.finish(tf.gather(split.images, index)).numpy()
        return x.astype(np.float32), split.labels[index]
    return _pruning_data_streamed(source, prep, per_class, num_classes, rng)


def _too_few(name: str, label: int, count: int, wanted: int) -> DataError:
    return DataError(
        f"class {label} of {name} has only {count} training examples, fewer than "
        f"examples_per_class={wanted}: lower examples_per_class"
    )


def _pruning_data_streamed(
    source: _Source,
    prep: _Preprocess,
    per_class: int,
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    key = int(rng.integers(2**31))
    taken: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    missing = num_classes
    for image, label in source.stream("train", shuffle_key=key, limit=None):
        c = int(label)
        if len(taken[c]) < per_class:
            taken[c].append(prep.eval_one(image).numpy())
            missing -= len(taken[c]) == per_class
            if not missing:
                break
    for c, images in taken.items():
        if len(images) < per_class:
            raise _too_few(source.name, c, len(images), per_class)
    x = np.stack([im for c in range(num_classes) for im in taken[c]]).astype(np.float32)
    y = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    order = rng.permutation(len(y))
    return x[order], y[order]
