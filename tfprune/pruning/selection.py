"""Turning keep-scores into masks (SPEC §1, "Selection").

The number of weights kept is exactly `round(density * N)`, counted over all prunable weights
(`scope="global"`) or over each layer (`scope="layer"`). Ties are broken deterministically: a
stable sort by score, so that among equal scores the lower flat index wins, where the flat index
runs over the layers in `prunable_weights` order and over each kernel in C order. Only weights
alive in the masks passed in can be kept: rounds of pruning pass the previous round's masks, so
pruned weights are never revived, except by a method registered as reviving (FORCE), whose
rounds pass the masks from before the `prune` call instead.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from tfprune.errors import ConfigError

SCOPES = ("global", "layer")


def check_density(density) -> float:
    """Returns `density` as a float after checking that it lies in (0, 1].

    Raises:
        ConfigError: if it is not a real number in (0, 1].
    """
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise ConfigError(f"density must be a number in (0, 1], got {density!r}")
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {density!r}")
    return density


def check_scope(scope: str) -> str:
    """Returns `scope` after checking it is one of `SCOPES`."""
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return scope


def kept_count(density: float, total: int) -> int:
    """The exact number of weights kept out of `total` at `density`: `round(density * total)`."""
    return int(round(density * total))


def select(
    scores: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    density: float,
    scope: str = "global",
    invert: bool = False,
    min_layer_density: float = 0.0,
) -> dict[str, np.ndarray]:
    """Keeps the top keep-scores among the weights that are still alive.

    Args:
        scores: `{path: keep-score array}`, higher means more worth keeping.
        masks: `{path: current 0/1 mask}` of the same shapes; zeros stay zeros.
        density: Fraction of all prunable weights (or of each layer's) to keep, in (0, 1].
        scope: `"global"` ranks all weights together, `"layer"` each layer on its own.
        invert: Keep the lowest keep-scores instead (the `invert` ablation): reversed order,
            never `1 / score`.
        min_layer_density: Each layer first keeps its best `ceil(min_layer_density * N_l)`
            weights (at least one when > 0), which prevents layer collapse; the rest of the
            budget is then ranked as usual, so the total stays `round(density * N)`.

    Returns:
        `{path: new 0/1 mask}` (float32), in the order of `masks`. If fewer weights are alive
        than the target count, all alive weights are kept.

    Raises:
        ConfigError: for invalid arguments, mismatched scores, NaN/Inf scores, or a
            `min_layer_density` that needs more weights than `density` keeps.

    Example:

    >>> select({"k": np.array([3.0, 1.0, 2.0])}, {"k": np.ones(3)}, 2 / 3)["k"]
    array([1., 0., 1.], dtype=float32)
    """
    density = check_density(density)
    check_scope(scope)
    floors = layer_floors(masks, min_layer_density)
    _check_scores(scores, masks)
    paths = list(masks)
    if scope == "layer":
        counts = {p: max(kept_count(density, masks[p].size), floors[p]) for p in paths}
        return select_counts(scores, masks, counts, invert)
    # The floors' weights are chosen first (none without a floor), then the rest globally.
    reserved = select_counts(scores, masks, floors, invert) if any(floors.values()) else {}
    total = sum(m.size for m in masks.values())
    remaining = kept_count(density, total) - sum(int(r.sum()) for r in reserved.values())
    if remaining < 0:
        raise ConfigError(
            f"min_layer_density={min_layer_density} keeps more weights than density={density}"
        )
    flat_scores = np.concatenate([scores[p].ravel() for p in paths])
    flat_alive = np.concatenate(
        [((masks[p] != 0) & (reserved[p] == 0) if reserved else masks[p] != 0).ravel()
         for p in paths]
    )
    kept = _keep_top(flat_scores, flat_alive, remaining, invert)
    result, start = {}, 0
    for path in paths:
        size = masks[path].size
        chosen = kept[start : start + size].reshape(masks[path].shape)
        result[path] = np.maximum(chosen, reserved[path]) if reserved else chosen
        start += size
    return result


def select_counts(
    scores: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    counts: dict[str, int],
    invert: bool = False,
) -> dict[str, np.ndarray]:
    """Keeps the top `counts[path]` keep-scores of each layer among its alive weights.

    Example:

    >>> select_counts({"k": np.array([3.0, 1.0, 2.0])}, {"k": np.ones(3)}, {"k": 1})["k"]
    array([1., 0., 0.], dtype=float32)
    """
    _check_scores(scores, masks)
    return {
        path: _keep_top(
            scores[path].ravel(), masks[path].ravel(), int(counts[path]), invert
        ).reshape(masks[path].shape)
        for path in masks
    }


def _check_scores(scores: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> None:
    if set(scores) != set(masks):
        differing = sorted(set(masks) ^ set(scores))
        raise ConfigError(f"scores and masks name different weights: {differing[:3]}")
    for path in masks:
        if scores[path].shape != masks[path].shape:
            raise ConfigError(
                f"score shape {scores[path].shape} != mask shape {masks[path].shape} for {path}"
            )
        if not np.all(np.isfinite(scores[path])):
            raise ConfigError(f"keep-scores of {path} contain NaN or Inf; cannot rank them")


def layer_floors(masks: dict[str, np.ndarray], min_layer_density) -> dict[str, int]:
    """Each layer's minimum kept count: `ceil(min_layer_density * N_l)`, at least 1 if > 0."""
    if isinstance(min_layer_density, bool) or not isinstance(min_layer_density, numbers.Real):
        raise ConfigError(
            f"min_layer_density must be a number in [0, 1], got {min_layer_density!r}"
        )
    if not 0.0 <= min_layer_density <= 1.0:
        raise ConfigError(f"min_layer_density must be in [0, 1], got {min_layer_density!r}")
    if not min_layer_density:
        return {path: 0 for path in masks}
    return {path: max(1, math.ceil(min_layer_density * m.size)) for path, m in masks.items()}


def _keep_top(scores: np.ndarray, alive: np.ndarray, count: int, invert: bool) -> np.ndarray:
    """A 0/1 array keeping the `count` best alive scores, ties to the lower flat index.

    The same weights as a stable sort of the alive scores taking the first `count`, found in
    linear time: the `count`-th best score is located by a partition (of a copy of the alive
    scores), every alive weight scoring better is kept, and the ties at that score go to the
    lowest indices.
    """
    alive = np.asarray(alive)
    if alive.dtype != np.bool_:
        alive = alive != 0
    alive_count = int(np.count_nonzero(alive))
    if count >= alive_count:
        return alive.astype(np.float32)
    if count <= 0:
        return np.zeros(scores.shape, dtype=np.float32)
    every = alive_count == scores.size
    # A copy of the alive scores (a gathered one is a copy already), partitioned in place.
    candidate = np.array(scores) if every else scores[alive]
    # The `count`-th best in ascending position: the best are the highest (lowest for invert).
    position = count - 1 if invert else candidate.size - count
    candidate.partition(position)
    threshold = candidate[position]
    del candidate
    better = scores < threshold if invert else scores > threshold
    tie = scores == threshold
    if not every:
        better &= alive
        tie &= alive
    ties = np.flatnonzero(tie)[: count - int(np.count_nonzero(better))]
    kept = better.astype(np.float32)
    kept[ties] = 1.0
    return kept
