"""Layer factories and argument checks shared by the model builders.

Every Dense and Conv2D kernel is a masked (prunable) one, and every layer is initialised as
SPEC §5 asks. Convolutions with stride 2 pad explicitly and symmetrically, as PyTorch does:
Keras' `"same"` would pad only the bottom/right of an even-sized input.
"""

from __future__ import annotations

import keras

from tfprune.layers import MaskedConv2D, MaskedDense
from tfprune.models import _init
from tfprune.models._args import check_args  # noqa: F401  the builders call it from here

_DATA_FORMAT = "channels_last"


def conv(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    use_bias: bool = False,
):
    """Applies a masked convolution padded like PyTorch's `padding=kernel_size // 2`.

    Args:
        x: A 4-D channels-last Keras tensor.
        filters: Number of output channels.
        kernel_size: Side of the square kernel (odd).
        name: Layer name; the padding layer, if any, is named `f"{name}_pad"`.
        strides: 1 or 2.
        use_bias: Whether the convolution has a bias.

    Returns:
        The output tensor.

    Example:

    >>> y = conv(keras.Input((32, 32, 3)), 16, 3, name="conv1")
    >>> tuple(y.shape)
    (None, 32, 32, 16)
    """
    pad = kernel_size // 2
    padding = "same"
    if strides != 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, data_format=_DATA_FORMAT, name=f"{name}_pad")(x)
        padding = "valid"
    return MaskedConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        data_format=_DATA_FORMAT,
        use_bias=use_bias,
        kernel_initializer=_init.kernel_initializer(),
        bias_initializer=_init.bias_initializer(),
        name=name,
    )(x)


def dense(x, units: int, name: str, activation: str | None = None):
    """Applies a masked dense layer with a bias.

    Args:
        x: A Keras tensor whose last axis holds the features.
        units: Number of outputs.
        name: Layer name.
        activation: Optional activation name, e.g. `"relu"`.

    Returns:
        The output tensor.

    Example:

    >>> tuple(dense(keras.Input((64,)), 10, name="fc").shape)
    (None, 10)
    """
    return MaskedDense(
        units,
        activation=activation,
        kernel_initializer=_init.kernel_initializer(),
        bias_initializer=_init.bias_initializer(),
        name=name,
    )(x)


def batch_norm(x, name: str):
    """Applies BatchNormalization with PyTorch's defaults and the SPEC §5 initialisers.

    Args:
        x: A channels-last Keras tensor.
        name: Layer name.

    Returns:
        The output tensor.

    Example:

    >>> tuple(batch_norm(keras.Input((8, 8, 16)), name="bn1").shape)
    (None, 8, 8, 16)
    """
    return keras.layers.BatchNormalization(
        axis=-1,
        momentum=_init.BN_MOMENTUM,
        epsilon=_init.BN_EPSILON,
        gamma_initializer=_init.gamma_initializer(),
        beta_initializer=_init.beta_initializer(),
        name=name,
    )(x)


def relu(x, name: str):
    """Applies a named ReLU.

    Args:
        x: A Keras tensor.
        name: Layer name.

    Returns:
        The output tensor.

    Example:

    >>> tuple(relu(keras.Input((4,)), name="relu").shape)
    (None, 4)
    """
    return keras.layers.ReLU(name=name)(x)


def classifier(x, num_classes: int):
    """Global average pooling followed by the masked classifier `fc` (logits, no softmax).

    Args:
        x: A 4-D channels-last Keras tensor.
        num_classes: Number of outputs.

    Returns:
        The logits tensor, shape `(batch, num_classes)`.

    Example:

    >>> tuple(classifier(keras.Input((4, 4, 64)), 10).shape)
    (None, 10)
    """
    x = keras.layers.GlobalAveragePooling2D(data_format=_DATA_FORMAT, name="avg_pool")(x)
    return dense(x, num_classes, name="fc")
