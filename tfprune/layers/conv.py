"""Masked twins of Keras' convolutions.

Four families, each a rank-generic base and the classes of Keras' names:

- `MaskedConv`: `MaskedConv1D`, `MaskedConv2D`, `MaskedConv3D`;
- `MaskedConvTranspose`: `MaskedConv1DTranspose`, `MaskedConv2DTranspose`,
  `MaskedConv3DTranspose`;
- `MaskedDepthwiseConv`: `MaskedDepthwiseConv1D`, `MaskedDepthwiseConv2D`;
- `MaskedSeparableConv`: `MaskedSeparableConv1D`, `MaskedSeparableConv2D`, whose two kernels
  (`depthwise_kernel`, `pointwise_kernel`) each have their own mask.

Each takes the stock layer's arguments and has its weights, under the same names, shapes and
order; the masks come after them. A channels-first input is convolved in channels-last order
(transposed in and out): TensorFlow's CPU convolutions take channels-first input only where
oneDNN is on, and raise `UnimplementedError` elsewhere. For the same reason a dilated
transposed convolution runs as an undilated one with zeros between the kernel's taps:
TensorFlow's CPU kernels refuse dilation rates above 1 there unless oneDNN is on.
"""

from __future__ import annotations

import keras
from keras import activations, constraints, initializers, ops, regularizers

from tfprune.errors import ModelError
from tfprune.layers.base import PACKAGE, MaskedLayer, check_data_format, int_tuple
from tfprune.layers.core import KernelLayer


class _MaskedConvolution(MaskedLayer):
    """What every masked convolution shares: the window arguments, the channels-last
    computation and the output shape (the stock layer's)."""

    def _init_window(
        self,
        rank: int,
        kernel_size,
        strides,
        padding: str,
        data_format: str | None,
        dilation_rate,
        paddings: tuple[str, ...] = ("valid", "same"),
    ) -> None:
        self.rank = int(rank)
        self.kernel_size = _window_tuple(kernel_size, self.rank, "kernel_size")
        self.strides = _window_tuple(strides, self.rank, "strides")
        self.padding = str(padding).lower()
        if self.padding not in paddings:
            raise ModelError(
                f"padding must be one of {', '.join(map(repr, paddings))}, got {padding!r}"
            )
        self.data_format = check_data_format(data_format)
        self.dilation_rate = _window_tuple(dilation_rate, self.rank, "dilation_rate")
        self.input_spec = keras.layers.InputSpec(min_ndim=self.rank + 2)

    def _check_strided_dilation(self) -> None:
        # The stock layer refuses it too.
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ModelError(
                f"strides={self.strides} and dilation_rate={self.dilation_rate}: this layer "
                "takes strides above 1 or dilation rates above 1, not both"
            )

    @property
    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def _input_channels(self, input_shape) -> int:
        """The number of input channels; fixes it in the input spec."""
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ModelError(f"layer {self.name!r} needs a known number of input channels")
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={self._channel_axis: channels}
        )
        return int(channels)

    def _to_channels_last(self, inputs):
        if self.data_format == "channels_last":
            return inputs
        return ops.transpose(inputs, (0, *range(2, self.rank + 2), 1))

    def _output(self, outputs, bias):
        """Adds `bias` to the channels-last `outputs`, restores the layout, activates."""
        if bias is not None:
            outputs = ops.add(outputs, ops.reshape(bias, (1,) * (self.rank + 1) + (-1,)))
        if self.data_format == "channels_first":
            outputs = ops.transpose(outputs, (0, self.rank + 1, *range(1, self.rank + 1)))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        # Named, so that no stock layer's automatic name is used up.
        stock = self.stock_class(**self._shape_config(), name=self.name)
        return stock.compute_output_shape(input_shape)

    def _shape_config(self) -> dict:
        """The arguments that decide the output's shape, under the stock layer's names."""
        return {
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self._shape_config())
        return config


class MaskedConv(_MaskedConvolution, KernelLayer):
    """An N-D convolution (N = `rank`, 1 to 3) whose kernel is multiplied by a 0/1 mask.

    Args:
        rank: 1, 2 or 3 spatial dimensions.
        filters: Number of output channels.
        kernel_size: An int or `rank` ints, the window's size.
        strides: An int or `rank` ints.
        padding: `"valid"` or `"same"` (case-insensitive), and `"causal"` for rank 1.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: An int or `rank` ints; strides and dilation rates above 1 exclude
            each other.
        groups: Number of groups the input channels are split into.
        activation, use_bias, *_initializer, *_regularizer, *_constraint: As for
            `keras.layers.Conv2D`.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ModelError: for an argument the stock layer refuses too.
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
        paddings = ("valid", "same", "causal") if int(rank) == 1 else ("valid", "same")
        self._init_window(rank, kernel_size, strides, padding, data_format, dilation_rate, paddings)
        self._check_strided_dilation()
        self.filters = _positive_int(filters, "filters")
        self.groups = _positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ModelError(f"groups={groups} must divide filters={filters}")

    def build(self, input_shape):
        input_channels = self._input_channels(input_shape)
        if input_channels % self.groups:
            raise ModelError(
                f"groups={self.groups} must divide the {input_channels} input channels"
            )
        kernel_shape = self.kernel_size + (input_channels // self.groups, self.filters)
        self._build_weights(kernel_shape, self.filters)

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
        return self._output(outputs, self.bias)

    def _shape_config(self) -> dict:
        return {**super()._shape_config(), "filters": self.filters}

    def get_config(self) -> dict:
        config = super().get_config()
        config["groups"] = self.groups
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv1D(MaskedConv):
    """1D convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
            **kwargs: As for `keras.layers.Conv1D` (see `MaskedConv`); `padding` may be
            `"causal"`.

    Example:

    >>> layer = MaskedConv1D(8, 3, padding="causal")
    >>> y = layer(keras.ops.ones((1, 10, 2)))
    >>> tuple(layer.mask.shape)
    (3, 2, 8)
    """

    stock_class = keras.layers.Conv1D

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        **kwargs,
    ):
        super().__init__(
            1, filters, kernel_size, strides, padding, data_format, dilation_rate, groups, **kwargs
        )


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

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
        **kwargs,
    ):
        super().__init__(
            2, filters, kernel_size, strides, padding, data_format, dilation_rate, groups, **kwargs
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv3D(MaskedConv):
    """3D convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
            **kwargs: As for `keras.layers.Conv3D` (see `MaskedConv`).

    Example:

    >>> layer = MaskedConv3D(4, 2)
    >>> y = layer(keras.ops.ones((1, 3, 3, 3, 2)))
    >>> tuple(layer.mask.shape)
    (2, 2, 2, 2, 4)
    """

    stock_class = keras.layers.Conv3D

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1, 1),
        groups=1,
        **kwargs,
    ):
        super().__init__(
            3, filters, kernel_size, strides, padding, data_format, dilation_rate, groups, **kwargs
        )


class MaskedConvTranspose(_MaskedConvolution, KernelLayer):
    """An N-D transposed convolution (N = `rank`, 1 to 3) whose kernel is multiplied by a
    0/1 mask.

    The kernel has the stock layer's shape, `kernel_size + (filters, input channels)`. A
    dilated kernel is applied as an undilated one with `rate - 1` zeros between its taps (the
    same sums; TensorFlow's CPU kernels take dilation rates above 1 only where oneDNN is on).

    Args:
        rank: 1, 2 or 3 spatial dimensions.
        filters: Number of output channels.
        kernel_size: An int or `rank` ints, the window's size.
        strides: An int or `rank` ints.
        padding: `"valid"` or `"same"` (case-insensitive).
        output_padding: None, or an int or `rank` ints, each below its stride: the extra size
            added to one side of the output.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: An int or `rank` ints; strides and dilation rates above 1 exclude
            each other.
        activation, use_bias, *_initializer, *_regularizer, *_constraint: As for
            `keras.layers.Conv2DTranspose`.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ModelError: for an argument the stock layer refuses too.
    """

    def __init__(
        self,
        rank: int,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        output_padding=None,
        data_format: str | None = None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_window(rank, kernel_size, strides, padding, data_format, dilation_rate)
        self._check_strided_dilation()
        self.filters = _positive_int(filters, "filters")
        if output_padding is None:
            self.output_padding = None
        else:
            self.output_padding = _window_tuple(
                output_padding, self.rank, "output_padding", minimum=0
            )
            if any(o >= s for o, s in zip(self.output_padding, self.strides, strict=True)):
                raise ModelError(
                    f"output_padding={self.output_padding} must be below "
                    f"strides={self.strides} in every dimension"
                )

    def build(self, input_shape):
        input_channels = self._input_channels(input_shape)
        self._build_weights(self.kernel_size + (self.filters, input_channels), self.filters)

    def call(self, inputs):
        kernel, dilation_rate = self.masked_kernel, self.dilation_rate
        if max(dilation_rate) > 1:
            kernel, dilation_rate = _dilated(kernel, dilation_rate), (1,) * self.rank
        outputs = ops.conv_transpose(
            self._to_channels_last(inputs),
            kernel,
            strides=self.strides,
            padding=self.padding,
            output_padding=self.output_padding,
            data_format="channels_last",
            dilation_rate=dilation_rate,
        )
        return self._output(outputs, self.bias)

    def _shape_config(self) -> dict:
        return {
            **super()._shape_config(),
            "filters": self.filters,
            "output_padding": self.output_padding,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv1DTranspose(MaskedConvTranspose):
    """1D transposed convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        filters, kernel_size, strides, padding, output_padding, data_format, dilation_rate,
            **kwargs: As for `keras.layers.Conv1DTranspose` (see `MaskedConvTranspose`).

    Example:

    >>> layer = MaskedConv1DTranspose(4, 3, strides=2)
    >>> tuple(layer(keras.ops.ones((1, 5, 2))).shape)
    (1, 11, 4)
    >>> tuple(layer.mask.shape)
    (3, 4, 2)
    """

    stock_class = keras.layers.Conv1DTranspose

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(
            1,
            filters,
            kernel_size,
            strides,
            padding,
            output_padding,
            data_format,
            dilation_rate,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv2DTranspose(MaskedConvTranspose):
    """2D transposed convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        filters, kernel_size, strides, padding, output_padding, data_format, dilation_rate,
            **kwargs: As for `keras.layers.Conv2DTranspose` (see `MaskedConvTranspose`).

    Example:

    >>> layer = MaskedConv2DTranspose(4, 3, strides=2, padding="same")
    >>> tuple(layer(keras.ops.ones((1, 5, 5, 2))).shape)
    (1, 10, 10, 4)
    >>> tuple(layer.mask.shape)
    (3, 3, 4, 2)
    """

    stock_class = keras.layers.Conv2DTranspose

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=(1, 1),
        **kwargs,
    ):
        super().__init__(
            2,
            filters,
            kernel_size,
            strides,
            padding,
            output_padding,
            data_format,
            dilation_rate,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv3DTranspose(MaskedConvTranspose):
    """3D transposed convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        filters, kernel_size, strides, padding, data_format, output_padding, dilation_rate,
            **kwargs: As for `keras.layers.Conv3DTranspose` (see `MaskedConvTranspose`),
            in its order (`data_format` before `output_padding`, unlike the 1D and 2D layers).

    Example:

    >>> layer = MaskedConv3DTranspose(4, 2, strides=2)
    >>> tuple(layer(keras.ops.ones((1, 3, 3, 3, 2))).shape)
    (1, 6, 6, 6, 4)
    """

    stock_class = keras.layers.Conv3DTranspose

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1, 1),
        padding="valid",
        data_format=None,
        output_padding=None,
        dilation_rate=(1, 1, 1),
        **kwargs,
    ):
        super().__init__(
            3,
            filters,
            kernel_size,
            strides,
            padding,
            output_padding,
            data_format,
            dilation_rate,
            **kwargs,
        )


class _MaskedDepthwise(_MaskedConvolution):
    """What the depthwise and separable convolutions share: `depth_multiplier`, the options of
    the depthwise kernel and of the bias, under the stock layers' names."""

    def __init__(
        self,
        rank: int,
        depth_multiplier: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=1,
        activation=None,
        use_bias: bool = True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._init_window(rank, kernel_size, strides, padding, data_format, dilation_rate)
        self.depth_multiplier = _positive_int(depth_multiplier, "depth_multiplier")
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)
        self.bias_constraint = constraints.get(bias_constraint)

    def _weight(self, name: str, options: str, shape: tuple[int, ...]) -> keras.Variable:
        """A weight made with the `<options>_initializer`, `_regularizer` and `_constraint`."""
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=getattr(self, f"{options}_initializer"),
            regularizer=getattr(self, f"{options}_regularizer"),
            constraint=getattr(self, f"{options}_constraint"),
        )

    def _build_bias(self, size: int) -> None:
        self.bias = self._weight("bias", "bias", (size,)) if self.use_bias else None

    def _options_config(self, *names: str) -> dict:
        config = {}
        for name in names:
            config[f"{name}_initializer"] = initializers.serialize(
                getattr(self, f"{name}_initializer")
            )
            config[f"{name}_regularizer"] = regularizers.serialize(
                getattr(self, f"{name}_regularizer")
            )
            config[f"{name}_constraint"] = constraints.serialize(
                getattr(self, f"{name}_constraint")
            )
        return config

    def _shape_config(self) -> dict:
        return {**super()._shape_config(), "depth_multiplier": self.depth_multiplier}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                **self._options_config("depthwise", "bias"),
            }
        )
        return config


class MaskedDepthwiseConv(_MaskedDepthwise):
    """An N-D depthwise convolution (N = `rank`, 1 or 2) whose kernel is multiplied by a 0/1
    mask.

    The kernel, `kernel`, has the stock layer's shape
    `kernel_size + (input channels, depth_multiplier)`; its mask is `mask`.

    Args:
        rank: 1 or 2 spatial dimensions.
        depth_multiplier: Output channels per input channel.
        kernel_size: An int or `rank` ints, the window's size.
        strides: An int or `rank` ints.
        padding: `"valid"` or `"same"` (case-insensitive).
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: An int or `rank` ints.
        activation, use_bias, depthwise_*, bias_*, activity_regularizer: As for
            `keras.layers.DepthwiseConv2D`.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ModelError: for an argument the stock layer refuses too.
    """

    def build(self, input_shape):
        input_channels = self._input_channels(input_shape)
        self.kernel = self._weight(
            "kernel", "depthwise", self.kernel_size + (input_channels, self.depth_multiplier)
        )
        self._build_bias(input_channels * self.depth_multiplier)
        self.mask = self.add_mask(self.kernel)

    @property
    def masked_kernel(self):
        """The kernel as the forward pass sees it: `kernel * mask`."""
        return self.masked(self.kernel)

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            self._to_channels_last(inputs),
            self.masked_kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        return self._output(outputs, self.bias)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedDepthwiseConv1D(MaskedDepthwiseConv):
    """1D depthwise convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
            **kwargs: As for `keras.layers.DepthwiseConv1D` (see `MaskedDepthwiseConv`).

    Example:

    >>> layer = MaskedDepthwiseConv1D(3, depth_multiplier=2)
    >>> tuple(layer(keras.ops.ones((1, 6, 4))).shape)
    (1, 4, 8)
    >>> tuple(layer.mask.shape)
    (3, 4, 2)
    """

    stock_class = keras.layers.DepthwiseConv1D

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier: int = 1,
        data_format=None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(
            1, depth_multiplier, kernel_size, strides, padding, data_format, dilation_rate, **kwargs
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedDepthwiseConv2D(MaskedDepthwiseConv):
    """2D depthwise convolution whose kernel is multiplied by a 0/1 mask.

    Args:
        kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
            **kwargs: As for `keras.layers.DepthwiseConv2D` (see `MaskedDepthwiseConv`).

    Example:

    >>> layer = MaskedDepthwiseConv2D(3, padding="same", depth_multiplier=2)
    >>> tuple(layer(keras.ops.ones((1, 5, 5, 3))).shape)
    (1, 5, 5, 6)
    >>> tuple(layer.mask.shape)
    (3, 3, 3, 2)
    """

    stock_class = keras.layers.DepthwiseConv2D

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier: int = 1,
        data_format=None,
        dilation_rate=(1, 1),
        **kwargs,
    ):
        super().__init__(
            2, depth_multiplier, kernel_size, strides, padding, data_format, dilation_rate, **kwargs
        )


class MaskedSeparableConv(_MaskedDepthwise):
    """An N-D depthwise separable convolution (N = `rank`, 1 or 2) whose two kernels are each
    multiplied by their own 0/1 mask.

    The kernels have the stock layer's names and shapes: `depthwise_kernel`,
    `kernel_size + (input channels, depth_multiplier)`, masked by `depthwise_kernel_mask`, and
    `pointwise_kernel`, `(1,) * rank + (input channels * depth_multiplier, filters)`, masked by
    `pointwise_kernel_mask`. Each is a prunable weight of its own.

    Args:
        rank: 1 or 2 spatial dimensions.
        depth_multiplier: Channels of the depthwise step per input channel.
        filters: Number of output channels.
        kernel_size: An int or `rank` ints, the depthwise window's size.
        strides: An int or `rank` ints.
        padding: `"valid"` or `"same"` (case-insensitive).
        data_format: `"channels_last"` (default) or `"channels_first"`.
        dilation_rate: An int or `rank` ints.
        pointwise_initializer, pointwise_regularizer, pointwise_constraint: Options of the
            pointwise kernel.
        **kwargs: The other arguments of `keras.layers.SeparableConv2D` (`activation`,
            `use_bias`, `depthwise_*`, `bias_*`, ...) and of the base `keras.layers.Layer`.

    Raises:
        ModelError: for an argument the stock layer refuses too.
    """

    def __init__(
        self,
        rank: int,
        depth_multiplier: int,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=1,
        pointwise_initializer="glorot_uniform",
        pointwise_regularizer=None,
        pointwise_constraint=None,
        **kwargs,
    ):
        super().__init__(
            rank,
            depth_multiplier,
            kernel_size,
            strides,
            padding,
            data_format,
            dilation_rate,
            **kwargs,
        )
        self.filters = _positive_int(filters, "filters")
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.pointwise_constraint = constraints.get(pointwise_constraint)

    def build(self, input_shape):
        input_channels = self._input_channels(input_shape)
        self.depthwise_kernel = self._weight(
            "depthwise_kernel",
            "depthwise",
            self.kernel_size + (input_channels, self.depth_multiplier),
        )
        self.pointwise_kernel = self._weight(
            "pointwise_kernel",
            "pointwise",
            (1,) * self.rank + (input_channels * self.depth_multiplier, self.filters),
        )
        self._build_bias(self.filters)
        self.depthwise_kernel_mask = self.add_mask(self.depthwise_kernel)
        self.pointwise_kernel_mask = self.add_mask(self.pointwise_kernel)

    def call(self, inputs):
        outputs = ops.separable_conv(
            self._to_channels_last(inputs),
            self.masked(self.depthwise_kernel),
            self.masked(self.pointwise_kernel),
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        return self._output(outputs, self.bias)

    def _shape_config(self) -> dict:
        return {**super()._shape_config(), "filters": self.filters}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self._options_config("pointwise"))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedSeparableConv1D(MaskedSeparableConv):
    """1D depthwise separable convolution whose two kernels are each multiplied by a mask.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
            **kwargs: As for `keras.layers.SeparableConv1D` (see `MaskedSeparableConv`).

    Example:

    >>> layer = MaskedSeparableConv1D(4, 3, depth_multiplier=2)
    >>> y = layer(keras.ops.ones((1, 6, 3)))
    >>> [tuple(mask.shape) for _, mask in layer.prunable_pairs()]
    [(3, 3, 2), (1, 6, 4)]
    """

    stock_class = keras.layers.SeparableConv1D

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        depth_multiplier: int = 1,
        **kwargs,
    ):
        super().__init__(
            1,
            depth_multiplier,
            filters,
            kernel_size,
            strides,
            padding,
            data_format,
            dilation_rate,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedSeparableConv2D(MaskedSeparableConv):
    """2D depthwise separable convolution whose two kernels are each multiplied by a mask.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
            **kwargs: As for `keras.layers.SeparableConv2D` (see `MaskedSeparableConv`).

    Example:

    >>> layer = MaskedSeparableConv2D(4, 3, padding="same")
    >>> y = layer(keras.ops.ones((1, 5, 5, 2)))
    >>> [kernel.name for kernel, _ in layer.prunable_pairs()]
    ['depthwise_kernel', 'pointwise_kernel']
    """

    stock_class = keras.layers.SeparableConv2D

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier: int = 1,
        **kwargs,
    ):
        super().__init__(
            2,
            depth_multiplier,
            filters,
            kernel_size,
            strides,
            padding,
            data_format,
            dilation_rate,
            **kwargs,
        )


def _positive_int(value, what: str) -> int:
    try:
        valid = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ModelError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _window_tuple(value, rank: int, what: str, minimum: int = 1) -> tuple[int, ...]:
    """`int_tuple`, each entry at least `minimum`."""
    result = int_tuple(value, rank, what)
    if min(result) < minimum:
        raise ModelError(f"{what} must be ints of at least {minimum}, got {value!r}")
    return result


def _dilated(kernel, rates: tuple[int, ...]):
    """`kernel` with `rate - 1` zeros between its taps along each spatial axis: an undilated
    kernel that computes what `kernel` dilated by `rates` does."""
    for axis, rate in enumerate(rates):
        if rate == 1:
            continue
        shape = list(kernel.shape)
        size = shape[axis]
        padding = [(0, 0)] * (len(shape) + 1)
        padding[axis + 1] = (0, rate - 1)
        kernel = ops.pad(ops.expand_dims(kernel, axis + 1), padding)
        shape[axis] = size * rate
        kernel = ops.reshape(kernel, shape)
        shape[axis] = (size - 1) * rate + 1
        kernel = ops.slice(kernel, [0] * len(shape), shape)
    return kernel
