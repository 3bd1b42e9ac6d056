"""Pruning during training (SPEC §7): the mask updates of gradual magnitude pruning and of
dynamic sparse training, as `MaskUpdate` callbacks of the training loop.

- `GradualMagnitude` (`gmp`, Zhu and Gupta, 2017): from the dense network, the density follows
  `CubicSchedule`; each update keeps the largest |θ| among the weights still alive, over all
  layers or in each.
- `DropAndGrow`: from a random mask at density d (ERK or uniform layer counts, the same mask
  as random pruning with that allocation and seed), every ΔT iterations until T_end each layer
  drops the fraction f(t) of its active weights with the lowest |θ| and grows as many;
  `SparseEvolutionary` (`set`, Mocanu et al., 2018) grows at random, `RigL` (`rigl`, Evci et
  al., 2020) where |∂L/∂θ| on the iteration's batch is highest. Layer counts never change.

Every update is a pure function of the iteration, the weights and the run's seed (SET's draws
come from the `growth` stream keyed by the iteration, RigL's gradient from the iteration's
batch), and the masks are variables of the model, so a run resumed from a checkpoint makes the
same updates as one that was never interrupted.

Example:

>>> update = for_method("rigl", schedule, density=0.1, seed=0)
>>> trainer = Trainer(model, config, train_data, eval_data, 469, "run", hook_steps=(),
...                   callbacks=[update])
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np
from absl import logging

from tfprune import registry, streams
from tfprune.errors import ConfigError
from tfprune.layers import PrunableWeight, prunable_weights
from tfprune.layers.precision import computed_in_float32
from tfprune.pruning.ablations import reinitialize, shuffle_masks
from tfprune.pruning.api import prune_with_report
from tfprune.pruning.masks import assign_masks
from tfprune.pruning.selection import select, select_counts
from tfprune.training.callbacks import MaskUpdate
from tfprune.training.config import TrainState
from tfprune.training.distribute import copy_first_replica
from tfprune.training.loop import Trainer
from tfprune.training.schedules import (
    CUBIC,
    DROP_AND_GROW,
    CubicSchedule,
    DropSchedule,
    schedule_class,
)

# The `settings["growth"]` of a drop-and-grow method: where it grows.
RANDOM_GROWTH = "random"
GRADIENT_GROWTH = "gradient"


class _Timed(MaskUpdate):
    """A mask update that adds the time it takes to `state.extra["mask_update_seconds"]`,
    which the checkpoints keep."""

    def on_step_begin(self, trainer: Trainer, state: TrainState) -> None:
        started = time.time()
        # Scores and gradients in float32 whatever the dtype policy the network computes in.
        with computed_in_float32(trainer.model):
            super().on_step_begin(trainer, state)
        seconds = state.extra.get("mask_update_seconds", 0.0) + time.time() - started
        state.extra["mask_update_seconds"] = seconds


class GradualMagnitude(_Timed):
    """Gradual magnitude pruning (`gmp`; Zhu and Gupta, 2017).

    At each update step t of `schedule` the network keeps `round(d_t · N)` weights (globally,
    or `round(d_t · N_l)` in each layer with `scope="layer"`): the largest |θ| among those
    still alive. Pruned weights are never revived, and keep their values under the mask.

    Ablations (SPEC §3) apply where the mask is final, at the last update t_0 + nΔt, as they
    do to pruning at a step t: `shuffle` permutes each layer's final mask (the positions it
    revives keep the values they hold, from when they were pruned); `reinit` draws every
    weight afresh from its initializer; after either, training goes on from there with
    fresh optimizer slots. `invert` keeps the smallest |θ| at every update.

    Args:
        schedule: The densities and update steps.
        ablations: Any of `"shuffle"`, `"reinit"`, `"invert"`.
        seed: The run's seed (for the ablations' draws).
        min_layer_density: Each layer keeps at least this fraction (see `tfprune.prune`).

    Example:

    >>> schedule = CubicSchedule(0.1, begin=250, end=750, every=100)
    >>> trainer = Trainer(..., hook_steps=(), callbacks=[GradualMagnitude(schedule)])
    """

    def __init__(
        self,
        schedule: CubicSchedule,
        ablations: Iterable[str] = (),
        seed: int = 0,
        min_layer_density: float = 0.0,
    ):
        super().__init__(schedule.steps())
        self.schedule = schedule
        self.ablations = registry.check_ablations(tuple(ablations))
        self.seed = seed
        self.min_layer_density = min_layer_density

    def update(self, trainer: Trainer, state: TrainState) -> Mapping[str, np.ndarray]:
        weights = prunable_weights(trainer.model)
        masks = {path: np.asarray(w.mask.numpy()) for path, w in weights.items()}
        scores = {path: np.abs(w.kernel.numpy()).astype(np.float64) for path, w in weights.items()}
        density = self.schedule.density(state.step)
        new = select(
            scores,
            masks,
            density,
            self.schedule.scope,
            invert="invert" in self.ablations,
            min_layer_density=self.min_layer_density,
        )
        logging.info(
            "gmp: iteration %d, density %.5f (%d weights kept)",
            state.step,
            density,
            sum(int(m.sum()) for m in new.values()),
        )
        if state.step == self.schedule.last_step and {"shuffle", "reinit"} & set(self.ablations):
            self._ablate(trainer, new)
            return {}
        return {path: m for path, m in new.items() if not np.array_equal(m, masks[path])}

    def _ablate(self, trainer: Trainer, masks: dict[str, np.ndarray]) -> None:
        """The final mask, shuffled and/or with fresh weights; fresh optimizer slots."""
        if "shuffle" in self.ablations:
            masks = shuffle_masks(masks, self.seed)
        # Assigned as they are: revived positions keep their values, as a shuffle does.
        assign_masks(trainer.model, masks)
        if "reinit" in self.ablations:
            reinitialize(trainer.model, self.seed)
        trainer.reset_optimizer_slots()
        logging.info("gmp: %s applied to the final mask", "+".join(self.ablations))


class DropAndGrow(_Timed):
    """Dynamic sparse training: drop the weakest active weights, grow as many elsewhere.

    Before the first iteration, the masks are random at `density` with the schedule's layer
    counts (`erk` or `uniform`): random pruning with that allocation and the run's seed. Then
    at each update step t, each layer with A active weights drops the n = ⌊f(t) · A⌋ of them
    with the lowest |θ| and grows the n with the highest
    growth score (`grow_scores`) among the others, just dropped ones included, as RigL's code
    does (a weight dropped and grown again keeps its value). Weights that were inactive start
    at zero with zeroed optimizer slots. Ties go by flat index, as in every selection (the
    lower index stays, and grows first), where RigL's code adds a little noise to |θ|. The
    iteration then trains as any other (RigL's first code skips the weight update of an
    update's iteration). Subclasses define `grow_scores`.

    Args:
        schedule: The drop fraction and update steps.
        density: The density d kept throughout.
        seed: The run's seed (the starting mask, random growth).
        min_layer_density: Each layer starts with at least this fraction (see
            `tfprune.prune`; raised layers add to the total).
    """

    def __init__(
        self,
        schedule: DropSchedule,
        density: float,
        seed: int = 0,
        min_layer_density: float = 0.0,
    ):
        super().__init__(sorted({0, *schedule.steps()}))
        self.schedule = schedule
        self.density = density
        self.seed = seed
        self.min_layer_density = min_layer_density
        self._updates = frozenset(schedule.steps())

    def grow_scores(
        self,
        trainer: Trainer,
        state: TrainState,
        weights: Mapping[str, PrunableWeight],
        masks: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """`{path: growth score of the kernel's shape}` at iteration `state.step`; higher
        grows first."""
        raise NotImplementedError

    def start(self, trainer: Trainer) -> None:
        """Gives the model its starting masks (random, at `density`, the schedule's layer
        counts)."""
        report = prune_with_report(
            trainer.model,
            registry.baseline().name,
            self.density,
            allocation=registry.check_allocation(self.schedule.distribution),
            seed=self.seed,
            min_layer_density=self.min_layer_density,
        )
        logging.info(
            "%s: starting masks at density %.5f (%s layer counts)",
            type(self).__name__,
            report.density,
            self.schedule.distribution,
        )

    def update(self, trainer: Trainer, state: TrainState) -> Mapping[str, np.ndarray]:
        if state.step == 0:
            self.start(trainer)
        if state.step not in self._updates:
            return {}
        fraction = self.schedule.fraction(state.step)
        weights = prunable_weights(trainer.model)
        masks = {path: np.asarray(w.mask.numpy()) for path, w in weights.items()}
        counts = {
            path: DropSchedule.count(fraction, int(np.count_nonzero(m)))
            for path, m in masks.items()
        }
        if not any(counts.values()):
            return {}
        grow = self.grow_scores(trainer, state, weights, masks)
        new = {}
        for path, weight in weights.items():
            n, mask = counts[path], masks[path]
            if not n:
                continue
            active = int(np.count_nonzero(mask))
            magnitude = np.abs(weight.kernel.numpy()).astype(np.float64)
            kept = select_counts({path: magnitude}, {path: mask}, {path: active - n})[path]
            grown = select_counts({path: grow[path]}, {path: 1.0 - kept}, {path: n})[path]
            if not np.array_equal(kept + grown, mask):
                new[path] = kept + grown
        logging.info(
            "%s: iteration %d, drop fraction %.4f, %d weights replaced",
            type(self).__name__,
            state.step,
            fraction,
            sum(int(np.count_nonzero(m - masks[p] > 0)) for p, m in new.items()),
        )
        return new

    def on_step_begin(self, trainer: Trainer, state: TrainState) -> None:
        super().on_step_begin(trainer, state)
        if trainer.num_workers > 1:
            # Gradients can differ in their last bits between machines, and so the weights
            # they grow: every worker takes the chief's masks, weights and slots.
            weights = prunable_weights(trainer.model).values()
            variables = [v for w in weights for v in (w.kernel, w.mask)]
            copy_first_replica(trainer.strategy, variables + list(trainer.optimizer.variables))


class SparseEvolutionary(DropAndGrow):
    """SET (`set`; Mocanu et al., 2018): grows at random, with draws from the run's `growth`
    stream keyed by the iteration."""

    def grow_scores(self, trainer, state, weights, masks):
        rng = streams.generator(self.seed, "growth", state.step)
        return {path: rng.random(tuple(w.kernel.shape)) for path, w in weights.items()}


class RigL(DropAndGrow):
    """RigL (`rigl`; Evci et al., 2020): grows where |∂L/∂θ| is highest, L the training loss
    on the batch of the update's iteration, the gradient taken with respect to the masked
    weights θ ⊙ c, so dense: inactive weights have one too (`Trainer.loss_gradients`)."""

    def grow_scores(self, trainer, state, weights, masks):
        values = {}
        for path, w in weights.items():
            values[w.kernel.path] = np.asarray(w.kernel.numpy()) * masks[path]
            values[w.mask.path] = np.ones_like(masks[path])
        grads = trainer.loss_gradients(*trainer.batch(state.step), values=values)
        return {
            path: np.abs(grads[w.kernel.path]).astype(np.float64) for path, w in weights.items()
        }


def for_method(
    method: str,
    schedule: CubicSchedule | DropSchedule,
    *,
    density: float,
    seed: int = 0,
    ablations: Iterable[str] = (),
    min_layer_density: float = 0.0,
) -> MaskUpdate:
    """The mask update of a registered method of kind `during_training`, from its registry
    entry's `settings` (`schedule`, and for drop-and-grow methods `growth`).

    Args:
        method: The method's name.
        schedule: Its schedule for this run (`tfprune.training.schedules.resolve`).
        density: The run's density.
        seed: The run's seed.
        ablations: The ablations (checked against the method's entry first).
        min_layer_density: Each layer keeps at least this fraction.

    Raises:
        ConfigError: for a method that is not pruned during training, or an ablation it does
            not take.
    """
    entry = registry.get(method)
    kind = entry.settings.get("schedule")
    if entry.kind != registry.DURING_TRAINING or not isinstance(schedule, schedule_class(kind)):
        raise ConfigError(
            f"method {method!r} ({entry.kind}) has no {type(schedule).__name__} mask update"
        )
    ablations = registry.check_ablations(tuple(ablations))
    refused = [a for a in ablations if a not in entry.ablations]
    if refused:
        raise ConfigError(f"ablation {refused[0]!r} does not apply to {method}")
    if kind == CUBIC:
        return GradualMagnitude(schedule, ablations, seed, min_layer_density)
    growth = {RANDOM_GROWTH: SparseEvolutionary, GRADIENT_GROWTH: RigL}
    if kind != DROP_AND_GROW or entry.settings.get("growth") not in growth:
        raise ConfigError(
            f"method {method!r} names no growth rule ({', '.join(growth)}) in its settings"
        )
    return growth[entry.settings["growth"]](schedule, density, seed, min_layer_density)
