"""The networks of the paper, every Dense/Conv2D kernel of them prunable.

Each builder returns a built functional `keras.Model` that outputs logits, whose layers have
deterministic, unique names, so that kernel variable paths (which address masks) are the same
in every build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfprune.errors import ConfigError
from tfprune.models import _common, vgg_cifar
from tfprune.models.lenet import lenet_300_100
from tfprune.models.resnet_cifar import resnet20
from tfprune.models.resnet_imagenet import resnet18, resnet50
from tfprune.models.vgg_cifar import vgg16

MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet_300_100": lenet_300_100,
    "resnet20": resnet20,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
}
# The smallest input height and width a network takes (VGG-16: four 2x2 max pools).
MIN_SIDE: dict[str, int] = {"vgg16": vgg_cifar.MIN_SIDE}


def names() -> list[str]:
    """Returns the registered model names, sorted.

    Example:

    >>> names()
    ['lenet_300_100', 'resnet18', 'resnet20', 'resnet50', 'vgg16']
    """
    return sorted(MODELS)


def build(name: str, input_shape: Sequence[int], num_classes: int) -> keras.Model:
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
    return MODELS[name](input_shape, num_classes)


def check(name: str, input_shape: Sequence[int], num_classes: int) -> None:
    """Raises the error `build` would raise for these arguments, without building anything.

    Raises:
        ConfigError: if the name is unknown, `input_shape`/`num_classes` are invalid, or the
            images are smaller than the network takes.

    Example:

    >>> check("vgg16", (32, 32, 3), 10)  # returns None: VGG-16 takes 32x32 images
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    shape = _common.check_args(input_shape, num_classes)
    side = MIN_SIDE.get(name, 1)
    if min(shape[:2]) < side:
        raise ConfigError(
            f"{name} needs inputs of at least {side}x{side} pixels, got input_shape {shape}"
        )


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
