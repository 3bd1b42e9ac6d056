"""Per-layer counts of the allocations (SPEC §3): `layer` (the baseline `uniform`) and `erk`.

An allocation fixes how many weights each layer keeps; the method's keep-scores choose the
positions inside each layer. With random keep-scores these are the paper's layerwise
baselines, which test its claim that only the per-layer densities matter.
"""

from __future__ import annotations

import math

from tfprune.pruning.selection import kept_count


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
