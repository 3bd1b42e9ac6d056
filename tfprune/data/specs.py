"""The datasets known by name: one `DatasetSpec` each, in the table `SPECS`.

A spec holds what is known about a dataset before its data is on disk: its shape, classes and
published split sizes, its preprocessing (SPEC §5), the sources that read it, in order, and how
to get it. Reading this module needs neither TensorFlow nor the data, so that a sweep can be
planned on a machine without either. A dataset that an existing source reads is added by one
entry in `SPECS`.

Example:
    >>> spec("cifar10").info.num_train, spec("cifar10").recipe.augment
    (50000, 'pad_crop_flip')
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

# The end of the message when a dataset is neither on disk nor downloadable.
TFDS_HOW_TO_GET = (
    "prepare it once with TFDS on a machine with network access and pass that data_dir"
)


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
class Recipe:
    """How a dataset is preprocessed: shape, normalisation constants and augmentation.

    Args:
        input_shape: (height, width, channels) of one preprocessed example.
        mean: per-channel mean subtracted when normalising; None if the dataset has none.
        std: per-channel standard deviation divided by when normalising.
        normalize: whether mean/std normalisation is on by default (SPEC §5).
        augment: training augmentation: "none", "pad_crop_flip" or "random_resized_crop".
        eval_resize: shorter side before the evaluation center crop; None: no resize.
    """

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    normalize: bool
    augment: str
    eval_resize: int | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What is known about a dataset before its data is on disk.

    Args:
        name: dataset name.
        num_classes: number of classes.
        num_train: published size of the training split.
        num_test: published size of the test split.
        recipe: preprocessing and augmentation (the input shape included).
        sources: the sources that read it, tried in order: "idx" (the four IDX files),
            "tiny_imagenet" (a tiny-imagenet-200 folder), "tfds" (TensorFlow Datasets).
        installed_dirs: folders of a system package holding the files, searched after
            `data_dir`.
        how_to_get: the end of the message when the data is neither on disk nor downloadable.
        manual_files: for a dataset TFDS cannot download, the files to put in its manual folder.

    Example:
        >>> spec("imagenet2012").recipe.eval_resize
        256
    """

    name: str
    num_classes: int
    num_train: int
    num_test: int
    recipe: Recipe
    sources: tuple[str, ...] = ("tfds",)
    installed_dirs: tuple[Path, ...] = ()
    how_to_get: str = TFDS_HOW_TO_GET
    manual_files: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.recipe.input_shape

    @property
    def info(self) -> DatasetInfo:
        """The published shape and sizes, answered while the data is not on disk."""
        return DatasetInfo(
            self.name, self.input_shape, self.num_classes, self.num_train, self.num_test
        )


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# In the order the error message for an unknown name lists them.
SPECS = {
    s.name: s
    for s in (
        # MNIST-like constants are only used with normalize=True; SPEC §5 default is [0, 1].
        DatasetSpec(
            "mnist",
            num_classes=10,
            num_train=60_000,
            num_test=10_000,
            recipe=Recipe((28, 28, 1), (0.1307,), (0.3081,), normalize=False, augment="none"),
            sources=("idx", "tfds"),
            how_to_get="pass data_dir= a folder holding the four MNIST IDX files "
            "(train-images-idx3-ubyte.gz, ...), or prepare it once with TFDS on a machine with "
            "network access and pass that data_dir",
        ),
        DatasetSpec(
            "fashion_mnist",
            num_classes=10,
            num_train=60_000,
            num_test=10_000,
            recipe=Recipe((28, 28, 1), (0.2860,), (0.3530,), normalize=False, augment="none"),
            sources=("idx", "tfds"),
            installed_dirs=(Path("/usr/share/datasets/fashion-mnist"),),  # dataset-fashion-mnist
            how_to_get="apt-get install dataset-fashion-mnist, or pass data_dir= a folder "
            "holding the four Fashion-MNIST IDX files",
        ),
        DatasetSpec(
            "cifar10",
            num_classes=10,
            num_train=50_000,
            num_test=10_000,
            recipe=Recipe(
                (32, 32, 3),
                (0.4914, 0.4822, 0.4465),
                (0.2470, 0.2435, 0.2616),
                normalize=True,
                augment="pad_crop_flip",
            ),
        ),
        DatasetSpec(
            "cifar100",
            num_classes=100,
            num_train=50_000,
            num_test=10_000,
            recipe=Recipe(
                (32, 32, 3),
                (0.5071, 0.4865, 0.4409),
                (0.2673, 0.2564, 0.2762),
                normalize=True,
                augment="pad_crop_flip",
            ),
        ),
        DatasetSpec(
            "tiny_imagenet",
            num_classes=200,
            num_train=100_000,
            num_test=10_000,
            recipe=Recipe(
                (64, 64, 3),
                _IMAGENET_MEAN,
                _IMAGENET_STD,
                normalize=True,
                augment="random_resized_crop",
            ),
            sources=("tiny_imagenet",),
            how_to_get="unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip and pass "
            "data_dir=path/to/tiny-imagenet-200",
        ),
        DatasetSpec(
            "imagenet2012",
            num_classes=1000,
            num_train=1_281_167,
            num_test=50_000,
            recipe=Recipe(
                (224, 224, 3),
                _IMAGENET_MEAN,
                _IMAGENET_STD,
                normalize=True,
                augment="random_resized_crop",
                eval_resize=256,
            ),
            manual_files="ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org)",
        ),
    )
}


def spec(name: str) -> DatasetSpec | None:
    """The spec of a dataset known by name, without TensorFlow.

    Args:
        name: dataset name.

    Returns:
        Its `DatasetSpec`, or None for a name outside `SPECS` (it may still be a TFDS dataset).

    Example:
        >>> spec("fashion_mnist").num_classes, spec("svhn_cropped")
        (10, None)
    """
    return SPECS.get(name)
