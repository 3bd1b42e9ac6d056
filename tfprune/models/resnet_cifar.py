"""The CIFAR ResNets of He et al. (2016), as open_lth builds them."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfprune.models import _common

_RESNET20_WIDTHS = (16, 32, 64)
_RESNET20_BLOCKS = 3


def _basic_block(x, filters: int, strides: int, name: str):
    """Two 3x3 conv + BN; a 1x1 conv + BN shortcut when the shape changes."""
    shortcut = x
    x = _common.conv(x, filters, 3, name=f"{name}_conv1", strides=strides)
    x = _common.batch_norm(x, name=f"{name}_bn1")
    x = _common.relu(x, name=f"{name}_relu1")
    x = _common.conv(x, filters, 3, name=f"{name}_conv2")
    x = _common.batch_norm(x, name=f"{name}_bn2")
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = _common.conv(shortcut, filters, 1, name=f"{name}_shortcut_conv", strides=strides)
        shortcut = _common.batch_norm(shortcut, name=f"{name}_shortcut_bn")
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return _common.relu(x, name=f"{name}_out")


def resnet20(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Builds ResNet-20 for CIFAR: three stages of three basic blocks, 16/32/64 channels.

    A 3x3 stem conv (16 channels) + BN + ReLU; stages 2 and 3 halve the resolution in their first
    block, whose shortcut is a 1x1 conv + BN (identity elsewhere); then global average pooling
    and a Dense classifier `fc` with a bias. Convolutions have no bias. Layers are named
    `conv1`, `bn1`, `stage<s>_block<b>_conv<k>`, `stage<s>_block<b>_shortcut_conv`, `fc`, ...

    Args:
        input_shape: `(height, width, channels)` of one example, e.g. `(32, 32, 3)`.
        num_classes: Number of classes, at least 2.

    Returns:
        A built functional `keras.Model` named `"resnet20"` that outputs logits.

    Example:

    >>> model = resnet20((32, 32, 3), 10)
    >>> tuple(model.output.shape)
    (None, 10)
    """
    input_shape = _common.check_args(input_shape, num_classes)
    inputs = keras.Input(shape=input_shape, name="input")
    x = _common.conv(inputs, _RESNET20_WIDTHS[0], 3, name="conv1")
    x = _common.batch_norm(x, name="bn1")
    x = _common.relu(x, name="relu1")
    for stage, filters in enumerate(_RESNET20_WIDTHS, start=1):
        for block in range(1, _RESNET20_BLOCKS + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage}_block{block}")
    outputs = _common.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="resnet20")
