"""What every executor of a sweep shares: a cell's command, its row, and the bookkeeping.

A cell runs `python -m tfprune.train` into `D/runs/<cell>/`, its output appended to
`D/logs/<cell>.log`, whichever executor starts it and on whichever machine. A cell whose run
directory holds its `results.json` is finished: its row is added to `D/results.csv` (if a kill
left it out) and it is not run again.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import time

from absl import logging

from tfprune._io import atomic_path, write_text
from tfprune.cli import PARENT_PID_ENV
from tfprune.results import COLUMNS, RunSummary, TableError, describe, read_table
from tfprune.rundir import locked, read_results


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


@dataclasses.dataclass(frozen=True)
class CellJob:
    """One cell of a sweep, ready to run anywhere the sweep directory is at the same path.

    Args:
        name: The cell's name (`cell_name`).
        relative: Its run directory relative to the sweep directory (`runs/<name>`), as
            `results.csv` names it.
        run_dir: Its run directory, absolute.
        log_path: The log its attempts append to, absolute.
        arguments: The arguments of `python` that run it (`-m tfprune.train ...`); the
            interpreter is the one of the process that starts it.
    """

    name: str
    relative: str
    run_dir: str
    log_path: str
    arguments: tuple[str, ...]


def cell_job(cell: dict, output_dir: str, gin_files, gin_bindings) -> CellJob:
    """The `CellJob` of `cell` in the sweep directory `output_dir`: the base gin files and
    bindings, then the cell's own (`cell_bindings`).

    Example:

    >>> cell_job({"method": "snip", "density": 0.1, "ablations": (), "seed": 0}, "D",
    ...          ["gin_configs/default.gin"], []).relative
    'runs/snip-none-d0.1-s0'
    """
    root = os.path.abspath(output_dir)
    name = cell_name(cell)
    run_dir = os.path.join(root, "runs", name)
    arguments = ["-m", "tfprune.train", f"--output_dir={run_dir}"]
    arguments += [f"--gin_file={os.path.abspath(f)}" for f in gin_files]
    arguments += [f"--gin_bindings={b}" for b in gin_bindings]
    arguments += [f"--gin_bindings={b}" for b in cell_bindings(cell, os.path.join(root, "_shared"))]
    return CellJob(
        name=name,
        relative=os.path.join("runs", name),
        run_dir=run_dir,
        log_path=os.path.join(root, "logs", name + ".log"),
        arguments=tuple(arguments),
    )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an attempt at a cell ended.

    Args:
        code: The exit status of its `tfprune.train` process; None if none ran to its end.
        results: The run's `results.json`, or None if it has none.
        reason: Why it failed, for the report, when it is not in the exit status.
    """

    code: int | None
    results: dict | None
    reason: str = ""

    @property
    def finished(self) -> bool:
        """Whether the cell is finished: its process succeeded and wrote its results."""
        return self.code == 0 and self.results is not None

    def describe(self, log_path: str) -> str:
        """Why the attempt failed, in a few words naming the cell's log."""
        if self.reason:
            return f"{self.reason}; see {log_path}"
        return f"exit {self.code}; see {log_path}"


@contextlib.contextmanager
def _unwatched(process):
    yield


def run_cell(job: CellJob, watch=_unwatched, env: dict | None = None) -> Outcome:
    """Runs the cell's `tfprune.train` process to its end, its output appended to its log.

    The process stops with a checkpoint if this process dies (see `tfprune.cli.die_with_parent`)
    or is interrupted while it waits (KeyboardInterrupt: the process gets SIGTERM, and the
    interruption goes on once it has ended).

    Args:
        job: The cell.
        watch: A context manager factory that holds the process while it runs (the local
            executor keeps it, to stop it).
        env: Environment variables set for the process, beyond this process's own.

    Returns:
        Its `Outcome`, with the run's `results.json` read back.
    """
    os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
    with open(job.log_path, "a") as log:
        environment = dict(os.environ, **(env or {}), **{PARENT_PID_ENV: str(os.getpid())})
        command = [sys.executable, *job.arguments]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        with watch(process):
            try:
                code = _wait(process)
            except BaseException:
                process.send_signal(signal.SIGTERM)
                process.wait()
                raise
    return Outcome(code, read_results(job.run_dir))


def _wait(process: subprocess.Popen) -> int:
    """`process.wait()` in short waits: an interruption of this thread (Ray cancels a task
    with one) is then noticed within a second, not when the process ends."""
    while True:
        try:
            return process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass


def result_row(results: dict, run_dir: str) -> dict:
    """The `results.csv` row of a finished run (`tfprune.results.RunSummary`)."""
    return RunSummary.from_results(results, run_dir).to_row()


def append_row(csv_path: str, row: dict, lock: bool = True) -> bool:
    """Adds `row` to `csv_path` unless a row of the same run_dir is there; returns whether it
    added it. The file is rewritten through a temporary file and a rename, so a reader never
    sees half a row; under a lock (`lock`), concurrent writers never lose one. A single writer
    (the Ray executor's driver) needs no lock, which network file systems may not honour.

    Damaged lines (see `tfprune.results`) are left out of the rewritten file, after the
    file as it was is kept beside it (`results.csv.damaged-<time>`); the sweep adds the rows of
    finished runs back from their run directories.
    """
    with locked(csv_path) if lock else contextlib.nullcontext():
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


def duration(seconds: float) -> str:
    """`seconds` as `H:MM:SS`."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Executor:
    """Runs the cells of a grid not finished yet, and keeps the account of them.

    A subclass runs the cells (`run`) and reports each one's end with `record`: a finished
    cell's row is added to `results.csv`, a failed one is named in `failed`.

    Args:
        output_dir: The sweep directory.
        gin_files: The base gin files.
        gin_bindings: The base gin bindings.
        grid: The cells (`tfprune.sweep.cells`).
        lock_csv: Whether `results.csv` is written under a file lock (several writers).
    """

    def __init__(self, output_dir, gin_files, gin_bindings, grid, lock_csv: bool = True):
        self.output_dir = output_dir
        self.jobs = [cell_job(cell, output_dir, gin_files, gin_bindings) for cell in grid]
        self.csv_path = os.path.join(output_dir, "results.csv")
        self.lock_csv = lock_csv
        self.stopping = False
        self.done = 0
        self.failed: list[str] = []
        self.durations: list[float] = []
        self.started = time.time()
        # Cells that run at the same time, for the ETA.
        self.parallel = 1

    def run(self, status_seconds: float = 30.0) -> int:
        """Runs the cells not finished yet; returns the exit status (0: all done).

        Every `status_seconds` (0: never) and when a cell starts, one line names the running
        cells and their progress (see `tfprune.executors.monitor.CellMonitor`).
        """
        raise NotImplementedError

    def stop(self, signum, frame) -> None:
        """Stops the sweep: running cells write a checkpoint and end."""
        raise NotImplementedError

    def todo(self) -> list[CellJob]:
        """The cells not finished yet; the rows of finished ones missing from `results.csv`
        (after a kill) are added."""
        os.makedirs(os.path.join(self.output_dir, "runs"), exist_ok=True)
        os.makedirs(os.path.join(self.output_dir, "logs"), exist_ok=True)
        todo = []
        for job in self.jobs:
            results = read_results(job.run_dir)
            if results is not None:
                append_row(self.csv_path, result_row(results, job.relative), self.lock_csv)
                self.done += 1
            else:
                todo.append(job)
        logging.info(
            "%d cells, %d finished already, %d to run", len(self.jobs), self.done, len(todo)
        )
        return todo

    def record(self, job: CellJob, outcome: Outcome, seconds: float) -> None:
        """Accounts for the end of a cell: its row if it finished, its name in `failed` if it
        failed (unless the sweep is stopping), and a line either way."""
        if outcome.finished:
            append_row(self.csv_path, result_row(outcome.results, job.relative), self.lock_csv)
            self.done += 1
            self.durations.append(seconds)
            status = f"test_accuracy={outcome.results['test_accuracy']:.4f}"
        elif not self.stopping:
            self.failed.append(job.relative)
            status = f"FAILED ({outcome.describe(job.log_path)})"
        else:
            status = "stopped"
        logging.info("[%d/%d] %s %s; %s", self.done, len(self.jobs), job.name, status, self.eta())

    def eta(self) -> str:
        """`ETA H:MM:SS` of the cells left, from the mean time of those finished."""
        remaining = len(self.jobs) - self.done - len(self.failed)
        if not self.durations or remaining <= 0:
            return "ETA --"
        seconds = sum(self.durations) / len(self.durations) * remaining / self.parallel
        return f"ETA {duration(seconds)}"
