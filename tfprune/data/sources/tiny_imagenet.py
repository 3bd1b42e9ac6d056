"""Tiny ImageNet from its unzipped `tiny-imagenet-200` folder; its `val` split is the test split.

Classes are the sorted wnids of `wnids.txt`. Listing the folder needs no TensorFlow; decoding the
JPEGs does.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from tfprune.data.checks import first_line
from tfprune.data.sources.base import Source, Split
from tfprune.data.specs import SPECS, DatasetInfo
from tfprune.errors import DataError

_NAME = "tiny_imagenet"
_FOLDER = "tiny-imagenet-200"


def _find_root(data_dir: str | None) -> Path:
    how = SPECS[_NAME].how_to_get
    if data_dir is None:
        raise DataError(f"{_NAME} is read from a folder: {how}")
    for folder in (Path(data_dir), Path(data_dir) / _FOLDER):
        if (folder / "wnids.txt").is_file():
            return folder
    raise DataError(f"{data_dir} is not a {_FOLDER} folder (no wnids.txt): {how}")


@functools.lru_cache(maxsize=4)
def _listing(root: Path, split: str) -> tuple[tuple[str, ...], np.ndarray, int]:
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
                raise DataError(f"{folder} is missing: unpack {_FOLDER} completely")
            files = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".JPEG"))
            paths += [str(folder / f) for f in files]
            labels += [index[wnid]] * len(files)
    else:
        annotations = root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DataError(f"{annotations} is missing: unpack {_FOLDER} completely")
        for line in annotations.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(
                    f"{annotations} has a line that names no class of wnids.txt: {line[:80]!r}"
                )
            paths.append(str(root / "val" / "images" / fields[0]))
            labels.append(index[fields[1]])
    if not paths:
        raise DataError(f"{root} has no {split} image: unpack {_FOLDER} completely")
    return tuple(paths), np.asarray(labels, np.int32), len(wnids)


@functools.lru_cache(maxsize=2)
def _split(root: Path, split: str) -> Split:
    import tensorflow as tf  # only decoding the images needs it, not listing them

    paths, labels, _ = _listing(root, split)
    size = SPECS[_NAME].input_shape

    def decode(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.ensure_shape(image, size)

    files = tf.data.Dataset.from_tensor_slices(list(paths))
    batches = files.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
    try:
        images = np.concatenate([b.numpy() for b in batches])
    except tf.errors.OpError as e:
        raise DataError(
            f"cannot read the {split} images of {root} as {size[0]}x{size[1]} JPEGs "
            f"({first_line(e)}): replace the damaged files"
        ) from e
    return Split(tf.constant(images), labels)


class TinyImagenetSource(Source):
    """A tiny-imagenet-200 folder, decoded into memory."""

    def __init__(self, root: Path):
        self.name = _NAME
        self.root = root
        self.recipe = SPECS[_NAME].recipe

    @classmethod
    def open(cls, name: str, data_dir: str | None) -> TinyImagenetSource:
        return cls(_find_root(data_dir))

    @classmethod
    def describe(cls, name: str, data_dir: str | None) -> DatasetInfo:
        return SPECS[_NAME].info if data_dir is None else cls.open(name, data_dir).info()

    def info(self) -> DatasetInfo:
        train, _, num_classes = _listing(self.root, "train")
        test, _, _ = _listing(self.root, "test")
        return DatasetInfo(self.name, self.recipe.input_shape, num_classes, len(train), len(test))

    def split(self, split: str) -> Split:
        return _split(self.root, split)
