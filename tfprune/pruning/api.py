"""The pruning entry points: `score` and `prune`."""

from __future__ import annotations

import numbers

import keras
import numpy as np
from absl import logging

from tfprune.errors import ConfigError, DataError, ModelError
from tfprune.layers import prunable_weights
from tfprune.pruning._batches import DEFAULT_BATCH_SIZE, as_batches
from tfprune.pruning.masks import assign_masks, collapsed_layers, get_masks
from tfprune.pruning.scorers import get_scorer
from tfprune.pruning.selection import check_density, check_scope, select


def score(
    model: keras.Model,
    method: str,
    data=None,
    *,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options,
) -> dict[str, np.ndarray]:
    """Computes a method's keep-scores for every prunable kernel of `model`.

    Args:
        model: A built model with masked layers (see `tfprune.masked`).
        method: A registered method name (`tfprune.scorer_names()`).
        data: For data-driven methods, a `tf.data.Dataset` of `(x, y)` batches or an `(x, y)`
            tuple of arrays (split into batches of `batch_size`).
        seed: Seed of seeded methods (`random`).
        batch_size: Batch size used to split tuple data.
        **options: Options of the method (for example `from_logits` for `snip`).

    Returns:
        `{kernel path: float64 array of the kernel's shape}`; higher means more worth keeping.

    Example:

    >>> scores = tfprune.score(model, "magnitude")
    """
    scorer = get_scorer(method, **options)
    weights = _weights(model)
    batches = _batches_for(scorer, model, data, batch_size)
    scores = scorer(model, weights, batches, np.random.default_rng(_check_seed(seed)))
    return {path: np.asarray(scores[path], dtype=np.float64) for path in weights}


def prune(
    model: keras.Model,
    method: str,
    density: float,
    data=None,
    *,
    scope: str = "global",
    seed: int = 0,
    rounds: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options,
) -> dict[str, np.ndarray]:
    """Scores `model` with `method`, keeps the top `density` of its weights and assigns the masks.

    With `rounds` > 1 the method is iterated: after round i (1..rounds) the density is
    `density ** (i / rounds)`, each round rescoring the network with the previous round's mask.
    Weights that are already pruned in `model` stay pruned.

    Args:
        model: A built model with masked layers (see `tfprune.masked`).
        method: A registered method name (`tfprune.scorer_names()`).
        density: Fraction of the prunable weights to keep, in (0, 1].
        data: Pruning data for data-driven methods (see `score`).
        scope: `"global"` (rank all weights together) or `"layer"` (each layer keeps `density`).
        seed: Seed of seeded methods.
        rounds: Number of pruning rounds with the exponential density schedule.
        batch_size: Batch size used to split tuple data.
        **options: Options of the method.

    Returns:
        `{kernel path: float32 0/1 mask}`, the masks now held by the model.

    Example:

    >>> masks = tfprune.prune(model, "snip", 0.1, data=(x, y))
    """
    density = check_density(density)
    check_scope(scope)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    scorer = get_scorer(method, **options)
    weights = _weights(model)
    batches = _batches_for(scorer, model, data, batch_size)
    rng = np.random.default_rng(_check_seed(seed))
    masks = get_masks(model)
    for i in range(1, rounds + 1):
        scores = scorer(model, weights, batches, rng)
        masks = select(scores, masks, density ** (i / rounds), scope)
        assign_masks(model, masks)
    for path in collapsed_layers(masks):
        logging.warning("layer collapse: %s keeps no weight at density %g", path, density)
    return masks


def _weights(model):
    weights = prunable_weights(model)
    if not weights:
        raise ModelError(
            "the model has no prunable layers: build it from tfprune.MaskedDense/MaskedConv2D "
            "or convert it with tfprune.masked(model)"
        )
    return weights


def _batches_for(scorer, model, data, batch_size):
    if not scorer.needs_data:
        return None
    if data is None:
        raise DataError(
            f"method {scorer.name!r} needs data: pass data=(x, y) or a tf.data.Dataset of batches"
        )
    return as_batches(data, _num_outputs(model), batch_size)


def _num_outputs(model) -> int:
    try:
        return int(model.output_shape[-1])
    except (AttributeError, TypeError, ValueError) as error:
        raise ModelError(
            "cannot tell the model's number of classes: use a functional or Sequential model "
            "with one output"
        ) from error


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)
