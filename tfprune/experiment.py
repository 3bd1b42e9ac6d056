"""One experiment end to end: data → model → pruning at a step → training → results on disk.

`run(Experiment(...), TrainConfig(...), output_dir)` is what `python -m tfprune.train` calls
after reading its gin files; it works the same without gin.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`masks.npz` (once pruned, and final), and on completion `results.json`. Re-running into the
same directory resumes from the newest checkpoint; a different configuration is refused unless
`overwrite=True`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import shutil
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from tfprune import data as data_lib
from tfprune import models
from tfprune._io import atomic_path, write_text
from tfprune.errors import ConfigError, OutputError
from tfprune.pruning import (
    check_ablations,
    check_method,
    get_masks,
    layer_densities,
    needs_data,
    overall_density,
    prune_with_report,
    save_masks,
)
from tfprune.pruning.selection import check_density, check_scope
from tfprune.steps import to_iterations
from tfprune.training import TrainConfig, Trainer, TrainState
from tfprune.version import __version__

DENSE = "dense"
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
# Settings that change how a run is displayed, not what it computes.
_COSMETIC = ("progress", "log_every_steps", "keep_checkpoints")


@dataclasses.dataclass
class Experiment:
    """What to run: data, network, pruning method and seed.

    Args:
        dataset: A dataset name (`fashion_mnist`, `cifar10`, ... see `tfprune.data`).
        model: A network name (`tfprune.models.names()`).
        method: A pruning method (`tfprune.method_names()`: a scorer, `uniform`, `erk` or
            `ratio_of:<scorer>`) or `"dense"` for no pruning.
        density: Fraction of prunable weights kept, in (0, 1]; must be 1 for `"dense"`.
        scope: `"global"` or `"layer"` selection.
        rounds: Pruning rounds (exponential density schedule); None: the method's default.
        ablations: Any of `"shuffle"`, `"reinit"`, `"invert"` (SPEC §3).
        min_layer_density: Minimum fraction each layer keeps (0: no minimum).
        prune_step: When to prune: `"0it"` (at initialization), `"500it"`, `"2ep"`, ...
        seed: Seed of the initialization, data order, pruning data and seeded methods.
        examples_per_class: Pruning examples per class for data-driven methods.
        data_dir: Where datasets are looked for (default: the usual places).
        augment: Data augmentation of the training set (SPEC §5 per dataset).
        train_limit: Use only the first n training examples (quick checks).
        test_limit: Use only the first n test examples (quick checks).
        strategy: `"default"`, `"mirrored"` or `"multi_worker_mirrored"`.
        method_options: Extra options of the method (for example `{"from_logits": True}`).
    """

    dataset: str = "fashion_mnist"
    model: str = "lenet_300_100"
    method: str = DENSE
    density: float = 1.0
    scope: str = "global"
    rounds: int | None = None
    ablations: tuple = ()
    min_layer_density: float = 0.0
    prune_step: str | int = "0it"
    seed: int = 0
    examples_per_class: int = 10
    data_dir: str | None = None
    augment: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    strategy: str = "default"
    method_options: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        """Raises ConfigError for a setting that cannot run."""
        if self.method != DENSE:
            try:
                check_method(self.method)
            except ConfigError as error:
                raise ConfigError(f"{error}, or dense") from None
        density = check_density(self.density)
        ablations = check_ablations(self.ablations)
        if self.method == DENSE and ablations:
            raise ConfigError(
                f"method 'dense' prunes nothing, so ablations {ablations} do not apply"
            )
        if self.method == DENSE and density != 1.0:
            raise ConfigError(
                f"method 'dense' keeps every weight: set density = 1.0, not {density}"
            )
        check_scope(self.scope)
        if self.model not in models.names():
            raise ConfigError(
                f"unknown model {self.model!r}; choose one of {', '.join(models.names())}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        for name in ("seed", "rounds", "examples_per_class", "train_limit", "test_limit"):
            value = getattr(self, name)
            optional = name in ("rounds", "train_limit", "test_limit")
            if optional and value is None:
                continue
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ConfigError(f"experiment.{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.method_options, dict):
            raise ConfigError("experiment.method_options must be a dict of option: value")


def config_dict(experiment: Experiment, training: TrainConfig) -> dict:
    """The JSON-able description of a run, as written to `config.json`."""
    return {
        "experiment": dataclasses.asdict(experiment),
        "training": dataclasses.asdict(training),
        "tfprune_version": __version__,
    }


def default_output_dir(experiment: Experiment, training: TrainConfig, root: str = "runs") -> str:
    """A run directory named from the configuration: `root/<dataset>-<model>/<method>-...`."""
    digest = hashlib.sha256(
        json.dumps(_semantic(config_dict(experiment, training)), sort_keys=True).encode()
    ).hexdigest()[:8]
    method = experiment.method.replace(":", "_")
    ablations = "".join(f"-{a}" for a in check_ablations(experiment.ablations))
    name = f"{method}{ablations}-d{experiment.density:g}-s{experiment.seed}-{digest}"
    return os.path.join(root, f"{experiment.dataset}-{experiment.model}", name)


def run(
    experiment: Experiment,
    training: TrainConfig,
    output_dir: str | None = None,
    *,
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Runs (or resumes, or returns the finished result of) one experiment.

    Args:
        experiment: What to run.
        training: How to train.
        output_dir: The run directory (default: `default_output_dir(...)`).
        overwrite: Start afresh in an `output_dir` that holds a different configuration.
        should_stop: Polled between iterations; True writes a checkpoint and stops
            (`tfprune.training.Interrupted` is raised).

    Returns:
        The content of `results.json`.

    Raises:
        ConfigError, DataError, OutputError, TrainingError: for problems a user can fix.
    """
    experiment.validate()
    training.validate()
    output_dir = output_dir or default_output_dir(experiment, training)
    config = config_dict(experiment, training)
    results_path = os.path.join(output_dir, "results.json")
    _prepare_output_dir(output_dir, config, overwrite)
    if os.path.exists(results_path):
        logging.info("%s is complete; delete it or pass overwrite to run again", output_dir)
        with open(results_path) as f:
            return json.load(f)

    info = data_lib.dataset_info(experiment.dataset, experiment.data_dir)
    num_train = min(info.num_train, experiment.train_limit or info.num_train)
    steps_per_epoch = math.ceil(num_train / training.batch_size)
    total_steps = training.total_steps(steps_per_epoch)
    prune_step = to_iterations(experiment.prune_step, steps_per_epoch, "experiment.prune_step")
    if prune_step >= total_steps and experiment.method != DENSE:
        raise ConfigError(
            f"experiment.prune_step {experiment.prune_step!r} is at or after the end of training "
            f"({total_steps} iterations)"
        )

    strategy = make_strategy(experiment.strategy)
    keras.utils.set_random_seed(experiment.seed)
    with strategy.scope():
        model = models.build(experiment.model, info.input_shape, info.num_classes)

    def train_data(epoch: int, skip: int) -> tf.data.Dataset:
        return data_lib.train_dataset(
            experiment.dataset,
            training.batch_size,
            seed=experiment.seed,
            epoch=epoch,
            skip_batches=skip,
            augment=experiment.augment,
            data_dir=experiment.data_dir,
            limit=experiment.train_limit,
        )

    def eval_data() -> tf.data.Dataset:
        return data_lib.eval_dataset(
            experiment.dataset,
            training.batch_size,
            data_dir=experiment.data_dir,
            limit=experiment.test_limit,
        )

    def on_step(step: int, state: TrainState) -> None:
        if step != prune_step or experiment.method == DENSE or state.extra.get("pruning"):
            return
        state.extra["pruning"] = _prune(model, experiment, training, strategy, output_dir, step)

    trainer = Trainer(
        model,
        training,
        train_data,
        eval_data,
        steps_per_epoch,
        output_dir,
        strategy=strategy,
        on_step=on_step,
        should_stop=should_stop,
    )
    state = trainer.run()
    masks = get_masks(model)
    save_masks(os.path.join(output_dir, "masks.npz"), masks)
    save_model(model, os.path.join(output_dir, "model.keras"))
    final = state.history[-1]
    pruning = state.extra.get("pruning", {})
    collapsed = [p for p, d in layer_densities(masks).items() if d == 0]
    warnings = [f"layer collapse: {p} keeps no weight" for p in collapsed]
    results = {
        "method": experiment.method,
        "ablations": list(check_ablations(experiment.ablations)),
        "density_target": float(experiment.density),
        "density_actual": overall_density(masks),
        "layer_density": layer_densities(masks),
        "collapsed_layers": collapsed,
        "warnings": warnings,
        "scope": experiment.scope,
        "rounds": pruning.get("rounds", 0),
        "min_layer_density": experiment.min_layer_density,
        "prune_step": prune_step,
        "seed": experiment.seed,
        "dataset": experiment.dataset,
        "model": experiment.model,
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "train_accuracy": final["train_accuracy"],
        "train_loss": final["train_loss"],
        "epochs": len(state.history),
        "steps": state.step,
        "history": state.history,
        "scoring_seconds": pruning.get("seconds", 0.0),
        "wall_seconds": state.wall_seconds,
        "tfprune_version": __version__,
        "config": config,
    }
    write_json(results_path, results)
    logging.info(
        "done: test accuracy %.4f at density %.4f; results in %s",
        results["test_accuracy"],
        results["density_actual"],
        results_path,
    )
    return results


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named `name` (see `STRATEGIES`)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def save_model(model: keras.Model, path: str) -> None:
    """Saves `model` as a `.keras` file atomically (masks included)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def write_json(path: str, content: dict) -> None:
    """Writes `content` as JSON to `path` atomically (temporary file, then rename)."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def _prune(model, experiment, training, strategy, output_dir, step) -> dict:
    data = None
    if needs_data(experiment.method):
        data = data_lib.pruning_data(
            experiment.dataset,
            experiment.examples_per_class,
            seed=experiment.seed,
            data_dir=experiment.data_dir,
        )
    with strategy.scope():
        report = prune_with_report(
            model,
            experiment.method,
            experiment.density,
            data,
            scope=experiment.scope,
            seed=experiment.seed,
            rounds=experiment.rounds,
            ablations=experiment.ablations,
            min_layer_density=experiment.min_layer_density,
            batch_size=training.batch_size,
            **experiment.method_options,
        )
    save_masks(os.path.join(output_dir, "masks.npz"), report.masks)
    write_json(
        os.path.join(output_dir, "pruning.json"),
        {
            "method": experiment.method,
            "step": step,
            "rounds": report.rounds,
            "ablations": list(report.ablations),
            "density": report.density,
            "layer_density": report.layer_density,
            "collapsed_layers": report.collapsed_layers,
            "score_stats": report.score_stats,
            "seconds": report.seconds,
        },
    )
    logging.info(
        "pruned with %s%s at iteration %d to density %.5f in %.1fs",
        experiment.method,
        "".join(f" +{a}" for a in report.ablations),
        step,
        report.density,
        report.seconds,
    )
    return {"step": step, "seconds": report.seconds, "rounds": report.rounds}


def _semantic(config: dict) -> dict:
    training = {k: v for k, v in config["training"].items() if k not in _COSMETIC}
    return {"experiment": config["experiment"], "training": training}


def _prepare_output_dir(output_dir: str, config: dict, overwrite: bool) -> None:
    config_path = os.path.join(output_dir, "config.json")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputError(f"output directory {output_dir} exists and is not a directory")
    is_run = os.path.exists(config_path)
    if not is_run and os.path.isdir(output_dir) and os.listdir(output_dir):
        raise OutputError(
            f"{output_dir} is not empty and holds no tfprune run; choose another output directory"
        )
    if is_run and overwrite:
        logging.warning("overwriting the run in %s", output_dir)
        shutil.rmtree(output_dir)
    elif is_run:
        try:
            with open(config_path) as f:
                same = _semantic(json.load(f)) == _semantic(json.loads(json.dumps(config)))
        except (OSError, ValueError, KeyError):
            same = False
        if not same:
            raise OutputError(
                f"{output_dir} holds a run with a different configuration; choose another "
                "output directory or pass --overwrite to replace it"
            )
    try:
        os.makedirs(output_dir, exist_ok=True)
        if not os.path.exists(config_path):
            write_json(config_path, config)
    except OSError as error:
        raise OutputError(f"cannot write to output directory {output_dir}: {error}") from error
