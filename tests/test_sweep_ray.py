"""The sweep on a cluster: the Ray executor's driver (retries, failures, resume, stop) with
attempts faked in this process, its flags, `--shard=auto` in a Slurm job array, and a real Ray
cluster of two nodes on this machine, one of which dies in the middle of a sweep."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import _procs
import pytest

from tfprune.errors import ConfigError
from tfprune.executors.base import CellJob, Outcome, cell_name, read_rows
from tfprune.executors.ray import CellLost, RayExecutor, attempt
from tfprune.sweep import parse_shard, slurm_shard

GRID = [
    {"method": "snip", "density": 0.1, "ablations": (), "seed": 0},
    {"method": "random", "density": 0.1, "ablations": (), "seed": 0},
    {"method": "snip", "density": 0.05, "ablations": (), "seed": 0},
]
A, B, C = (cell_name(cell) for cell in GRID)


def _results(cell: dict) -> dict:
    return dict(
        method=cell["method"],
        ablations=[],
        density_target=cell["density"],
        density_actual=cell["density"],
        seed=cell["seed"],
        prune_step=0,
        rewind_step=None,
        dataset="fashion_mnist",
        model="lenet_300_100",
        test_accuracy=0.5,
        test_loss=1.0,
        epochs=1,
        wall_seconds=1.0,
        history={},
    )


class FakeTasks:
    """Attempts that end as `script[cell name]` says, one after another: "ok" (the run
    directory gets its results.json), "lost" (its node died), or an exit status."""

    def __init__(self, script: dict, capacity: float = 2, on_wait=None):
        self.script = {name: list(ends) for name, ends in script.items()}
        self.cells = {cell_name(cell): cell for cell in GRID}
        self.capacity_ = capacity
        self.on_wait = on_wait
        self.handles: dict[int, tuple[CellJob, str]] = {}
        self.submitted: list[str] = []
        self.most_in_flight = 0
        self.cancelled: list[str] = []
        self.closed = False

    def submit(self, job):
        ends = self.script.get(job.name, [])
        self.handles[len(self.submitted)] = (job, ends.pop(0) if ends else "ok")
        self.submitted.append(job.name)
        self.most_in_flight = max(self.most_in_flight, len(self.handles))
        return len(self.submitted) - 1

    def wait(self, handles, timeout):
        assert sorted(handles) == sorted(self.handles) and timeout > 0
        ended = self.on_wait() if self.on_wait is not None else None
        return handles[:1] if ended is None else ended

    def outcome(self, handle):
        job, end = self.handles.pop(handle)
        if job.name in self.cancelled:
            raise CellLost("TaskCancelledError: cancelled")
        if end == "lost":
            raise CellLost("NodeDiedError: the node died")
        if end != "ok":
            return Outcome(int(end), None)
        results = _results(self.cells[job.name])
        os.makedirs(job.run_dir, exist_ok=True)
        with open(os.path.join(job.run_dir, "results.json"), "w") as f:
            json.dump(results, f)
        return Outcome(0, results)

    def cancel(self, handle):
        self.cancelled.append(self.handles[handle][0].name)

    def capacity(self):
        return self.capacity_

    def close(self):
        self.closed = True


def _executor(tmp_path, tasks, retries=2, jobs=None, grid=GRID):
    return RayExecutor(str(tmp_path / "D"), [], [], grid, retries, jobs, tasks=lambda: tasks)


def _run_dirs(tmp_path) -> list[str]:
    return [row["run_dir"] for row in read_rows(str(tmp_path / "D" / "results.csv"))]


# --- the driver, with attempts faked ------------------------------------------------------------


def test_lost_and_failed_attempts_are_retried_and_each_cell_gets_one_row(tmp_path, caplog):
    tasks = FakeTasks({A: ["lost", "ok"], B: ["1", "ok"]}, capacity=2)
    executor = _executor(tmp_path, tasks)
    with caplog.at_level("INFO", logger="absl"):
        assert executor.run(status_seconds=0) == 0
    # Two at a time; a failed attempt goes back to the front of the queue.
    assert tasks.submitted == [A, B, A, B, C]
    assert tasks.most_in_flight == 2 and tasks.closed
    assert sorted(_run_dirs(tmp_path)) == sorted(f"runs/{name}" for name in (A, B, C))
    assert (executor.done, executor.failed) == (3, [])
    log = caplog.text
    assert f"{A}: attempt 1 failed (lost: NodeDiedError: the node died; see " in log
    assert f"{B}: attempt 1 failed (exit 1; see " in log and "retrying (1 of 2)" in log


def test_a_cell_that_fails_every_time_is_reported_failed_after_the_retries(tmp_path, caplog):
    tasks = FakeTasks({A: ["lost", "3", "3", "3", "3"]}, capacity=1)
    executor = _executor(tmp_path, tasks, retries=2)
    with caplog.at_level("INFO", logger="absl"):
        assert executor.run(status_seconds=0) == 1
    assert tasks.submitted.count(A) == 3  # the first attempt and 2 retries
    assert executor.failed == [f"runs/{A}"] and executor.done == 2
    assert sorted(_run_dirs(tmp_path)) == sorted(f"runs/{name}" for name in (B, C))
    assert f"{A} FAILED (exit 3; see {tmp_path / 'D' / 'logs' / A}.log)" in caplog.text
    # No retry at all with --retries=0.
    tasks = FakeTasks({A: ["2", "ok"]}, capacity=1)
    executor = _executor(tmp_path / "zero", tasks, retries=0)
    assert executor.run(status_seconds=0) == 1
    assert tasks.submitted == [A, B, C] and executor.failed == [f"runs/{A}"]


def test_rerunning_skips_the_finished_cells_and_adds_their_missing_rows(tmp_path):
    tasks = FakeTasks({B: ["4", "4", "4"]})
    assert _executor(tmp_path, tasks).run(status_seconds=0) == 1
    os.remove(tmp_path / "D" / "results.csv")  # as a kill before the rows were written leaves it
    tasks = FakeTasks({})
    executor = _executor(tmp_path, tasks)
    assert executor.run(status_seconds=0) == 0
    assert tasks.submitted == [B]
    assert sorted(_run_dirs(tmp_path)) == sorted(f"runs/{name}" for name in (A, B, C))

    def no_cluster():
        raise AssertionError("connected to a cluster with nothing to run")

    executor = RayExecutor(str(tmp_path / "D"), [], [], GRID, retries=2, tasks=no_cluster)
    assert executor.run(status_seconds=0) == 0 and executor.done == 3
    assert len(_run_dirs(tmp_path)) == 3


def test_stopping_cancels_the_running_cells_and_retries_none(tmp_path):
    executor = None

    def stop_once():
        if not executor.stopping:
            executor.stop(signal.SIGTERM, None)
            return []  # nothing ended before the signal
        return None

    tasks = FakeTasks({}, capacity=2, on_wait=stop_once)
    executor = _executor(tmp_path, tasks)
    assert executor.run(status_seconds=0) == 1
    # Cancelled before any ended; C never started; a stopped cell is not a failed one.
    assert tasks.submitted == [A, B] and tasks.cancelled == [A, B]
    assert (executor.done, executor.failed, _run_dirs(tmp_path)) == (0, [], [])


def test_the_cells_in_flight_are_bounded_by_jobs_and_by_what_the_nodes_hold(tmp_path, caplog):
    tasks = FakeTasks({}, capacity=10)
    assert _executor(tmp_path / "jobs", tasks, jobs=1).run(status_seconds=0) == 0
    assert tasks.most_in_flight == 1
    tasks = FakeTasks({}, capacity=float("inf"))  # cells that ask for no CPU or GPU
    assert _executor(tmp_path / "all", tasks).run(status_seconds=0) == 0
    assert tasks.most_in_flight == 3
    # No node can hold a cell yet: one waits in the cluster's queue, with a warning.
    tasks = FakeTasks({}, capacity=0)
    with caplog.at_level("WARNING", logger="absl"):
        assert _executor(tmp_path / "none", tasks).run(status_seconds=0) == 0
    assert tasks.most_in_flight == 1 and tasks.submitted == [A, B, C]
    assert caplog.text.count("no live node of the Ray cluster has the resources") == 1


def test_an_attempt_runs_the_cells_command_once_no_one_holds_its_run_directory(
    tmp_path, monkeypatch
):
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    log = tmp_path / "logs" / "x.log"
    script = "import os, sys; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES'))); sys.exit(3)"
    job = CellJob("x", "runs/x", str(run_dir), str(log), ("-c", script))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the GPU Ray gave the task
    # A cell that holds no GPU is shown none; one that holds some, those Ray gave it.
    assert attempt(job, claim_wait=0.0) == Outcome(3, None)
    assert attempt(job, claim_wait=0.0, gpus=1) == Outcome(3, None)
    assert log.read_text() == "''\n'3'\n"
    with open(run_dir / ".tfprune.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # an earlier attempt's process, still running
        lock.write("4242 node7\n")
        lock.flush()
        held = attempt(job, claim_wait=0.0)
    assert (held.code, held.results, held.finished) == (None, None, False)
    assert held.reason.startswith(f"{run_dir} is still held by pid 4242 on node7 after 0s")
    assert log.read_text() == "''\n'3'\n"  # not run again


def test_an_interrupted_attempt_stops_its_cell_with_sigterm(tmp_path):
    # How Ray cancels a running task: KeyboardInterrupt in the thread that runs it. The attempt
    # runs in the main thread of a process of its own (a test runner's worker may not run
    # tests in its main thread, where `interrupt_main` delivers the interrupt).
    cell = (
        "import signal, sys, time\n"
        "stop = lambda *a: (print('checkpoint, then stop'), sys.exit(143))\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('training', flush=True)\n"
        "time.sleep(60)\n"
        "print('finished')\n"
    )
    log = tmp_path / "x.log"
    driver = (
        "import _thread, sys, threading, time\n"
        "from tfprune.executors.base import CellJob, run_cell\n"
        "log, cell, run_dir = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "def interrupt_when_training():\n"
        "    while 'training' not in (open(log).read() if __import__('os').path.exists(log) "
        "else ''):\n"
        "        time.sleep(0.05)\n"
        "    _thread.interrupt_main()\n"
        "threading.Thread(target=interrupt_when_training, daemon=True).start()\n"
        "try:\n"
        "    run_cell(CellJob('x', 'runs/x', run_dir, log, ('-c', cell)))\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", driver, str(log), cell, str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "interrupted", done.stderr[-2000:]
    assert log.read_text() == "training\ncheckpoint, then stop\n"


# --- the flags ----------------------------------------------------------------------------------

TINY = [
    "--gin_file=gin_configs/default.gin",
    "--gin_bindings=training.steps = 2",
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
]


def _sweep(*args, env=None, timeout=300):
    return _procs.run("tfprune.sweep", *args, env=env, timeout=timeout)


def _one_line_error(done) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("tfprune.sweep: error: ")
    return lines[0][len("tfprune.sweep: error: ") :]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--executor=ray", "--cell_cpus=-1"], "--cell_cpus must be a number >= 0, got -1.0"),
        (["--executor=ray", "--cell_gpus=nan"], "--cell_gpus must be a number >= 0, got nan"),
        (["--executor=ray", "--retries=-1"], "--retries must be an integer >= 0, got -1"),
        (["--executor=ray", "--shard=0/2"], "with --executor=ray one process runs every cell"),
        (["--executor=ray", "--ray_address= "], "--ray_address must be auto or HOST:PORT"),
        (["--executor=ray", "--ray_address=head:x"], "--ray_address must be auto or HOST:PORT"),
        (["--executor=ray", "--ray_address=head"], "--ray_address must be auto or HOST:PORT"),
        (["--ray_address=auto", "--retries=3"], "--ray_address, --retries are for --executor=ray"),
        (["--executor=ray", "--jobs=0"], "--jobs must be a positive integer, got 0"),
        (["--executor=slurm"], "--executor=slurm: value should be one of <local|ray>"),
    ],
)
def test_bad_executor_flags_are_refused_in_one_line_before_anything_runs(tmp_path, flags, message):
    out = tmp_path / "D"
    done = _sweep(*TINY, "--methods=snip", f"--output_dir={out}", *flags)
    assert message in _one_line_error(done)
    assert not out.exists()


def test_the_ray_executor_without_ray_says_what_to_install(tmp_path):
    # A `ray` that cannot be imported, as on a machine without it.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(_procs.ENV, PYTHONPATH=os.pathsep.join([str(tmp_path), _procs.ROOT]))
    done = _sweep(
        *TINY, "--methods=snip", f"--output_dir={tmp_path / 'D'}", "--executor=ray", env=env
    )
    assert "install tfprune[ray]" in _one_line_error(done)
    assert not (tmp_path / "D").exists()


def test_a_cluster_that_does_not_answer_is_named_in_one_line(tmp_path):
    port = _free_port()  # nothing listens on it
    done = _sweep(
        *TINY,
        "--methods=snip",
        f"--output_dir={tmp_path / 'D'}",
        "--executor=ray",
        f"--ray_address=127.0.0.1:{port}",
    )
    # After the line that counts the cells to run: the error, in one line.
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"tfprune.sweep: error: cannot reach the Ray cluster at 127.0.0.1:{port} "
        "(Connection refused)"
    )
    assert not (tmp_path / "D" / "runs" / A / "config.json").exists()


# --- --shard=auto in a Slurm job array ----------------------------------------------------------


def _slurm(**values) -> dict:
    return {f"SLURM_ARRAY_TASK_{name.upper()}": str(v) for name, v in values.items()}


def test_shard_auto_is_the_position_of_the_slurm_array_task(monkeypatch):
    # --array=0-3: ID and COUNT (and MIN/MAX, which agree).
    assert slurm_shard(_slurm(id=2, count=4)) == (2, 4)
    assert slurm_shard(_slurm(id=0, count=4, min=0, max=3)) == (0, 4)
    # --array=1-4 without COUNT: index ID - MIN, count MAX - MIN + 1.
    assert [slurm_shard(_slurm(id=i, min=1, max=4)) for i in (1, 2, 3, 4)] == [
        (0, 4),
        (1, 4),
        (2, 4),
        (3, 4),
    ]
    # --array=1-4 with COUNT.
    assert slurm_shard(_slurm(id=4, count=4, min=1, max=4)) == (3, 4)
    # --array=0-18:3, a step: 0, 3, ..., 18.
    assert slurm_shard(_slurm(id=9, count=7, min=0, max=18, step=3)) == (3, 7)
    # parse_shard reads the environment for auto, and is i/N otherwise.
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "6")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "7")
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_STEP", raising=False)
    assert parse_shard("auto") == (1, 3) == parse_shard("1/3")


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "TASK_ID and SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MIN and _MAX) are not set"),
        (dict(count=4), "SLURM_ARRAY_TASK_ID is not set"),
        (dict(id=1, min=0), "SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MIN and _MAX) is not set"),
        # --array=1,5,7: three tasks whose ids give no positions.
        (dict(id=5, count=3, min=1, max=7), "not evenly spaced (ID=5, COUNT=3, MIN=1, MAX=7)"),
        (dict(id=4, count=4), "not evenly spaced (ID=4, COUNT=4)"),
        (dict(id=3, min=4, max=6), "not evenly spaced"),
        (dict(id=4, min=0, max=9, step=3), "not evenly spaced"),
        (dict(id="x", count=4), "SLURM_ARRAY_TASK_ID='x' is not a number"),
    ],
)
def test_shard_auto_outside_an_array_or_in_a_sparse_one_is_refused(values, message):
    with pytest.raises(ConfigError) as error:
        slurm_shard(_slurm(**values))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_sweep_takes_its_shard_from_the_slurm_array(tmp_path):
    env = {k: v for k, v in _procs.ENV.items() if not k.startswith("SLURM_ARRAY_")}
    args = [*TINY, "--methods=snip", f"--output_dir={tmp_path / 'D'}", "--shard=auto"]
    message = _one_line_error(_sweep(*args, env=env))
    assert message.startswith("--shard=auto runs in a task of a Slurm job array")
    # Task 2 of --array=1-2 is shard 1/2, which holds no cell of a grid of one.
    message = _one_line_error(_sweep(*args, env=dict(env, **_slurm(id=2, min=1, max=2))))
    assert message == "--shard=auto (1/2) holds no cell of the grid's 1: use fewer shards"


# --- a real cluster: a head and a worker node on this machine -----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A Ray head and one worker node on 127.0.0.1, each a process group of its own."""

    def __init__(self):
        # Short: Ray's socket paths live under it.
        self.temp = tempfile.mkdtemp(prefix="tfr-", dir="/tmp")
        self.port, self.address = 0, ""  # see `head`
        self.groups: dict[str, int] = {}
        self.env = dict(
            _procs.ENV,
            PYTHONPATH=os.pathsep.join(filter(None, [_procs.ROOT, os.environ.get("PYTHONPATH")])),
            RAY_USAGE_STATS_ENABLED="0",
            # Not the token of ~/.ray, which a Ray instance started on this machine may leave.
            RAY_AUTH_MODE="disabled",
            # A busy machine starts a node's agents slowly; a dead node is found in seconds.
            RAY_agent_register_timeout_ms="180000",
            RAY_health_check_period_ms="1000",
            RAY_health_check_failure_threshold="3",
        )

    def start(self, name: str, arguments) -> None:
        """Starts a node with `ray start <arguments()>`; again, with new arguments, if it fails
        (`ray start` gives a node 30 s to register, which a busy machine may not manage)."""
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        for _ in range(3):
            common = [
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--object-store-memory=80000000",
                "--disable-usage-stats",
                f"--node-manager-port={_free_port()}",
                f"--object-manager-port={_free_port()}",
            ]
            process = subprocess.Popen(
                [ray, "start", *arguments(), *common],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self.groups[name] = process.pid  # its daemons stay in its process group
            output, _ = process.communicate(timeout=300)
            if process.returncode == 0:
                return
            self.kill(name)
        raise AssertionError(f"ray start failed 3 times: {output[-3000:]}")

    def head(self) -> list[str]:
        """The arguments of `ray start` for the head, on a port of its own."""
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        return [
            "--head",
            f"--port={self.port}",
            f"--temp-dir={self.temp}",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
        ]

    def kill(self, name: str) -> None:
        """Kills every process of a node at once, as a machine dying does."""
        for pid, _ in self.processes(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def processes(self, name: str) -> list[tuple[int, str]]:
        """`(pid, command line)` of the node's processes: those of its process group and
        their descendants (Ray's workers, the cells they run)."""
        parents, commands, group = {}, {}, set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    commands[int(entry)] = f.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            if int(fields[2]) == self.groups[name]:
                group.add(int(entry))
        found = set(group)
        while True:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            if not more:
                break
            found |= more
        return sorted((pid, commands[pid]) for pid in found)

    def stop(self) -> None:
        for name in self.groups:
            self.kill(name)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    try:
        cluster.start("head", cluster.head)
        cluster.start("worker", lambda: [f"--address={cluster.address}"])
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_on_a_cluster_a_cell_that_fails_every_time_is_reported_failed(
    cluster, tmp_path, monkeypatch
):
    from tfprune.executors.ray import RayTasks

    monkeypatch.setenv("RAY_AUTH_MODE", cluster.env["RAY_AUTH_MODE"])

    grid = GRID[:1]
    executor = RayExecutor(
        str(tmp_path / "D"),
        [],
        [],
        grid,
        retries=1,
        tasks=lambda: RayTasks(cluster.address, cell_cpus=1, cell_gpus=0),
    )
    fails = ("-c", "import sys; print('attempt'); sys.exit(5)")
    executor.jobs = [dataclasses.replace(executor.jobs[0], arguments=fails)]
    assert executor.run(status_seconds=0) == 1
    assert executor.failed == [f"runs/{A}"] and executor.done == 0
    # Both attempts ran, on the cluster, into the cell's log.
    assert (tmp_path / "D" / "logs" / f"{A}.log").read_text() == "attempt\nattempt\n"


@pytest.mark.slow
def test_a_sweep_on_a_cluster_survives_the_death_of_a_node(cluster, tmp_path):
    out = tmp_path / "D"
    args = [
        *TINY,
        # Long enough (15 epochs of 2 iterations) that the node dies while its cell trains.
        "--gin_bindings=training.steps = 30",
        "--methods=snip,random",
        "--densities=0.1,0.05",
        "--seeds=0",
        f"--output_dir={out}",
        "--executor=ray",
        f"--ray_address={cluster.address}",
        "--status_seconds=0",
    ]
    names = [cell_name(cell) for cell in GRID] + ["random-none-d0.05-s0"]
    with open(tmp_path / "sweep.err", "w") as err:
        sweep = _procs.start(
            "tfprune.sweep", *args, stdout=subprocess.PIPE, stderr=err, env=cluster.env
        )
        try:
            # Once a cell trains on the worker node and holds its run directory, the node dies.
            deadline = time.time() + 300
            victim = None
            while victim is None:
                assert sweep.poll() is None, "the sweep ended before a cell ran on the worker"
                assert time.time() < deadline, "no cell ran on the worker node"
                for _, command in cluster.processes("worker"):
                    if " -m tfprune.train " in command:
                        run_dir = command.split("--output_dir=")[1].split()[0]
                        if os.path.exists(os.path.join(run_dir, "config.json")):
                            victim = os.path.basename(run_dir)
                time.sleep(0.2)
            cluster.kill("worker")
            output, _ = sweep.communicate(timeout=600)
        finally:
            if sweep.poll() is None:
                sweep.kill()
    log = (tmp_path / "sweep.err").read_text()
    assert sweep.returncode == 0, log[-3000:]
    assert "4/4 cells done, 0 failed" in output
    assert f"{victim}: attempt 1 failed (lost: " in log, log[-3000:]
    rows = read_rows(str(out / "results.csv"))
    assert sorted(row["run_dir"] for row in rows) == sorted(f"runs/{n}" for n in names)
    for name in names:
        run_dir = out / "runs" / name
        for part in ("config.json", "results.json", "masks.npz", "model.keras"):
            assert (run_dir / part).is_file(), f"{name} lacks {part}"
        assert json.loads((run_dir / "results.json").read_text())["epochs"] == 15
    table = (out / "results.csv").read_bytes()
    # The same command again: every cell is finished already, and the table is unchanged.
    again = _sweep(*args, env=cluster.env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 cells, 4 finished already, 0 to run" in again.stderr
    assert "4/4 cells done, 0 failed" in again.stdout
    assert (out / "results.csv").read_bytes() == table
