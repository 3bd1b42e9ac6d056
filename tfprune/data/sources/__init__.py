"""Where the examples of a dataset come from: one kind of source per module.

A dataset's spec lists the kinds of source that read it, tried in order (`mnist`: its IDX files,
then TFDS); a name outside the table is a TFDS dataset. A new kind of source is one module with
a `Source` subclass, named once in `SOURCES`.
"""

from __future__ import annotations

import difflib

from tfprune.data.sources.base import Source
from tfprune.data.sources.idx import IdxSource
from tfprune.data.sources.tfds import TfdsSource, builder_names
from tfprune.data.sources.tiny_imagenet import TinyImagenetSource
from tfprune.data.specs import SPECS, DatasetInfo, spec
from tfprune.errors import ConfigError, DataError

SOURCES: dict[str, type[Source]] = {
    "idx": IdxSource,
    "tiny_imagenet": TinyImagenetSource,
    "tfds": TfdsSource,
}


def check_name(name: object) -> str:
    """`name` if it names a dataset of `SPECS` or of TFDS' catalogue.

    Only a name outside `SPECS` imports TFDS (and TensorFlow) to look it up.

    Raises:
        ConfigError: `name` is not a non-empty string.
        DataError: no dataset has this name; the message suggests close ones.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"dataset name must be a non-empty string, got {name!r}")
    if spec(name) is not None:
        return name
    known = builder_names()
    if name not in known:
        close = difflib.get_close_matches(name, sorted({*known, *SPECS}), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise DataError(
            f"unknown dataset {name!r}: {hint}use {', '.join(SPECS)} or another TFDS "
            "image-classification dataset"
        )
    return name


def _kinds(name: str) -> list[type[Source]]:
    known = spec(name)
    return [SOURCES[kind] for kind in (known.sources if known else ("tfds",))]


def _not_found(name: str, data_dir: str | None) -> DataError:
    """For a spec whose every source left the dataset to the next one."""
    where = "" if data_dir is None else f" in {data_dir}"
    return DataError(f"{name} is not on disk{where}: {spec(name).how_to_get}")


def open_source(name: str, data_dir: str | None) -> Source:
    """The source of dataset `name`, preparing (downloading) its data if needed.

    Args:
        name: dataset name (see `dataset_info`).
        data_dir: folder holding the data (see `dataset_info`).

    Returns:
        The first source of the dataset's spec that has the data.

    Raises:
        ConfigError, DataError: the name is not a dataset, or its data cannot be had.
    """
    name = check_name(name)
    for kind in _kinds(name):
        source = kind.open(name, data_dir)
        if source is not None:
            return source
    raise _not_found(name, data_dir)


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Shape, classes and split sizes of a dataset, read from disk when the data is there.

    A known dataset (mnist, fashion_mnist, cifar10, cifar100, imagenet2012, tiny_imagenet) that
    is not on disk yet gets its published sizes without touching the network; any other TFDS
    dataset is prepared first (which may download it). Neither needs TensorFlow for the IDX
    datasets nor for a known dataset that is not on disk.

    Args:
        name: dataset name: mnist, fashion_mnist, cifar10, cifar100, tiny_imagenet, imagenet2012
            or another TFDS image-classification dataset.
        data_dir: folder holding the data (IDX files, a tiny-imagenet-200 folder or a TFDS data
            dir); None for the defaults.

    Returns:
        The dataset's `DatasetInfo`.

    Raises:
        ConfigError, DataError: the name is not a dataset, or its data is damaged or cannot be
            had.

    Example:
        >>> info = dataset_info("fashion_mnist")
        >>> info.num_classes, info.num_train, info.num_test
        (10, 60000, 10000)
    """
    name = check_name(name)
    for kind in _kinds(name):
        info = kind.describe(name, data_dir)
        if info is not None:
            return info
    raise _not_found(name, data_dir)


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
    return open_source(name, data_dir).info()
