"""Pruning: scorers → selection → ablations → masks.

Names are imported on first use (PEP 562), so that the TensorFlow-free parts (selection,
per-layer counts) can be imported without the rest.
"""

import importlib

# Public name -> the module of this package that defines it.
_ORIGINS = {
    **dict.fromkeys(("ABLATIONS", "check_ablations", "reinitialize", "shuffle_masks"), "ablations"),
    **dict.fromkeys(
        (
            "PruneReport",
            "check_method",
            "check_options",
            "method_names",
            "needs_data",
            "prune",
            "prune_with_report",
            "score",
        ),
        "api",
    ),
    **dict.fromkeys(("erk_counts", "uniform_counts"), "layerwise"),
    **dict.fromkeys(
        (
            "assign_masks",
            "collapsed_layers",
            "get_masks",
            "layer_densities",
            "load_masks",
            "overall_density",
            "save_masks",
        ),
        "masks",
    ),
    **dict.fromkeys(("Scorer", "get_scorer", "register_scorer", "scorer_names"), "scorers"),
    **dict.fromkeys(("kept_count", "select", "select_counts"), "selection"),
}

__all__ = sorted(_ORIGINS)


def __getattr__(name: str):
    if name not in _ORIGINS:
        raise AttributeError(f"module 'tfprune.pruning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tfprune.pruning.{_ORIGINS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ORIGINS})
