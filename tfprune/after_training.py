"""Baselines that prune after training (SPEC §4): magnitude pruning after training and
lottery-ticket rewinding, with the `shuffle` and `reinit` ablations.

All of them start from one dense training of the configuration (the "trunk", shared by every
method, density and ablation of the same data, network, training and seed). Iterative lottery
levels are shared too: level n of rewinding step k is computed once, from level n - 1, and
reused by every run that needs it. Shared runs live in `shared_dir`, each one locked while it
is computed, so concurrent sweep workers wait for it instead of computing it twice.

- `magnitude_after_training`: keep the global top-|w_T| of the dense network at density d,
  then retrain the survivors from w_T with the whole learning-rate schedule replayed
  (fine-tuning, as the paper's code does), or, with a rewind step k, from w_k from step k on.
- `lottery` (iterative magnitude pruning with rewinding, LTR): level n keeps (1 - rate)^n of
  the weights (rate 0.2): it removes the lowest |w| of the weights level n - 1 kept after
  training, rewinds the survivors to w_k of the dense run and trains from step k (learning
  rate and data order resume at k). k = 0 is the original lottery ticket.
- `lottery_oneshot`: prune to d at once by |w_T|, rewind to w_k, train from k.

Ablations act on the run being evaluated, never on the shared levels it derives from:
`shuffle` permutes each layer's mask, `reinit` starts the survivors from a fresh draw of the
initializers (with a new seed) instead of w_k (or w_T).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from absl import logging

from tfprune import registry
from tfprune._io import atomic_path
from tfprune.errors import ConfigError
from tfprune.methods.lottery import DEFAULT_RATE, lottery_level  # noqa: F401  re-exported
from tfprune.pruning import (
    assign_masks,
    get_masks,
    kept_count,
    prune,
    reinitialize,
    shuffle_masks,
)
from tfprune.runner import (
    RunContext,
    finish,
    locked,
    prepare_output_dir,
    read_results,
    semantic,
    snapshot_path,
    write_json,
)
from tfprune.training import load_snapshot


def run(
    ctx: RunContext,
    *,
    method: str,
    density: float,
    ablations: tuple[str, ...],
    rewind_step: int | None,
    rate: float,
    shared_dir: str,
    output_dir: str,
    fields: dict,
    should_stop=None,
) -> dict:
    """Runs one after-training baseline into `output_dir` (a prepared run directory).

    Args:
        ctx: Data, network and training of the configuration.
        method: A method of kind `registry.AFTER_TRAINING`; its settings say whether it is
            iterative (lottery levels) and where it rewinds by default.
        density: Fraction of the prunable weights kept.
        ablations: Any of the method's ablations.
        rewind_step: Rewinding iteration k; None fine-tunes from w_T (for a method whose
            default is not to rewind).
        rate: Fraction of the remaining weights each lottery level removes.
        shared_dir: Where the shared dense training and lottery levels are kept.
        output_dir: The run directory of this run.
        fields: What describes the run in `results.json`.
        should_stop: Polled between iterations (see `Trainer`).

    Returns:
        The run's results.
    """
    entry = registry.get(method)
    for name in ablations:
        if name not in entry.ablations:
            raise ConfigError(
                f"ablation {name!r} does not apply to {method}; use {' or '.join(entry.ablations)}"
            )
    rewind_step = default_rewind(method, rewind_step)
    trunk = _trunk_dir(ctx, shared_dir)
    dense_dir = _dense(ctx, trunk, rewind_step, should_stop)
    if entry.settings["iterative"]:
        level = lottery_level(density, rate)
        if level == 0:
            raise ConfigError(
                f"{method} level 0 is the dense network; use method {registry.dense().name!r}"
            )
        level_dir = _level(ctx, method, trunk, dense_dir, level, rewind_step, rate, should_stop)
        if not ablations:
            return _adopt(level_dir, output_dir, fields)
        parent = dense_dir if level == 1 else _level_dir(trunk, level - 1, rewind_step, rate)
        start = rewind_step
    else:
        level_dir, parent = None, dense_dir
        start = 0 if rewind_step is None else rewind_step

    target = density if level_dir is None else (1 - rate) ** level
    shuffle_seed = ctx.seed if "shuffle" in ablations else None
    model, _ = _pruned_and_rewound(
        ctx, method, parent, target, dense_dir, rewind_step, shuffle_seed
    )
    if "reinit" in ablations:
        reinitialize(model, ctx.seed)
    trainer = ctx.trainer(model, output_dir, should_stop=should_stop, start_step=start)
    state = trainer.run()
    return finish(model, state, output_dir, fields)


def default_rewind(method: str, rewind_step: int | None) -> int | None:
    """The rewind step a method uses: the one given, else the method's default (iteration 0
    for the lottery methods; none, fine-tuning from w_T, for magnitude pruning after
    training)."""
    if rewind_step is None:
        return registry.get(method).settings["rewind_default"]
    return rewind_step


def _pruned_and_rewound(
    ctx: RunContext,
    method: str,
    parent: str,
    density: float,
    dense_dir: str,
    rewind_step: int | None,
    shuffle_seed: int | None = None,
):
    """A network holding `parent`'s final weights pruned to `density` by global |w|, the mask
    shuffled when `shuffle_seed` is given, and its weights rewound to the dense run's step k
    (kept at w_T when `rewind_step` is None). Returns `(model, masks)`."""
    model = ctx.build_model()
    load_snapshot(model, snapshot_path(parent, ctx.total_steps))
    masks = prune(model, registry.get(method).settings["scored_by"], density)
    if shuffle_seed is not None:
        masks = shuffle_masks(masks, shuffle_seed)
    if rewind_step is not None:
        load_snapshot(model, snapshot_path(dense_dir, rewind_step))
    assign_masks(model, masks)
    return model, masks


def _trunk_dir(ctx: RunContext, shared_dir: str) -> str:
    description = {
        "dataset": ctx.dataset,
        "model": ctx.model,
        "seed": ctx.seed,
        "data_dir": ctx.data_dir,
        "augment": ctx.augment,
        "train_limit": ctx.train_limit,
        "test_limit": ctx.test_limit,
        "training": semantic({"training": vars(ctx.training)})["training"],
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(shared_dir, f"{ctx.dataset}-{ctx.model}-s{ctx.seed}-{digest}")


def _dense(ctx: RunContext, trunk: str, rewind_step: int | None, should_stop) -> str:
    """The shared dense training; returns its directory.

    It keeps the weights at iteration 0, at the end and at the rewind step. A run for another
    rewind step k > 0 is a directory of its own (`dense-k<k>`), so a finished shared run is
    never replaced while another process may be reading it.
    """
    dense = registry.dense().name
    name = dense if not rewind_step else f"{dense}-k{rewind_step}"
    run_dir = os.path.join(trunk, name)
    keep = {0, ctx.total_steps} | ({rewind_step} if rewind_step is not None else set())
    with locked(run_dir):
        if read_results(run_dir) is not None:
            return run_dir
        prepare_output_dir(
            run_dir, {"shared": dense, "trunk": trunk, "keep_steps": sorted(keep)}, False
        )
        model = ctx.build_model()
        trainer = ctx.trainer(model, run_dir, should_stop=should_stop, keep_steps=keep)
        state = trainer.run()
        finish(model, state, run_dir, {"method": dense, "ablations": [], "seed": ctx.seed})
    return run_dir


def _level_dir(trunk: str, level: int, rewind_step: int, rate: float) -> str:
    return os.path.join(trunk, f"lottery-k{rewind_step}-r{rate:g}", f"level-{level:02d}")


def _level(ctx, method, trunk, dense_dir, level, rewind_step, rate, should_stop) -> str:
    """Lottery level `level` (computing the missing levels before it); returns its directory."""
    for n in range(1, level + 1):
        run_dir = _level_dir(trunk, n, rewind_step, rate)
        parent = dense_dir if n == 1 else _level_dir(trunk, n - 1, rewind_step, rate)
        with locked(run_dir):
            if read_results(run_dir) is not None:
                continue
            prepare_output_dir(
                run_dir,
                {"shared": method, "level": n, "rewind_step": rewind_step, "rate": rate},
                overwrite=False,
            )
            model, masks = _pruned_and_rewound(
                ctx, method, parent, (1 - rate) ** n, dense_dir, rewind_step
            )
            logging.info(
                "lottery level %d: %d weights kept, rewound to iteration %d",
                n,
                sum(int(m.sum()) for m in get_masks(model).values()),
                rewind_step,
            )
            trainer = ctx.trainer(
                model,
                run_dir,
                should_stop=should_stop,
                start_step=rewind_step,
                keep_steps={ctx.total_steps},
            )
            state = trainer.run()
            total = sum(m.size for m in masks.values())
            finish(
                model,
                state,
                run_dir,
                {
                    "method": method,
                    "ablations": [],
                    "level": n,
                    "kept": kept_count((1 - rate) ** n, total),
                    "rewind_step": rewind_step,
                    "seed": ctx.seed,
                },
            )
    return _level_dir(trunk, level, rewind_step, rate)


def _adopt(level_dir: str, output_dir: str, fields: dict) -> dict:
    """Makes a shared lottery level the result of this run (copies, no retraining)."""
    shared = read_results(level_dir)
    for name in ("masks.npz", "model.keras"):
        target = os.path.join(output_dir, name)
        with atomic_path(target, suffix=os.path.splitext(name)[1]) as tmp:
            shutil.copyfile(os.path.join(level_dir, name), tmp)
    results = {**shared, **fields, "shared_run": os.path.abspath(level_dir)}
    write_json(os.path.join(output_dir, "results.json"), results)
    return results
