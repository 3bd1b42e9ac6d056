"""Command line: run a grid of experiments, each cell its own run directory.

    python -m tfprune.sweep --gin_file=gin_configs/default.gin \\
        --methods=snip,grasp,lottery --densities=0.8^5:0.8^20 \\
        --ablations=none,shuffle,reinit,invert --seeds=0,1,2 --output_dir=D \\
        [--gin_bindings=...] [--jobs=N] [--shard=i/N|auto]
        [--executor=ray [--ray_address=auto|HOST:PORT] [--cell_cpus=1] [--cell_gpus=0]
         [--retries=2]]

Every cell (method × density × ablations × seed) runs `python -m tfprune.train` in a
subprocess into `D/runs/<method>-<ablations>-d<density>-s<seed>/`, so a crash or a kill of one
cell never takes the sweep down and a finished cell is never run again. When a cell finishes,
one row is added to `D/results.csv` (columns in `tfprune.results.COLUMNS`). Re-running the same
command resumes: finished cells are skipped, interrupted ones resume from their checkpoints.
Runs shared between cells (the dense training and lottery levels of the after-training
baselines) live in `D/_shared/`.

How the cells run is the executor's (`tfprune/executors/`; docs/CLUSTER.md for clusters):
- `--executor=local` (the default): subprocesses of this machine, `--jobs` at a time. Rows are
  added under a file lock, so concurrent shards (`--shard=i/N`, or `--shard=auto` in a Slurm job
  array, sharing D) never clobber or duplicate rows.
- `--executor=ray`: each cell a task of a Ray cluster, holding `--cell_cpus` and `--cell_gpus`;
  a failed or lost attempt is run again up to `--retries` times. This process alone writes
  `results.csv`. D and the gin files must be on a file system every node shares.

Densities: a comma-separated list of numbers, powers `0.8^5`, and ranges `0.8^5:0.8^20`
(every integer exponent) or `0.8^5:0.8^20:3` (every third). Ablations: `none`, a name, or names
joined by `+` (`shuffle+reinit`). `dense` runs once per seed.

While cells run, a line every `--status_seconds` (30) and whenever a cell starts names each
running cell and how far it is (epoch, iteration, loss), read from the progress lines its
training writes to `D/logs/<cell>.log`; a line follows each finished cell, with an ETA.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import signal
import sys
import time

from absl import app, flags, logging

from tfprune import registry
from tfprune.cli import (
    GIN_BINDINGS,
    GIN_FILES,
    OUTPUT_DIR,
    ablations_configurable,
    check_gin_files,
    experiment_configurable,
    fail,
    flags_parser,
    os_error_message,
    parse_gin,
    training_configurable,
)
from tfprune.errors import ConfigError, OutputError, TfpruneError
from tfprune.executors.base import cell_name
from tfprune.executors.local import LocalExecutor
from tfprune.experiment import check
from tfprune.methods.lottery import DEFAULT_RATE, lottery_level
from tfprune.pruning.selection import check_density
from tfprune.registry import check_ablations

METHODS = flags.DEFINE_string("methods", None, "Comma-separated methods (dense included).")
DENSITIES = flags.DEFINE_string("densities", "1.0", "Densities: 0.1,0.8^5,0.8^5:0.8^20[:k].")
ABLATION_SETS = flags.DEFINE_string("ablations", "none", "Ablation sets: none,shuffle,a+b,...")
SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds.")
JOBS = flags.DEFINE_integer(
    "jobs",
    None,
    "Cells run at the same time (default: 1 with --executor=local; with --executor=ray, as many "
    "as the cluster's nodes can hold).",
)
SHARD = flags.DEFINE_string(
    "shard",
    "0/1",
    "Run only cells i, i+N, i+2N, ... (i/N); auto: i and N of the Slurm array task "
    "(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT or _MIN/_MAX).",
)
EXECUTOR = flags.DEFINE_enum(
    "executor",
    "local",
    ["local", "ray"],
    "local: cells are subprocesses of this machine; ray: cells are tasks of a Ray cluster, run "
    "on any of its nodes, so --output_dir and the gin files must be on a file system all nodes "
    "share, at the same path (needs tfprune[ray]).",
)
RAY_ADDRESS = flags.DEFINE_string(
    "ray_address",
    None,
    "--executor=ray: the cluster, auto (RAY_ADDRESS or the one started on this machine) or "
    "HOST:PORT of its head; default: a Ray instance started on this machine.",
)
CELL_CPUS = flags.DEFINE_float("cell_cpus", 1.0, "--executor=ray: CPUs each cell holds.")
CELL_GPUS = flags.DEFINE_float("cell_gpus", 0.0, "--executor=ray: GPUs each cell holds.")
RETRIES = flags.DEFINE_integer(
    "retries",
    2,
    "--executor=ray: times a cell is run again after a failed attempt (its process failed, "
    "its worker or node died) before it is reported failed.",
)
_RAY_FLAGS = (RAY_ADDRESS, CELL_CPUS, CELL_GPUS, RETRIES)
STATUS_SECONDS = flags.DEFINE_float(
    "status_seconds",
    30.0,
    "Seconds between the lines naming the running cells and their progress (0: none).",
)

_POWER = re.compile(r"^\s*([0-9.]+)\s*\^\s*(\d+)\s*$")


def parse_densities(text: str) -> list[float]:
    """Parses `0.1,0.8^5,0.8^5:0.8^20,0.8^5:0.8^20:3` into a list of densities (in order,
    duplicates removed).

    Example:

    >>> parse_densities("0.5,0.8^1:0.8^3")
    [0.5, 0.8, 0.6400000000000001, 0.5120000000000001]
    """
    values: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if ":" in item:
            pieces = item.split(":")
            if len(pieces) not in (2, 3):
                raise ConfigError(f"density range {item!r} must look like 0.8^5:0.8^20[:step]")
            start, end = _power(pieces[0], item), _power(pieces[1], item)
            step = _positive_int(pieces[2], item) if len(pieces) == 3 else 1
            if start[0] != end[0] or end[1] < start[1]:
                raise ConfigError(f"density range {item!r} needs one base and rising exponents")
            values += [start[0] ** k for k in range(start[1], end[1] + 1, step)]
        elif "^" in item:
            base, exponent = _power(item, item)
            values.append(base**exponent)
        else:
            try:
                values.append(float(item))
            except ValueError:
                raise ConfigError(f"density {item!r} is not a number, a power or a range") from None
    if not values:
        raise ConfigError("--densities names no density")
    for value in values:
        check_density(value)
    return list(dict.fromkeys(values))


def _power(text: str, item: str) -> tuple[float, int]:
    match = _POWER.match(text)
    if not match:
        raise ConfigError(f"{text!r} in {item!r} must look like 0.8^5")
    return float(match.group(1)), int(match.group(2))


def _positive_int(text: str, item: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"the step of {item!r} must be a positive integer")
    return int(text)


def parse_ablation_sets(text: str) -> list[tuple[str, ...]]:
    """Parses `none,shuffle,shuffle+reinit` into ablation tuples (canonical order)."""
    sets = [check_ablations(part.strip()) for part in text.split(",") if part.strip()]
    if not sets:
        raise ConfigError("--ablations names no ablation set (use none for no ablation)")
    return list(dict.fromkeys(sets))


def parse_seeds(text: str) -> list[int]:
    """Parses `0,1,2` into seeds."""
    seeds = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if not part.isdigit():
            raise ConfigError(f"seed {part!r} must be a non-negative integer")
        seeds.append(int(part))
    if not seeds:
        raise ConfigError("--seeds names no seed")
    return list(dict.fromkeys(seeds))


def parse_methods(text: str | None) -> list[str]:
    """Parses and checks `snip,grasp,lottery,dense`."""
    if not text:
        raise ConfigError("--methods is required, e.g. --methods=snip,random")
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for method in methods:
        registry.resolve(method)
    return list(dict.fromkeys(methods))


def parse_shard(text: str, environ=os.environ) -> tuple[int, int]:
    """Parses `i/N` (0 <= i < N), or `auto`: the shard of this Slurm array task
    (`slurm_shard`)."""
    if (text or "").strip() == "auto":
        return slurm_shard(environ)
    match = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", text or "")
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--shard must look like i/N with 0 <= i < N or auto, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def slurm_shard(environ=os.environ) -> tuple[int, int]:
    """The shard `(i, N)` of this task of a Slurm job array (`sbatch --array=0-9` or `1-10`,
    `0-18:2`): its position among the array's tasks, and their number.

    Read from `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, and `SLURM_ARRAY_TASK_MIN`,
    `_MAX`, `_STEP` where Slurm sets them: the index is `(ID - MIN) / STEP`, the count is `COUNT`
    or `(MAX - MIN) / STEP + 1`.

    Raises:
        ConfigError: outside a job array (naming the missing variables), or for an array whose
            task ids are not evenly spaced (`--array=1,5,7`), which gives no shard to each task.

    Example:

    >>> slurm_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
    ...              "SLURM_ARRAY_TASK_MAX": "4"})
    (2, 4)
    """
    names = ("ID", "COUNT", "MIN", "MAX", "STEP")
    values = {}
    for name in names:
        text = environ.get(f"SLURM_ARRAY_TASK_{name}", "").strip()
        if text and not text.isdigit():
            raise ConfigError(f"--shard=auto: SLURM_ARRAY_TASK_{name}={text!r} is not a number")
        values[name] = int(text) if text else None
    missing = ["SLURM_ARRAY_TASK_ID"] if values["ID"] is None else []
    if values["COUNT"] is None and None in (values["MIN"], values["MAX"]):
        missing.append("SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MIN and _MAX)")
    if missing:
        raise ConfigError(
            f"--shard=auto runs in a task of a Slurm job array (sbatch --array), but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: use "
            "--shard=i/N elsewhere"
        )
    task, low, high, step = values["ID"], values["MIN"], values["MAX"], values["STEP"] or 1
    low = 0 if low is None else low
    count = values["COUNT"]
    if values["MAX"] is not None:
        spaced = (high - low) // step + 1
        if count is None:
            count = spaced
        elif count != spaced or (high - low) % step:
            count = None
    if count is None or (task - low) % step or not 0 <= (task - low) // step < count:
        shown = ", ".join(f"{n}={v}" for n, v in values.items() if v is not None)
        raise ConfigError(
            f"--shard=auto: the Slurm array's task ids are not evenly spaced ({shown}), so they "
            "give no shard to each task: use --array=0-N (or 0-N:step), or --shard=i/N"
        )
    return (task - low) // step, count


def cells(
    methods, densities, ablation_sets, seeds, lottery_rate: float = DEFAULT_RATE
) -> tuple[list[dict], list[str]]:
    """The grid's cells, in a fixed order, and the combinations skipped (with the reason).

    `lottery_rate` is the configuration's `experiment.lottery_rate`: the lottery reaches the
    densities (1 - rate)^n only.
    """
    grid, skipped = [], []
    for method, seed in itertools.product(methods, seeds):
        if registry.get(registry.resolve(method)[0]).kind == registry.DENSE:
            grid.append({"method": method, "density": 1.0, "ablations": (), "seed": seed})
            continue
        for density, ablations in itertools.product(densities, ablation_sets):
            reason = _skip_reason(method, density, ablations, lottery_rate)
            if reason:
                skipped.append(reason)
                continue
            grid.append(
                {"method": method, "density": density, "ablations": ablations, "seed": seed}
            )
    grid.sort(key=lambda c: (c["seed"], methods.index(c["method"]), -c["density"], c["ablations"]))
    return grid, list(dict.fromkeys(skipped))


def _skip_reason(method, density, ablations, lottery_rate) -> str | None:
    entry = registry.get(registry.resolve(method)[0])
    extra = [a for a in ablations if a not in entry.ablations]
    if extra:
        return f"{method} takes no {'+'.join(extra)} ablation"
    if entry.settings.get("iterative"):
        try:
            if lottery_level(density, lottery_rate) == 0:
                return f"{method} at density 1 is the dense network"
        except ConfigError:
            return f"{method} at rate {lottery_rate:g} reaches no density {density:.6g}"
    return None


def base_configuration(gin_files, gin_bindings):
    """The sweep's base configuration, parsed from its gin files and bindings as
    `tfprune.train` parses them: `(experiment, ablations switched on by the files, training)`."""
    parse_gin(gin_files, gin_bindings)
    base = experiment_configurable()
    switched = set(check_ablations(base.ablations)) | set(ablations_configurable())
    return base, switched, training_configurable()


def check_cells(base, switched, training, grid) -> None:
    """Raises the error the first failing cell of `grid` would end with, before any runs.

    Each cell's settings, applied to the base configuration (`base_configuration`), are
    checked as `tfprune.experiment.run` checks them.
    """
    for cell in grid:
        experiment = dataclasses.replace(
            base,
            method=cell["method"],
            density=cell["density"],
            ablations=tuple(sorted(switched | set(cell["ablations"]))),
            seed=cell["seed"],
        )
        try:
            check(experiment, training)
        except TfpruneError as error:
            raise type(error)(f"cell {cell_name(cell)}: {error}") from None


def prepare_sweep_dir(path: str) -> None:
    """Creates the sweep directory, or checks that an existing one can be written.

    Raises:
        OutputError: naming the path and the problem.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"--output_dir {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create --output_dir {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"--output_dir {path} is not writable")


def check_executor_flags() -> None:
    """Raises ConfigError for a value of the executor's flags that cannot be honoured, before
    anything runs; for --executor=ray, also if Ray is not installed."""
    if JOBS.value is not None and JOBS.value < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {JOBS.value}")
    if EXECUTOR.value == "local":
        given = [f"--{f.name}" for f in _RAY_FLAGS if flags.FLAGS[f.name].present]
        if given:
            verb = "is" if len(given) == 1 else "are"
            raise ConfigError(f"{', '.join(given)} {verb} for --executor=ray only")
        return
    for flag in (CELL_CPUS, CELL_GPUS):
        if not (flag.value >= 0 and math.isfinite(flag.value)):
            raise ConfigError(f"--{flag.name} must be a number >= 0, got {flag.value}")
    if RETRIES.value < 0:
        raise ConfigError(f"--retries must be an integer >= 0, got {RETRIES.value}")
    if flags.FLAGS["shard"].present:
        raise ConfigError(
            "--shard splits a sweep among several processes; with --executor=ray one process "
            "runs every cell on the cluster: leave --shard out"
        )
    from tfprune.executors.ray import import_ray, parse_address

    if RAY_ADDRESS.value is not None and RAY_ADDRESS.value.strip() != "auto":
        parse_address(RAY_ADDRESS.value)
    import_ray()


def make_executor(output_dir, gin_files, gin_bindings, grid):
    """The executor that --executor names, with its flags."""
    if EXECUTOR.value == "local":
        return LocalExecutor(output_dir, gin_files, gin_bindings, grid, jobs=JOBS.value or 1)
    from tfprune.executors.ray import RayExecutor, RayTasks

    return RayExecutor(
        output_dir,
        gin_files,
        gin_bindings,
        grid,
        retries=RETRIES.value,
        jobs=JOBS.value,
        tasks=lambda: RayTasks(RAY_ADDRESS.value, CELL_CPUS.value, CELL_GPUS.value),
    )


def main(argv):
    if len(argv) > 1:
        fail("tfprune.sweep", f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if not OUTPUT_DIR.value:
            raise ConfigError("--output_dir is required")
        check_gin_files(GIN_FILES.value)
        check_executor_flags()
        if not STATUS_SECONDS.value >= 0:
            raise ConfigError(f"--status_seconds must be >= 0, got {STATUS_SECONDS.value}")
        index, count = parse_shard(SHARD.value)
        methods = parse_methods(METHODS.value)
        base, switched, training = base_configuration(GIN_FILES.value, GIN_BINDINGS.value)
        grid, skipped = cells(
            methods,
            parse_densities(DENSITIES.value),
            parse_ablation_sets(ABLATION_SETS.value),
            parse_seeds(SEEDS.value),
            lottery_rate=base.lottery_rate,
        )
        for reason in skipped:
            logging.info("skipped: %s", reason)
        shard = grid[index::count]
        if not shard:
            shown = f"auto ({index}/{count})" if SHARD.value == "auto" else SHARD.value
            raise ConfigError(
                f"--shard={shown} holds no cell of the grid's {len(grid)}: use fewer shards"
            )
        check_cells(base, switched, training, shard)
        prepare_sweep_dir(OUTPUT_DIR.value)
        executor = make_executor(OUTPUT_DIR.value, GIN_FILES.value, GIN_BINDINGS.value, shard)
    except TfpruneError as error:
        fail("tfprune.sweep", str(error))
    signal.signal(signal.SIGTERM, executor.stop)
    signal.signal(signal.SIGINT, executor.stop)
    try:
        code = executor.run(STATUS_SECONDS.value)
    except OSError as error:
        fail("tfprune.sweep", os_error_message(error, OUTPUT_DIR.value))
    except TfpruneError as error:
        fail("tfprune.sweep", str(error))
    took = time.time() - executor.started
    print(
        f"{executor.done}/{len(shard)} cells done, {len(executor.failed)} failed, "
        f"{math.floor(took)}s; results in {executor.csv_path}"
    )
    for relative in executor.failed:
        print(f"failed: {relative} (re-run the same command to retry)")
    sys.exit(code)


if __name__ == "__main__":
    # --help lists the main module's flags only: the shared ones are this command's too.
    for shared in (GIN_FILES, GIN_BINDINGS, OUTPUT_DIR):
        flags.declare_key_flag(shared)
    app.run(main, flags_parser=flags_parser("tfprune.sweep"))
