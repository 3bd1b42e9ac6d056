"""The CIFAR VGG networks with BatchNorm, as open_lth builds them."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfprune.errors import ConfigError
from tfprune.models import _common

_POOL = "M"
_VGG16 = (64, 64, _POOL, 128, 128, _POOL, 256, 256, 256, _POOL, 512, 512, 512, _POOL, 512, 512, 512)
# The smallest input side: each 2x2 max pool halves it.
MIN_SIDE = 2 ** _VGG16.count(_POOL)


def vgg16(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Builds VGG-16 for CIFAR: 13 3x3 conv (with bias) + BN + ReLU, 4 max pools, Dense 512→classes.

    After the last conv a global average pool stands for open_lth's 2x2 average pool: the same
    operation on a 32x32 input (2x2 feature maps), and it also accepts 28x28 inputs (1x1 maps).
    Layers are named `conv<k>`, `bn<k>`, `relu<k>` (k = 1..13), `pool<p>` (p = 1..4), `fc`.

    Args:
        input_shape: `(height, width, channels)` of one example, at least 16x16.
        num_classes: Number of classes, at least 2.

    Returns:
        A built functional `keras.Model` named `"vgg16"` that outputs logits.

    Raises:
        ConfigError: if the input is smaller than 16x16 (four 2x2 pools need it).

    Example:

    >>> model = vgg16((32, 32, 3), 10)
    >>> tuple(model.output.shape)
    (None, 10)
    """
    input_shape = _common.check_args(input_shape, num_classes)
    if min(input_shape[:2]) < MIN_SIDE:
        raise ConfigError(
            f"vgg16 needs inputs of at least {MIN_SIDE}x{MIN_SIDE} pixels, got input_shape "
            f"{input_shape}"
        )
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    conv_index = pool_index = 0
    for item in _VGG16:
        if item == _POOL:
            pool_index += 1
            pool = keras.layers.MaxPooling2D(
                2, data_format="channels_last", name=f"pool{pool_index}"
            )
            x = pool(x)
            continue
        conv_index += 1
        x = _common.conv(x, item, 3, name=f"conv{conv_index}", use_bias=True)
        x = _common.batch_norm(x, name=f"bn{conv_index}")
        x = _common.relu(x, name=f"relu{conv_index}")
    outputs = _common.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="vgg16")
