"""Pruning: scorers → selection → ablations → masks."""

from tfprune.pruning import grasp, synflow  # noqa: F401  (importing registers the scorers)
from tfprune.pruning.ablations import ABLATIONS, check_ablations, reinitialize, shuffle_masks
from tfprune.pruning.api import (
    PruneReport,
    check_method,
    check_options,
    method_names,
    needs_data,
    prune,
    prune_with_report,
    score,
)
from tfprune.pruning.layerwise import erk_counts, uniform_counts
from tfprune.pruning.masks import (
    assign_masks,
    collapsed_layers,
    get_masks,
    layer_densities,
    load_masks,
    overall_density,
    save_masks,
)
from tfprune.pruning.scorers import Scorer, get_scorer, register_scorer, scorer_names
from tfprune.pruning.selection import kept_count, select, select_counts

__all__ = [
    "ABLATIONS",
    "PruneReport",
    "Scorer",
    "assign_masks",
    "check_ablations",
    "check_method",
    "check_options",
    "collapsed_layers",
    "erk_counts",
    "get_masks",
    "get_scorer",
    "kept_count",
    "layer_densities",
    "load_masks",
    "method_names",
    "needs_data",
    "overall_density",
    "prune",
    "prune_with_report",
    "register_scorer",
    "reinitialize",
    "save_masks",
    "score",
    "scorer_names",
    "select",
    "select_counts",
    "shuffle_masks",
    "uniform_counts",
]
