"""Masked twins of Keras' core layers: `MaskedDense`, `MaskedEinsumDense`, `MaskedEmbedding`."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

import keras
from keras import activations, constraints, initializers, ops, regularizers

from tfprune.errors import ModelError
from tfprune.layers.base import PACKAGE, MaskedLayer, layers_in_order


class KernelLayer(MaskedLayer):
    """Shared state of the masked layers with one kernel: activation, bias, initializers,
    regularizers and constraints, under the stock layers' argument names."""

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

    def _build_weights(
        self,
        kernel_shape: tuple[int, ...],
        bias_shape: int | tuple[int, ...],
        kernel_initializer=None,
    ) -> None:
        """Creates `kernel`, `bias` (if `use_bias`) and the kernel's mask, in that order.

        Args:
            kernel_shape: The kernel's shape.
            bias_shape: The bias' shape, or its size for a vector.
            kernel_initializer: Draws the kernel instead of `self.kernel_initializer`.
        """
        if isinstance(bias_shape, int):
            bias_shape = (bias_shape,)
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=kernel_initializer or self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=tuple(bias_shape),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.mask = self.add_mask(self.kernel)

    @property
    def masked_kernel(self):
        """The kernel as the forward pass sees it: `kernel * mask`."""
        return self.masked(self.kernel)

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedDense(KernelLayer):
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

    stock_class = keras.layers.Dense

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedEinsumDense(KernelLayer):
    """`keras.layers.EinsumDense` whose kernel is multiplied by a 0/1 mask.

    The layer computes `einsum(equation, inputs, kernel * mask)`, adds the bias and applies the
    activation. Its weights (`kernel`, then `bias` if `bias_axes` is set) have the stock
    layer's names, shapes and order, and a `VarianceScaling` initializer (Glorot, He, ...)
    is given the kernel's input and output axes as the stock layer gives it, so the fans of a
    kernel of three or more dimensions are the stock layer's.

    Args:
        equation: An einsum equation of the form `ab,bc->ac`, `...ab,bc->...ac` or
            `ab...,bc->ac...`: the input, the kernel and the output.
        output_shape: The output's shape without the batch dimension and the dimensions the
            ellipsis stands for; an int for a single dimension, `None` for one taken from the
            input.
        activation: Activation function, as for `keras.layers.EinsumDense`.
        bias_axes: The output axes (letters of the output spec) the bias spans, or None for
            no bias.
        kernel_initializer, bias_initializer: Initializers of kernel and bias.
        kernel_regularizer, bias_regularizer, activity_regularizer: Regularizers.
        kernel_constraint, bias_constraint: Constraints.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ModelError: for an equation of none of the three forms, or bias axes outside the
            output spec; when built, for an input that does not fit the equation.

    Example:

    >>> layer = MaskedEinsumDense("abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de")
    >>> y = layer(keras.ops.ones((3, 5, 6)))
    >>> tuple(layer.mask.shape), tuple(layer.bias.shape)
    ((6, 2, 4), (2, 4))
    """

    stock_class = keras.layers.EinsumDense

    def __init__(self, equation: str, output_shape, activation=None, bias_axes=None, **kwargs):
        super().__init__(activation=activation, use_bias=bias_axes is not None, **kwargs)
        self.equation = str(equation)
        self.bias_axes = None if bias_axes is None else str(bias_axes)
        if isinstance(output_shape, int):
            self.partial_output_shape = (output_shape,)
        else:
            self.partial_output_shape = tuple(output_shape)
        output_spec = _split_equation(self.equation)[2]
        if self.bias_axes == "":
            raise ModelError("bias_axes must name at least one output axis, or be None")
        missing = sorted(set(self.bias_axes or "") - set(output_spec))
        if missing:
            raise ModelError(
                f"bias_axes={bias_axes!r} names {', '.join(map(repr, missing))}, which the "
                f"output spec {output_spec!r} of {self.equation!r} does not have"
            )

    def build(self, input_shape):
        shapes = _einsum_shapes(
            self.equation, self.bias_axes, input_shape, self.partial_output_shape
        )
        kernel_shape, bias_shape, _, input_axes, output_axes = shapes
        if any(dim is None for dim in kernel_shape):
            raise ModelError(
                f"layer {self.name!r}: the kernel of {self.equation!r} would have the "
                f"unknown shape {tuple(kernel_shape)}; give its sizes in output_shape or "
                "the input's shape"
            )
        initializer = self.kernel_initializer
        if isinstance(initializer, keras.initializers.VarianceScaling) and (
            initializer.input_axes is None or initializer.output_axes is None
        ):
            # As the stock layer does: the fans of a kernel of any rank, from its axes; the
            # clone keeps the initializer's seed.
            config = initializer.get_config()
            config.update(seed=initializer.seed, input_axes=input_axes, output_axes=output_axes)
            initializer = initializer.__class__.from_config(config)
        self._build_weights(tuple(kernel_shape), bias_shape or (), initializer)
        self.input_spec = keras.layers.InputSpec(ndim=len(input_shape))

    def call(self, inputs):
        outputs = ops.einsum(self.equation, inputs, self.masked_kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self._finish(outputs)

    def compute_output_shape(self, input_shape):
        shapes = _einsum_shapes(
            self.equation, self.bias_axes, input_shape, self.partial_output_shape
        )
        return tuple(shapes[2])

    def get_config(self) -> dict:
        config = super().get_config()
        del config["use_bias"]  # the stock layer has a bias exactly when bias_axes is set
        config.update(
            equation=self.equation,
            output_shape=self.partial_output_shape,
            bias_axes=self.bias_axes,
        )
        return config


# The three forms of EinsumDense's equation: no ellipsis, an ellipsis on the left of the input
# and output, or one on their right; `True` for the left one.
_EINSUM_FORMS = (
    (re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)"), False),
    (re.compile(r"\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)"), True),
    (re.compile(r"([a-zA-Z]{2,})\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\."), False),
)


def _split_equation(equation: str) -> tuple[str, str, str, bool]:
    """`(input spec, kernel spec, output spec, ellipsis on the left)` of an equation."""
    for pattern, left in _EINSUM_FORMS:
        match = pattern.fullmatch(equation)
        if match:
            return (*match.groups(), left)
    raise ModelError(
        f"invalid einsum equation {equation!r}: write it as 'ab,bc->ac', '...ab,bc->...ac' "
        "or 'ab...,bc->ac...'"
    )


def _einsum_shapes(equation: str, bias_axes, input_shape, partial_output_shape):
    """The shapes `keras.layers.EinsumDense` derives from its equation, as it derives them.

    Returns:
        `(kernel shape, bias shape or None, full output shape, input axes, output axes)`, the
        axes being the kernel's axes that the input, and the output, share with it. Unlike
        the stock layer, the output shape has the input's size on the axes they share where
        `output_shape` leaves it `None`, and lists the dimensions a left ellipsis stands for in
        their order.

    Raises:
        ModelError: if the input, the equation and `output_shape` do not fit together.
    """
    input_spec, kernel_spec, output_spec, left = _split_equation(equation)
    input_shape = tuple(input_shape)
    elided = len(input_shape) - len(input_spec)
    output_shape = [input_shape[0], *partial_output_shape]
    if elided > 0 and left:
        output_shape[1:1] = input_shape[1:elided]
    elif elided > 0:
        output_shape.extend(input_shape[len(input_shape) - elided :])
    if left:
        input_index = {dim: i + elided - len(input_shape) for i, dim in enumerate(input_spec)}
        output_index = {dim: i + elided for i, dim in enumerate(output_spec)}
    else:
        input_index = {dim: i for i, dim in enumerate(input_spec)}
        output_index = {dim: i for i, dim in enumerate(output_spec)}
    if elided < 0 or (elided and "..." not in equation):
        raise ModelError(
            f"{equation!r} takes inputs of rank {len(input_spec)}"
            f"{' or more' if '...' in equation else ''}, got shape {input_shape}"
        )
    if len(output_shape) != len(output_spec) + elided:
        raise ModelError(
            f"output_shape {tuple(partial_output_shape)} does not fit {equation!r}: give one "
            "size (or None) for each output axis but the batch and the ellipsis"
        )
    for dim in input_spec:
        if dim in output_index:
            given, wanted = output_shape[output_index[dim]], input_shape[input_index[dim]]
            if given is not None and given != wanted:
                raise ModelError(
                    f"{equation!r}: the input has size {wanted} on axis {dim!r} but "
                    f"output_shape says {given}"
                )
    for dim in output_spec:
        if dim not in input_spec and dim not in kernel_spec:
            raise ModelError(f"{equation!r}: output axis {dim!r} is in neither input nor kernel")
    kernel_shape, input_axes, output_axes = [], [], []
    for i, dim in enumerate(kernel_spec):
        if dim in output_index:
            kernel_shape.append(output_shape[output_index[dim]])
            output_axes.append(i)
        elif dim in input_index:
            kernel_shape.append(input_shape[input_index[dim]])
            input_axes.append(i)
        else:
            raise ModelError(f"{equation!r}: kernel axis {dim!r} is in neither input nor output")
    bias_shape = None
    if bias_axes is not None:
        offset = elided if left else 0
        sizes = {dim: output_shape[i + offset] for i, dim in enumerate(output_spec)}
        first = min(output_spec.find(dim) for dim in bias_axes)
        bias_shape = [sizes[dim] if dim in bias_axes else 1 for dim in output_spec[first:]]
        if not left:
            bias_shape.extend([1] * elided)
    # The output's size on an axis it shares with the input is the input's; the weights'
    # shapes above take only what output_shape gives, as the stock layer's do.
    for dim, index in output_index.items():
        if output_shape[index] is None and dim in input_index:
            output_shape[index] = input_shape[input_index[dim]]
    return kernel_shape, bias_shape, output_shape, input_axes, output_axes


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedEmbedding(MaskedLayer):
    """`keras.layers.Embedding` whose `embeddings` matrix is multiplied by a 0/1 mask.

    Each id looks up its row of `embeddings * embeddings_mask`. With `mask_zero`, id 0 is
    padding and `compute_mask` marks it as the stock layer does.

    The all-ones input of a data-free scorer (SynFlow, SPEC §2) has no meaning for a lookup:
    an Embedding is a Dense layer applied to one-hot vectors, and the all-ones vector is the
    one-hot of every id at once. While `ones_input` is True (see `all_ones_input`), the layer
    therefore ignores the ids and returns, at every position, the sum over the vocabulary of
    the masked rows, `ones(input_dim) @ (embeddings * mask)` (`ones_response`), so the
    signal flows through every kept entry of the matrix. Feed ids of ones: with `mask_zero`,
    `compute_mask` still reads them, and ones mark no position as padding.

    Args:
        input_dim: The vocabulary's size (the largest id + 1).
        output_dim: The embedding's dimension.
        embeddings_initializer: Initializer of the `embeddings` matrix.
        embeddings_regularizer: Regularizer of the `embeddings` matrix.
        embeddings_constraint: Constraint of the `embeddings` matrix.
        mask_zero: Whether id 0 is padding, masked for the layers that follow.
        weights: Optional initial `embeddings`, an `(input_dim, output_dim)` matrix (or a
            list holding it).
        activity_regularizer: Regularizer of the output.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ModelError: if `input_dim` or `output_dim` is not a positive int.

    Example:

    >>> layer = MaskedEmbedding(10, 4, mask_zero=True)
    >>> y = layer(keras.ops.convert_to_tensor([[3, 0, 7]]))
    >>> tuple(layer.embeddings_mask.shape), tuple(y.shape)
    ((10, 4), (1, 3, 4))
    >>> with all_ones_input(layer):
    ...     ones = layer(keras.ops.ones((1, 3), dtype="int32"))  # every row's sum, 3 times
    """

    stock_class = keras.layers.Embedding

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        mask_zero: bool = False,
        weights=None,
        activity_regularizer=None,
        **kwargs,
    ):
        for what, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelError(f"{what} must be a positive int, got {value!r}")
        if kwargs.pop("input_length", None) is not None:
            warnings.warn("Argument `input_length` is deprecated. Just remove it.", stacklevel=2)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.autocast = False
        #: Whether `call` returns `ones_response` (see `all_ones_input`); not saved.
        self.ones_input = False
        if weights is not None:
            self.build()
            if isinstance(weights, (list, tuple)) and len(weights) == 1:
                weights = weights[0]
            self.embeddings.assign(weights)

    def build(self, input_shape=None):
        if self.built:
            return
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint,
        )
        self.embeddings_mask = self.add_mask(self.embeddings)
        self.built = True

    def call(self, inputs):
        if self.ones_input:
            return self.ones_response(inputs)
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        # The looked-up rows of `embeddings * mask`, without forming the whole product: the
        # same numbers, and the gradient stays a gather's.
        outputs = ops.multiply(
            ops.take(self.embeddings, inputs, axis=0),
            ops.take(ops.cast(self.embeddings_mask, self.embeddings.dtype), inputs, axis=0),
        )
        return ops.cast(outputs, self.compute_dtype)

    def ones_response(self, inputs):
        """The output for an all-ones one-hot input at every position of `inputs`.

        Args:
            inputs: Ids (or any numbers) of shape `(batch, ...)`; only the shape is read.

        Returns:
            A tensor of shape `inputs.shape + (output_dim,)` whose every position holds
            `ones(input_dim) @ (embeddings * mask)`, the sum of the masked rows.
        """
        rows = ops.sum(self.masked(self.embeddings), axis=0)
        ones = ops.ones_like(inputs, dtype=self.compute_dtype)
        return ops.multiply(ops.expand_dims(ones, -1), ops.cast(rows, self.compute_dtype))

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=initializers.serialize(self.embeddings_initializer),
            embeddings_regularizer=regularizers.serialize(self.embeddings_regularizer),
            activity_regularizer=regularizers.serialize(self.activity_regularizer),
            embeddings_constraint=constraints.serialize(self.embeddings_constraint),
            mask_zero=self.mask_zero,
        )
        return config


@contextlib.contextmanager
def all_ones_input(model: keras.layers.Layer) -> Iterator[list[MaskedEmbedding]]:
    """Makes every `MaskedEmbedding` in `model` answer with its all-ones response.

    Inside the context, each `MaskedEmbedding` of `model` (itself, or nested at any depth)
    returns `ones_response(inputs)`: the sum of its masked rows at every position, the
    response of the Dense layer it is to an all-ones input. A data-free scorer that feeds a
    network ones (SynFlow) pushes its signal through an Embedding this way. The setting is
    read when the layer is called, so trace a `tf.function` inside the context; on exit each
    layer's setting is what it was before.

    Args:
        model: A Keras model or layer.

    Yields:
        The `MaskedEmbedding` layers found, in model order.

    Example:

    >>> with all_ones_input(model):
    ...     flow = model(keras.ops.ones((1, 8), dtype="int32"), training=False)
    """
    layers = [layer for layer in layers_in_order(model) if isinstance(layer, MaskedEmbedding)]
    before = [layer.ones_input for layer in layers]
    for layer in layers:
        layer.ones_input = True
    try:
        yield layers
    finally:
        for layer, value in zip(layers, before, strict=True):
            layer.ones_input = value
