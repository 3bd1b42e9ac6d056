"""The ImageNet ResNets of torchvision (v1.5: the bottleneck strides on its 3x3 conv)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfprune.models import _common

_WIDTHS = (64, 128, 256, 512)
_BOTTLENECK_EXPANSION = 4


def _basic_block(x, width: int, strides: int, name: str):
    """Two 3x3 conv + BN; a 1x1 conv + BN projection shortcut when the shape changes."""
    shortcut = x
    x = _common.conv(x, width, 3, name=f"{name}_conv1", strides=strides)
    x = _common.batch_norm(x, name=f"{name}_bn1")
    x = _common.relu(x, name=f"{name}_relu1")
    x = _common.conv(x, width, 3, name=f"{name}_conv2")
    x = _common.batch_norm(x, name=f"{name}_bn2")
    return _merge(x, shortcut, strides, name)


def _bottleneck_block(x, width: int, strides: int, name: str):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, each + BN; projection shortcut if needed."""
    shortcut = x
    x = _common.conv(x, width, 1, name=f"{name}_conv1")
    x = _common.batch_norm(x, name=f"{name}_bn1")
    x = _common.relu(x, name=f"{name}_relu1")
    x = _common.conv(x, width, 3, name=f"{name}_conv2", strides=strides)
    x = _common.batch_norm(x, name=f"{name}_bn2")
    x = _common.relu(x, name=f"{name}_relu2")
    x = _common.conv(x, width * _BOTTLENECK_EXPANSION, 1, name=f"{name}_conv3")
    x = _common.batch_norm(x, name=f"{name}_bn3")
    return _merge(x, shortcut, strides, name)


def _merge(x, shortcut, strides: int, name: str):
    """Adds the (projected, if the shape changes) shortcut to `x` and applies ReLU."""
    filters = x.shape[-1]
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = _common.conv(shortcut, filters, 1, name=f"{name}_shortcut_conv", strides=strides)
        shortcut = _common.batch_norm(shortcut, name=f"{name}_shortcut_bn")
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return _common.relu(x, name=f"{name}_out")


def _resnet(
    input_shape: Sequence[int],
    num_classes: int,
    block: Callable,
    blocks_per_stage: Sequence[int],
    name: str,
) -> keras.Model:
    """Builds a torchvision-style ResNet from its block type and stage depths."""
    input_shape = _common.check_args(input_shape, num_classes)
    inputs = keras.Input(shape=input_shape, name="input")
    x = _common.conv(inputs, _WIDTHS[0], 7, name="conv1", strides=2)
    x = _common.batch_norm(x, name="bn1")
    x = _common.relu(x, name="relu1")
    # Zero padding equals PyTorch's -inf padding here: the inputs are ReLU outputs (>= 0).
    x = keras.layers.ZeroPadding2D(1, data_format="channels_last", name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, data_format="channels_last", name="pool1")(x)
    for stage, (width, depth) in enumerate(zip(_WIDTHS, blocks_per_stage, strict=True), start=1):
        for index in range(1, depth + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = block(x, width, strides, name=f"stage{stage}_block{index}")
    outputs = _common.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def resnet18(input_shape: Sequence[int] = (64, 64, 3), num_classes: int = 200) -> keras.Model:
    """Builds ResNet-18: ImageNet stem and four stages of two basic blocks (64 to 512 channels).

    Stem: 7x7 stride-2 conv (64, no bias) + BN + ReLU + 3x3 stride-2 max pool, padded
    symmetrically as in torchvision. Stages 2-4 halve the resolution in their first block, whose
    shortcut is a 1x1 conv + BN. Global average pooling and a Dense classifier `fc` with a bias
    follow. Layers are named `conv1`, `bn1`, `stage<s>_block<b>_conv<k>`,
    `stage<s>_block<b>_shortcut_conv`, `fc`, ...

    Args:
        input_shape: `(height, width, channels)` of one example, e.g. `(64, 64, 3)`.
        num_classes: Number of classes, at least 2.

    Returns:
        A built functional `keras.Model` named `"resnet18"` that outputs logits.

    Example:

    >>> model = resnet18((64, 64, 3), 200)
    >>> tuple(model.output.shape)
    (None, 200)
    """
    return _resnet(input_shape, num_classes, _basic_block, (2, 2, 2, 2), name="resnet18")


def resnet50(input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 1000) -> keras.Model:
    """Builds ResNet-50: ImageNet stem and stages of 3, 4, 6 and 3 bottleneck blocks.

    Each bottleneck is 1x1 (width) → 3x3 (width, carries the stride) → 1x1 (4 x width), each
    conv followed by BN, with a 1x1 conv + BN projection shortcut in the first block of every
    stage. The stem, pooling and classifier are those of `resnet18`.

    Args:
        input_shape: `(height, width, channels)` of one example, e.g. `(224, 224, 3)`.
        num_classes: Number of classes, at least 2.

    Returns:
        A built functional `keras.Model` named `"resnet50"` that outputs logits.

    Example:

    >>> model = resnet50((224, 224, 3), 1000)
    >>> tuple(model.output.shape)
    (None, 1000)
    """
    return _resnet(input_shape, num_classes, _bottleneck_block, (3, 4, 6, 3), name="resnet50")
