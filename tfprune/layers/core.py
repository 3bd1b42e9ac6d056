"""Masked twins of Keras' core layers: `MaskedDense`."""

from __future__ import annotations

import keras
from keras import activations, constraints, initializers, ops, regularizers

from tfprune.layers.base import PACKAGE, MaskedLayer


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
