"""What to run: an experiment's configuration, its checks, and where it runs.

`run(Experiment(...), TrainConfig(...), output_dir)` is what `python -m tfprune.train` calls
after reading its gin files; it works the same without gin. Checking a configuration
(`Experiment.validate`, `check`) imports no TensorFlow, so a sweep plans with it; `run` hands
over to `tfprune.execute`: data → model → pruning → training → results on disk.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`masks.npz` and `pruning.json` (once pruned), and on completion `model.keras` and
`results.json`. Re-running into the same directory resumes from the newest checkpoint; a
different configuration is refused unless `overwrite=True`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
from collections.abc import Callable

from tfprune import data as data_lib
from tfprune import models, registry
from tfprune.errors import ConfigError, DataError
from tfprune.methods.lottery import lottery_level
from tfprune.pruning.selection import check_density, check_scope
from tfprune.registry import check_ablations
from tfprune.rundir import semantic
from tfprune.steps import to_iterations
from tfprune.training import TrainConfig, schedules
from tfprune.version import __version__

DENSE = registry.dense().name
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")


@dataclasses.dataclass
class Experiment:
    """What to run: data, network, pruning method and seed.

    Args:
        dataset: A dataset name (`fashion_mnist`, `cifar10`, ... see `tfprune.data`).
        model: A network name (`tfprune.models.names()`).
        method: A pruning method of the registry (`tfprune.registry.accepted_names()`): a
            scorer, an after-training baseline, a method that changes masks during training
            (`gmp`, `set`, `rigl`), `"dense"` for no pruning, or one of the allocation
            aliases `uniform`, `erk`, `ratio_of:<scorer>`.
        density: Fraction of prunable weights kept, in (0, 1]; must be 1 for `"dense"`.
        scope: `"global"` or `"layer"` selection: the allocation when `allocation` is None.
        allocation: How many weights each layer keeps (`tfprune.registry.ALLOCATIONS`):
            `"global"`, `"layer"` (or `"uniform"`), `"erk"` or `"ratio_of:<scorer>"`; the
            method's keep-scores choose the positions inside each layer. None: `scope`.
        rounds: Pruning rounds (exponential density schedule); None: the method's default
            (methods during training follow their own schedule: leave it None).
        ablations: Any of `"shuffle"`, `"reinit"`, `"invert"` (SPEC §3).
        min_layer_density: Minimum fraction each layer keeps (0: no minimum).
        prune_step: When to prune: `"0it"` (at initialization), `"500it"`, `"2ep"`, ...
            (methods at initialization only).
        rewind_step: For the after-training baselines: the step k whose weights the
            survivors restart from (training resumes at k). Default: `"0it"` for the lottery
            methods; none (fine-tuning from the trained weights) for
            `magnitude_after_training`.
        lottery_rate: Fraction of the remaining weights each lottery level removes.
        shared_dir: Where runs shared between experiments (the dense training and the
            lottery levels) are kept; default `<output_dir>/../_shared`.
        seed: Seed of the initialization, data order, pruning data and seeded methods.
        examples_per_class: Pruning examples per class for data-driven methods.
        data_dir: Where datasets are looked for (default: the usual places).
        augment: Data augmentation of the training set (SPEC §5 per dataset).
        train_limit: Use only the first n training examples (quick checks).
        test_limit: Use only the first n test examples (quick checks).
        strategy: `"default"` (one device), `"mirrored"` (every GPU of this machine, the
            global batch split between them) or `"multi_worker_mirrored"` (several machines,
            from `TF_CONFIG`; only the chief writes into the run directory, which every worker
            must see to resume; not for the after-training baselines).
        method_options: Extra options of the method (for example `{"from_logits": True}`;
            for the methods during training, their schedule, see
            `tfprune.training.schedules`: `{"begin": 0.25, "end": 0.75, "every": 100}`).
    """

    dataset: str = "fashion_mnist"
    model: str = "lenet_300_100"
    method: str = DENSE
    density: float = 1.0
    scope: str = "global"
    allocation: str | None = None
    rounds: int | None = None
    ablations: tuple = ()
    min_layer_density: float = 0.0
    prune_step: str | int = "0it"
    rewind_step: str | int | None = None
    lottery_rate: float = 0.2
    shared_dir: str | None = None
    seed: int = 0
    examples_per_class: int = 10
    data_dir: str | None = None
    augment: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    strategy: str = "default"
    method_options: dict = dataclasses.field(default_factory=dict)

    def resolved(self) -> tuple[str, str]:
        """`(method, allocation)` with the allocation aliases resolved (`erk` is `random` with
        allocation `erk`); `scope` gives the allocation when `allocation` is not set.

        Raises:
            ConfigError: for an unknown method or allocation, or contradicting ones.
        """
        check_scope(self.scope)
        entry = registry.find(self.method)
        per_layer = self.allocation or self.scope
        if entry and entry.kind == registry.DURING_TRAINING and per_layer != registry.GLOBAL:
            raise ConfigError(
                f"{self.method} changes its masks during training: choose how it treats the "
                f"layers in experiment.method_options ({', '.join(entry.option_defaults())}), "
                f"not with scope or allocation {per_layer!r}"
            )
        if registry.is_alias(self.method) and self.allocation is None:
            return registry.resolve(self.method)
        return registry.resolve(self.method, self.allocation or self.scope)

    def validate(self) -> None:
        """Raises ConfigError for a setting that cannot run."""
        method, _ = self.resolved()
        entry = registry.get(method)
        density = check_density(self.density)
        ablations = check_ablations(self.ablations)
        if entry.kind == registry.DENSE and ablations:
            raise ConfigError(
                f"method {method!r} prunes nothing, so ablations {ablations} do not apply"
            )
        if entry.kind == registry.DENSE and density != 1.0:
            raise ConfigError(
                f"method {method!r} keeps every weight: set density = 1.0, not {density}"
            )
        after = entry.kind == registry.AFTER_TRAINING
        during = entry.kind == registry.DURING_TRAINING
        for name in ablations:
            if name not in entry.ablations:
                raise ConfigError(_refused_ablation(name, self.method, entry))
        if during:
            if to_iterations(self.prune_step, 1, "experiment.prune_step") != 0:
                raise ConfigError(
                    f"{self.method} changes its masks during training on its own schedule: "
                    "leave prune_step at 0 and set its method_options instead"
                )
            if self.rounds is not None:
                raise ConfigError(
                    f"experiment.rounds does not apply to {self.method}, which changes its masks "
                    "during training: set its method_options instead"
                )
        if after:
            if to_iterations(self.prune_step, 1, "experiment.prune_step") != 0:
                raise ConfigError(f"{self.method} prunes after training: leave prune_step at 0")
            if entry.settings["iterative"]:
                lottery_level(density, self.lottery_rate)
        elif self.rewind_step is not None:
            after_names = registry.names((registry.AFTER_TRAINING,))
            raise ConfigError(f"rewind_step applies to {', '.join(after_names)}, not {self.method}")
        for name in ("prune_step", "rewind_step"):
            if getattr(self, name) is not None:
                to_iterations(getattr(self, name), 1, f"experiment.{name}")
        if self.model not in models.names():
            raise ConfigError(
                f"unknown model {self.model!r}; choose one of {', '.join(models.names())}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if self.strategy == "multi_worker_mirrored" and after:
            raise ConfigError(
                f"{self.method} shares runs between experiments, which multi_worker_mirrored "
                "does not support; use strategy 'mirrored' (several devices of one machine)"
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
            raise ConfigError(
                f"experiment.method_options must be a dict of option: value, got "
                f"{self.method_options!r}"
            )
        if self.method_options and entry.kind not in (registry.AT_INIT, registry.DURING_TRAINING):
            raise ConfigError(
                f"method {self.method!r} takes no options, got {sorted(self.method_options)}"
            )
        registry.check_options(method, self.method_options, shown=self.method)
        if during:
            schedules.schedule_class(entry.settings["schedule"]).check_options(
                self.options(), self.method
            )

    def options(self) -> dict:
        """The method's options: its registry defaults updated with `method_options`."""
        return {**registry.get(self.resolved()[0]).option_defaults(), **self.method_options}

    def mask_schedule(self, total_steps: int, steps_per_epoch: int):
        """For a method that changes its masks during training, its schedule in a run of
        `total_steps` iterations (`tfprune.training.schedules`); None for any other method.

        Raises:
            ConfigError: for an option that cannot be used in such a run.
        """
        entry = registry.get(self.resolved()[0])
        if entry.kind != registry.DURING_TRAINING:
            return None
        return schedules.resolve(
            entry.settings["schedule"],
            check_density(self.density),
            self.options(),
            total_steps,
            steps_per_epoch,
            self.method,
        )


def _refused_ablation(name: str, method: str, entry: registry.Method) -> str:
    """The one-line reason why ablation `name` does not apply to `method`."""
    note = entry.settings.get("ablation_note")
    if not entry.ablations:
        return f"ablation {name!r} does not apply to {method}: " + (note or "it takes no ablation")
    return f"ablation {name!r} does not apply to {method}; use {' or '.join(entry.ablations)}"


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
        json.dumps(semantic(config_dict(experiment, training)), sort_keys=True).encode()
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
    from tfprune import execute  # TensorFlow comes with the run, not with the configuration

    return execute.run(
        experiment, training, output_dir, overwrite=overwrite, should_stop=should_stop
    )


def check(experiment: Experiment, training: TrainConfig) -> None:
    """Raises the error a run of this configuration would meet before training; writes nothing.

    Checks every setting, that the dataset exists, that the network takes its images, that
    the step positions lie inside training and that there are enough pruning examples.

    Raises:
        ConfigError, DataError: as `run` would.
    """
    validate(experiment, training)
    check_fit(experiment, Sizes.of(experiment, training))


def validate(experiment: Experiment, training: TrainConfig) -> None:
    """Raises ConfigError for a setting of either that cannot run."""
    experiment.validate()
    training.validate()


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The dataset's shape and the run's length in iterations."""

    info: data_lib.DatasetInfo
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, experiment: Experiment, training: TrainConfig) -> Sizes:
        """The sizes of a run of `experiment` trained as `training` says."""
        return cls.for_data(
            experiment.dataset, experiment.data_dir, experiment.train_limit, training
        )

    @classmethod
    def for_data(cls, dataset, data_dir, train_limit, training: TrainConfig) -> Sizes:
        """The sizes of a training on `dataset` (its first `train_limit` examples)."""
        info = data_lib.dataset_info(dataset, data_dir)
        num_train = min(info.num_train, train_limit or info.num_train)
        steps_per_epoch = math.ceil(num_train / training.batch_size)
        return cls(info, steps_per_epoch, training.total_steps(steps_per_epoch))


def check_fit(experiment: Experiment, ctx: Sizes) -> None:
    """Raises the error a run would meet once the data is known: a network that does not take
    the images, a step past the end of training, too few pruning examples."""
    info = ctx.info
    try:
        models.check(experiment.model, info.input_shape, info.num_classes)
    except ConfigError as error:
        shape = "x".join(map(str, info.input_shape))
        raise ConfigError(
            f"model {experiment.model!r} does not fit dataset {experiment.dataset!r} "
            f"({shape} images, {info.num_classes} classes): {error}"
        ) from None
    kind = registry.get(experiment.resolved()[0]).kind
    if kind == registry.DENSE:
        return
    after = kind == registry.AFTER_TRAINING
    name = "rewind_step" if after else "prune_step"
    step = getattr(experiment, name)
    if step is not None:
        iteration = to_iterations(step, ctx.steps_per_epoch, f"experiment.{name}")
        if iteration >= ctx.total_steps:
            raise ConfigError(
                f"experiment.{name} {step!r} is at or after the end of training "
                f"({ctx.total_steps} iterations, {ctx.steps_per_epoch} per epoch)"
            )
    experiment.mask_schedule(ctx.total_steps, ctx.steps_per_epoch)
    wanted = experiment.examples_per_class * info.num_classes
    if not after and registry.needs_data(*experiment.resolved()) and wanted > info.num_train:
        raise DataError(
            f"experiment.examples_per_class={experiment.examples_per_class} asks for {wanted} "
            f"pruning examples, but {experiment.dataset} has only {info.num_train} training "
            "examples: lower examples_per_class"
        )
