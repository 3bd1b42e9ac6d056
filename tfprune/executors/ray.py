"""The Ray executor: each cell a Ray task on a cluster, retried when it fails or its node dies.

The sweep's process is the driver: it submits one task per cell, with the resources a cell
needs (`cell_cpus`, `cell_gpus`), and Ray runs it on a node that has them. The task runs the
cell's `tfprune.train` process there (the command the local executor runs), and returns how it
ended with the run's results; the driver alone writes `results.csv`, so no file lock is needed.
A failed attempt (the process failed, its worker crashed, its node died) is run again, up to
`retries` times, after which the cell is reported failed. Every node, and the driver, must see
the sweep directory and the gin files at the same paths (a shared file system).

`ray` is imported when the executor connects to a cluster, never when the sweep plans.
"""

from __future__ import annotations

import collections
import logging as std_logging
import math
import os
import signal
import socket
import threading
import time

from absl import logging

from tfprune.errors import ConfigError
from tfprune.executors.base import CellJob, Executor, Outcome, run_cell
from tfprune.executors.monitor import CellMonitor
from tfprune.rundir import wait_until_unclaimed

# How long an attempt waits for a run directory still held by an earlier attempt: its process
# writes a checkpoint when its worker dies, and NFSv4 frees a lost machine's locks after 90 s.
CLAIM_WAIT_SECONDS = 300.0


def import_ray():
    """The `ray` module.

    Raises:
        ConfigError: if it is not installed, saying how to install it.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor=ray needs Ray: install tfprune[ray] (pip install 'tfprune[ray]')"
        ) from None
    return ray


def attempt(job: CellJob, claim_wait: float = CLAIM_WAIT_SECONDS, gpus: float = 0) -> Outcome:
    """One attempt at a cell, on the node that runs it: once no earlier attempt holds the run
    directory (`tfprune.rundir.wait_until_unclaimed`), runs the cell's `tfprune.train`, which
    resumes from the last checkpoint an earlier attempt left.

    Ray shows a task the GPUs it holds; one that holds none (`gpus` 0) would see all of its
    node's, which other cells hold: it is shown none.
    """
    holder = wait_until_unclaimed(job.run_dir, claim_wait)
    if holder is not None:
        return Outcome(
            None,
            None,
            f"{job.run_dir} is still held by {holder} after {claim_wait:g}s; if that process is "
            f"gone for good, delete {os.path.join(job.run_dir, '.tfprune.lock')}",
        )
    return run_cell(job, env=None if gpus else {"CUDA_VISIBLE_DEVICES": ""})


class CellLost(Exception):
    """An attempt ended without an outcome: its worker or node died, or Ray failed it."""


class RayTasks:
    """Cells as Ray tasks: the `tasks` that `RayExecutor` submits, waits for and cancels.

    Args:
        address: The cluster (`auto`, `HOST:PORT`); None starts a Ray instance on this machine.
        cell_cpus: CPUs each cell holds.
        cell_gpus: GPUs each cell holds.

    Raises:
        ConfigError: if Ray is not installed or the cluster cannot be reached.
    """

    def __init__(self, address: str | None, cell_cpus: float, cell_gpus: float):
        self.ray = import_ray()
        if address and address != "auto":
            _check_reachable(address)
        # ray.init makes SIGTERM exit at once; the sweep's handler stops its cells first.
        handler = signal.getsignal(signal.SIGTERM)
        try:
            self.ray.init(
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                logging_level=std_logging.WARNING,
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"at {address}" if address else "on this machine"
            reason = " ".join(str(error).split())[:300]
            raise ConfigError(f"cannot connect to a Ray cluster {where}: {reason}") from None
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, handler)
        self.cell_cpus, self.cell_gpus = cell_cpus, cell_gpus
        # Retries are the driver's, so that it counts them and names each failure.
        self.remote = self.ray.remote(attempt).options(
            num_cpus=cell_cpus, num_gpus=cell_gpus, max_retries=0, name="tfprune.train"
        )

    def submit(self, job: CellJob):
        """Starts an attempt at `job`; returns its handle."""
        return self.remote.remote(job, gpus=self.cell_gpus)

    def wait(self, handles: list, timeout: float) -> list:
        """The handles of the attempts that have ended, after `timeout` seconds at most."""
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:  # and any others that have ended too
            ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        return ready

    def outcome(self, handle) -> Outcome:
        """The `Outcome` of an attempt that has ended (if the attempt raised an exception on its
        node, one that names it).

        Raises:
            CellLost: if it ended without one (its worker or node died, Ray failed it).
        """
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as error:
            cause = error.cause if error.cause is not None else error
            return Outcome(None, None, f"{type(cause).__name__}: {_first_line(cause)}")
        except self.ray.exceptions.RayError as error:
            raise CellLost(f"{type(error).__name__}: {_first_line(error)}") from None

    def cancel(self, handle) -> None:
        """Stops an attempt: its `tfprune.train` process writes a checkpoint and ends."""
        self.ray.cancel(handle, force=False)

    def capacity(self) -> int:
        """How many cells the live nodes can run at the same time (0: none can run one)."""
        total = 0
        for node in self.ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            fits = [
                resources.get(name, 0) // need
                for name, need in (("CPU", self.cell_cpus), ("GPU", self.cell_gpus))
                if need > 0
            ]
            total += int(min(fits)) if fits else math.inf
        return total

    def close(self) -> None:
        """Disconnects from the cluster (and stops the instance it started, if it did)."""
        self.ray.shutdown()


def parse_address(address: str) -> tuple[str, int]:
    """`(host, port)` of a Ray cluster's address `HOST:PORT`.

    Raises:
        ConfigError: if it is not of that form.
    """
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray_address must be auto or HOST:PORT (the head's address), got {address!r}"
        )
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raises ConfigError unless the head at `address` answers: Ray itself would wait for it
    without end."""
    host, port = parse_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({reason}): start its head "
            "(ray start --head) or give the address it printed"
        ) from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"


class RayExecutor(Executor):
    """Runs the cells of a grid as Ray tasks, retrying failed and lost attempts.

    Args:
        output_dir: The sweep directory, at the same path on every node.
        gin_files: The base gin files, at the same path on every node.
        gin_bindings: The base gin bindings.
        grid: The cells (`tfprune.sweep.cells`).
        retries: How many times a failed cell is run again before it is reported failed.
        jobs: How many cells run at the same time at most; None: as many as the cluster's
            nodes can hold.
        tasks: A factory of the tasks (`RayTasks` by default; tests give another), called
            once there are cells to run.

    Example:

    >>> tasks = lambda: RayTasks("auto", cell_cpus=1, cell_gpus=0)
    >>> RayExecutor("/shared/D", ["/shared/my.gin"], [], grid, retries=2, tasks=tasks).run()
    0
    """

    def __init__(
        self, output_dir, gin_files, gin_bindings, grid, retries: int, jobs=None, tasks=None
    ):
        super().__init__(output_dir, gin_files, gin_bindings, grid, lock_csv=False)
        self.retries = retries
        self.max_jobs = jobs
        self.tasks_factory = tasks
        self.attempts: collections.Counter[str] = collections.Counter()

    def run(self, status_seconds: float = 30.0) -> int:
        todo = collections.deque(self.todo())
        if not todo:
            return 0
        tasks = self.tasks_factory()
        try:
            with CellMonitor(status_seconds) as monitor:
                self._drive(tasks, todo, monitor)
        finally:
            tasks.close()
        return 0 if not self.failed and not self.stopping else 1

    def stop(self, signum, frame) -> None:
        """Stops the sweep: the driver cancels the running cells, which write a checkpoint."""
        self.stopping = True

    def _drive(self, tasks, todo: collections.deque, monitor: CellMonitor) -> None:
        running: dict = {}  # handle: (job, start time)
        cancelled = False
        warned = False
        while todo or running:
            if self.stopping and not cancelled:
                for handle in running:
                    tasks.cancel(handle)
                cancelled = True
            room = self._room(tasks, len(running))
            if room == 0 and not running and not warned:
                logging.warning(
                    "no live node of the Ray cluster has the resources of a cell: the cells wait "
                    "until one joins"
                )
                warned = True
            while todo and not self.stopping and (room > 0 or not running):
                job = todo.popleft()
                running[tasks.submit(job)] = (job, time.time())
                monitor.started(job.name, job.log_path)
                room -= 1
            if not running:
                return
            self.parallel = max(self.parallel, len(running))
            for handle in tasks.wait(list(running), timeout=1.0):
                job, started = running.pop(handle)
                monitor.ended(job.name)
                outcome = self._outcome(tasks, handle)
                if self._retried(job, outcome):
                    todo.appendleft(job)
                else:
                    self.record(job, outcome, time.time() - started)

    def _room(self, tasks, running: int) -> int:
        """How many more cells may start now."""
        room = tasks.capacity() - running
        if self.max_jobs is not None:
            room = min(room, self.max_jobs - running)
        return max(0, room)

    @staticmethod
    def _outcome(tasks, handle) -> Outcome:
        try:
            return tasks.outcome(handle)
        except CellLost as lost:
            return Outcome(None, None, f"lost: {lost}")

    def _retried(self, job: CellJob, outcome: Outcome) -> bool:
        """Whether a failed attempt is run again (it is not once `retries` are used up, nor
        when the sweep stops)."""
        if outcome.finished or self.stopping:
            return False
        self.attempts[job.name] += 1
        if self.attempts[job.name] > self.retries:
            return False
        logging.warning(
            "%s: attempt %d failed (%s); retrying (%d of %d)",
            job.name,
            self.attempts[job.name],
            outcome.describe(job.log_path),
            self.attempts[job.name],
            self.retries,
        )
        return True
