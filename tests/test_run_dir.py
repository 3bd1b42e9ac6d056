"""A run directory under faults: a damaged results.json, two processes, another configuration,
a full disk and a read-only directory. Each ends in the right behaviour or one clear line."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import tempfile

import _procs
import pytest

from tfprune.errors import OutputError
from tfprune.rundir import claim_holder, wait_until_unclaimed
from tfprune.runner import claim_output_dir, prepare_output_dir

TINY = [
    "--gin_file=gin_configs/magnitude.gin",
    "--gin_bindings=experiment.train_limit = 512",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.epochs = 2",
    "--gin_bindings=training.progress = False",
]


def _train(run_dir, *extra):
    return _procs.run("tfprune.train", *TINY, *extra, f"--output_dir={run_dir}")


def _last_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert sum(line.startswith("tfprune.train: error: ") for line in lines) == 1
    return lines[-1]


def test_a_garbled_results_json_is_rewritten_from_the_final_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    first = _train(run_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    original = _procs.results(str(run_dir))
    checkpoints = sorted(os.listdir(run_dir / "checkpoints"))
    (run_dir / "results.json").write_bytes(b'{"test_accuracy": 0.8\x00\xff')
    again = _train(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "results.json is unreadable" in again.stderr
    rewritten = _procs.results(str(run_dir))
    # Nothing was trained again: the same final checkpoint gives the same numbers.
    assert sorted(os.listdir(run_dir / "checkpoints")) == checkpoints
    for key in ("test_accuracy", "test_loss", "density_actual", "layer_density", "history"):
        assert rewritten[key] == original[key], key


def _config(density: float) -> dict:
    return {"experiment": {"method": "magnitude", "density": density}, "training": {"epochs": 2}}


def test_a_second_process_in_the_same_run_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with claim_output_dir(str(run_dir), _config(0.1), overwrite=False):
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        assert claim_holder(str(run_dir)) == holder
        busy = re.escape(f"another process ({holder}) is running")
        with pytest.raises(OutputError, match=busy):
            with claim_output_dir(str(run_dir), _config(0.1), overwrite=False):
                pass
        refused = _train(run_dir)
        # The holder's claim comes first, whatever the configuration.
        assert f"another process ({holder}) is running in {run_dir}" in _last_line(refused)
        assert not (run_dir / "checkpoints").exists()
    # Once the holder is gone, the directory can be claimed again.
    assert claim_holder(str(run_dir)) is None
    with claim_output_dir(str(run_dir), _config(0.1), overwrite=False):
        pass


def test_waiting_for_a_claimed_run_directory_ends_when_its_holder_lets_go_or_at_the_timeout(
    tmp_path,
):
    run_dir = tmp_path / "run"
    assert wait_until_unclaimed(str(run_dir), timeout=0.0) is None  # no directory yet
    run_dir.mkdir()
    now, slept = [0.0], []
    with open(run_dir / ".tfprune.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held as a run on another machine holds it
        lock.write("4242 node7\n")
        lock.flush()

        def sleep(seconds):
            slept.append(seconds)
            now[0] += seconds

        # Held all along: the holder is returned once the 5 s have passed, after 5 polls.
        assert wait_until_unclaimed(str(run_dir), 5.0, clock=lambda: now[0], sleep=sleep) == (
            "pid 4242 on node7"
        )
        assert slept == [1.0] * 5

        def let_go_at_the_third(seconds):
            sleep(seconds)
            if len(slept) == 5 + 3:
                fcntl.flock(lock, fcntl.LOCK_UN)

        # Let go during the wait: it returns at the next poll.
        assert (
            wait_until_unclaimed(
                str(run_dir), 60.0, clock=lambda: now[0], sleep=let_go_at_the_third
            )
            is None
        )
        assert slept == [1.0] * 8


def test_overwrite_under_the_claim_keeps_the_lock_and_empties_the_rest(tmp_path):
    run_dir = tmp_path / "run"
    prepare_output_dir(str(run_dir), _config(0.1), overwrite=False)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "results.json").write_text("{}")
    with claim_output_dir(str(run_dir), _config(0.2), overwrite=True):
        assert sorted(os.listdir(run_dir)) == [".tfprune.lock", "config.json"]
        with open(run_dir / "config.json") as f:
            assert json.load(f)["experiment"]["density"] == 0.2


@pytest.mark.parametrize(
    "stored, wanted, named",
    [
        (_config(0.05), _config(0.1), "experiment.density: 0.05 there, 0.1 here"),
        (
            _config(0.1),
            {**_config(0.1), "training": {"epochs": 3}},
            "training.epochs: 2 there, 3 here",
        ),
        (
            _config(0.1),
            {**_config(0.1), "experiment": {**_config(0.1)["experiment"], "seed": 1}},
            "experiment.seed: unset there, 1 here",
        ),
    ],
)
def test_a_different_configuration_is_refused_naming_the_setting(tmp_path, stored, wanted, named):
    run_dir = str(tmp_path / "run")
    prepare_output_dir(run_dir, stored, overwrite=False)
    with pytest.raises(OutputError, match="holds a run with a different configuration") as refused:
        prepare_output_dir(run_dir, wanted, overwrite=False)
    assert f"({named})" in str(refused.value)


def _mount_tmpfs(path, size: str) -> bool:
    """Mounts a tmpfs of `size` at `path`; False where this user cannot mount (not root)."""
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@contextlib.contextmanager
def _small_filesystem(size: str):
    """A filesystem of `size` bytes (a tmpfs), removed afterwards; skips where none can be
    mounted (a full disk cannot be made any other way without touching the real disk)."""
    with tempfile.TemporaryDirectory() as parent:
        mount_point = os.path.join(parent, "fs")
        if not _mount_tmpfs(mount_point, size):
            pytest.skip("mounting a small tmpfs needs root; this user cannot mount")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", "-l", mount_point], check=False)


def _remount(mount_point, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", mount_point], check=True)


def test_a_full_disk_ends_in_one_line_and_the_run_resumes_once_there_is_space():
    # LeNet-300-100's checkpoint (weights, masks, momentum) takes about 3 MB.
    with _small_filesystem("1500k") as fs:
        run_dir = os.path.join(fs, "run")
        full = _train(run_dir, "--gin_bindings=training.momentum = 0.9")
        last = _last_line(full)
        assert "No space left on device" in last and "run the same command again" in last
        assert last.startswith(f"tfprune.train: error: cannot write to {run_dir}")
        with open(os.path.join(run_dir, "config.json")) as f:
            assert json.load(f)["experiment"]["method"] == "magnitude"
        _remount(fs, "size=64m")
        freed = _train(run_dir, "--gin_bindings=training.momentum = 0.9")
        assert freed.returncode == 0, freed.stderr[-3000:]
        assert _procs.results(run_dir)["epochs"] == 2


def test_a_read_only_run_directory_is_read_when_finished_and_refused_in_one_line_when_not():
    with _small_filesystem("64m") as fs:
        run_dir = os.path.join(fs, "run")
        assert _train(run_dir).returncode == 0
        _remount(fs, "ro")
        finished = _train(run_dir)  # a finished run is read, nothing is written
        assert finished.returncode == 0, finished.stderr[-3000:]
        assert f"run_dir={run_dir}" in finished.stdout
        other = _last_line(_train(run_dir, "--gin_bindings=experiment.density = 0.2"))
        assert "(experiment.density: 0.05 there, 0.2 here)" in other
        _remount(fs, "rw")
        os.remove(os.path.join(run_dir, "results.json"))  # unfinished again
        _remount(fs, "ro")
        last = _last_line(_train(run_dir))
        assert f"cannot write to output directory {run_dir}" in last
        assert "Read-only file system" in last


def test_a_run_directory_killed_before_its_config_was_written_can_be_used(tmp_path):
    """A kill between creating the directory and renaming config.json into it leaves the
    lock and a temporary file: that is no foreign content."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".tfprune.lock").write_text("12345\n")
    (run_dir / ".tmp-k2j3h4.tmp").write_text('{"experiment": ')
    with claim_output_dir(str(run_dir), _config(0.1), overwrite=False):
        with open(run_dir / "config.json") as f:
            assert json.load(f) == _config(0.1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not empty and holds no tfprune run"):
        prepare_output_dir(str(tmp_path / "other"), _config(0.1), overwrite=False)
