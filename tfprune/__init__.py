"""tfprune: pruning neural networks at initialization with TensorFlow and Keras 3.

The public API lives here; everything else is private by convention.
"""

from tfprune import data, errors, models
from tfprune.layers import MaskedConv2D, MaskedDense, PrunableWeight, masked, prunable_weights
from tfprune.pruning import (
    ABLATIONS,
    PruneReport,
    Scorer,
    assign_masks,
    get_masks,
    layer_densities,
    load_masks,
    method_names,
    overall_density,
    prune,
    prune_with_report,
    register_scorer,
    save_masks,
    score,
    scorer_names,
    select,
)
from tfprune.training import SGD, PiecewiseSchedule, TrainConfig
from tfprune.version import __version__

# The experiment runner uses every stage above, so it is imported last.
from tfprune.experiment import Experiment, run  # noqa: E402  isort: skip
from tfprune.deploy import export, size_report, strip  # noqa: E402  isort: skip

__all__ = [
    "ABLATIONS",
    "MaskedConv2D",
    "MaskedDense",
    "Experiment",
    "PiecewiseSchedule",
    "PrunableWeight",
    "PruneReport",
    "SGD",
    "Scorer",
    "TrainConfig",
    "__version__",
    "assign_masks",
    "data",
    "errors",
    "get_masks",
    "layer_densities",
    "load_masks",
    "masked",
    "method_names",
    "models",
    "overall_density",
    "prunable_weights",
    "prune",
    "prune_with_report",
    "register_scorer",
    "run",
    "save_masks",
    "score",
    "scorer_names",
    "select",
    "export",
    "size_report",
    "strip",
]
