"""The masked twin of `keras.layers.MultiHeadAttention`, pruned through its projections."""

from __future__ import annotations

import keras

from tfprune._keras_compat import attention_projections, sublayers
from tfprune.errors import ModelError
from tfprune.layers.base import PACKAGE, MaskedLayer
from tfprune.layers.core import MaskedEinsumDense


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMultiHeadAttention(keras.layers.MultiHeadAttention, MaskedLayer):
    """`keras.layers.MultiHeadAttention` whose projections are `MaskedEinsumDense` layers.

    The layer is the stock one (same arguments, configuration, call and weights), except that
    its query, key, value and output projections, and the gate's if `use_gate` is set, are
    built as `MaskedEinsumDense`: their kernels are the prunable weights, addressed as
    `<layer>/query/kernel`, `<layer>/key/kernel`, `<layer>/value/kernel`,
    `<layer>/attention_output/kernel` and `<layer>/gate/kernel`, each with its mask beside it.
    Biases stay dense. The masks belong to the projections, so the layer saves and loads as
    the stock one does, masks included.

    Args:
        num_heads, key_dim, value_dim, dropout, use_bias, output_shape, attention_axes,
            sliding_window, flash_attention, use_gate, seed, *_initializer, *_regularizer,
            *_constraint: As for `keras.layers.MultiHeadAttention`.
        **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ModelError: when built, if the installed Keras made a projection of another class
            (the layer would not be pruned).

    Example:

    >>> attention = MaskedMultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    >>> x = keras.ops.ones((1, 5, 8))
    >>> y = attention(x, x)
    >>> [kernel.path for kernel, _ in attention.query_dense.prunable_pairs()]
    ['mha/query/kernel']
    """

    stock_class = keras.layers.MultiHeadAttention

    def build(self, query_shape, value_shape, key_shape=None):
        with attention_projections(MaskedEinsumDense):
            super().build(query_shape, value_shape, key_shape)
        stock = [
            layer.name for layer in sublayers(self) if isinstance(layer, keras.layers.EinsumDense)
        ]
        if stock:
            raise ModelError(
                f"layer {self.name!r}: Keras {keras.__version__} built the projections "
                f"{', '.join(stock)} unmasked; tfprune._keras_compat.attention_projections "
                "needs updating for this Keras version"
            )
