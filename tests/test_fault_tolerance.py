"""Fault tolerance: a killed run resumes to the uninterrupted numbers, bad checkpoints are
skipped, a diverging run keeps its last good checkpoint, and a sweep outlives a killed cell."""

import csv
import os
import random
import signal
import subprocess
import time

import _procs
import numpy as np
import pytest

from tfprune.errors import ConfigError
from tfprune.training import TrainConfig

DETERMINISTIC = [
    "--gin_file=gin_configs/snip.gin",
    "--gin_bindings=experiment.train_limit = 8192",
    "--gin_bindings=experiment.test_limit = 512",
    "--gin_bindings=training.epochs = 6",
    "--gin_bindings=training.momentum = 0.9",
    "--gin_bindings=training.progress = False",
    "--gin_bindings=training.deterministic = True",
]


def _numbers(results):
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    return {
        "test_accuracy": results["test_accuracy"],
        "test_loss": results["test_loss"],
        "history": [{k: h[k] for k in keys} for h in results["history"]],
    }


def test_sigkill_at_a_random_point_then_resume_equals_the_uninterrupted_run(tmp_path):
    killed_dir, whole_dir = str(tmp_path / "killed"), str(tmp_path / "whole")
    whole = _procs.start("tfprune.train", *DETERMINISTIC, f"--output_dir={whole_dir}")
    killed = _procs.start("tfprune.train", *DETERMINISTIC, f"--output_dir={killed_dir}")
    # Anywhere from the first iterations to a few epochs in, between checkpoints or not.
    rng = random.Random(os.urandom(8))
    anchor = rng.choice(
        ["pruning.json", "checkpoints/ckpt-000000064", "checkpoints/ckpt-000000128"]
    )
    delay = rng.uniform(0.0, 0.5)
    _procs.wait_for(os.path.join(killed_dir, anchor), killed)
    time.sleep(delay)
    assert killed.poll() is None, f"the run finished before the kill ({anchor} + {delay:.2f}s)"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not os.path.exists(os.path.join(killed_dir, "results.json"))
    resumed = _procs.run("tfprune.train", *DETERMINISTIC, f"--output_dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert whole.wait(timeout=600) == 0
    after_kill, uninterrupted = _procs.results(killed_dir), _procs.results(whole_dir)
    assert [h["epoch"] for h in after_kill["history"]] == [1, 2, 3, 4, 5, 6]
    message = f"killed {delay:.2f}s after {anchor}"
    assert _numbers(after_kill) == _numbers(uninterrupted), message


def test_diverging_run_keeps_its_good_checkpoints_and_a_corrupted_one_is_skipped(tmp_path):
    run_dir = str(tmp_path / "run")
    args = [
        "--gin_file=gin_configs/random.gin",
        "--gin_bindings=experiment.train_limit = 1024",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.epochs = 4",
        "--gin_bindings=training.progress = False",
        # Epochs 1 and 2 train normally; from epoch 3 the learning rate is 1e29.
        "--gin_bindings=training.milestones = [2]",
        "--gin_bindings=training.gamma = 1e30",
        f"--output_dir={run_dir}",
    ]
    first = _procs.run("tfprune.train", *args)
    assert first.returncode == 2, first.stderr[-2000:]
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("tfprune.train: error: the training loss became")
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    assert sorted(os.listdir(checkpoint_dir)) == ["ckpt-000000008", "ckpt-000000016"]
    with np.load(os.path.join(checkpoint_dir, "ckpt-000000016", "variables.npz")) as data:
        assert all(np.all(np.isfinite(data[k])) for k in data.files if k != "paths")
    with open(os.path.join(checkpoint_dir, "ckpt-000000016", "variables.npz"), "r+b") as f:
        f.write(b"\0" * 64)
    again = _procs.run("tfprune.train", *args)
    assert "ckpt-000000016 is unreadable" in again.stderr
    assert "resuming at iteration 8 of 32" in again.stderr
    assert again.returncode == 2  # it diverges again in epoch 3, with the same message
    assert again.stderr.strip().splitlines()[-1] == last


def _children(pid):
    """`{pid: command line}` of the processes whose parent is `pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found[int(entry)] = command
    return found


@pytest.mark.slow
def test_sweep_survives_a_killed_cell_and_a_rerun_completes_it(tmp_path):
    """Slow: a sweep of two cells and a re-run, each cell a process that starts TensorFlow
    (about 50 s on two cores)."""
    sweep_dir = str(tmp_path / "sweep")
    args = [
        "--gin_file=gin_configs/default.gin",
        "--gin_bindings=experiment.train_limit = 4096",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.epochs = 3",
        "--methods=random,magnitude",
        "--densities=0.1",
        "--seeds=0",
        f"--output_dir={sweep_dir}",
    ]
    victim = "runs/random-none-d0.1-s0"
    sweep = _procs.start("tfprune.sweep", *args, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    child = None
    while child is None:
        assert sweep.poll() is None and time.time() < deadline, "no cell started"
        child = next((p for p, c in _children(sweep.pid).items() if victim in c), None)
        time.sleep(0.05)
    _procs.wait_for(os.path.join(sweep_dir, victim, "config.json"), sweep)
    time.sleep(random.Random(os.urandom(8)).uniform(0.0, 1.0))
    os.kill(child, signal.SIGKILL)
    _, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 1, stderr[-2000:]
    assert "FAILED (exit -9" in stderr
    with open(os.path.join(sweep_dir, "results.csv"), newline="") as f:
        assert [r["run_dir"] for r in csv.DictReader(f)] == ["runs/magnitude-none-d0.1-s0"]
    rerun = _procs.run("tfprune.sweep", *args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 finished already, 1 to run" in rerun.stderr
    with open(os.path.join(sweep_dir, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_dir"] for r in rows) == [
        "runs/magnitude-none-d0.1-s0",
        "runs/random-none-d0.1-s0",
    ]
    assert _procs.results(os.path.join(sweep_dir, victim))["epochs"] == 3


@pytest.mark.parametrize("value", [1, "yes", None])
def test_deterministic_must_be_a_boolean(value):
    with pytest.raises(ConfigError, match="training.deterministic must be True or False"):
        TrainConfig(deterministic=value).validate()


def _toy_trainer(output_dir, **kwargs):
    import keras
    import tensorflow as tf

    from tfprune.layers import MaskedDense
    from tfprune.training import Trainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), MaskedDense(8, activation="relu"), MaskedDense(2)])

    def train_data(epoch, skip):
        order = np.random.default_rng(epoch).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(16).skip(skip)

    def eval_data():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    config = TrainConfig(epochs=3, learning_rate=0.3, momentum=0.9, progress=False)
    config.steps_per_execution = 3
    return Trainer(model, config, train_data, eval_data, 7, str(output_dir), **kwargs)


def test_several_iterations_per_call_and_a_mid_epoch_stop_change_no_number(tmp_path):
    from tfprune.training import Interrupted

    chunked = _toy_trainer(tmp_path / "chunked").run().history
    one_by_one = _toy_trainer(tmp_path / "single", hook_steps=None).run().history
    polls = {"n": 0}

    def stop_at_the_third_poll():
        polls["n"] += 1
        return polls["n"] == 3

    with pytest.raises(Interrupted) as stopped:
        _toy_trainer(tmp_path / "split", should_stop=stop_at_the_third_poll).run()
    assert stopped.value.step % 7  # in the middle of an epoch (7 iterations, a short last batch)
    resumed = _toy_trainer(tmp_path / "split").run().history
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    for history in (one_by_one, resumed):
        assert [[h[k] for k in keys] for h in history] == [[h[k] for k in keys] for h in chunked]
