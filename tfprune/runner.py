"""Pieces shared by every kind of run: data and model for a configuration, run directories,
training to the end, and the results a finished run writes.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`snapshots/` (weights kept at requested steps), `masks.npz`, and on completion `model.keras`
and `results.json`. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from absl import logging

from tfprune import data as data_lib
from tfprune import models
from tfprune._io import atomic_path, write_text
from tfprune.errors import ConfigError, OutputError
from tfprune.pruning import (
    collapsed_layers,
    get_masks,
    layer_densities,
    overall_density,
    save_masks,
)
from tfprune.training import (
    TrainConfig,
    Trainer,
    TrainState,
    copy_first_replica,
    enable_determinism,
    worker_role,
)

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
# Settings that change how a run is displayed or executed, not what it computes.
COSMETIC = (
    "progress",
    "log_every_steps",
    "keep_checkpoints",
    "steps_per_execution",
    "deterministic",
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
        self.info = data_lib.dataset_info(self.dataset, self.data_dir)
        num_train = min(self.info.num_train, self.train_limit or self.info.num_train)
        self.steps_per_epoch = math.ceil(num_train / self.training.batch_size)
        self.total_steps = self.training.total_steps(self.steps_per_epoch)
        self.is_chief, self.num_workers = worker_role(self.strategy)
        if self.training.deterministic:
            enable_determinism(self.seed)

    def build_model(self) -> keras.Model:
        """The network, initialized from the run's seed, created in the strategy's scope."""
        keras.utils.set_random_seed(self.seed)
        with self.strategy.scope():
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
    ) -> Trainer:
        """A `Trainer` for `model` writing into `output_dir` (`on_step` sees `hook_steps`)."""
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
    if write:
        write_json(os.path.join(output_dir, "results.json"), results)
    logging.info(
        "done: test accuracy %.4f at density %.5f in %s",
        results["test_accuracy"],
        results["density_actual"],
        output_dir,
    )
    return results


# What every finished run's results.json holds (see `finish`).
_RESULT_KEYS = ("test_accuracy", "test_loss", "density_actual", "epochs", "wall_seconds", "history")


def read_results(output_dir: str) -> dict | None:
    """The `results.json` of a finished run, or None.

    A `results.json` that cannot be read (garbled, truncated, not a run's results) counts as
    missing, with a warning: the run then finishes again from its last checkpoint, which
    rewrites the file.
    """
    path = os.path.join(output_dir, "results.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            results = json.load(f)
        if not isinstance(results, dict) or not all(k in results for k in _RESULT_KEYS):
            raise ValueError("it is not the results of a run")
    except (OSError, ValueError) as error:
        logging.warning(
            "%s is unreadable (%s): the run counts as unfinished and finishes again from its "
            "last checkpoint",
            path,
            " ".join(str(error).split())[:200],
        )
        return None
    return results


def save_model(model: keras.Model, path: str) -> None:
    """Saves `model` as a `.keras` file atomically (masks included)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def write_json(path: str, content: dict) -> None:
    """Writes `content` as JSON to `path` atomically (temporary file, then rename)."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def snapshot_path(run_dir: str, step: int) -> str:
    """Where a run keeps the variables it had after `step` iterations (see `Trainer`)."""
    return os.path.join(run_dir, "snapshots", f"step-{step:09d}.npz")


@contextlib.contextmanager
def locked(path: str):
    """Holds an exclusive lock on `path + ".lock"`, so that one process at a time computes a
    shared result (a dense pre-training, a lottery level) that others then reuse."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def semantic(config: dict) -> dict:
    """The part of a run's configuration that changes what it computes."""
    return {
        key: ({k: v for k, v in value.items() if k not in COSMETIC} if key == "training" else value)
        for key, value in config.items()
        if key != "tfprune_version"
    }


LOCK_NAME = ".tfprune.lock"


def prepare_output_dir(output_dir: str, config: dict, overwrite: bool) -> None:
    """Creates a run directory or checks that an existing one holds the same configuration.

    Raises:
        OutputError: if the directory holds something else (a different configuration, without
            `overwrite`; or files that are not a tfprune run) or cannot be written.
    """
    config_path = os.path.join(output_dir, "config.json")
    _check_usable(output_dir)
    is_run = os.path.exists(config_path)
    if is_run and overwrite:
        logging.warning("overwriting the run in %s", output_dir)
        _empty(output_dir)
    elif is_run:
        check_same_configuration(output_dir, config)
    try:
        os.makedirs(output_dir, exist_ok=True)
        if not os.path.exists(config_path):
            write_json(config_path, config)
        _check_writable(output_dir)
    except OSError as error:
        raise OutputError(f"cannot write to output directory {output_dir}: {error}") from error


def check_same_configuration(output_dir: str, config: dict) -> None:
    """Raises OutputError, naming the first setting that differs, unless the run in
    `output_dir` has the configuration `config` (up to the settings in `COSMETIC`)."""
    difference = _difference(os.path.join(output_dir, "config.json"), config)
    if difference:
        raise OutputError(
            f"{output_dir} holds a run with a different configuration ({difference}); "
            "choose another output directory or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def claim_output_dir(output_dir: str, config: dict, overwrite: bool):
    """`prepare_output_dir`, holding the run directory for this process until the block ends.

    One process at a time runs in a run directory: a second one (a repeated command, a sweep
    started twice) is refused instead of writing the same checkpoints and event files.

    Raises:
        OutputError: as `prepare_output_dir`, or if another process holds the directory.
    """
    _check_usable(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        handle = open(os.path.join(output_dir, LOCK_NAME), "a+")
    except OSError as error:
        raise OutputError(f"cannot write to output directory {output_dir}: {error}") from error
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputError(
                f"another process (pid {holder}) is running in {output_dir}: wait for it to end, "
                "or choose another output directory"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            prepare_output_dir(output_dir, config, overwrite)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_usable(output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputError(f"output directory {output_dir} exists and is not a directory")
    if os.path.isdir(output_dir) and not os.path.exists(os.path.join(output_dir, "config.json")):
        # The lock and the temporary files of an atomic write cut short do not make a run.
        if [n for n in os.listdir(output_dir) if n != LOCK_NAME and not n.startswith(".tmp-")]:
            raise OutputError(
                f"{output_dir} is not empty and holds no tfprune run; choose another output "
                "directory"
            )


def _check_writable(output_dir: str) -> None:
    """Raises OSError unless a file can be created in the run directory and in each of its
    subdirectories (a read-only directory, a full disk)."""
    for root in [output_dir] + [
        entry.path for entry in os.scandir(output_dir) if entry.is_dir() and entry.name[0] != "."
    ]:
        with tempfile.TemporaryFile(dir=root):
            pass


def _empty(output_dir: str) -> None:
    """Removes everything in `output_dir` but the lock file that the caller may hold."""
    for entry in os.scandir(output_dir):
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def _difference(config_path: str, config: dict) -> str | None:
    """The first setting in which the run of `config_path` differs from `config`, as
    `"experiment.density: 0.05 there, 0.1 here"`; None when they compute the same."""
    try:
        with open(config_path) as f:
            stored = semantic(json.load(f))
    except (OSError, ValueError, AttributeError) as error:
        return f"its config.json is unreadable: {' '.join(str(error).split())[:100]}"
    wanted = semantic(json.loads(json.dumps(config)))
    there, here = _flatten(stored), _flatten(wanted)
    for key in sorted(there.keys() | here.keys()):
        old, new = there.get(key, _ABSENT), here.get(key, _ABSENT)
        if old != new:
            return f"{key}: {_shown(old)} there, {_shown(new)} here"
    return None


_ABSENT = object()


def _shown(value) -> str:
    return "unset" if value is _ABSENT else repr(value)


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in ("experiment", "training") and not prefix:
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[prefix + key] = value
    return flat
