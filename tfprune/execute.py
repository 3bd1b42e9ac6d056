"""Running one experiment: data → model → pruning → training → results on disk.

`tfprune.experiment.run` hands over to `run` here. Pruning at initialization (or at a step t)
happens inside the training loop; the methods that change masks during training (gradual
magnitude pruning, SET, RigL) are callbacks of the loop (`tfprune.training.sparse`); the
after-training baselines are in `tfprune.after_training`.

A run directory holds `config.json` (what was asked), `checkpoints/`, `tensorboard/`,
`masks.npz` and `pruning.json` (once pruned), and on completion `model.keras` and
`results.json`. Re-running into the same directory resumes from the newest checkpoint; a
different configuration is refused unless `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable

from absl import logging

from tfprune import after_training, registry
from tfprune import data as data_lib
from tfprune.experiment import (
    Experiment,
    check_fit,
    config_dict,
    default_output_dir,
    validate,
)
from tfprune.pruning import needs_data, prune_with_report, save_masks
from tfprune.registry import check_ablations
from tfprune.runner import (
    RunContext,
    check_same_configuration,
    claim_output_dir,
    finish,
    is_chief,
    make_strategy,
    read_results,
    write_json,
)
from tfprune.steps import to_iterations
from tfprune.training import TrainConfig, TrainState, schedules
from tfprune.version import __version__


def run(
    experiment: Experiment,
    training: TrainConfig,
    output_dir: str | None = None,
    *,
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """`tfprune.experiment.run`: runs, resumes, or returns the finished result of one experiment
    (its arguments, results and errors are documented there)."""
    validate(experiment, training)
    output_dir = output_dir or default_output_dir(experiment, training)
    config = config_dict(experiment, training)
    # Created first: multi_worker_mirrored must exist before TensorFlow runs an op.
    strategy = make_strategy(experiment.strategy)
    ctx = _context(experiment, training, strategy)
    check_fit(experiment, ctx)
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
    method, allocation = experiment.resolved()
    fields = {
        "method": experiment.method,
        "allocation": allocation,
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
    if registry.get(method).kind == registry.AFTER_TRAINING:
        rewind = experiment.rewind_step
        rewind = (
            None
            if rewind is None
            else to_iterations(rewind, ctx.steps_per_epoch, "experiment.rewind_step")
        )
        rewind = after_training.default_rewind(method, rewind)
        fields.update({"prune_step": ctx.total_steps, "rewind_step": rewind, "rounds": 1})
        return after_training.run(
            ctx,
            method=method,
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
    if registry.get(method).kind == registry.DURING_TRAINING:
        return _run_during_training(experiment, ctx, output_dir, fields, should_stop)
    return _run_at_step(experiment, ctx, output_dir, fields, should_stop)


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


def _run_at_step(experiment, ctx: RunContext, output_dir, fields, should_stop) -> dict:
    prune_step = to_iterations(experiment.prune_step, ctx.steps_per_epoch, "experiment.prune_step")
    dense = registry.get(experiment.resolved()[0]).kind == registry.DENSE
    model = ctx.build_model()
    trainer = None

    def on_step(step: int, state: TrainState) -> None:
        if step != prune_step or dense or state.extra.get("pruning"):
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


def _run_during_training(experiment, ctx: RunContext, output_dir, fields, should_stop) -> dict:
    """Trains with the method's mask updates (`tfprune.training.sparse`): no pruning at a
    step; the callback gives the starting masks and changes them on its schedule."""
    from tfprune.training import sparse

    schedule = experiment.mask_schedule(ctx.total_steps, ctx.steps_per_epoch)
    if isinstance(schedule, schedules.CubicSchedule) and not schedule.intervals:
        logging.warning(
            "%s: fewer than %d iterations between begin (%d) and end (%d): pruning to density "
            "%g at once at iteration %d",
            experiment.method,
            schedule.every,
            schedule.begin,
            schedule.end,
            experiment.density,
            schedule.begin,
        )
    update = sparse.for_method(
        experiment.resolved()[0],
        schedule,
        density=float(experiment.density),
        seed=experiment.seed,
        ablations=check_ablations(experiment.ablations),
        min_layer_density=experiment.min_layer_density,
    )
    model = ctx.build_model()
    trainer = ctx.trainer(model, output_dir, should_stop=should_stop, callbacks=[update])
    state = trainer.run()
    fields.update(
        {
            # From this iteration on the mask no longer changes.
            "prune_step": schedule.last_step,
            "rewind_step": None,
            "rounds": len(schedule.steps()),
            "scoring_seconds": state.extra.get("mask_update_seconds", 0.0),
            "mask_schedule": {
                "kind": type(schedule).__name__,
                **dataclasses.asdict(schedule),
                "steps": len(schedule.steps()),
                "last_step": schedule.last_step,
            },
        }
    )
    return finish(model, state, output_dir, fields, write=ctx.is_chief)


def _prune(model, experiment, ctx: RunContext, output_dir, step) -> dict:
    data = None
    if needs_data(*experiment.resolved()):
        data = ctx.pruning_data(experiment.examples_per_class)
    with ctx.strategy.scope():
        method, allocation = experiment.resolved()
        report = prune_with_report(
            model,
            method,
            experiment.density,
            data,
            allocation=allocation,
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
            "allocation": allocation,
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
