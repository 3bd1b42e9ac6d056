"""Turning keep-scores into masks (SPEC §1, "Selection").

The number of weights kept is exactly `round(density * N)`, counted over all prunable weights
(`scope="global"`) or over each layer (`scope="layer"`). Ties are broken deterministically: a
stable sort by score, so that among equal scores the lower flat index wins, where the flat index
runs over the layers in `prunable_weights` order and over each kernel in C order. Weights that
are already pruned are never revived.
"""

from __future__ import annotations

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
) -> dict[str, np.ndarray]:
    """Keeps the top keep-scores among the weights that are still alive.

    Args:
        scores: `{path: keep-score array}`, higher means more worth keeping.
        masks: `{path: current 0/1 mask}` of the same shapes; zeros stay zeros.
        density: Fraction of all prunable weights (or of each layer's) to keep, in (0, 1].
        scope: `"global"` ranks all weights together, `"layer"` each layer on its own.
        invert: Keep the lowest keep-scores instead (the `invert` ablation): reversed order,
            never `1 / score`.

    Returns:
        `{path: new 0/1 mask}` (float32), in the order of `masks`. If fewer weights are alive
        than the target count, all alive weights are kept.

    Example:

    >>> select({"k": np.array([3.0, 1.0, 2.0])}, {"k": np.ones(3)}, 2 / 3)["k"]
    array([1., 0., 1.], dtype=float32)
    """
    density = check_density(density)
    check_scope(scope)
    paths = list(masks)
    if set(scores) != set(paths):
        missing = sorted(set(paths) ^ set(scores))
        raise ConfigError(f"scores and masks name different weights: {missing[:3]}")
    for path in paths:
        if scores[path].shape != masks[path].shape:
            raise ConfigError(
                f"score shape {scores[path].shape} != mask shape {masks[path].shape} for {path}"
            )
        if not np.all(np.isfinite(scores[path])):
            raise ConfigError(f"keep-scores of {path} contain NaN or Inf; cannot rank them")
    if scope == "layer":
        return {
            path: _keep_top(
                scores[path].ravel(),
                masks[path].ravel(),
                kept_count(density, masks[path].size),
                invert,
            ).reshape(masks[path].shape)
            for path in paths
        }
    flat_scores = np.concatenate([scores[p].ravel() for p in paths])
    flat_masks = np.concatenate([masks[p].ravel() for p in paths])
    kept = _keep_top(flat_scores, flat_masks, kept_count(density, flat_masks.size), invert)
    result, start = {}, 0
    for path in paths:
        size = masks[path].size
        result[path] = kept[start : start + size].reshape(masks[path].shape)
        start += size
    return result


def _keep_top(scores: np.ndarray, alive: np.ndarray, count: int, invert: bool) -> np.ndarray:
    alive_index = np.flatnonzero(alive)
    kept = np.zeros(scores.shape, dtype=np.float32)
    if count >= alive_index.size:
        kept[alive_index] = 1.0
        return kept
    candidate = scores[alive_index].astype(np.float64)
    # A stable sort keeps equal scores in index order, so ties go to the lower flat index.
    order = np.argsort(candidate if invert else -candidate, kind="stable")
    kept[alive_index[order[:count]]] = 1.0
    return kept
