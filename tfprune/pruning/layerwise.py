"""Per-layer density baselines (SPEC §3): `uniform`, `erk` and `ratio_of:<method>`.

They fix how many weights each layer keeps and choose the positions at random inside each
layer, which tests the paper's claim that only the per-layer densities matter.
"""

from __future__ import annotations

import math

import numpy as np

from tfprune.errors import ConfigError
from tfprune.pruning.selection import kept_count

RATIO_OF = "ratio_of:"
LAYERWISE = ("uniform", "erk")


def is_layerwise(method: str) -> bool:
    """Whether `method` names a per-layer density baseline."""
    return method in LAYERWISE or method.startswith(RATIO_OF)


def inner_method(method: str) -> str:
    """The method whose per-layer densities `ratio_of:<method>` copies."""
    inner = method[len(RATIO_OF) :]
    if not inner or is_layerwise(inner):
        raise ConfigError(
            f"{method!r} needs a scoring method after 'ratio_of:', e.g. ratio_of:snip"
        )
    return inner


def uniform_counts(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, int]:
    """Every layer keeps `round(density * N_l)` of its `N_l` weights."""
    return {path: kept_count(density, math.prod(shape)) for path, shape in shapes.items()}


def erk_counts(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, int]:
    """Erdős–Rényi-Kernel counts: density_l ∝ sum(dims) / prod(dims), scaled to `density`.

    Layers whose density would exceed 1 are kept dense and the others re-solved. Counts are
    then rounded by largest remainder so that exactly `round(density * N)` weights are kept.

    Example:

    >>> erk_counts({"a": (100, 10), "b": (10, 2)}, 0.5)
    {'a': 490, 'b': 20}
    """
    sizes = {path: math.prod(shape) for path, shape in shapes.items()}
    raw = {path: sum(shape) / sizes[path] for path, shape in shapes.items()}
    total = sum(sizes.values())
    target = kept_count(density, total)
    dense: set[str] = set()
    while True:
        free = [p for p in sizes if p not in dense]
        budget = target - sum(sizes[p] for p in dense)
        weight = sum(raw[p] * sizes[p] for p in free)
        scale = budget / weight if weight else 0.0
        over = [p for p in free if raw[p] * scale > 1.0]
        if not over:
            break
        dense.update(over)
    ideal = {p: float(sizes[p]) if p in dense else raw[p] * scale * sizes[p] for p in sizes}
    return _largest_remainder(ideal, sizes, target)


def _largest_remainder(
    ideal: dict[str, float], sizes: dict[str, int], target: int
) -> dict[str, int]:
    counts = {p: min(sizes[p], math.floor(v)) for p, v in ideal.items()}
    missing = target - sum(counts.values())
    # Stable order: largest fractional part first, then the earlier layer.
    order = sorted(ideal, key=lambda p: -(ideal[p] - math.floor(ideal[p])))
    for path in order:
        if missing <= 0:
            break
        if counts[path] < sizes[path]:
            counts[path] += 1
            missing -= 1
    return counts


def random_positions(
    masks: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random keep-scores, one U(0, 1) draw per weight, for choosing positions in a layer."""
    return {path: rng.random(mask.shape) for path, mask in masks.items()}
