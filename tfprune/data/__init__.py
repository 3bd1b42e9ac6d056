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

The package: `specs` (the table of known datasets, `DatasetSpec`, `DatasetInfo`), `sources` (one
module per kind of source, `dataset_info`, `prepare`), `pipeline` (preprocessing, augmentation
and the training, evaluation and pruning datasets, SPEC §5) and `checks`. Importing it, `spec`,
and `dataset_info` for the IDX datasets or a known dataset not on disk need no TensorFlow; the
pipeline functions import it on first use (PEP 562).

Example:
    >>> from tfprune import data
    >>> data.spec("cifar10").num_classes
    10
    >>> x, y = next(iter(data.train_dataset("fashion_mnist", 128, seed=0)))
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from tfprune.data.sources import dataset_info, prepare
from tfprune.data.specs import SPECS, DatasetInfo, DatasetSpec, spec

# Name -> (module, name there) of what is imported on first use: the pipeline imports TensorFlow.
# The underscored names are those of the former single module that tests and
# scripts/benchmark.py still read.
_LAZY = {
    **{
        name: ("tfprune.data.pipeline", name)
        for name in (
            "arrays_dataset",
            "train_dataset",
            "eval_dataset",
            "pruning_data",
            "_Preprocess",
            "_in_memory_examples",
            "_pad_crop_flip",
            "_random_resized_crop_flip",
            "_resize_center_crop",
        )
    },
    "_Source": ("tfprune.data.sources.base", "Source"),
    "_Split": ("tfprune.data.sources.base", "Split"),
    "_read_idx": ("tfprune.data.sources.idx", "_read_idx"),
    "_prepare": ("tfprune.data.sources.tfds", "_prepare"),
}
_RECIPES = MappingProxyType({name: s.recipe for name, s in SPECS.items()})

__all__ = [
    "DatasetInfo",
    "arrays_dataset",
    "DatasetSpec",
    "dataset_info",
    "eval_dataset",
    "prepare",
    "pruning_data",
    "spec",
    "train_dataset",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfprune.data' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
