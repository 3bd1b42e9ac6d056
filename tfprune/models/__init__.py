"""The networks of the paper, every Dense/Conv2D kernel of them prunable.

Adding a network is one module with its builder and one line in `MODELS`.

Each builder returns a built functional `keras.Model` that outputs logits, whose layers have
deterministic, unique names, so that kernel variable paths (which address masks) are the same
in every build.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from tfprune.errors import ConfigError
from tfprune.models._args import check_args

# Each network: its builder, imported when it builds (Keras is not needed to name or check one).
MODELS: dict[str, str] = {
    "lenet_300_100": "tfprune.models.lenet:lenet_300_100",
    "resnet20": "tfprune.models.resnet_cifar:resnet20",
    "vgg16": "tfprune.models.vgg_cifar:vgg16",
    "resnet18": "tfprune.models.resnet_imagenet:resnet18",
    "resnet50": "tfprune.models.resnet_imagenet:resnet50",
}
# The smallest input height and width a network takes (VGG-16: four 2x2 max pools; the test
# of the models checks it against `vgg_cifar.MIN_SIDE`).
MIN_SIDE: dict[str, int] = {"vgg16": 16}


def builder(name: str):
    """The function that builds network `name` (imports its module, and Keras)."""
    check_name(name)
    module, _, function = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def check_name(name: str) -> str:
    """Returns `name` after checking it names a network.

    Raises:
        ConfigError: naming the known networks.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    return name


def names() -> list[str]:
    """Returns the registered model names, sorted.

    Example:

    >>> names()
    ['lenet_300_100', 'resnet18', 'resnet20', 'resnet50', 'vgg16']
    """
    return sorted(MODELS)


def build(name: str, input_shape: Sequence[int], num_classes: int):
    """Builds a registered network with freshly initialised weights and all-ones masks.

    Weights are drawn from Keras' global seed: call `keras.utils.set_random_seed` first for a
    reproducible model.

    Args:
        name: A name from `names()`, e.g. `"resnet20"`.
        input_shape: `(height, width, channels)` of one example, e.g. `(32, 32, 3)`.
        num_classes: Number of classes, at least 2.

    Returns:
        A built functional `keras.Model` named `name` that outputs logits of shape
        `(batch, num_classes)`.

    Raises:
        ConfigError: if the name is unknown or `input_shape`/`num_classes` are invalid.

    Example:

    >>> model = build("resnet20", (32, 32, 3), 10)
    >>> model.name
    'resnet20'
    """
    check(name, input_shape, num_classes)
    return builder(name)(input_shape, num_classes)


def check(name: str, input_shape: Sequence[int], num_classes: int) -> None:
    """Raises the error `build` would raise for these arguments, without building anything.

    Raises:
        ConfigError: if the name is unknown, `input_shape`/`num_classes` are invalid, or the
            images are smaller than the network takes.

    Example:

    >>> check("vgg16", (32, 32, 3), 10)  # returns None: VGG-16 takes 32x32 images
    """
    check_name(name)
    shape = check_args(input_shape, num_classes)
    side = MIN_SIDE.get(name, 1)
    if min(shape[:2]) < side:
        raise ConfigError(
            f"{name} needs inputs of at least {side}x{side} pixels, got input_shape {shape}"
        )


def __getattr__(name: str):
    # The builders by name (`tfprune.models.resnet20`), imported on first use.
    if name in MODELS:
        return builder(name)
    raise AttributeError(f"module 'tfprune.models' has no attribute {name!r}")


__all__ = [
    "MODELS",
    "build",
    "check",
    "lenet_300_100",
    "names",
    "resnet18",
    "resnet20",
    "resnet50",
    "vgg16",
]
