"""Masked twins of Keras' convolutions: `MaskedConv1D`, `MaskedConv2D`, `MaskedConv3D`.

Each takes the stock layer's arguments. A channels-first input is convolved in channels-last
order (transposed in and out): TensorFlow's CPU convolutions take channels-first input only
where oneDNN is on, and raise `UnimplementedError` elsewhere.
"""

from __future__ import annotations

import keras
from keras import ops

from tfprune.errors import ModelError
from tfprune.layers.base import PACKAGE, check_data_format, int_tuple
from tfprune.layers.core import KernelLayer


class MaskedConv(KernelLayer):
    """An N-D convolution (N = `rank`, 1 to 3) whose kernel is multiplied by a 0/1 mask.

    Args:
        rank: 1, 2 or 3 spatial dimensions.
        filters: Number of output channels.
        kernel_size: An int or `rank` ints, the window's size.
        strides: An int or `rank` ints.
        padding: `"valid"` or `"same"` (case-insensitive), and `"causal"` for rank 1.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: An int or `rank` ints.
        groups: Number of groups the input channels are split into.
        activation, use_bias, *_initializer, *_regularizer, *_constraint: As for
            `keras.layers.Conv2D`.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        rank: int,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=1,
        groups: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rank = int(rank)
        self.filters = int(filters)
        self.kernel_size = int_tuple(kernel_size, self.rank, "kernel_size")
        self.strides = int_tuple(strides, self.rank, "strides")
        self.padding = str(padding).lower()
        allowed = ("valid", "same", "causal") if self.rank == 1 else ("valid", "same")
        if self.padding not in allowed:
            raise ModelError(
                f"padding must be one of {', '.join(map(repr, allowed))}, got {padding!r}"
            )
        self.data_format = check_data_format(data_format)
        self.dilation_rate = int_tuple(dilation_rate, self.rank, "dilation_rate")
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ModelError(f"groups={groups} must be positive and divide filters={filters}")
        self.input_spec = keras.layers.InputSpec(min_ndim=self.rank + 2)

    @property
    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        input_channels = input_shape[self._channel_axis]
        if input_channels % self.groups:
            raise ModelError(
                f"groups={self.groups} must divide the {input_channels} input channels"
            )
        kernel_shape = self.kernel_size + (input_channels // self.groups, self.filters)
        self._build_weights(kernel_shape, self.filters)
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={self._channel_axis: input_channels}
        )

    def call(self, inputs):
        inputs = self._to_channels_last(inputs)
        padding = self.padding
        if padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            inputs = ops.pad(inputs, ((0, 0), (left, 0), (0, 0)))
            padding = "valid"
        outputs = ops.conv(
            inputs,
            self.masked_kernel,
            strides=self.strides,
            padding=padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        if self.bias is not None:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1,) * (self.rank + 1) + (-1,)))
        return self._finish(self._from_channels_last(outputs))

    def _to_channels_last(self, inputs):
        if self.data_format == "channels_last":
            return inputs
        return ops.transpose(inputs, (0, *range(2, self.rank + 2), 1))

    def _from_channels_last(self, outputs):
        if self.data_format == "channels_last":
            return outputs
        return ops.transpose(outputs, (0, self.rank + 1, *range(1, self.rank + 1)))

    def compute_output_shape(self, input_shape):
        return self.stock_class(**self._shape_config()).compute_output_shape(input_shape)

    def _shape_config(self) -> dict:
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self._shape_config())
        config["groups"] = self.groups
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv1D(MaskedConv):
    """1D convolution whose kernel is multiplied by a 0/1 mask (arguments of `Conv1D`).

    Example:

    >>> layer = MaskedConv1D(8, 3, padding="causal")
    >>> y = layer(keras.ops.ones((1, 10, 2)))
    >>> tuple(layer.mask.shape)
    (3, 2, 8)
    """

    stock_class = keras.layers.Conv1D

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", **kwargs):
        super().__init__(1, filters, kernel_size, strides=strides, padding=padding, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv2D(MaskedConv):
    """2D convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        filters: Number of output channels.
        kernel_size: An int or a pair of ints, the window's height and width.
        strides: An int or a pair of ints.
        padding: `"valid"` or `"same"` (case-insensitive).
        data_format: `"channels_last"` (default) or `"channels_first"`; a channels-first
            input is convolved in channels-last order, so it runs on any CPU.
        dilation_rate: An int or a pair of ints.
        groups: Number of groups the input channels are split into.
        activation, use_bias, *_initializer, *_regularizer, *_constraint: As for
            `keras.layers.Conv2D`.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    >>> layer = MaskedConv2D(8, 3, padding="same")
    >>> y = layer(keras.ops.ones((1, 5, 5, 2)))
    >>> tuple(layer.mask.shape)
    (3, 3, 2, 8)
    """

    stock_class = keras.layers.Conv2D

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding="valid", **kwargs):
        super().__init__(2, filters, kernel_size, strides=strides, padding=padding, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv3D(MaskedConv):
    """3D convolution whose kernel is multiplied by a 0/1 mask (arguments of `Conv3D`)."""

    stock_class = keras.layers.Conv3D

    def __init__(self, filters: int, kernel_size, strides=(1, 1, 1), padding="valid", **kwargs):
        super().__init__(3, filters, kernel_size, strides=strides, padding=padding, **kwargs)
