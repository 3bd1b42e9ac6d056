"""Pieces shared by every kind of run: data and model for a configuration, run directories,
training to the end, and the results a finished run writes.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`snapshots/` (weights kept at requested steps), `masks.npz`, and on completion `model.keras`
and `results.json`. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from absl import logging

from tfprune import data as data_lib
from tfprune import models
from tfprune._io import atomic_path
from tfprune.errors import ConfigError
from tfprune.experiment import STRATEGIES, Sizes
from tfprune.layers.precision import dtype_policy
from tfprune.pruning import (
    collapsed_layers,
    get_masks,
    layer_densities,
    overall_density,
    save_masks,
)
from tfprune.results import RunSummary
from tfprune.rundir import (  # noqa: F401  re-exported: the run-directory helpers live there
    COSMETIC,
    LOCK_NAME,
    check_same_configuration,
    claim_output_dir,
    locked,
    prepare_output_dir,
    read_results,
    semantic,
    snapshot_path,
    write_json,
)
from tfprune.training import (
    Callback,
    TrainConfig,
    Trainer,
    TrainState,
    copy_first_replica,
    enable_determinism,
    worker_role,
)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named `name` (see `STRATEGIES`).

    `mirrored` uses every GPU of this machine (the CPU if there is none);
    `multi_worker_mirrored` reads the cluster and this worker's task from `TF_CONFIG` (one
    worker on this machine without it) and must be created before TensorFlow runs any op.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, RuntimeError) as error:
            raise ConfigError(
                f"cannot start multi_worker_mirrored ({' '.join(str(error).split())[:200]}): "
                "check TF_CONFIG"
            ) from error
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (the only worker, or the chief)."""
    return worker_role(strategy)[0]


@dataclasses.dataclass
class RunContext:
    """The data, network and training settings shared by the runs of one configuration."""

    dataset: str
    model: str
    seed: int
    training: TrainConfig
    strategy: tf.distribute.Strategy
    data_dir: str | None = None
    augment: bool = True
    train_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self):
        sizes = Sizes.for_data(self.dataset, self.data_dir, self.train_limit, self.training)
        self.info, self.steps_per_epoch, self.total_steps = (
            sizes.info,
            sizes.steps_per_epoch,
            sizes.total_steps,
        )
        self.is_chief, self.num_workers = worker_role(self.strategy)
        if self.training.deterministic:
            enable_determinism(self.seed)

    def build_model(self) -> keras.Model:
        """The network, initialized from the run's seed, created in the strategy's scope under
        the dtype policy of `training.precision`."""
        keras.utils.set_random_seed(self.seed)
        with self.strategy.scope(), dtype_policy(self.training.precision):
            return models.build(self.model, self.info.input_shape, self.info.num_classes)

    def train_data(self, epoch: int, skip: int) -> tf.data.Dataset:
        """One epoch of training batches, skipping the first `skip`."""
        return data_lib.train_dataset(
            self.dataset,
            self.training.batch_size,
            seed=self.seed,
            epoch=epoch,
            skip_batches=skip,
            augment=self.augment,
            data_dir=self.data_dir,
            limit=self.train_limit,
        )

    def eval_data(self) -> tf.data.Dataset:
        """The test batches."""
        return data_lib.eval_dataset(
            self.dataset, self.training.batch_size, data_dir=self.data_dir, limit=self.test_limit
        )

    def pruning_data(self, examples_per_class: int):
        """SPEC §2's pruning sample: N examples per class from the training split."""
        return data_lib.pruning_data(
            self.dataset, examples_per_class, seed=self.seed, data_dir=self.data_dir
        )

    def trainer(
        self,
        model: keras.Model,
        output_dir: str,
        *,
        on_step: Callable[[int, TrainState], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        start_step: int = 0,
        keep_steps: Sequence[int] = (),
        hook_steps: Sequence[int] | None = (),
        callbacks: Sequence[Callback] = (),
    ) -> Trainer:
        """A `Trainer` for `model` writing into `output_dir` (`on_step` sees `hook_steps`;
        `callbacks` are more hooks, such as mask updates)."""
        return Trainer(
            model,
            self.training,
            self.train_data,
            self.eval_data,
            self.steps_per_epoch,
            output_dir,
            strategy=self.strategy,
            on_step=on_step,
            should_stop=should_stop,
            start_step=start_step,
            keep_steps=keep_steps,
            hook_steps=hook_steps,
            callbacks=callbacks,
        )

    def sync_model(self, model: keras.Model) -> None:
        """With several workers, gives every worker the chief's variables: each pruned (and
        reinitialized) on its own, and scores can differ in the last bits between machines."""
        if self.num_workers > 1:
            copy_first_replica(self.strategy, model.variables)


def finish(
    model: keras.Model, state: TrainState, output_dir: str, fields: dict, write: bool = True
) -> dict:
    """Writes `masks.npz`, `model.keras` and `results.json` of a finished run; returns results.

    `fields` holds what describes the run (method, ablations, seed, ...); the metrics, the
    densities and the history are added here. With `write=False` (a worker that is not the
    chief) nothing is written.
    """
    masks = get_masks(model)
    if write:
        save_masks(os.path.join(output_dir, "masks.npz"), masks)
        save_model(model, os.path.join(output_dir, "model.keras"))
    final = state.history[-1]
    densities = layer_densities(masks)
    collapsed = collapsed_layers(masks)
    results = {
        **fields,
        "density_actual": overall_density(masks),
        "layer_density": densities,
        "collapsed_layers": collapsed,
        "warnings": [f"layer collapse: {path} keeps no weight" for path in collapsed],
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "train_accuracy": final["train_accuracy"],
        "train_loss": final["train_loss"],
        "epochs": len(state.history),
        "steps": state.step,
        "history": state.history,
        "wall_seconds": state.wall_seconds,
    }
    if "dataset" in fields:
        # A run of an experiment (not a shared run): its results must give a results.csv row.
        RunSummary.from_results(results, output_dir)
    if write:
        write_json(os.path.join(output_dir, "results.json"), results)
    logging.info(
        "done: test accuracy %.4f at density %.5f in %s",
        results["test_accuracy"],
        results["density_actual"],
        output_dir,
    )
    return results


def save_model(model: keras.Model, path: str) -> None:
    """Saves `model` as a `.keras` file atomically (masks included)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
