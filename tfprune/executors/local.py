"""The local executor: each cell a subprocess on this machine, `jobs` at a time.

Several sweeps may share one sweep directory (`--shard=i/N`, array jobs on a cluster): each
adds its rows to `results.csv` under a file lock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import subprocess
import threading
import time

from tfprune.executors.base import CellJob, Executor, run_cell
from tfprune.executors.monitor import CellMonitor


class LocalExecutor(Executor):
    """Runs the cells of a grid in subprocesses, `jobs` at a time.

    Args:
        output_dir: The sweep directory.
        gin_files: The base gin files.
        gin_bindings: The base gin bindings.
        grid: The cells (`tfprune.sweep.cells`).
        jobs: How many cells run at the same time.

    Example:

    >>> LocalExecutor("D", ["gin_configs/default.gin"], [], grid, jobs=2).run()
    0
    """

    def __init__(self, output_dir, gin_files, gin_bindings, grid, jobs: int = 1):
        super().__init__(output_dir, gin_files, gin_bindings, grid)
        self.parallel = jobs
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()

    def run(self, status_seconds: float = 30.0) -> int:
        todo = self.todo()
        with (
            CellMonitor(status_seconds) as monitor,
            concurrent.futures.ThreadPoolExecutor(max_workers=self.parallel) as pool,
        ):
            for _ in pool.map(lambda job: self._watched(monitor, job), todo):
                pass
        return 0 if not self.failed and not self.stopping else 1

    def stop(self, signum, frame) -> None:
        """Stops the sweep: running cells write a checkpoint (SIGTERM) and end."""
        self.stopping = True
        with self.lock:
            for process in self.processes:
                process.send_signal(signal.SIGTERM)

    @contextlib.contextmanager
    def _held(self, process: subprocess.Popen):
        with self.lock:
            self.processes.add(process)
        try:
            yield
        finally:
            with self.lock:
                self.processes.discard(process)

    def _watched(self, monitor: CellMonitor, job: CellJob) -> None:
        """Runs a cell with its progress in the monitor's status lines meanwhile."""
        if self.stopping:
            return
        monitor.started(job.name, job.log_path)
        try:
            started = time.time()
            outcome = run_cell(job, self._held)
            with self.lock:
                self.record(job, outcome, time.time() - started)
        finally:
            monitor.ended(job.name)
