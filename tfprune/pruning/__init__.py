"""Pruning: scorers → selection → masks."""

from tfprune.pruning.api import prune, score
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
from tfprune.pruning.selection import kept_count, select

__all__ = [
    "Scorer",
    "assign_masks",
    "collapsed_layers",
    "get_masks",
    "get_scorer",
    "kept_count",
    "layer_densities",
    "load_masks",
    "overall_density",
    "prune",
    "register_scorer",
    "save_masks",
    "score",
    "scorer_names",
    "select",
]
