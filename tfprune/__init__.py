"""tfprune: pruning neural networks at initialization with TensorFlow and Keras 3.

The public API lives here; everything else is private by convention. Names are imported on
first use (PEP 562): `import tfprune` loads no TensorFlow, so that the report and the planning
of a sweep stay light and `python -m tfprune.<command>` can set TensorFlow's log level before
TensorFlow is imported. Keras learns tfprune's layers when `tfprune.layers` is imported (by
`tfprune.load_model`, `tfprune.MaskedDense`, `tfprune.masked`, ...).
"""

import importlib

from tfprune.version import __version__

# Public modules published under another name than their file's: `tfprune.keras` is
# tfprune/keras_callbacks.py, since a file keras.py would be imported for `import keras` by a
# script run from inside the package's directory.
_MODULE_ALIASES = {"keras": "tfprune.keras_callbacks"}

# Public name -> the module that defines it.
_ORIGINS = {
    "data": "tfprune.data",
    "errors": "tfprune.errors",
    "models": "tfprune.models",
    **_MODULE_ALIASES,
    **dict.fromkeys(
        (
            "MaskedConv1D",
            "MaskedConv1DTranspose",
            "MaskedConv2D",
            "MaskedConv2DTranspose",
            "MaskedConv3D",
            "MaskedConv3DTranspose",
            "MaskedDense",
            "MaskedDepthwiseConv1D",
            "MaskedDepthwiseConv2D",
            "MaskedEinsumDense",
            "MaskedEmbedding",
            "MaskedLayer",
            "MaskedMultiHeadAttention",
            "MaskedSeparableConv1D",
            "MaskedSeparableConv2D",
            "PrunableWeight",
            "UnprunedLayerWarning",
            "masked",
            "prunable_weights",
            "register_masked",
            "unpruned_layers",
        ),
        "tfprune.layers",
    ),
    **dict.fromkeys(
        (
            "ABLATIONS",
            "PruneReport",
            "Scorer",
            "assign_masks",
            "get_masks",
            "layer_densities",
            "load_masks",
            "method_names",
            "overall_density",
            "prune",
            "prune_with_report",
            "register_scorer",
            "save_masks",
            "score",
            "scorer_names",
            "select",
        ),
        "tfprune.pruning",
    ),
    **dict.fromkeys(("SGD", "PiecewiseSchedule", "TrainConfig"), "tfprune.training"),
    **dict.fromkeys(("Experiment", "run"), "tfprune.experiment"),
    **dict.fromkeys(("export", "load_model", "size_report", "strip"), "tfprune.deploy"),
}

__all__ = ["__version__", *_ORIGINS]


def __getattr__(name: str):
    origin = _ORIGINS.get(name)
    if origin is None:
        raise AttributeError(f"module 'tfprune' has no attribute {name!r}")
    module = importlib.import_module(origin)
    is_module = origin == f"tfprune.{name}" or name in _MODULE_ALIASES
    value = module if is_module else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ORIGINS})
