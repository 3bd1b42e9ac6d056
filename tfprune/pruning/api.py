"""The pruning entry points: `score`, `prune` and `prune_with_report`."""

from __future__ import annotations

import dataclasses
import numbers
import time

import keras
import numpy as np
from absl import logging

from tfprune import registry, streams
from tfprune.errors import ConfigError, DataError, ModelError
from tfprune.layers import prunable_weights, warn_unpruned
from tfprune.layers.precision import computed_in_float32
from tfprune.pruning._batches import DEFAULT_BATCH_SIZE, as_batches
from tfprune.pruning._losses import resolve_loss
from tfprune.pruning.ablations import check_ablations, reinitialize, shuffle_masks
from tfprune.pruning.layerwise import erk_counts
from tfprune.pruning.masks import (
    assign_masks,
    assign_selected,
    collapsed_layers,
    get_masks,
    layer_densities,
    overall_density,
)
from tfprune.pruning.scorers import get_scorer, scorer_names
from tfprune.pruning.selection import (
    check_density,
    check_scope,
    kept_count,
    layer_floors,
    select,
    select_counts,
)


def method_names() -> list[str]:
    """Every name `prune` accepts: the scored methods and the allocation aliases (`uniform`,
    `erk`, `ratio_of:<method>`)."""
    return scorer_names() + registry.allocation_aliases()


def check_method(method: str) -> str:
    """Returns `method` after checking that `prune` accepts it.

    Raises:
        ConfigError: naming the bad value and the accepted ones.
    """
    if registry.is_alias(method):
        registry.resolve(method)  # names a bad `ratio_of:<method>` precisely
    elif not isinstance(method, str) or method not in scorer_names():
        raise ConfigError(
            f"unknown pruning method {method!r}; choose one of {registry.listing(method_names())}"
        )
    return method


def check_options(method: str, options: dict) -> dict:
    """Returns `options` after checking that `method` takes every one of them.

    Raises:
        ConfigError: for an unknown method, or an option it does not take (naming the ones it
            takes).
    """
    check_method(method)
    scored, _ = registry.resolve(method)
    return registry.check_options(scored, options, shown=method)


def needs_data(method: str, allocation: str | None = None) -> bool:
    """Whether `method` needs pruning data (its scores, or the per-layer densities that its
    allocation copies from another method)."""
    check_method(method)
    return registry.needs_data(*_resolve(method, registry.GLOBAL, allocation))


def score(
    model: keras.Model,
    method: str,
    data=None,
    *,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loss=None,
    input_shape=None,
    **options,
) -> dict[str, np.ndarray]:
    """Computes a method's keep-scores for every prunable kernel of `model`.

    Any Keras 3 model built from masked layers can be scored: functional, Sequential or
    subclassed, with one or several inputs and outputs.

    Args:
        model: A built model with masked layers (see `tfprune.masked`).
        method: A registered scorer name (`tfprune.scorer_names()`).
        data: For data-driven methods, a `tf.data.Dataset` of `(x, y)` batches or an `(x, y)`
            tuple of arrays (split into batches of `batch_size`). `x` (and `y`) may be a
            tuple or dict of arrays for a model with several inputs (outputs); integer inputs
            (token ids) stay integers.
        seed: Seed of seeded methods (`random`).
        batch_size: Batch size used to split tuple data.
        loss: The loss L of data-driven methods, as `model.compile(loss=...)` takes it: a
            Keras loss name (`"mse"`), a `keras.losses.Loss`, a callable
            `(y_true, y_pred) -> loss` (per example or reduced), or a list or dict with one per
            output. L is its batch mean. By default the model's compiled loss, or for a model
            that is not compiled the sparse categorical cross-entropy of its logits (labels
            then must be class indices). Options of the default cross-entropy (`temperature`,
            `from_logits`) are refused with another loss.
        input_shape: The shape of one example, without the batch axis (a tuple per input for
            several inputs), for methods that feed the network a synthetic input (`synflow`);
            by default the model's declared or built input shape.
        **options: Options of the method (for example `temperature` for `grasp`).

    Returns:
        `{kernel path: float64 array of the kernel's shape}`; higher means more worth keeping.

    Raises:
        ConfigError: for an unknown method or option, a loss that cannot be used, or a
            `loss`/`input_shape` the method does not use.
        DataError: for missing or malformed data.
        ModelError: for a model without prunable layers, or one the method cannot score.

    Example:

    >>> scores = tfprune.score(model, "magnitude")
    >>> scores = tfprune.score(regressor, "snip", data=(x, y), loss="mse")
    """
    scorer = get_scorer(method, **options)
    entry = registry.get(method)
    _check_loss_use(loss, entry.needs_data, method)
    _check_input_shape_use(input_shape, [method], method)
    _give_input_shape(scorer, input_shape)
    weights = _weights(model)
    batches = _batches_for(entry, model, data, batch_size, loss, options)
    rng = streams.generator(_check_seed(seed), "scores")
    with computed_in_float32(model):
        scores = scorer(model, weights, batches, rng)
    return {path: np.array(scores[path], dtype=np.float64) for path in weights}


@dataclasses.dataclass
class PruneReport:
    """What `prune_with_report` did.

    Attributes:
        masks: `{path: float32 0/1 mask}` now held by the model.
        layer_density: `{path: fraction kept}`.
        density: Overall fraction kept.
        collapsed_layers: Paths of kernels that keep no weight.
        score_stats: `{path: {min, max, mean, std, median, kept_min}}` of the last round's
            keep-scores (`kept_min` is the lowest score kept; None when nothing is kept).
        rounds: Rounds run.
        ablations: Ablations applied.
        seconds: Wall time.
        unpruned_layers: `{layer path: parameter count}` of the layers whose kernel-like
            weights no mask covers, which stayed dense (see `tfprune.unpruned_layers`); each
            is also warned about with a `tfprune.UnprunedLayerWarning`.
    """

    masks: dict
    layer_density: dict
    density: float
    collapsed_layers: list
    score_stats: dict
    rounds: int
    ablations: tuple
    seconds: float
    unpruned_layers: dict = dataclasses.field(default_factory=dict)


def prune(
    model: keras.Model,
    method: str,
    density: float,
    data=None,
    *,
    scope: str = "global",
    allocation: str | None = None,
    seed: int = 0,
    rounds: int | None = None,
    ablations=(),
    min_layer_density: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loss=None,
    input_shape=None,
    **options,
) -> dict[str, np.ndarray]:
    """Scores `model` with `method`, keeps the top `density` of its weights and assigns the masks.

    With `rounds` > 1 the method is iterated: after round i (1..rounds) the density is
    `density ** (i / rounds)`, each round rescoring the network with the previous round's mask.
    Weights that are already pruned in `model` stay pruned. Each round keeps weights among those
    the previous round kept, except for `force`, which gives pruned weights a score: its rounds
    choose among all the weights alive when the call began, so they can bring back weights
    pruned by an earlier round of the same call.

    Args:
        model: A built model with masked layers (see `tfprune.masked`).
        method: A scorer (`tfprune.scorer_names()`), or `"uniform"`, `"erk"` or
            `"ratio_of:<scorer>"`: random pruning with that allocation (the old names of the
            per-layer baselines).
        density: Fraction of the prunable weights to keep, in (0, 1].
        data: Pruning data for data-driven methods (see `score`).
        scope: `"global"` or `"layer"`: the allocation when `allocation` is not given
            (ignored by the allocation aliases, as it always was).
        allocation: How many weights each layer keeps: `"global"` (rank all weights
            together), `"layer"` (each layer keeps `density`; `"uniform"` is the same), `"erk"`
            (Erdős–Rényi-Kernel layer densities) or `"ratio_of:<scorer>"` (the layer densities
            that scorer chooses globally); the method's keep-scores then choose the positions
            inside each layer.
        seed: Seed of seeded methods and of the ablations.
        rounds: Pruning rounds with the exponential density schedule (default: the method's,
            100 for `synflow`, 60 for `iter_snip` and `force`, else 1).
        ablations: Any of `"shuffle"` (permute each layer's final mask), `"reinit"` (redraw
            the weights from their initializers with a new seed) and `"invert"` (keep the lowest
            keep-scores, every round).
        min_layer_density: Each layer keeps at least this fraction (at least one weight when
            > 0), preventing layer collapse. With global selection the total stays exactly
            `round(density * N)`; per-layer rules (`scope="layer"`, `uniform`, `erk`,
            `ratio_of:*`) raise a layer below the floor up to it, adding to the total.
        batch_size: Batch size used to split tuple data.
        loss: The loss of data-driven methods (see `score`): by default the model's
            compiled loss, else the cross-entropy of its logits.
        input_shape: The example shape for methods that feed a synthetic input (see `score`).
        **options: Options of the method.

    Returns:
        `{kernel path: float32 0/1 mask}`, the masks now held by the model.

    Example:

    >>> masks = tfprune.prune(model, "snip", 0.1, data=(x, y), ablations=("shuffle",))
    """
    return prune_with_report(
        model,
        method,
        density,
        data,
        scope=scope,
        allocation=allocation,
        seed=seed,
        rounds=rounds,
        ablations=ablations,
        min_layer_density=min_layer_density,
        batch_size=batch_size,
        loss=loss,
        input_shape=input_shape,
        **options,
    ).masks


def prune_with_report(
    model: keras.Model,
    method: str,
    density: float,
    data=None,
    *,
    scope: str = "global",
    allocation: str | None = None,
    seed: int = 0,
    rounds: int | None = None,
    ablations=(),
    min_layer_density: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loss=None,
    input_shape=None,
    **options,
) -> PruneReport:
    """`prune`, returning a `PruneReport` with per-layer densities and score statistics."""
    started = time.time()
    check_method(method)
    density = check_density(density)
    check_scope(scope)
    method, allocation = _resolve(method, scope, allocation)
    registry.check_options(method, options, shown=method)
    _check_loss_use(loss, registry.needs_data(method, allocation), method)
    _check_input_shape_use(input_shape, _scored_methods(method, allocation), method)
    ablations = check_ablations(ablations)
    _check_ablations_apply(ablations, method)
    seed = _check_seed(seed)
    weights = _weights(model)
    invert = "invert" in ablations
    settings = _Settings(batch_size, loss, input_shape)
    counts = _allocated_counts(
        model, allocation, density, data, weights, seed, invert, min_layer_density, settings
    )
    masks, stats, rounds = _prune_scored(
        model,
        method,
        density,
        data,
        weights,
        allocation=allocation,
        counts=counts,
        seed=seed,
        rounds=rounds,
        invert=invert,
        min_layer_density=min_layer_density,
        settings=settings,
        options=options,
    )
    if "shuffle" in ablations:
        masks = shuffle_masks(masks, seed)
        assign_masks(model, masks)
    if "reinit" in ablations:
        reinitialize(model, seed)
    collapsed = collapsed_layers(masks)
    for path in collapsed:
        logging.warning("layer collapse: %s keeps no weight at density %g", path, density)
    return PruneReport(
        masks=masks,
        layer_density=layer_densities(masks),
        density=overall_density(masks),
        collapsed_layers=collapsed,
        score_stats=stats,
        rounds=rounds,
        ablations=ablations,
        seconds=time.time() - started,
        unpruned_layers=warn_unpruned(model),
    )


def _resolve(method: str, scope: str, allocation: str | None) -> tuple[str, str]:
    """The scored method and the allocation: an alias (`uniform`, `erk`, `ratio_of:<m>`) sets
    the allocation itself and ignores `scope`, as the layerwise methods always did."""
    if registry.is_alias(method) and allocation is None:
        return registry.resolve(method)
    return registry.resolve(method, scope if allocation is None else allocation)


def _allocated_counts(
    model, allocation, density, data, weights, seed, invert, min_layer_density, settings
) -> dict[str, int] | None:
    """The layer counts at `density` of an allocation that fixes them in advance (`erk`,
    `ratio_of:<m>`), raised to the `min_layer_density` floors; None for `global` and `layer`,
    which selection computes round by round."""
    if allocation in (registry.GLOBAL, registry.LAYER):
        return None
    if allocation == registry.ERK:
        shapes = {path: tuple(w.kernel.shape) for path, w in weights.items()}
        counts = erk_counts(shapes, density)
    else:
        # The copied method's own global selection, its own rounds, on the current masks.
        original = get_masks(model)
        inner, _, _ = _prune_scored(
            model,
            allocation[len(registry.RATIO_OF) :],
            density,
            data,
            weights,
            allocation=registry.GLOBAL,
            counts=None,
            seed=seed,
            rounds=None,
            invert=invert,
            min_layer_density=min_layer_density,
            settings=settings,
            options={},
        )
        counts = {path: int(np.count_nonzero(mask)) for path, mask in inner.items()}
        assign_masks(model, original)
    floors = layer_floors(get_masks(model), min_layer_density)
    return {path: max(count, floors[path]) for path, count in counts.items()}


def _prune_scored(
    model,
    method,
    density,
    data,
    weights,
    *,
    allocation,
    counts,
    seed,
    rounds,
    invert,
    min_layer_density,
    settings,
    options,
):
    """Rounds of scoring and selection. Round i of R keeps `density ** (i / R)`: globally,
    in each layer, or, for fixed layer counts `counts`, `counts[l] * (density_i / density)` of
    each layer (exactly `counts` in the last round).

    Each round chooses among the weights the previous round kept, except for a method
    registered with `settings={"revives": True}` (FORCE), whose pruned weights keep a score:
    it chooses among the weights alive when the call began, so a weight its own earlier rounds
    pruned can come back, and one pruned before the call cannot."""
    entry = registry.get(method)
    scorer = get_scorer(method, **options)
    _give_input_shape(scorer, settings.input_shape)
    rounds = _check_rounds(entry.default_rounds if rounds is None else rounds)
    batches = _batches_for(entry, model, data, settings.batch_size, settings.loss, options)
    rng = streams.generator(seed, "scores")
    original = masks = get_masks(model)
    revives = bool(entry.settings.get("revives"))
    scores = {}
    try:
        # Mixed-precision layers score in float32: switched once for every round.
        with computed_in_float32(model):
            for i in range(1, rounds + 1):
                target = density ** (i / rounds)
                layer_counts = (
                    None if counts is None else _round_counts(counts, i, rounds, target, density)
                )
                _give_budget(scorer, masks, target, allocation, layer_counts, min_layer_density)
                scores = scorer(model, weights, batches, rng)
                candidates = original if revives else masks
                if layer_counts is None:
                    scope = "layer" if allocation == registry.LAYER else "global"
                    masks = select(scores, candidates, target, scope, invert, min_layer_density)
                else:
                    masks = select_counts(scores, candidates, layer_counts, invert)
                assign_selected(weights, masks)
    except ConfigError:
        # A later round can reject min_layer_density; a rejected call prunes nothing.
        assign_masks(model, original)
        raise
    return masks, _score_stats(scores, masks), rounds


@dataclasses.dataclass(frozen=True)
class Budget:
    """How many weights a round of `prune` keeps, for a scorer whose keep-scores depend on it.

    A scorer that needs it (`phew`, which walks until its budget is met) declares a class
    attribute `budget = None`; `prune` sets it before each round. `score` sets none.

    Attributes:
        total: With global selection, the number kept over all layers; None when the layer
            counts are fixed.
        layers: `{path: count}` kept in each layer when the allocation fixes the counts
            (`layer`, `erk`, `ratio_of:<method>`); None with global selection.
        floors: With global selection, `{path: count}` each layer keeps at least
            (`min_layer_density`, all 0 by default); None otherwise.
    """

    total: int | None
    layers: dict[str, int] | None = None
    floors: dict[str, int] | None = None


def _give_budget(scorer, masks, target, allocation, layer_counts, min_layer_density) -> None:
    """Gives the round's `Budget` to a scorer that reads one (a class attribute `budget`)."""
    if not hasattr(type(scorer), "budget"):
        return
    floors = layer_floors(masks, min_layer_density)
    if layer_counts is None and allocation == registry.LAYER:
        # As `select` counts each layer with scope="layer".
        layer_counts = {p: max(kept_count(target, m.size), floors[p]) for p, m in masks.items()}
    if layer_counts is not None:
        scorer.budget = Budget(total=None, layers=dict(layer_counts))
    else:
        total = kept_count(target, sum(m.size for m in masks.values()))
        scorer.budget = Budget(total=total, floors=floors)


def _round_counts(counts: dict[str, int], i: int, rounds: int, target: float, density: float):
    if i == rounds:
        return counts
    return {path: int(round(count * target / density)) for path, count in counts.items()}


def _score_stats(scores: dict, masks: dict) -> dict:
    stats = {}
    for path, value in scores.items():
        value = np.asarray(value, dtype=np.float64)
        kept = value[masks[path] > 0]
        stats[path] = {
            "min": float(value.min()),
            "max": float(value.max()),
            "mean": float(value.mean()),
            "std": float(value.std()),
            "median": float(np.median(value)),
            "kept_min": float(kept.min()) if kept.size else None,
        }
    return stats


def _weights(model):
    weights = prunable_weights(model)
    if not weights:
        raise ModelError(
            "the model has no prunable layers: build it from tfprune.MaskedDense/MaskedConv2D "
            "or convert it with tfprune.masked(model)"
        )
    return weights


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What every scoring of one `prune` call shares, the copied method's included."""

    batch_size: int
    loss: object
    input_shape: object


def _batches_for(entry, model, data, batch_size, loss, options):
    if not entry.needs_data:
        return None
    if data is None:
        raise DataError(
            f"method {entry.name!r} needs data: pass data=(x, y) or a tf.data.Dataset of batches"
        )
    objective = resolve_loss(model, loss)
    if not objective.is_default:
        neutral = getattr(entry.scorer_class(), "default_loss_options", {})
        for name, value in options.items():
            if name in neutral and value != neutral[name]:
                raise ConfigError(
                    f"{entry.name} option {name}={value!r} applies to the default "
                    f"cross-entropy only; with {objective.description} leave it out (or "
                    f"{neutral[name]!r}) and build what it does into the loss"
                )
    return as_batches(data, model, objective, batch_size)


def _check_ablations_apply(ablations: tuple[str, ...], method: str) -> None:
    """Raises ConfigError for an ablation the method's registry entry does not take."""
    accepted = registry.get(method).ablations
    for name in ablations:
        if name not in accepted:
            raise ConfigError(
                f"ablation {name!r} does not apply to {method}; use {' or '.join(accepted)}"
            )


def _check_loss_use(loss, uses_data: bool, method: str) -> None:
    if loss is not None and not uses_data:
        raise ConfigError(
            f"method {method!r} is scored without data, so it takes no loss; leave loss out"
        )


def _scored_methods(method: str, allocation: str) -> list[str]:
    """The methods a `prune` call scores with: `method`, and the one `ratio_of:` copies."""
    if allocation.startswith(registry.RATIO_OF):
        return [method, allocation[len(registry.RATIO_OF) :]]
    return [method]


def _check_input_shape_use(input_shape, methods: list[str], shown: str) -> None:
    """Checks that one of `methods` feeds a synthetic input (its scorer reads `input_shape`),
    and the shape itself."""
    if input_shape is None:
        return
    if not any(hasattr(registry.get(m).scorer_class(), "input_shape") for m in methods):
        raise ConfigError(
            f"method {shown!r} feeds the network no synthetic input, so it takes no "
            "input_shape; leave it out"
        )
    _check_input_shape(input_shape)


def _give_input_shape(scorer, input_shape) -> None:
    """Gives `input_shape` to a scorer that reads one (a class attribute `input_shape`, the
    example shape of its synthetic input; None for the model's own)."""
    if input_shape is not None and hasattr(type(scorer), "input_shape"):
        scorer.input_shape = _check_input_shape(input_shape)


def _check_input_shape(input_shape) -> tuple:
    """`input_shape` as a tuple of positive ints, or a tuple of such tuples (several inputs).

    Raises:
        ConfigError: for anything else.
    """

    def dims(shape):
        if not isinstance(shape, (tuple, list)) or not shape:
            return None
        if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape):
            return None
        return tuple(int(d) for d in shape)

    if isinstance(input_shape, (tuple, list)) and input_shape:
        if all(isinstance(shape, (tuple, list)) for shape in input_shape):
            shapes = tuple(dims(shape) for shape in input_shape)
            if None not in shapes:
                return shapes
        elif dims(input_shape) is not None:
            return dims(input_shape)
    raise ConfigError(
        f"input_shape must be the shape of one example without the batch axis, such as "
        f"(32, 32, 3) (or one such tuple per input), got {input_shape!r}"
    )


def _check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    return int(rounds)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)
