"""One experiment end to end: data → model → pruning → training → results on disk.

`run(Experiment(...), TrainConfig(...), output_dir)` is what `python -m tfprune.train` calls
after reading its gin files; it works the same without gin. Pruning at initialization (or at a
step t) happens inside the training loop; the after-training baselines are in
`tfprune.after_training`.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`masks.npz` and `pruning.json` (once pruned), and on completion `model.keras` and
`results.json`. Re-running into the same directory resumes from the newest checkpoint; a
different configuration is refused unless `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import numbers
import os
from collections.abc import Callable

from absl import logging

from tfprune import after_training, models
from tfprune import data as data_lib
from tfprune.errors import ConfigError, DataError
from tfprune.pruning import (
    check_ablations,
    check_method,
    check_options,
    needs_data,
    prune_with_report,
    save_masks,
)
from tfprune.pruning.selection import check_density, check_scope
from tfprune.runner import (
    STRATEGIES,
    RunContext,
    check_same_configuration,
    claim_output_dir,
    finish,
    is_chief,
    make_strategy,
    read_results,
    semantic,
    write_json,
)
from tfprune.steps import to_iterations
from tfprune.training import TrainConfig, TrainState
from tfprune.version import __version__

DENSE = "dense"


@dataclasses.dataclass
class Experiment:
    """What to run: data, network, pruning method and seed.

    Args:
        dataset: A dataset name (`fashion_mnist`, `cifar10`, ... see `tfprune.data`).
        model: A network name (`tfprune.models.names()`).
        method: A pruning method (`tfprune.method_names()`: a scorer, `uniform`, `erk` or
            `ratio_of:<scorer>`), an after-training baseline (`magnitude_after_training`,
            `lottery`, `lottery_oneshot`) or `"dense"` for no pruning.
        density: Fraction of prunable weights kept, in (0, 1]; must be 1 for `"dense"`.
        scope: `"global"` or `"layer"` selection.
        rounds: Pruning rounds (exponential density schedule); None: the method's default.
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

    def validate(self) -> None:
        """Raises ConfigError for a setting that cannot run."""
        after = self.method in after_training.METHODS
        if self.method != DENSE and not after:
            try:
                check_method(self.method)
            except ConfigError as error:
                extra = ", ".join((*after_training.METHODS, DENSE))
                raise ConfigError(f"{error}, {extra}") from None
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
        if after:
            for name in ablations:
                if name not in after_training.ABLATIONS:
                    raise ConfigError(
                        f"ablation {name!r} does not apply to {self.method}; use "
                        f"{' or '.join(after_training.ABLATIONS)}"
                    )
            if to_iterations(self.prune_step, 1, "experiment.prune_step") != 0:
                raise ConfigError(f"{self.method} prunes after training: leave prune_step at 0")
            if self.method == "lottery":
                after_training.lottery_level(density, self.lottery_rate)
        elif self.rewind_step is not None:
            raise ConfigError(
                f"rewind_step applies to {', '.join(after_training.METHODS)}, not {self.method}"
            )
        for name in ("prune_step", "rewind_step"):
            if getattr(self, name) is not None:
                to_iterations(getattr(self, name), 1, f"experiment.{name}")
        check_scope(self.scope)
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
        if self.method_options and (self.method == DENSE or after):
            raise ConfigError(
                f"method {self.method!r} takes no options, got {sorted(self.method_options)}"
            )
        if self.method != DENSE and not after:
            check_options(self.method, self.method_options)


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
    _validate(experiment, training)
    output_dir = output_dir or default_output_dir(experiment, training)
    config = config_dict(experiment, training)
    # Created first: multi_worker_mirrored must exist before TensorFlow runs an op.
    strategy = make_strategy(experiment.strategy)
    ctx = _context(experiment, training, strategy)
    _check_fit(experiment, ctx)
    finished = None if overwrite else read_results(output_dir)
    if finished is not None:
        # Nothing is written: a finished run can be read from a read-only copy.
        check_same_configuration(output_dir, config)
        logging.info("%s is complete; delete it or pass overwrite to run again", output_dir)
        return finished
    # Before the run directory exists: a dataset that cannot be had leaves nothing behind.
    data_lib.prepare(experiment.dataset, experiment.data_dir)
    # The chief alone writes the run directory, and holds it while the run lasts.
    claim = (
        claim_output_dir(output_dir, config, overwrite)
        if is_chief(strategy)
        else contextlib.nullcontext()
    )
    with claim:
        return _run_claimed(experiment, ctx, output_dir, config, should_stop)


def _run_claimed(experiment, ctx: RunContext, output_dir, config, should_stop) -> dict:
    fields = {
        "method": experiment.method,
        "ablations": list(check_ablations(experiment.ablations)),
        "density_target": float(experiment.density),
        "scope": experiment.scope,
        "min_layer_density": experiment.min_layer_density,
        "seed": experiment.seed,
        "dataset": experiment.dataset,
        "model": experiment.model,
        "tfprune_version": __version__,
        "config": config,
    }
    if experiment.method in after_training.METHODS:
        rewind = experiment.rewind_step
        rewind = (
            None
            if rewind is None
            else to_iterations(rewind, ctx.steps_per_epoch, "experiment.rewind_step")
        )
        rewind = after_training.default_rewind(experiment.method, rewind)
        fields.update({"prune_step": ctx.total_steps, "rewind_step": rewind, "rounds": 1})
        return after_training.run(
            ctx,
            method=experiment.method,
            density=float(experiment.density),
            ablations=check_ablations(experiment.ablations),
            rewind_step=rewind,
            rate=experiment.lottery_rate,
            shared_dir=experiment.shared_dir
            or os.path.join(os.path.dirname(os.path.abspath(output_dir)), "_shared"),
            output_dir=output_dir,
            fields=fields,
            should_stop=should_stop,
        )
    return _run_at_step(experiment, ctx, output_dir, fields, should_stop)


def check(experiment: Experiment, training: TrainConfig) -> None:
    """Raises the error a run of this configuration would meet before training; writes nothing.

    Checks every setting, that the dataset exists, that the network takes its images, that
    the step positions lie inside training and that there are enough pruning examples.

    Raises:
        ConfigError, DataError: as `run` would.
    """
    _validate(experiment, training)
    _check_fit(experiment, _context(experiment, training, make_strategy("default")))


def _validate(experiment: Experiment, training: TrainConfig) -> None:
    experiment.validate()
    training.validate()


def _context(experiment: Experiment, training: TrainConfig, strategy) -> RunContext:
    return RunContext(
        dataset=experiment.dataset,
        model=experiment.model,
        seed=experiment.seed,
        training=training,
        strategy=strategy,
        data_dir=experiment.data_dir,
        augment=experiment.augment,
        train_limit=experiment.train_limit,
        test_limit=experiment.test_limit,
    )


def _check_fit(experiment: Experiment, ctx: RunContext) -> None:
    info = ctx.info
    try:
        models.check(experiment.model, info.input_shape, info.num_classes)
    except ConfigError as error:
        shape = "x".join(map(str, info.input_shape))
        raise ConfigError(
            f"model {experiment.model!r} does not fit dataset {experiment.dataset!r} "
            f"({shape} images, {info.num_classes} classes): {error}"
        ) from None
    if experiment.method == DENSE:
        return
    after = experiment.method in after_training.METHODS
    name = "rewind_step" if after else "prune_step"
    step = getattr(experiment, name)
    if step is not None:
        iteration = to_iterations(step, ctx.steps_per_epoch, f"experiment.{name}")
        if iteration >= ctx.total_steps:
            raise ConfigError(
                f"experiment.{name} {step!r} is at or after the end of training "
                f"({ctx.total_steps} iterations, {ctx.steps_per_epoch} per epoch)"
            )
    wanted = experiment.examples_per_class * info.num_classes
    if not after and needs_data(experiment.method) and wanted > info.num_train:
        raise DataError(
            f"experiment.examples_per_class={experiment.examples_per_class} asks for {wanted} "
            f"pruning examples, but {experiment.dataset} has only {info.num_train} training "
            "examples: lower examples_per_class"
        )


def _run_at_step(experiment, ctx: RunContext, output_dir, fields, should_stop) -> dict:
    prune_step = to_iterations(experiment.prune_step, ctx.steps_per_epoch, "experiment.prune_step")
    model = ctx.build_model()
    trainer = None

    def on_step(step: int, state: TrainState) -> None:
        if step != prune_step or experiment.method == DENSE or state.extra.get("pruning"):
            return
        state.extra["pruning"] = _prune(model, experiment, ctx, output_dir, step)
        if step:
            # Training restarts at step t with the pruned network: fresh momentum buffers.
            trainer.reset_optimizer_slots()

    trainer = ctx.trainer(
        model, output_dir, on_step=on_step, should_stop=should_stop, hook_steps={prune_step}
    )
    state = trainer.run()
    pruning = state.extra.get("pruning", {})
    fields.update(
        {
            "prune_step": prune_step,
            "rewind_step": None,
            "rounds": pruning.get("rounds", 0),
            "scoring_seconds": pruning.get("seconds", 0.0),
        }
    )
    return finish(model, state, output_dir, fields, write=ctx.is_chief)


def _prune(model, experiment, ctx: RunContext, output_dir, step) -> dict:
    data = None
    if needs_data(experiment.method):
        data = ctx.pruning_data(experiment.examples_per_class)
    with ctx.strategy.scope():
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
            batch_size=ctx.training.batch_size,
            **experiment.method_options,
        )
    ctx.sync_model(model)
    if not ctx.is_chief:
        return {"step": step, "seconds": report.seconds, "rounds": report.rounds}
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
