"""Command line: run a grid of experiments, each cell its own run directory.

    python -m tfprune.sweep --gin_file=gin_configs/default.gin \\
        --methods=snip,grasp,lottery --densities=0.8^5:0.8^20 \\
        --ablations=none,shuffle,reinit,invert --seeds=0,1,2 --output_dir=D \\
        [--gin_bindings=...] [--jobs=N] [--shard=i/N]

Every cell (method × density × ablations × seed) runs `python -m tfprune.train` in a
subprocess into `D/runs/<method>-<ablations>-d<density>-s<seed>/`, so a crash or a kill of one
cell never takes the sweep down and a finished cell is never run again. When a cell finishes,
one row is added to `D/results.csv` (columns in `COLUMNS`) under a file lock, so concurrent
shards (`--shard=i/N`, for array jobs on a cluster sharing D) never clobber or duplicate rows.
Re-running the same command resumes: finished cells are skipped, interrupted ones resume from
their checkpoints. Runs shared between cells (the dense training and lottery levels of the
after-training baselines) live in `D/_shared/`.

Densities: a comma-separated list of numbers, powers `0.8^5`, and ranges `0.8^5:0.8^20`
(every integer exponent) or `0.8^5:0.8^20:3` (every third). Ablations: `none`, a name, or names
joined by `+` (`shuffle+reinit`). `dense` runs once per seed.

While cells run, a line every `--status_seconds` (30) and whenever a cell starts names each
running cell and how far it is (epoch, iteration, loss), read from the progress lines its
training writes to `D/logs/<cell>.log`; a line follows each finished cell, with an ETA.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import itertools
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from absl import app, flags, logging

from tfprune import registry
from tfprune._io import atomic_path, write_text
from tfprune.cli import (
    GIN_BINDINGS,
    GIN_FILES,
    OUTPUT_DIR,
    PARENT_PID_ENV,
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
from tfprune.experiment import check
from tfprune.methods.lottery import DEFAULT_RATE, lottery_level
from tfprune.pruning.selection import check_density
from tfprune.registry import check_ablations
from tfprune.results import COLUMNS, RunSummary, TableError, describe, read_table
from tfprune.rundir import locked, read_results
from tfprune.training import parse_progress_line

METHODS = flags.DEFINE_string("methods", None, "Comma-separated methods (dense included).")
DENSITIES = flags.DEFINE_string("densities", "1.0", "Densities: 0.1,0.8^5,0.8^5:0.8^20[:k].")
ABLATION_SETS = flags.DEFINE_string("ablations", "none", "Ablation sets: none,shuffle,a+b,...")
SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds.")
JOBS = flags.DEFINE_integer("jobs", 1, "Cells run at the same time.")
SHARD = flags.DEFINE_string("shard", "0/1", "Run only cells i, i+N, i+2N, ... (i/N).")
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


def parse_shard(text: str) -> tuple[int, int]:
    """Parses `i/N` (0 <= i < N)."""
    match = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", text or "")
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--shard must look like i/N with 0 <= i < N, got {text!r}")
    return int(match.group(1)), int(match.group(2))


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


def cell_name(cell: dict) -> str:
    """The run directory name of a cell: `<method>-<ablations>-d<density>-s<seed>`."""
    ablations = "+".join(cell["ablations"]) or "none"
    method = cell["method"].replace(":", "_")
    return f"{method}-{ablations}-d{cell['density']:.6g}-s{cell['seed']}"


def cell_bindings(cell: dict, shared_dir: str) -> list[str]:
    """The gin bindings that turn the base configuration into this cell."""
    return [
        f"experiment.method = {cell['method']!r}",
        f"experiment.density = {cell['density']!r}",
        f"experiment.ablations = {list(cell['ablations'])!r}",
        f"experiment.seed = {cell['seed']}",
        f"experiment.shared_dir = {shared_dir!r}",
        # Plain progress lines in the cell's log (not a terminal), which the sweep reports.
        "training.progress = True",
    ]


def result_row(results: dict, run_dir: str) -> dict:
    """The `results.csv` row of a finished run (`tfprune.results.RunSummary`)."""
    return RunSummary.from_results(results, run_dir).to_row()


def append_row(csv_path: str, row: dict) -> bool:
    """Adds `row` to `csv_path` unless a row of the same run_dir is there; returns whether it
    added it. Under a lock, the file is rewritten through a temporary file and a rename, so a
    reader never sees half a row and concurrent writers never lose one.

    Damaged lines (see `tfprune.results`) are left out of the rewritten file, after the
    file as it was is kept beside it (`results.csv.damaged-<time>`); the sweep adds the rows of
    finished runs back from their run directories.
    """
    with locked(csv_path):
        rows, damaged = _read(csv_path)
        if damaged:
            kept = f"{csv_path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            with atomic_path(kept) as tmp:
                shutil.copyfile(csv_path, tmp)
            logging.warning(
                "%s has damaged lines: %s; the file as it was is kept in %s, and it is rewritten "
                "without them",
                csv_path,
                describe(damaged),
                kept,
            )
        present = any(r["run_dir"] == row["run_dir"] for r in rows)
        if present and not damaged:
            return False
        if not present:
            rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
        write_text(csv_path, buffer.getvalue())
        return not present


def read_rows(csv_path: str) -> list[dict]:
    """The intact rows of a `results.csv` as `{column: text}` (empty if there is none)."""
    return _read(csv_path)[0]


def _read(csv_path: str) -> tuple[list[dict], list[tuple[int, str]]]:
    if not os.path.exists(csv_path) or not os.path.getsize(csv_path):
        return [], []
    try:
        rows, damaged = read_table(csv_path)
    except TableError as error:
        return [], [(1, str(error))]
    return [row for _, row in rows], damaged


class Sweep:
    """Runs the cells of a grid in subprocesses, `jobs` at a time."""

    def __init__(self, output_dir, gin_files, gin_bindings, grid, jobs):
        self.output_dir = output_dir
        self.gin_files = [os.path.abspath(f) for f in gin_files]
        self.gin_bindings = list(gin_bindings)
        self.grid = grid
        self.jobs = jobs
        self.csv_path = os.path.join(output_dir, "results.csv")
        self.shared_dir = os.path.join(os.path.abspath(output_dir), "_shared")
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.stopping = False
        self.done = 0
        self.failed: list[str] = []
        self.durations: list[float] = []
        self.started = time.time()

    def run(self, status_seconds: float = 30.0) -> int:
        """Runs the cells not finished yet; returns the exit status (0: all done).

        Every `status_seconds` (0: never) and when a cell starts, one line names the running
        cells and their progress (see `CellMonitor`).
        """
        os.makedirs(os.path.join(self.output_dir, "runs"), exist_ok=True)
        os.makedirs(os.path.join(self.output_dir, "logs"), exist_ok=True)
        todo = []
        for cell in self.grid:
            relative = os.path.join("runs", cell_name(cell))
            results = read_results(os.path.join(self.output_dir, relative))
            if results is not None:
                append_row(self.csv_path, result_row(results, relative))  # after a kill
                self.done += 1
            else:
                todo.append((cell, relative))
        logging.info(
            "%d cells, %d finished already, %d to run", len(self.grid), self.done, len(todo)
        )
        with (
            CellMonitor(status_seconds) as monitor,
            concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool,
        ):
            for _ in pool.map(lambda item: self._watched(monitor, *item), todo):
                pass
        return 0 if not self.failed and not self.stopping else 1

    def stop(self, signum, frame) -> None:
        """Stops the sweep: running cells write a checkpoint (SIGTERM) and end."""
        self.stopping = True
        with self.lock:
            for process in self.processes:
                process.send_signal(signal.SIGTERM)

    def _run_cell(self, cell: dict, relative: str) -> None:
        if self.stopping:
            return
        run_dir = os.path.join(self.output_dir, relative)
        log_path = os.path.join(self.output_dir, "logs", cell_name(cell) + ".log")
        command = [sys.executable, "-m", "tfprune.train", f"--output_dir={run_dir}"]
        command += [f"--gin_file={f}" for f in self.gin_files]
        command += [f"--gin_bindings={b}" for b in self.gin_bindings]
        command += [f"--gin_bindings={b}" for b in cell_bindings(cell, self.shared_dir)]
        started = time.time()
        with open(log_path, "a") as log:
            # The cell stops (with a checkpoint) if the sweep dies: see `die_with_parent`.
            env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid())})
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            with self.lock:
                self.processes.add(process)
            code = process.wait()
            with self.lock:
                self.processes.discard(process)
        results = read_results(run_dir)
        with self.lock:
            if code == 0 and results is not None:
                append_row(self.csv_path, result_row(results, relative))
                self.done += 1
                self.durations.append(time.time() - started)
                status = f"test_accuracy={results['test_accuracy']:.4f}"
            elif not self.stopping:
                self.failed.append(relative)
                status = f"FAILED (exit {code}; see {log_path})"
            else:
                status = "stopped"
            logging.info(
                "[%d/%d] %s %s; %s", self.done, len(self.grid), cell_name(cell), status, self._eta()
            )

    def _eta(self) -> str:
        remaining = len(self.grid) - self.done - len(self.failed)
        if not self.durations or remaining <= 0:
            return "ETA --"
        seconds = sum(self.durations) / len(self.durations) * remaining / self.jobs
        return f"ETA {_duration(seconds)}"

    def _watched(self, monitor: CellMonitor, cell: dict, relative: str) -> None:
        """Runs a cell with its progress in the monitor's status lines meanwhile."""
        name = cell_name(cell)
        monitor.started(name, os.path.join(self.output_dir, "logs", name + ".log"))
        try:
            self._run_cell(cell, relative)
        finally:
            monitor.ended(name)


def latest_progress(log_path: str, offset: int = 0, tail: int = 65536) -> dict | None:
    """The last complete progress line (see `tfprune.training.format_progress_line`) that a
    cell wrote to `log_path` after byte `offset`, parsed; None if there is none yet.

    Only the last `tail` bytes are read; a line still being written is left out.
    """
    try:
        with open(log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - tail)
            f.seek(start)
            text = f.read(size - start).decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(text.split("\n")[:-1]):
        progress = parse_progress_line(line)
        if progress is not None:
            return progress
    return None


class CellMonitor:
    """Logs one line naming each running cell and how far it is, read from the cell's log.

    A line is logged every `interval` seconds while cells run, and as soon as a cell starts.
    A cell's log is appended to by each attempt: only what this attempt wrote counts.

    Args:
        interval: Seconds between the status lines; 0 logs none.
        clock: A monotonic clock in seconds.

    Example:

    >>> with CellMonitor(30.0) as monitor:
    ...     monitor.started("snip-none-d0.1-s0", "D/logs/snip-none-d0.1-s0.log")
    """

    def __init__(self, interval: float, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self.lock = threading.Lock()
        # name: (log path, size of the log when the cell started, start time)
        self.running: dict[str, tuple[str, int, float]] = {}
        self._reported: set[str] = set()
        self._last = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cell-monitor", daemon=True)

    def __enter__(self) -> CellMonitor:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def started(self, name: str, log_path: str) -> None:
        """Cell `name` starts now and writes to `log_path`."""
        try:
            offset = os.path.getsize(log_path)
        except OSError:
            offset = 0
        with self.lock:
            self.running[name] = (log_path, offset, self.clock())

    def ended(self, name: str) -> None:
        """Cell `name` has ended."""
        with self.lock:
            self.running.pop(name, None)

    def status(self) -> str | None:
        """The status line of the running cells; None if none runs."""
        with self.lock:
            running = dict(self.running)
        if not running:
            return None
        now = self.clock()
        parts = []
        for name, (log_path, offset, started) in running.items():
            progress = latest_progress(log_path, offset)
            if progress is None:
                state = "not training yet"
            else:
                state = (
                    f"epoch {progress['epoch']}/{progress['epochs']} iteration "
                    f"{progress['step']}/{progress['total_steps']} loss {progress['loss']:.4f}"
                )
            parts.append(f"{name} {state} ({_duration(now - started)})")
        return f"running {len(parts)}: " + "; ".join(parts)

    def poll(self) -> None:
        """Logs the status line if `interval` has passed since the last one or a cell has
        started since."""
        with self.lock:
            names = set(self.running)
        now = self.clock()
        if now - self._last < self.interval and names <= self._reported:
            return
        line = self.status()
        if line is not None:
            logging.info("%s", line)
            self._last = now
        self._reported = names

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self.interval / 3)):
            self.poll()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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


def main(argv):
    if len(argv) > 1:
        fail("tfprune.sweep", f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if not OUTPUT_DIR.value:
            raise ConfigError("--output_dir is required")
        check_gin_files(GIN_FILES.value)
        if JOBS.value < 1:
            raise ConfigError(f"--jobs must be a positive integer, got {JOBS.value}")
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
            raise ConfigError(
                f"--shard={SHARD.value} holds no cell of the grid's {len(grid)}: use fewer shards"
            )
        check_cells(base, switched, training, shard)
        prepare_sweep_dir(OUTPUT_DIR.value)
        sweep = Sweep(OUTPUT_DIR.value, GIN_FILES.value, GIN_BINDINGS.value, shard, JOBS.value)
    except TfpruneError as error:
        fail("tfprune.sweep", str(error))
    signal.signal(signal.SIGTERM, sweep.stop)
    signal.signal(signal.SIGINT, sweep.stop)
    try:
        code = sweep.run(STATUS_SECONDS.value)
    except OSError as error:
        fail("tfprune.sweep", os_error_message(error, OUTPUT_DIR.value))
    took = time.time() - sweep.started
    print(
        f"{sweep.done}/{len(shard)} cells done, {len(sweep.failed)} failed, "
        f"{math.floor(took)}s; results in {sweep.csv_path}"
    )
    for relative in sweep.failed:
        print(f"failed: {relative} (re-run the same command to retry)")
    sys.exit(code)


if __name__ == "__main__":
    # --help lists the main module's flags only: the shared ones are this command's too.
    for shared in (GIN_FILES, GIN_BINDINGS, OUTPUT_DIR):
        flags.declare_key_flag(shared)
    app.run(main, flags_parser=flags_parser("tfprune.sweep"))
