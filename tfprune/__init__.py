"""tfprune: pruning neural networks at initialization with TensorFlow and Keras 3.

The public API lives here; everything else is private by convention.
"""

from tfprune import errors
from tfprune.layers import MaskedConv2D, MaskedDense, PrunableWeight, masked, prunable_weights
from tfprune.pruning import (
    Scorer,
    assign_masks,
    get_masks,
    layer_densities,
    load_masks,
    overall_density,
    prune,
    register_scorer,
    save_masks,
    score,
    scorer_names,
    select,
)
from tfprune.version import __version__

__all__ = [
    "MaskedConv2D",
    "MaskedDense",
    "PrunableWeight",
    "Scorer",
    "__version__",
    "assign_masks",
    "errors",
    "get_masks",
    "layer_densities",
    "load_masks",
    "masked",
    "overall_density",
    "prunable_weights",
    "prune",
    "register_scorer",
    "save_masks",
    "score",
    "scorer_names",
    "select",
]
