"""What every source of examples provides: a `Source` class and the `Split` it holds."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from tfprune.data.specs import DatasetInfo, Recipe

if TYPE_CHECKING:
    import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Split:
    """One split held in memory: uint8 NHWC images and int32 labels."""

    images: tf.Tensor
    labels: np.ndarray


class Source:
    """A dataset on disk. In-memory sources implement `split`, streamed ones `stream`.

    A kind of source (a subclass named in `tfprune.data.sources.SOURCES`) is found by name with
    the class methods `open` and `describe`; a dataset's spec lists the kinds tried, in order.
    Finding and describing the data must not import TensorFlow where the data's files can be
    read without it; reading the examples may.
    """

    name: str
    recipe: Recipe
    in_memory: bool = True

    @classmethod
    def open(cls, name: str, data_dir: str | None) -> Source | None:
        """The dataset `name` as this kind of source reads it, preparing it if this kind can.

        Args:
            name: a checked dataset name.
            data_dir: the folder given by the user, or None.

        Returns:
            The source, or None when its data is not there and the next kind should be tried.

        Raises:
            DataError: the data is there but unusable, or missing and no other kind can read it.
        """
        raise NotImplementedError

    @classmethod
    def describe(cls, name: str, data_dir: str | None) -> DatasetInfo | None:
        """Like `open(name, data_dir).info()`, but never downloads (see `dataset_info`)."""
        source = cls.open(name, data_dir)
        return None if source is None else source.info()

    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def split(self, split: str) -> Split:
        raise NotImplementedError

    def stream(self, split: str, *, shuffle_key: int | None, limit: int | None) -> tf.data.Dataset:
        raise NotImplementedError

    def num_examples(self, split: str) -> int:
        info = self.info()
        return info.num_train if split == "train" else info.num_test
