"""The sweep command: grid parsing, results.csv under concurrency, resume after SIGKILL, shards."""

import contextlib
import csv
import multiprocessing
import os
import re
import signal
import subprocess
import threading
import time

import _procs
import pytest

from tfprune.errors import ConfigError
from tfprune.executors.base import append_row, cell_name, read_rows
from tfprune.executors.monitor import CellMonitor, latest_progress
from tfprune.results import COLUMNS
from tfprune.sweep import (
    cells,
    parse_ablation_sets,
    parse_densities,
    parse_methods,
    parse_seeds,
    parse_shard,
)
from tfprune.training import format_progress_line, parse_progress_line

N = 266_200  # prunable weights of LeNet-300-100
TINY = [
    "--gin_file=gin_configs/default.gin",
    "--gin_bindings=training.steps = 2",
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
]
GRID = ["--methods=snip,random", "--densities=0.1,0.05", "--ablations=none,shuffle", "--seeds=0"]
GRID_CELLS = [
    f"runs/{method}-{ablations}-d{density}-s0"
    for method in ("snip", "random")
    for density in ("0.1", "0.05")
    for ablations in ("none", "shuffle")
]


def _sweep(*args, timeout=300):
    return _procs.run("tfprune.sweep", *args, timeout=timeout)


def _check_csv(csv_path, expected_run_dirs):
    """results.csv has the columns in order and exactly one row per expected run."""
    with open(csv_path, newline="") as f:
        lines = f.read().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    rows = read_rows(csv_path)
    assert len(lines) == len(rows) + 1
    assert sorted(r["run_dir"] for r in rows) == sorted(expected_run_dirs)
    for row in rows:
        assert list(row) == list(COLUMNS) and None not in row.values()
        method, ablations, density, seed = row["run_dir"][len("runs/") :].split("-")
        assert (row["method"], row["ablations"], row["seed"]) == (method, ablations, seed[1:])
        assert float(row["density_target"]) == float(density[1:])
        assert float(row["density_actual"]) == round(float(density[1:]) * N) / N
        assert (row["prune_step"], row["rewind_step"], row["epochs"]) == ("0", "", "1")
        assert (row["dataset"], row["model"]) == ("fashion_mnist", "lenet_300_100")
        assert 0 <= float(row["test_accuracy"]) <= 1 and float(row["wall_seconds"]) > 0
    return rows


# --- parsing and the grid ---------------------------------------------------------------------


def test_parse_densities_powers_ranges_steps_and_lists():
    assert parse_densities("0.8^5:0.8^7") == [0.8**5, 0.8**6, 0.8**7]
    assert parse_densities("0.8^1:0.8^7:3") == [0.8, 0.8**4, 0.8**7]
    assert parse_densities(" 0.5 , 0.8^2,0.1") == [0.5, 0.8**2, 0.1]
    assert parse_densities("0.8^3") == [0.8**3]
    assert parse_densities("1.0") == [1.0]
    # Duplicates are removed, the first occurrence keeps its place.
    assert parse_densities("0.1,0.8^1:0.8^2,0.1,0.8,0.8^2") == [0.1, 0.8, 0.8**2]


@pytest.mark.parametrize(
    "text",
    [
        "0.8^",
        "2",
        "0.8^7:0.8^5",
        "abc",
        "",
        ",",
        "0",
        "-0.1",
        "^3",
        "0.8^1:0.9^2",
        "0.8^1:0.8^3:0",
        "0.8^1:0.8^3:x",
        "0.8^1:0.8^3:1:1",
        "0.8^1:",
        "1.5^1",
        "0.1,nan",
    ],
)
def test_parse_densities_rejects_bad_input(text):
    with pytest.raises(ConfigError):
        parse_densities(text)


def test_parse_ablation_sets_is_canonical_and_deduplicated():
    assert parse_ablation_sets("none,shuffle+reinit") == [(), ("shuffle", "reinit")]
    assert parse_ablation_sets("reinit+shuffle, shuffle") == [("shuffle", "reinit"), ("shuffle",)]
    assert parse_ablation_sets("shuffle,shuffle,none,none") == [("shuffle",), ()]
    assert parse_ablation_sets("invert+reinit+shuffle") == [("shuffle", "reinit", "invert")]
    for text in ("", "shufle", "shuffle+shuffle", "none,bogus"):
        with pytest.raises(ConfigError):
            parse_ablation_sets(text)


def test_parse_shard_seeds_and_methods():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 1 / 3 ") == (1, 3)
    for text in ("2/2", "1", "-1/2", "a/b", "", "1/0", "0/2/3"):
        with pytest.raises(ConfigError, match="--shard must look like i/N"):
            parse_shard(text)
    assert parse_seeds("2,0,2, 1") == [2, 0, 1]
    for text in ("", "-1", "x", "1.5"):
        with pytest.raises(ConfigError):
            parse_seeds(text)
    assert parse_methods("snip,dense,lottery,snip,ratio_of:snip") == [
        "snip",
        "dense",
        "lottery",
        "ratio_of:snip",
    ]
    with pytest.raises(ConfigError, match="--methods is required"):
        parse_methods(None)
    with pytest.raises(ConfigError, match="snipp"):
        parse_methods("snip,snipp")


def test_cells_skip_what_cannot_run_and_run_dense_once_per_seed():
    grid, skipped = cells(
        ["lottery", "dense", "snip", "magnitude_after_training"],
        [0.1, 0.8**2, 1.0],
        [(), ("invert",), ("shuffle",)],
        [1, 0],
    )
    seed0 = [(c["method"], c["density"], c["ablations"]) for c in grid if c["seed"] == 0]
    assert seed0 == [
        ("lottery", 0.8**2, ()),
        ("lottery", 0.8**2, ("shuffle",)),
        ("dense", 1.0, ()),
        ("snip", 1.0, ()),
        ("snip", 1.0, ("invert",)),
        ("snip", 1.0, ("shuffle",)),
        ("snip", 0.8**2, ()),
        ("snip", 0.8**2, ("invert",)),
        ("snip", 0.8**2, ("shuffle",)),
        ("snip", 0.1, ()),
        ("snip", 0.1, ("invert",)),
        ("snip", 0.1, ("shuffle",)),
        ("magnitude_after_training", 1.0, ()),
        ("magnitude_after_training", 1.0, ("shuffle",)),
        ("magnitude_after_training", 0.8**2, ()),
        ("magnitude_after_training", 0.8**2, ("shuffle",)),
        ("magnitude_after_training", 0.1, ()),
        ("magnitude_after_training", 0.1, ("shuffle",)),
    ]
    # Seeds in order, the same cells for each.
    assert [c["seed"] for c in grid] == [0] * 18 + [1] * 18
    assert [c for c in grid if c["seed"] == 1] == [{**c, "seed": 1} for c in grid[:18]]
    assert len({cell_name(c) for c in grid}) == len(grid)
    assert sorted(skipped) == [
        "lottery at density 1 is the dense network",
        "lottery at rate 0.2 reaches no density 0.1",
        "lottery takes no invert ablation",
        "magnitude_after_training takes no invert ablation",
    ]


def test_cell_names():
    cell = {"method": "ratio_of:snip", "density": 0.8**5, "ablations": ("shuffle", "reinit")}
    assert cell_name({**cell, "seed": 2}) == "ratio_of_snip-shuffle+reinit-d0.32768-s2"
    assert cell_name({"method": "dense", "density": 1.0, "ablations": (), "seed": 0}) == (
        "dense-none-d1-s0"
    )


# --- results.csv under concurrency ------------------------------------------------------------


def _row(run_dir, writer="x"):
    row = dict.fromkeys(COLUMNS, "1")
    row.update(run_dir=run_dir, method=writer)
    return row


def test_append_row_from_many_threads_keeps_each_run_once(tmp_path):
    csv_path = str(tmp_path / "results.csv")
    added = []
    barrier = threading.Barrier(12)

    def append(worker):
        barrier.wait()
        for i in range(30):
            # Workers append the same 30 runs, each in another order.
            index = (i * 7 + worker) % 30
            if append_row(csv_path, _row(f"runs/r{index:02d}", f"w{worker}")):
                added.append(index)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(added) == list(range(30))
    rows = read_rows(csv_path)
    assert sorted(r["run_dir"] for r in rows) == [f"runs/r{i:02d}" for i in range(30)]
    assert all(list(r) == list(COLUMNS) for r in rows)


def _append_in_process(csv_path, worker, barrier, counts):
    barrier.wait()
    names = [f"runs/shared{i:02d}" for i in range(20)] + [f"runs/{worker}-{i}" for i in range(5)]
    counts.put(sum(append_row(csv_path, _row(name, worker)) for name in names))


def test_append_row_from_concurrent_processes_keeps_each_run_once(tmp_path):
    csv_path = str(tmp_path / "results.csv")
    workers = [f"p{i}" for i in range(4)]
    # Forked workers run only append_row (no TensorFlow), so forking this process is safe.
    context = multiprocessing.get_context("fork")
    barrier, counts = context.Barrier(len(workers)), context.Queue()
    processes = [
        context.Process(target=_append_in_process, args=(csv_path, w, barrier, counts))
        for w in workers
    ]
    for process in processes:
        process.start()
    added = sum(counts.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    expected = [f"runs/shared{i:02d}" for i in range(20)]
    expected += [f"runs/{w}-{i}" for w in workers for i in range(5)]
    assert added == len(expected) == 40
    rows = read_rows(csv_path)
    assert sorted(r["run_dir"] for r in rows) == sorted(expected)
    for row in rows:
        if not row["run_dir"].startswith("runs/shared"):
            assert row["run_dir"].startswith(f"runs/{row['method']}-")


# --- the command ------------------------------------------------------------------------------


def _group_members(pgid):
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        state, _, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(entry))
    return members


def _group_gone(pgid, timeout=30):
    deadline = time.time() + timeout
    while _group_members(pgid):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_sweep_killed_midway_resumes_without_rerunning_finished_cells(tmp_path):
    out = tmp_path / "sweep"
    args = [*TINY, *GRID, "--jobs=1", f"--output_dir={out}"]
    csv_path = str(out / "results.csv")
    with open(tmp_path / "first.log", "w") as log:
        proc = _procs.start(
            "tfprune.sweep", *args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(read_rows(csv_path)) < 2:
            time.sleep(0.1)
        # Mid-way: the sweep and the `tfprune.train` of its third cell are running.
        while time.time() < deadline and proc.poll() is None and len(_group_members(proc.pid)) < 2:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        # The whole group: the sweep and the cell it is running.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _group_gone(proc.pid), "a cell survived the kill"
    rows_before = read_rows(csv_path)
    finished = {
        name: os.path.getmtime(out / "runs" / name / "results.json")
        for name in os.listdir(out / "runs")
        if os.path.exists(out / "runs" / name / "results.json")
    }
    assert 2 <= len(rows_before) <= len(finished) < 8

    again = _sweep(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"8 cells, {len(finished)} finished already, {8 - len(finished)} to run" in again.stderr
    assert "8/8 cells done, 0 failed" in again.stdout
    rows = _check_csv(csv_path, GRID_CELLS)
    # Rows written before the kill are kept as they were, and finished cells did not run again.
    assert rows[: len(rows_before)] == rows_before
    for name, mtime in finished.items():
        assert os.path.getmtime(out / "runs" / name / "results.json") == mtime, name

    # A third run has nothing to do.
    done = _sweep(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 cells, 8 finished already, 0 to run" in done.stderr
    assert read_rows(csv_path) == rows


def test_concurrent_shards_fill_one_results_csv_without_duplicates(tmp_path):
    out = tmp_path / "sweep"
    grid = ["--methods=random", "--densities=0.1,0.05", "--ablations=none,shuffle", "--seeds=0"]
    processes = [
        _procs.start(
            "tfprune.sweep",
            *TINY,
            *grid,
            f"--shard={i}/2",
            f"--output_dir={out}",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        assert "2 cells, 0 finished already, 2 to run" in stderr
        assert "2/2 cells done, 0 failed" in stdout
    expected = [f"runs/random-{a}-d{d}-s0" for d in ("0.1", "0.05") for a in ("none", "shuffle")]
    _check_csv(str(out / "results.csv"), expected)
    with open(out / "results.csv", newline="") as f:
        table = list(csv.reader(f))
    assert len(table) == 5 and all(len(line) == len(COLUMNS) for line in table)


def test_sweep_plans_lottery_levels_with_the_configured_rate(tmp_path):
    """The lottery densities come from experiment.lottery_rate, not from the default 0.2."""
    out = tmp_path / "sweep"
    result = _sweep(
        *TINY,
        "--gin_bindings=experiment.lottery_rate = 0.5",
        "--methods=lottery",
        "--densities=0.5,0.8",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped: lottery at rate 0.5 reaches no density 0.8" in result.stderr
    assert "1/1 cells done, 0 failed" in result.stdout
    (row,) = read_rows(str(out / "results.csv"))
    assert (row["method"], row["run_dir"]) == ("lottery", "runs/lottery-none-d0.5-s0")
    # Level 1 at rate 0.5 keeps exactly half of the weights.
    assert float(row["density_actual"]) == round(0.5 * N) / N

# --- progress of the running cells ------------------------------------------------------------


def _progress_line(step, loss):
    return format_progress_line(1, 2, step, 6, loss, 0.5, 0.1) + "\n"


def test_latest_progress_reads_this_attempts_last_complete_line(tmp_path):
    log = tmp_path / "cell.log"
    log.write_text("I0101 starting\n" + _progress_line(6, 0.25) + "killed\n")
    offset = os.path.getsize(log)
    # Only the earlier attempt's line so far: nothing for this attempt.
    assert latest_progress(str(log), offset) is None
    assert latest_progress(str(log))["step"] == 6
    with open(log, "a") as f:
        f.write("I0101 resuming at iteration 2 of 6\n" + _progress_line(3, 0.5))
        f.write("I0101 epoch 1 (iteration 3): train loss 0.5\n")
        f.write(_progress_line(4, 0.4)[:30])  # a line still being written
    progress = latest_progress(str(log), offset)
    assert (progress["step"], progress["loss"], progress["epochs"]) == (3, 0.5, 2)
    assert latest_progress(str(tmp_path / "missing.log")) is None


def test_cell_monitor_names_the_running_cells_when_one_starts_and_every_interval(tmp_path, caplog):
    now = [0.0]
    monitor = CellMonitor(30.0, clock=lambda: now[0])
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}

    def poll_at(t):
        now[0] = t
        caplog.clear()
        monitor.poll()
        return [r.getMessage() for r in caplog.records]

    with caplog.at_level("INFO", logger="absl"):
        assert poll_at(1.0) == []  # nothing running
        monitor.started("a", str(logs["a"]))
        assert poll_at(2.0) == ["running 1: a not training yet (0:00:01)"]
        logs["a"].write_text(_progress_line(3, 0.5))
        assert poll_at(20.0) == []  # 18 s after the last line, nothing new started
        assert poll_at(32.5) == ["running 1: a epoch 1/2 iteration 3/6 loss 0.5000 (0:00:31)"]
        now[0] = 40.0
        monitor.started("b", str(logs["b"]))
        assert poll_at(41.0) == [
            "running 2: a epoch 1/2 iteration 3/6 loss 0.5000 (0:00:40); "
            "b not training yet (0:00:01)"
        ]
        monitor.ended("a")
        monitor.ended("b")
        assert poll_at(100.0) == []


def test_sweep_reports_the_progress_of_a_running_cell(tmp_path):
    out = tmp_path / "sweep"
    proc = _sweep(
        "--gin_file=gin_configs/default.gin",
        "--gin_bindings=training.steps = 40",
        "--gin_bindings=experiment.train_limit = 2560",
        "--gin_bindings=experiment.test_limit = 256",
        "--methods=random",
        "--densities=0.1",
        f"--output_dir={out}",
        "--status_seconds=0.3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = [line for line in proc.stderr.splitlines() if "] running 1: " in line]
    assert status, proc.stderr[-3000:]
    # While the cell trains (20 iterations an epoch), its latest progress line is named.
    trained = [line for line in status if "random-none-d0.1-s0 epoch " in line]
    assert trained, status
    assert re.search(r"random-none-d0\.1-s0 epoch [12]/2 iteration \d+/40 loss \d", trained[-1])
    # The cell's log holds the training's plain progress lines, no progress bar.
    log = (out / "logs" / "random-none-d0.1-s0.log").read_text()
    assert not {"\x1b", "\r", "\x08"} & set(log)
    assert [p["step"] for p in map(parse_progress_line, log.splitlines()) if p][-1] == 40
    assert "1/1 cells done, 0 failed" in proc.stdout


def test_damaged_results_csv_lines_are_kept_aside_and_rebuilt_from_the_run_directories(tmp_path):
    out = tmp_path / "sweep"
    args = [*TINY, "--methods=random", "--densities=0.1,0.05", f"--output_dir={out}"]
    first = _sweep(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    csv_path = out / "results.csv"
    intact = csv_path.read_bytes()
    header, row1, row2 = intact.decode().splitlines()
    # A row cut short, a line of binary bytes and a row whose number is garbled.
    damaged = "\n".join([header, row1[:25], row2]).encode() + b"\n\x00\xff\xfe garbage\n"
    damaged += row2.replace("0.05,", "0.0x,", 1).encode() + b"\n"
    csv_path.write_bytes(damaged)

    again = _sweep(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 cells, 2 finished already, 0 to run" in again.stderr
    cut = len(row1[:25].split(","))
    named = f"line 2 (it has {cut} fields, the header 14), line 4 (not UTF-8 text), line 5 (column"
    assert f"has damaged lines: {named}" in again.stderr
    # Every finished run has its row back, exactly once; the damaged file is kept beside.
    assert sorted(csv_path.read_text().splitlines()) == sorted([header, row1, row2])
    (kept,) = [p for p in os.listdir(out) if p.startswith("results.csv.damaged-")]
    assert (out / kept).read_bytes() == damaged


def test_report_refuses_damaged_results_csv_naming_the_lines(tmp_path):
    from tfprune import report
    from tfprune.errors import DataError

    header = ",".join(COLUMNS)
    good = "snip,none,0.5,0.5,0,0,,d,m,0.8,0.5,2,1.0,runs/a"
    (tmp_path / "results.csv").write_bytes(f"{header}\n{good}\n".encode() + b"\xff\xfe\n")
    with pytest.raises(DataError, match=r"line 3 \(not UTF-8 text\); run the sweep command"):
        report.load_results(str(tmp_path))


def test_a_cell_stops_when_its_sweep_is_killed(tmp_path):
    """SIGKILL of the sweep alone (not its process group): its running cell writes a
    checkpoint and ends instead of training on as an orphan."""
    out = tmp_path / "sweep"
    args = [
        "--gin_file=gin_configs/default.gin",
        "--gin_bindings=experiment.train_limit = 2048",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.epochs = 1000",  # far longer than the test waits
        "--methods=random",
        "--densities=0.1",
        f"--output_dir={out}",
    ]
    run_dir = out / "runs" / "random-none-d0.1-s0"
    sweep = _procs.start("tfprune.sweep", *args, start_new_session=True)
    try:
        _procs.wait_for(str(run_dir / "checkpoints" / "ckpt-000000016"), sweep)
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
        assert _group_gone(sweep.pid, timeout=60), "the cell outlived its sweep"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
    with open(out / "logs" / "random-none-d0.1-s0.log") as f:
        log = f.read()
    assert "the sweep that started this run is gone: writing a checkpoint, then stopping" in log
    assert not (run_dir / "results.json").exists()
    stopped = re.search(r"training interrupted at iteration (\d+); a checkpoint was written", log)
    assert stopped, log[-3000:]
    assert (run_dir / "checkpoints" / f"ckpt-{int(stopped.group(1)):09d}").is_dir()
