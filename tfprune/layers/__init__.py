"""Keras layers whose weights carry pruning masks, and the conversion of whole models.

Importing this package registers every masked layer with Keras' serialization, so
`keras.models.load_model` can rebuild them. The table `register_masked` fills tells `masked()`
which stock layer becomes which masked twin; `strip()` goes back.
"""

from tfprune.layers.attention import MaskedMultiHeadAttention
from tfprune.layers.base import (
    MaskedLayer,
    PrunableWeight,
    layers_in_order,
    mask_map,
    prunable_weights,
)
from tfprune.layers.conv import (
    MaskedConv,
    MaskedConv1D,
    MaskedConv1DTranspose,
    MaskedConv2D,
    MaskedConv2DTranspose,
    MaskedConv3D,
    MaskedConv3DTranspose,
    MaskedConvTranspose,
    MaskedDepthwiseConv,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedSeparableConv,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
)
from tfprune.layers.convert import (
    UnprunedLayerWarning,
    clone_and_copy,
    masked,
    masked_twins,
    register_masked,
    stock_twin,
    transfer_weights,
    unpruned_layers,
    warn_unpruned,
)
from tfprune.layers.core import (
    KernelLayer,
    MaskedDense,
    MaskedEinsumDense,
    MaskedEmbedding,
    all_ones_input,
)

#: Every masked twin of a stock Keras layer that tfprune defines.
MASKED_LAYERS = (
    MaskedDense,
    MaskedEinsumDense,
    MaskedEmbedding,
    MaskedMultiHeadAttention,
    MaskedConv1D,
    MaskedConv2D,
    MaskedConv3D,
    MaskedConv1DTranspose,
    MaskedConv2DTranspose,
    MaskedConv3DTranspose,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
)

for _layer in MASKED_LAYERS:
    register_masked(_layer.stock_class, _layer)
del _layer

__all__ = [
    "MASKED_LAYERS",
    "KernelLayer",
    "MaskedConv",
    "MaskedConv1D",
    "MaskedConv1DTranspose",
    "MaskedConv2D",
    "MaskedConv2DTranspose",
    "MaskedConv3D",
    "MaskedConv3DTranspose",
    "MaskedConvTranspose",
    "MaskedDense",
    "MaskedDepthwiseConv",
    "MaskedDepthwiseConv1D",
    "MaskedDepthwiseConv2D",
    "MaskedEinsumDense",
    "MaskedEmbedding",
    "MaskedLayer",
    "MaskedMultiHeadAttention",
    "MaskedSeparableConv",
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "PrunableWeight",
    "UnprunedLayerWarning",
    "all_ones_input",
    "clone_and_copy",
    "layers_in_order",
    "mask_map",
    "masked",
    "masked_twins",
    "prunable_weights",
    "register_masked",
    "stock_twin",
    "transfer_weights",
    "unpruned_layers",
    "warn_unpruned",
]
