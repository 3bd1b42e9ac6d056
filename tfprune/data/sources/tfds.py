"""Datasets from TensorFlow Datasets (TFDS), in `data_dir` or TFDS' default folder.

Prepared data is read offline; the network is tried only when the data is not on disk, and a
failure raises `DataError` saying how to get the data. Datasets larger than 4 GiB as uint8
(ImageNet) are streamed from the TFDS files instead of being held in memory. TFDS, slow to
import, is imported on first use, and not at all to describe a known dataset that is not on
disk.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from tfprune.data.checks import first_line
from tfprune.data.sources import download
from tfprune.data.sources.base import Source, Split
from tfprune.data.specs import TFDS_HOW_TO_GET, DatasetInfo, Recipe, spec
from tfprune.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf

# Datasets whose training split (as uint8) is larger than this are streamed from TFDS files
# instead of being held in memory.
_MAX_IN_MEMORY_BYTES = 4 * 2**30
# Shuffle buffer of streamed datasets (ImageNet): files are also read in a seeded order.
_STREAM_SHUFFLE_BUFFER = 16_384


def _tfds():
    """Imports tensorflow_datasets on first use: slow to import, and the IDX path needs none."""
    import tensorflow_datasets as tfds

    return tfds


def builder_names() -> list[str]:
    """The names of TFDS' own datasets (community datasets left out)."""
    return _tfds().list_builders(with_community_datasets=False)


def _builder(name: str, data_dir: str | None):
    try:
        return _tfds().builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises many types here; all mean "cannot use this dataset"
        raise DataError(f"TFDS cannot open {name!r} in {data_dir} ({first_line(e)})") from e


def _surely_not_on_disk(name: str, data_dir: str | None) -> bool:
    """Whether TFDS would find no prepared copy of `name`, told without importing TFDS.

    TFDS looks in `<data_dir>/<name>/`, or without a data_dir in `$TFDS_DATA_DIR` (default
    `~/tensorflow_datasets`) and the folders registered with it. Only a local folder that has
    no `<name>` entry gives True; anything else is left to TFDS.
    """
    if data_dir is None and "tensorflow_datasets" in sys.modules:
        return False  # folders may have been registered with it
    if data_dir is None:
        root = os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
    else:
        root = os.fspath(data_dir)
    if "://" in root:
        return False
    try:
        return not (Path(root) / name).exists()
    except OSError:  # unreadable: TFDS decides, as for data it may find
        return False


def _prepare(builder, name: str):
    """Returns `builder` with its data on disk, downloading only if it is not there yet."""
    if builder.is_prepared():
        return builder
    known = spec(name)
    manual_dir = Path(builder.data_dir_root) / "downloads" / "manual"
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
        manual_dir.is_dir() and any(manual_dir.iterdir())
    ):
        what = (known and known.manual_files) or "the files its TFDS catalog page lists"
        raise DataError(
            f"{name} must be downloaded by hand: place {what} in {manual_dir} and run again, "
            "TFDS then prepares it offline"
        )
    root = Path(builder.data_dir_root)
    how = known.how_to_get if known else TFDS_HOW_TO_GET
    unreachable = download.unreachable(list(builder.url_infos or ()))
    if unreachable:
        raise DataError(f"{name} is not in {root} and cannot be downloaded ({unreachable}): {how}")
    logging.info("%s is not prepared in %s: preparing it with TFDS", name, root)
    created = download.Created(root)
    try:
        builder.download_and_prepare()
    except Exception as e:  # network, checksum, missing optional module, ...: all user-fixable
        created.remove()
        raise DataError(
            f"{name} is not in {root} and TFDS could not prepare it ({first_line(e)}): {how}"
        ) from e
    return builder


def _recipe(name: str, builder) -> tuple[Recipe, str, str]:
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
    known = spec(name)
    if known is not None:
        return known.recipe, keys[0], keys[1]
    shape = features[keys[0]].shape
    if None in shape:
        raise DataError(
            f"{name} has images of varying size, which only imagenet2012 supports: pick a "
            "dataset with fixed-size images"
        )
    return Recipe(tuple(shape), None, None, False, "none"), keys[0], keys[1]


def _split_name(builder, name: str, split: str) -> str:
    splits = builder.info.splits
    for candidate in (split,) if split == "train" else ("test", "validation"):
        if candidate in splits:
            return candidate
    raise DataError(
        f"{name} has no {split} split (it has {', '.join(splits)}): pick another dataset"
    )


@functools.lru_cache(maxsize=4)
def _split(name: str, data_dir: str | None, split: str) -> Split:
    import tensorflow as tf  # imported by TFDS already; here for the tensor only

    builder = _builder(name, data_dir)
    _, image_key, label_key = _recipe(name, builder)
    arrays = _tfds().as_numpy(
        builder.as_dataset(split=_split_name(builder, name, split), batch_size=-1)
    )
    return Split(tf.constant(arrays[image_key]), arrays[label_key].astype(np.int32))


class TfdsSource(Source):
    """A prepared TFDS dataset: in memory if it fits, streamed from its files otherwise."""

    def __init__(self, name: str, data_dir: str | None, builder):
        self.name = name
        self.data_dir = data_dir
        self.builder = builder
        self.recipe, image_key, self.label_key = _recipe(name, builder)
        shape = builder.info.features[image_key].shape
        self.in_memory = None not in shape and (
            self.num_examples("train") * math.prod(shape) <= _MAX_IN_MEMORY_BYTES
        )

    @classmethod
    def open(cls, name: str, data_dir: str | None) -> TfdsSource:
        builder = _builder(name, data_dir)
        _recipe(name, builder)  # a dataset of another kind fails here, before any download
        return cls(name, data_dir, _prepare(builder, name))

    @classmethod
    def describe(cls, name: str, data_dir: str | None) -> DatasetInfo:
        known = spec(name)
        if known is not None and _surely_not_on_disk(name, data_dir):
            return known.info
        builder = _builder(name, data_dir)
        if known is not None and not builder.is_prepared():
            return known.info
        return cls(name, data_dir, _prepare(builder, name)).info()

    def info(self) -> DatasetInfo:
        splits = self.builder.info.splits
        return DatasetInfo(
            self.name,
            self.recipe.input_shape,
            self.builder.info.features[self.label_key].num_classes,
            splits[_split_name(self.builder, self.name, "train")].num_examples,
            splits[_split_name(self.builder, self.name, "test")].num_examples,
        )

    def split(self, split: str) -> Split:
        return _split(self.name, self.data_dir, split)

    def stream(self, split: str, *, shuffle_key: int | None, limit: int | None) -> tf.data.Dataset:
        import tensorflow as tf  # imported by TFDS already; here for the cast only

        tfds = _tfds()
        shuffle = shuffle_key is not None
        ds = self.builder.as_dataset(
            split=_split_name(self.builder, self.name, split),
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
