"""Keras layers whose kernels carry a pruning mask.

`MaskedDense` and `MaskedConv2D` take the arguments of `keras.layers.Dense` and
`keras.layers.Conv2D` and add one non-trainable weight, `mask`, of the kernel's shape. The
forward pass uses `kernel * mask`, so pruned weights contribute nothing, receive exactly zero
gradient from the loss, and the mask is saved and restored with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import keras
from keras import activations, constraints, initializers, ops, regularizers

from tfprune._keras_compat import is_functional, sublayers
from tfprune.errors import ModelError

_PACKAGE = "tfprune"


class _MaskedKernelLayer(keras.layers.Layer):
    """Shared state of the masked layers: kernel, optional bias and mask."""

    def __init__(
        self,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)

    def _build_weights(self, kernel_shape: tuple[int, ...], bias_size: int) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(bias_size,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        # Written in cross-replica context only (pruning); every replica then reads the same
        # value, and a write from replica context keeps the first replica's value.
        self.mask = self.add_weight(
            name="mask",
            shape=kernel_shape,
            initializer="ones",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    @property
    def masked_kernel(self):
        """The kernel as the forward pass sees it: `kernel * mask`."""
        kernel = self.kernel
        return ops.multiply(kernel, ops.cast(self.mask, kernel.dtype))

    def _finish(self, outputs):
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedDense(_MaskedKernelLayer):
    """Densely connected layer whose kernel is multiplied by a 0/1 mask.

    Args:
        units: Dimensionality of the output.
        activation: Activation function, as for `keras.layers.Dense`.
        use_bias: Whether the layer adds a bias vector.
        kernel_initializer, bias_initializer: Initializers of kernel and bias.
        kernel_regularizer, bias_regularizer, activity_regularizer: Regularizers.
        kernel_constraint, bias_constraint: Constraints.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    >>> layer = MaskedDense(4)
    >>> y = layer(keras.ops.ones((2, 3)))
    >>> tuple(layer.mask.shape)
    (3, 4)
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self._build_weights((input_dim, self.units), self.units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.masked_kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self._finish(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        config = super().get_config()
        config["units"] = self.units
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(_MaskedKernelLayer):
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

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=(1, 1),
        groups: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ModelError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.data_format = _data_format(data_format)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ModelError(f"groups={groups} must be positive and divide filters={filters}")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channel_axis = -1 if self.data_format == "channels_last" else 1
        input_channels = input_shape[channel_axis]
        if input_channels % self.groups:
            raise ModelError(
                f"groups={self.groups} must divide the {input_channels} input channels"
            )
        kernel_shape = self.kernel_size + (input_channels // self.groups, self.filters)
        self._build_weights(kernel_shape, self.filters)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={channel_axis: input_channels})

    def call(self, inputs):
        channels_first = self.data_format == "channels_first"
        if channels_first:
            # TensorFlow's CPU Conv2D runs NCHW only where oneDNN is on; elsewhere it raises
            # UnimplementedError. Convolving in NHWC works on every device.
            inputs = ops.transpose(inputs, (0, 2, 3, 1))
        outputs = ops.conv(
            inputs,
            self.masked_kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        if self.bias is not None:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        if channels_first:
            outputs = ops.transpose(outputs, (0, 3, 1, 2))
        return self._finish(outputs)

    def compute_output_shape(self, input_shape):
        return keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        ).compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "groups": self.groups,
            }
        )
        return config


MASKED_LAYERS = (MaskedDense, MaskedConv2D)


class PrunableWeight(NamedTuple):
    """A prunable kernel, its mask and the layer that owns them."""

    kernel: keras.Variable
    mask: keras.Variable
    layer: keras.layers.Layer


def prunable_weights(model: keras.layers.Layer) -> dict[str, PrunableWeight]:
    """Lists a model's prunable (kernel, mask) pairs, keyed by the kernel variable's path.

    Nested models and layers are searched too. The order is the order in which the layers
    appear in the model, which is also the flat order used to break ties in selection.

    Args:
        model: A built Keras model or layer.

    Returns:
        An ordered dict `{kernel.path: PrunableWeight(kernel, mask, layer)}`.

    Raises:
        ModelError: if the model is not built or two kernels share a path.
    """
    found: dict[str, PrunableWeight] = {}
    for layer in _layers_in_order(model):
        if not isinstance(layer, MASKED_LAYERS):
            continue
        if not layer.built:
            raise ModelError(
                f"layer {layer.name!r} is not built: call the model on an input "
                "(or build it) before pruning"
            )
        path = layer.kernel.path
        if path in found and found[path].layer is not layer:
            raise ModelError(
                f"two prunable kernels share the path {path!r}: give the layers unique names"
            )
        found[path] = PrunableWeight(layer.kernel, layer.mask, layer)
    return found


def _layers_in_order(root: keras.layers.Layer):
    """Yields `root` and every layer under it, depth first, in the order each model lists them.

    Keras' own traversal (`tfprune._keras_compat.all_layers`) reverses the sublayers of nested
    models, so the walk is done here.
    """
    seen, stack = set(), [root]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(reversed(sublayers(layer)))


_DENSE_KEYS = (
    "units activation use_bias kernel_initializer bias_initializer kernel_regularizer "
    "bias_regularizer activity_regularizer kernel_constraint bias_constraint name trainable "
    "dtype"
).split()
_CONV_KEYS = _DENSE_KEYS[1:] + (
    "filters kernel_size strides padding data_format dilation_rate groups".split()
)


def _masked_twin(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Returns a masked layer with `layer`'s configuration, or a fresh copy of `layer`."""
    if type(layer) is keras.layers.Dense:
        keys, cls = _DENSE_KEYS, MaskedDense
    elif type(layer) is keras.layers.Conv2D:
        keys, cls = _CONV_KEYS, MaskedConv2D
    else:
        return layer.__class__.from_config(layer.get_config())
    config = layer.get_config()
    if config.get("lora_rank"):
        raise ModelError(f"layer {layer.name!r} uses LoRA, which masked layers do not support")
    return cls(**{key: config[key] for key in keys if key in config})


def masked(model: keras.Model) -> keras.Model:
    """Returns the same model with every stock `Dense`/`Conv2D` replaced by its masked twin.

    The new model has the original's architecture, layer names and weights; every mask starts
    at one. Functional and Sequential models are supported, nested ones included.

    Args:
        model: A built functional or Sequential `keras.Model`.

    Returns:
        A new `keras.Model`; the original is left unchanged.

    Example:

    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> pruned = masked(base)
    >>> type(pruned.layers[0]).__name__
    'MaskedDense'
    """
    if not (isinstance(model, keras.Sequential) or is_functional(model)):
        raise ModelError(
            "tfprune.masked accepts functional or Sequential Keras models; for a subclassed "
            "model, use MaskedDense/MaskedConv2D in its definition"
        )
    return clone_and_copy(model, _masked_twin, _copy_into_masked)


def clone_and_copy(
    model: keras.Model,
    twin: Callable[[keras.layers.Layer], keras.layers.Layer],
    copy: Callable[[keras.layers.Layer, keras.layers.Layer], None],
) -> keras.Model:
    """Clones a functional or Sequential model layer by layer, then copies each layer's weights.

    `keras.models.clone_model` calls `twin` once for every layer object (nested functional and
    Sequential models are walked into; a layer shared between places is cloned once), so each
    clone is paired with the very layer it was made from, never looked up by name: nested
    models may hold layers of the same name.

    Args:
        model: A built functional or Sequential model.
        twin: Makes the clone of one layer.
        copy: `copy(original, clone)` sets the clone's weights from the original's.

    Returns:
        The clone, holding the original's weights as `copy` set them.

    Raises:
        ModelError: if the model is not built, or if a weight of `model` found no layer to go
            to (which would leave a freshly initialized weight in the clone).
    """
    if not model.built:
        raise ModelError("the model is not built: give it an Input or call it once first")
    pairs = []

    def clone_function(layer):
        clone = twin(layer)
        pairs.append((layer, clone))
        return clone

    clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    copied = set()
    for old, new in pairs:
        copy(old, new)
        copied.update(id(weight) for weight in old.weights)
    missed = [weight.path for weight in model.weights if id(weight) not in copied]
    if missed:
        raise ModelError(
            f"cannot clone {model.name!r}: {len(missed)} weights, the first {missed[0]!r}, "
            "belong to no layer the clone was built from"
        )
    return clone


def copy_layer_weights(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Gives `new`, a layer of the same kind and configuration, every weight of `old`.

    Raises:
        ModelError: if the two layers' weights differ in number, name or shape.
    """
    if len(old.weights) != len(new.weights):
        raise ModelError(
            f"layer {old.name!r} has {len(old.weights)} weights but its clone {len(new.weights)}"
        )
    for src, dst in zip(old.weights, new.weights, strict=True):
        if src.name != dst.name or tuple(src.shape) != tuple(dst.shape):
            raise ModelError(
                f"layer {old.name!r}: weight {src.path!r} {tuple(src.shape)} does not match its "
                f"clone's {dst.path!r} {tuple(dst.shape)}"
            )
        dst.assign(src)


def _copy_into_masked(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Copies a stock layer into its masked twin (kernel and bias; the mask stays one), and any
    other layer into its copy."""
    if isinstance(new, MASKED_LAYERS) and not isinstance(old, MASKED_LAYERS):
        new.kernel.assign(old.kernel)
        if new.bias is not None:
            new.bias.assign(old.bias)
    else:
        copy_layer_weights(old, new)


def _data_format(value: str | None) -> str:
    """`value` in lower case, checked; `None` is Keras' configured image data format."""
    if value is None:
        return keras.config.image_data_format()
    data_format = str(value).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ModelError(f"data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return data_format


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ModelError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair
