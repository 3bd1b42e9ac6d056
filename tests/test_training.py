"""Training: the optimizer, the schedule, checkpoints and resume (SPEC §5)."""

import glob
import io
import json
import os
import subprocess
import sys

import _procs
import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance
from _toy import toy_problem, toy_trainer

from tfprune.errors import ConfigError, TrainingError
from tfprune.layers import MaskedDense
from tfprune.steps import to_iterations
from tfprune.training import (
    SGD,
    Callback,
    MaskUpdate,
    PiecewiseSchedule,
    ProgressDisplay,
    TrainConfig,
    Trainer,
    TrainState,
    checkpoints,
    parse_progress_line,
)


def _apply(optimizer, variable, gradients):
    for gradient in gradients:
        optimizer.apply([tf.constant(gradient)], [variable])


# SPEC §5: momentum SGD is plain (not Nesterov), weight decay is coupled L2 added to the
# gradient, as in PyTorch's SGD.
def test_sgd_matches_pytorch_update_rule_by_hand():
    w0 = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    grads = [
        np.array([0.1, 0.2, -0.3], np.float32),
        np.array([-0.4, 0.0, 0.6], np.float32),
        np.array([0.3, -0.1, 0.2], np.float32),
    ]
    lr, momentum, wd = 0.1, 0.9, 0.01
    variable = keras.Variable(w0)
    optimizer = SGD(lr, momentum=momentum, weight_decay=wd)
    _apply(optimizer, variable, grads)
    w, buf = w0.astype(np.float64), np.zeros(3)
    for g in grads:
        d = g + wd * w
        buf = momentum * buf + d
        w = w - lr * buf
    # float32: lr, momentum and wd rounded once each, then 6 rounded operations a step; w
    # stays far from 0, so no cancellation.
    np.testing.assert_allclose(variable.numpy(), w, **tolerance(np.float32, 3 + 6 * 3))


def test_sgd_learning_rate_drop_scales_the_whole_buffer():
    # PyTorch's form: after a drop, the step is new_lr * buffer (Keras' SGD would keep
    # the old rate inside its velocity).
    schedule = PiecewiseSchedule(1.0, boundaries=[1], gamma=0.1)
    variable = keras.Variable(np.zeros(1, np.float32))
    optimizer = SGD(schedule, momentum=0.5)
    _apply(optimizer, variable, [np.ones(1, np.float32)] * 2)
    # step 0: buf = 1, w = -1; step 1: buf = 1.5, w = -1 - 0.1 * 1.5. Only the float32 0.1,
    # the product and the difference are rounded.
    np.testing.assert_allclose(variable.numpy(), [-1.15], **tolerance(np.float32, 3))


def test_sgd_without_momentum_has_no_slots_and_is_plain():
    variable = keras.Variable(np.array([2.0], np.float32))
    optimizer = SGD(0.5)
    _apply(optimizer, variable, [np.array([1.0], np.float32)])
    assert variable.numpy()[0] == 1.5  # 2 - 0.5 * 1, exact in binary
    assert len(optimizer.variables) == 2  # iterations and learning rate only


def test_schedule_piecewise_with_warmup():
    schedule = PiecewiseSchedule(0.4, boundaries=[100, 200], gamma=0.1, warmup_steps=10)
    values = [float(schedule(s)) for s in (0, 5, 10, 99, 100, 199, 200, 5000)]
    # float32: 0.4 and 0.1 rounded (0.1 counts twice past both milestones), then the product
    # of the gammas, the warmup fraction and base times factor: 6 roundings at most.
    expected = [0.0, 0.2, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004]
    np.testing.assert_allclose(values, expected, **tolerance(np.float32, 6))


def test_config_schedule_milestones_in_epochs_and_steps():
    config = TrainConfig(learning_rate=0.1, milestones=[2, "50it"], gamma=0.5, warmup="1ep")
    schedule = config.schedule(steps_per_epoch=30)
    assert schedule.boundaries == [50, 60]
    assert schedule.warmup_steps == 30
    assert config.total_steps(30) == 300
    assert TrainConfig(steps="7it").total_steps(30) == 7


@pytest.mark.parametrize(
    "step, expected", [("0it", 0), ("500it", 500), ("2ep", 938), (7, 7), (" 3 ep ", 1407)]
)
def test_step_strings(step, expected):
    assert to_iterations(step, 469) == expected


@pytest.mark.parametrize("step", ["2", "ep", "-1it", "1.5ep", True, -3, None])
def test_bad_step_strings(step):
    with pytest.raises(ConfigError):
        to_iterations(step, 469)


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("epochs", 0),
        ("learning_rate", -1.0),
        ("momentum", "a"),
        ("batch_size", 1.5),
        ("keep_checkpoints", 0),
        ("milestones", ["x"]),
        ("milestones", "80"),
        ("warmup", "5"),
        ("steps", "2epochs"),
    ],
)
def test_bad_training_settings(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


def _toy_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((6,)), MaskedDense(8, activation="relu"), MaskedDense(2)])


def _float64_logits(model, x):
    """`_toy_model`'s logits computed in float64, and for each the sum of the magnitudes
    it is computed from (the same network on |x| with |weights|)."""
    (w1, b1), (w2, b2) = [
        (np.float64(layer.kernel.numpy() * layer.mask.numpy()), np.float64(layer.bias.numpy()))
        for layer in model.layers
    ]
    logits = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    sizes = (np.abs(x) @ np.abs(w1) + np.abs(b1)) @ np.abs(w2) + np.abs(b2)
    return logits, sizes


def _trainer(output_dir, config, x, y, model=None, **kwargs):
    return toy_trainer(output_dir, config, model or _toy_model(), x, y, **kwargs)


def test_trainer_learns_and_checkpoints_every_epoch(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=4, learning_rate=0.5, progress=False, keep_checkpoints=2)
    trainer = _trainer(tmp_path, config, x, y)
    state = trainer.run()
    assert state.step == 12
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4]
    assert state.history[-1]["test_accuracy"] > 0.9
    names = [os.path.basename(p) for p in checkpoints(trainer.checkpoint_dir)]
    assert names == ["ckpt-000000012", "ckpt-000000009"]
    assert int(trainer.optimizer.iterations.numpy()) == 12
    # The evaluation reported equals a direct evaluation of the final model, in float64. The
    # float32 logits are within 6 + 1 + 8 + 1 roundings of these: no example's two logits
    # are that close, so every machine picks the same classes.
    logits, sizes = _float64_logits(trainer.model, x.astype(np.float64))
    bounds = tolerance(np.float32, 16, scale=sizes.max())
    assert np.abs(logits[:, 0] - logits[:, 1]).min() > 2 * (
        bounds["atol"] + bounds["rtol"] * np.abs(logits).max()
    )
    assert state.history[-1]["test_accuracy"] == np.mean(logits.argmax(1) == y)


def test_resume_restores_model_optimizer_and_state(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, momentum=0.9, progress=False)
    first = _trainer(tmp_path, config, x, y)
    first.run()
    saved = [v.numpy() for v in first.model.variables + first.optimizer.variables]
    config.epochs = 3
    second = _trainer(tmp_path, config, x, y)
    assert second.restore().step == 6
    for variable, value in zip(
        second.model.variables + second.optimizer.variables, saved, strict=True
    ):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=3, learning_rate=0.3, momentum=0.9, progress=False)
    whole = _trainer(tmp_path / "whole", config, x, y).run()
    calls = {"n": 0}

    def stop_after_four():
        calls["n"] += 1
        return calls["n"] == 4

    from tfprune.training import Interrupted

    with pytest.raises(Interrupted):
        _trainer(tmp_path / "split", config, x, y, should_stop=stop_after_four).run()
    resumed = _trainer(tmp_path / "split", config, x, y).run()
    assert resumed.step == whole.step
    # The same steps on the same restored values: bit for bit.
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a["test_loss"] == b["test_loss"]


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, progress=False)
    trainer = _trainer(tmp_path, config, x, y)
    trainer.run()
    newest = checkpoints(trainer.checkpoint_dir)[0]
    with open(os.path.join(newest, "variables.npz"), "wb") as f:
        f.write(b"garbage")
    assert _trainer(tmp_path, config, x, y).restore().step == 3


def test_checkpoint_state_is_json(tmp_path):
    x, y = toy_problem()
    trainer = _trainer(tmp_path, TrainConfig(epochs=1, progress=False), x, y)
    trainer.run()
    with open(os.path.join(checkpoints(trainer.checkpoint_dir)[0], "state.json")) as f:
        state = json.load(f)
    assert state["step"] == 3 and len(state["history"]) == 1
    assert len(state["paths"]) == len(trainer.model.variables + trainer.optimizer.variables)


def test_nan_loss_stops_with_a_clear_error_and_keeps_checkpoints(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=3, learning_rate=0.5, progress=False, log_every_steps=1)
    trainer = _trainer(tmp_path, config, x, y)
    trainer.run()
    diverging = TrainConfig(epochs=4, learning_rate=1e38, progress=False, log_every_steps=1)
    with pytest.raises(TrainingError, match="nan|inf"):
        _trainer(tmp_path, diverging, x, y).run()
    assert os.path.basename(checkpoints(trainer.checkpoint_dir)[0]) == "ckpt-000000009"


def test_on_step_hook_runs_before_each_iteration_and_at_the_end(tmp_path):
    x, y = toy_problem()
    seen = []
    trainer = _trainer(
        tmp_path,
        TrainConfig(epochs=2, progress=False),
        x,
        y,
        on_step=lambda step, state: seen.append(step),
    )
    trainer.run()
    assert seen == [0, 1, 2, 3, 4, 5, 6]


# --- progress display and TensorBoard -----------------------------------------------------------


class _Clock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_plain_progress_lines_every_interval_and_at_each_epoch_end():
    stream = io.StringIO()
    clock = _Clock([0.0, 1.0, 2.0, 8.0, 9.0, 9.5])
    progress = ProgressDisplay(6, 3, stream=stream, interval=5.0, clock=clock)
    assert not progress.bar
    progress.start_epoch(0, 0, 3)
    progress.update(1, 0.69314, 0.5, 0.1)  # the first line: at once
    progress.update(2, 0.6, 0.55, 0.1)  # 1 s later: skipped
    progress.update(3, 0.5, 0.625, 0.1)  # the epoch's end: always
    progress.start_epoch(1, 3, 6)
    progress.update(4, 0.4, 0.7, 0.01)  # 6 s after the last line
    progress.update(5, 0.3, 0.8, 0.01)  # 1 s later: skipped
    progress.update(6, 0.25, 0.875, 0.001)
    assert stream.getvalue() == (
        "epoch 1/2 iteration 1/6 loss 0.6931 accuracy 0.5000 lr 0.1\n"
        "epoch 1/2 iteration 3/6 loss 0.5000 accuracy 0.6250 lr 0.1\n"
        "epoch 2/2 iteration 4/6 loss 0.4000 accuracy 0.7000 lr 0.01\n"
        "epoch 2/2 iteration 6/6 loss 0.2500 accuracy 0.8750 lr 0.001\n"
    )
    assert parse_progress_line("epoch 2/2 iteration 4/6 loss 0.4000 accuracy 0.7000 lr 0.01") == {
        "epoch": 2,
        "epochs": 2,
        "step": 4,
        "total_steps": 6,
        "loss": 0.4,
        "accuracy": 0.7,
        "lr": 0.01,
    }
    assert parse_progress_line("I0101 epoch 1 (iteration 3): train loss 0.5") is None


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_keeps_the_keras_bar(capsys):
    terminal = _Terminal()
    progress = ProgressDisplay(6, 3, stream=terminal)
    assert progress.bar
    progress.start_epoch(0, 0, 3)
    progress.update(3, 0.5, 0.625, 0.1)
    assert terminal.getvalue() == ""
    out = capsys.readouterr().out
    assert "3/3" in out and "loss: 0.5000" in out and "\x1b[" in out


def test_disabled_progress_writes_nothing(capsys):
    stream = io.StringIO()
    progress = ProgressDisplay(6, 3, enabled=False, stream=stream)
    progress.start_epoch(0, 0, 3)
    progress.update(3, 0.5, 0.625, 0.1)
    assert stream.getvalue() == "" and capsys.readouterr().out == ""


def test_training_command_with_stdout_redirected_writes_plain_progress_lines(tmp_path):
    """Keras' bar redraws itself with ANSI codes, carriage returns and backspaces, which a
    file (a sweep's cell log) keeps as garbage."""
    log = tmp_path / "stdout.txt"
    with open(log, "w") as stdout:
        proc = _procs.start(
            "tfprune.train",
            "--gin_file=gin_configs/default.gin",
            "--gin_bindings=training.steps = 4",
            "--gin_bindings=training.log_every_steps = 1",
            "--gin_bindings=experiment.train_limit = 256",
            "--gin_bindings=experiment.test_limit = 256",
            f"--output_dir={tmp_path / 'run'}",
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    text = log.read_text()
    assert not {"\x1b", "\r", "\x08"} & set(text)
    lines = text.splitlines()
    progress = [parse_progress_line(line) for line in lines[:-1]]
    assert None not in progress and lines[-1].startswith("test_accuracy=")
    # 256 examples in batches of 128: 2 iterations an epoch. Lines come at the first update
    # and at each epoch's end, and in between only every PLAIN_PROGRESS_SECONDS.
    steps = [p["step"] for p in progress]
    assert {1, 2, 4} <= set(steps) and steps == sorted(set(steps))
    assert all(p["epoch"] == (p["step"] + 1) // 2 and p["epochs"] == 2 for p in progress)
    assert all(p["total_steps"] == 4 and p["lr"] == 0.1 for p in progress)
    assert all(0 <= p["accuracy"] <= 1 and p["loss"] > 0 for p in progress)


def _tensorboard_scalars(log_dir):
    """{(tag, step): how many times it was written} from the event files in `log_dir`."""
    counts = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                key = (value.tag, event.step)
                counts[key] = counts.get(key, 0) + 1
    return counts


def test_tensorboard_gets_each_tag_once_per_step(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, progress=False, log_every_steps=2)
    _trainer(tmp_path, config, x, y).run()
    counts = _tensorboard_scalars(tmp_path / "tensorboard")
    assert set(counts.values()) == {1}, {k: n for k, n in counts.items() if n > 1}
    # 3 iterations an epoch, a log every 2 within the epoch and at its end.
    steps = {}
    for tag, step in counts:
        steps.setdefault(tag, []).append(step)
    assert {tag: sorted(s) for tag, s in steps.items()} == {
        "train/loss": [2, 3, 5, 6],
        "train/lr": [2, 3, 5, 6],
        "train/accuracy": [3, 6],
        "test/loss": [3, 6],
        "test/accuracy": [3, 6],
    }


def _renamed_model():
    """`_toy_model` with its first layer named otherwise: the same shapes, other paths."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((6,)), MaskedDense(8, activation="relu", name="first"), MaskedDense(2)]
    )


def test_checkpoint_of_another_model_is_refused_naming_the_first_mismatch(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=1, learning_rate=0.5, progress=False)
    _trainer(tmp_path, config, x, y).run()
    trainer = _trainer(tmp_path, config, x, y, model=_renamed_model())
    before = [v.numpy() for v in trainer.model.variables]
    with pytest.raises(ConfigError) as refused:
        trainer.restore()
    message = str(refused.value)
    assert "was written by another model: its variable 0 is '" in message
    assert "masked_dense" in message and "/first/kernel' of shape (6, 8)" in message
    assert "\n" not in message
    for variable, value in zip(trainer.model.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_snapshot_is_restored_by_path_and_refused_for_another_model(tmp_path):
    from tfprune.training import load_snapshot, save_snapshot

    source = _toy_model()
    path = str(tmp_path / "step.npz")
    save_snapshot(source, path)
    same = _toy_model()  # rebuilt in this process: Keras numbers its automatic names anew
    for variable in same.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    load_snapshot(same, path)
    for a, b in zip(same.variables, source.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ConfigError, match=r"snapshot .* its variable 0 is .* '.*/first/kernel'"):
        load_snapshot(_renamed_model(), path)
    fewer = keras.Sequential([keras.Input((6,)), MaskedDense(8, activation="relu")])
    with pytest.raises(ConfigError, match="it holds 6 variables, the model 3"):
        load_snapshot(fewer, path)


def _damage(path, how):
    if how == "missing":
        os.remove(path)
    elif how == "empty":
        open(path, "wb").close()
    elif how == "truncated":
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif how == "garbled":
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            for i in range(len(data) // 3, len(data) // 3 + 64):
                data[i] ^= 0xA5
            f.seek(0)
            f.write(bytes(data))


@pytest.mark.parametrize("name", ["variables.npz", "state.json"])
@pytest.mark.parametrize("how", ["missing", "empty", "truncated", "garbled"])
def test_any_damaged_file_of_the_newest_checkpoint_falls_back_to_the_previous(
    tmp_path, name, how
):
    x, y = toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, momentum=0.9, progress=False)
    trainer = _trainer(tmp_path, config, x, y, keep_steps=[3])
    trainer.run()
    older, newest = sorted(checkpoints(trainer.checkpoint_dir))
    with np.load(os.path.join(older, "variables.npz")) as data:
        expected = [data[f"v{i}"] for i in range(len(data.files) - 1)]
    _damage(os.path.join(newest, name), how)
    resumed = _trainer(tmp_path, config, x, y)
    assert resumed.restore().step == 3
    variables = resumed.model.variables + resumed.optimizer.variables
    for variable, value in zip(variables, expected, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


# --- callbacks: the order of the hooks, mask updates, optimizer slots -------------------------


class _Recorder(Callback):
    """Records every hook call as a tuple that starts with the hook's name and the step."""

    def __init__(self, steps):
        self.steps, self.calls = steps, []

    def hook_steps(self, trainer):
        return self.steps

    def on_train_begin(self, trainer, state):
        self.calls.append(("train_begin", state.step))

    def on_epoch_begin(self, trainer, state, epoch, epoch_end):
        self.calls.append(("epoch_begin", state.step, epoch, epoch_end))

    def on_step_begin(self, trainer, state):
        self.calls.append(("step_begin", state.step, int(trainer.optimizer.iterations.numpy())))

    def on_log(self, trainer, state, metrics):
        self.calls.append(("log", state.step, metrics["loss"], metrics["accuracy"]))

    def on_evaluate(self, trainer, state, logs):
        self.calls.append(("evaluate", state.step, list(logs)))

    def on_epoch_end(self, trainer, state, logs):
        newest = [os.path.basename(p) for p in checkpoints(trainer.checkpoint_dir)[:1]]
        self.calls.append(("epoch_end", state.step, logs is state.history[-1], newest))

    def on_interrupt(self, trainer, state):
        newest = [os.path.basename(p) for p in checkpoints(trainer.checkpoint_dir)[:1]]
        self.calls.append(("interrupt", state.step, dict(state.sums), newest))

    def on_train_end(self, trainer, state):
        self.calls.append(("train_end", state.step))


def test_hooks_run_in_order_and_compiled_calls_stop_at_the_asked_steps(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, progress=False, log_every_steps=2)
    recorder = _Recorder({1, 6})
    state = _trainer(tmp_path, config, x, y, hook_steps=(), callbacks=[recorder]).run()
    history = state.history
    metrics = ["epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    calls = recorder.calls
    # 3 iterations an epoch, 10 a call at most: the calls stop at the log steps (every 2 within
    # an epoch), at the asked step 1 and at the epoch ends. Step 6 is the end of training.
    assert [c[:2] for c in calls] == [
        ("train_begin", 0),
        ("epoch_begin", 0),
        ("step_begin", 1),
        ("log", 2),
        ("log", 3),
        ("evaluate", 3),
        ("epoch_end", 3),
        ("epoch_begin", 3),
        ("log", 5),
        ("log", 6),
        ("evaluate", 6),
        ("epoch_end", 6),
        ("step_begin", 6),
        ("train_end", 6),
    ]
    assert calls[1][2:] == (0, 3) and calls[7][2:] == (1, 6)
    # The optimizer had run exactly the iterations before the asked ones.
    assert calls[2][2] == 1 and calls[12][2] == 6
    # The built-in evaluation comes first; the record is complete at the epoch's end, before
    # the epoch's checkpoint is written.
    assert calls[5][2] == calls[10][2] == metrics
    assert calls[6][2:] == (True, []) and calls[11][2:] == (True, ["ckpt-000000003"])
    assert list(history[0]) == [*metrics, "lr", "seconds"]
    # The last log of an epoch reports what its record holds.
    for log, record in ((calls[4], history[0]), (calls[9], history[1])):
        assert log[2:] == (record["train_loss"], record["train_accuracy"])


def test_a_stop_in_mid_epoch_calls_on_interrupt_before_the_checkpoint(tmp_path):
    from tfprune.training import Interrupted

    x, y = toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, progress=False, steps_per_execution=1)
    recorder = _Recorder(())
    polls = {"n": 0}

    def stop_at_poll_5():
        polls["n"] += 1
        return polls["n"] == 5

    trainer = _trainer(
        tmp_path, config, x, y, hook_steps=(), callbacks=[recorder], should_stop=stop_at_poll_5
    )
    with pytest.raises(Interrupted):
        trainer.run()
    # Polls after iterations 1, 2, (epoch end) 3, 4, 5: the fifth is in the middle of epoch 2.
    (name, step, sums, newest) = recorder.calls[-1]
    assert (name, step, newest) == ("interrupt", 5, ["ckpt-000000003"])
    assert sums["count"] == 64.0
    assert [c[0] for c in recorder.calls].count("epoch_end") == 1
    with open(os.path.join(checkpoints(trainer.checkpoint_dir)[0], "state.json")) as f:
        assert json.load(f)["sums"] == sums


class _PruneHalf(MaskUpdate):
    """Prunes the given positions of the first layer's kernel before iteration `step` and
    zeroes their momentum; keeps the kernel as it was then."""

    def __init__(self, step, pruned):
        super().__init__([step])
        self.pruned, self.seen = pruned, []

    def update(self, trainer, state):
        kernel = trainer.model.layers[0].kernel
        self.seen.append((state.step, int(trainer.optimizer.iterations.numpy())))
        self.kernel = np.array(kernel.numpy())
        trainer.reset_optimizer_slots({kernel.path: self.pruned})
        return {kernel.path: (~self.pruned).astype(np.float32)}


def _trainer_of_7_iterations_an_epoch(output_dir, **kwargs):
    """100 examples in batches of 16 (the last one short), 3 epochs, 3 iterations a call."""
    x, y = toy_problem(n=100)

    def train_data(epoch, skip):
        order = np.random.default_rng(epoch).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(16).skip(skip)

    def eval_data():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    config = TrainConfig(
        epochs=3, learning_rate=0.3, momentum=0.9, progress=False, steps_per_execution=3
    )
    return Trainer(_toy_model(), config, train_data, eval_data, 7, str(output_dir), **kwargs)


def test_mask_update_in_mid_epoch_with_multi_step_calls_equals_the_on_step_hook(tmp_path):
    k = 5  # in epoch 1; the calls of 3 iterations would otherwise start at 3 and 6
    pruned = np.zeros(48, bool)
    pruned[np.random.default_rng(3).permutation(48)[:24]] = True
    pruned = pruned.reshape(6, 8)
    callback = _PruneHalf(k, pruned)
    by_callback = _trainer_of_7_iterations_an_epoch(
        tmp_path / "callback", hook_steps=(), callbacks=[callback]
    )
    state = by_callback.run()

    trainer = None
    seen = []

    def on_step(step, state):
        seen.append(step)
        if step == k:
            layer = trainer.model.layers[0]
            layer.mask.assign((~pruned).astype(np.float32))
            trainer.reset_optimizer_slots({layer.kernel.path: pruned})

    trainer = _trainer_of_7_iterations_an_epoch(
        tmp_path / "on_step", on_step=on_step, hook_steps={k}
    )
    reference = trainer.run()

    assert callback.seen == [(k, k)] and seen == [k, 21]
    layer = by_callback.model.layers[0]
    # The pruned weights act as zero, get no gradient and, their momentum reset at step k,
    # keep the value they had then; the other half trained on.
    assert not np.any(np.asarray(layer.masked_kernel)[pruned])
    kernel = layer.kernel.numpy()
    assert np.array_equal(kernel[pruned], callback.kernel[pruned])
    assert not np.any(kernel[~pruned] == callback.kernel[~pruned])
    # The final checkpoint holds the mask.
    with np.load(os.path.join(checkpoints(by_callback.checkpoint_dir)[0], "variables.npz")) as f:
        paths = [str(p) for p in f["paths"]]
        assert np.array_equal(f[f"v{paths.index(layer.mask.path)}"], (~pruned).astype(np.float32))
    # Bit for bit the run that the on_step hook pruned.
    keys = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")
    assert [[h[k] for k in keys] for h in state.history] == [
        [h[k] for k in keys] for h in reference.history
    ]
    for a, b in zip(
        by_callback.model.variables + by_callback.optimizer.variables,
        trainer.model.variables + trainer.optimizer.variables,
        strict=True,
    ):
        assert np.array_equal(a.numpy(), b.numpy()), a.path


class _DropThenRegrow(MaskUpdate):
    """Drops positions of the first layer's kernel at the first step, regrows them at the
    second; keeps the kernel as it was before each update."""

    def __init__(self, steps, positions):
        super().__init__(steps)
        self.positions, self.before = positions, {}

    def update(self, trainer, state):
        kernel = trainer.model.layers[0].kernel
        self.before[state.step] = np.array(kernel.numpy())
        mask = np.ones(self.positions.shape, np.float32)
        if state.step == min(self.steps):
            mask[self.positions] = 0
        return {kernel.path: mask}


class _SlotsAt(Callback):
    """Keeps the first layer's kernel and its momentum at `step` (after the callbacks before
    this one)."""

    def __init__(self, step):
        self.step = step

    def hook_steps(self, trainer):
        return [self.step]

    def on_step_begin(self, trainer, state):
        paths = [v.path for v in trainer.model.trainable_variables]
        index = paths.index(trainer.model.layers[0].kernel.path)
        self.kernel = np.array(trainer.model.trainable_variables[index].numpy())
        self.momentum = np.array(trainer.optimizer.momentums[index].numpy())


def test_mask_update_regrows_weights_at_zero_with_fresh_momentum(tmp_path):
    positions = np.zeros((6, 8), bool)
    positions[:2] = True
    regrow = _DropThenRegrow([4, 11], positions)
    after = _SlotsAt(11)
    trainer = _trainer_of_7_iterations_an_epoch(
        tmp_path, hook_steps=(), callbacks=[regrow, after]
    )
    trainer.run()
    # Regrown weights start at zero with zero momentum; the others kept kernel and momentum.
    assert not np.any(after.kernel[positions]) and not np.any(after.momentum[positions])
    assert np.array_equal(after.kernel[~positions], regrow.before[11][~positions])
    assert np.all(after.momentum[~positions] != 0)
    # They were not zero when dropped at 4; from zero at 11, they trained again.
    assert np.all(regrow.before[4][positions] != 0)
    final = trainer.model.layers[0]
    assert np.all(final.mask.numpy() == 1) and np.all(final.kernel.numpy()[positions] != 0)


@pytest.mark.parametrize("bad", ["unknown path", "wrong shape", "not 0/1"])
def test_a_bad_mask_update_is_refused_and_changes_nothing(tmp_path, bad):
    x, y = toy_problem()
    trainer = _trainer(tmp_path, TrainConfig(epochs=1, progress=False), x, y)
    first, second = (layer.kernel.path for layer in trainer.model.layers)
    masks, message = {
        "unknown path": (
            {"nowhere/kernel": np.ones((6, 8))},
            "Bad returned a mask for 'nowhere/kernel', no prunable kernel",
        ),
        "wrong shape": (
            {first: np.ones((8, 6))},
            f"Bad returned a mask of shape (8, 6) for {first}, whose kernel has shape (6, 8)",
        ),
        "not 0/1": (
            {first: np.full((6, 8), 0.5)},
            f"Bad returned a mask for {first} with values other than 0, 1",
        ),
    }[bad]

    class Bad(MaskUpdate):
        def update(self, trainer, state):
            # A valid mask first: nothing is assigned unless every mask is valid.
            return {second: np.zeros((8, 2), np.float32), **masks}

    before = [np.array(v.numpy()) for v in trainer.model.variables]
    with pytest.raises(ConfigError) as refused:
        Bad([0]).on_step_begin(trainer, TrainState())
    assert str(refused.value) == message
    for variable, value in zip(trainer.model.variables, before, strict=True):
        assert np.array_equal(variable.numpy(), value)


def test_reset_optimizer_slots_of_chosen_positions_keeps_the_others(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=1, learning_rate=0.5, momentum=0.9, progress=False)
    trainer = _trainer(tmp_path, config, x, y)
    trainer.run()
    variables = trainer.model.trainable_variables
    buffers = dict(zip([v.path for v in variables], trainer.optimizer.momentums, strict=True))
    before = {path: np.array(b.numpy()) for path, b in buffers.items()}
    weights = [np.array(v.numpy()) for v in trainer.model.variables]
    kernel = variables[0].path
    where = np.zeros((6, 8), bool)
    where[[0, 2, 5], [1, 7, 3]] = True
    assert np.all(before[kernel][where] != 0)
    for bad, message in (
        ({"nowhere": None}, "no trainable variable of the model has the path 'nowhere'"),
        ({kernel: where, "x": None}, "no trainable variable of the model has the path 'x'"),
        ({kernel: where.T}, f"positions of shape (8, 6) for {kernel}, whose shape is (6, 8)"),
    ):
        with pytest.raises(ConfigError) as refused:
            trainer.reset_optimizer_slots(bad)
        assert str(refused.value) == message
        for path, buffer in buffers.items():
            assert np.array_equal(buffer.numpy(), before[path])
    trainer.reset_optimizer_slots({kernel: where})
    after = buffers[kernel].numpy()
    assert not np.any(after[where])
    assert np.array_equal(after[~where], before[kernel][~where])
    for path, buffer in buffers.items():
        if path != kernel:
            assert np.array_equal(buffer.numpy(), before[path])
    assert int(trainer.optimizer.iterations.numpy()) == 3
    for variable, value in zip(trainer.model.variables, weights, strict=True):
        assert np.array_equal(variable.numpy(), value)


def test_train_steps_runs_the_loop_s_iterations(tmp_path):
    x, y = toy_problem()
    config = TrainConfig(epochs=1, learning_rate=0.5, momentum=0.9, progress=False)
    state = _trainer(tmp_path / "run", config, x, y).run()
    looped = _trainer(tmp_path / "run", config, x, y)
    assert looped.restore().step == 3
    direct = _trainer(tmp_path / "direct", config, x, y)
    order = np.random.default_rng(0).permutation(len(x))
    batches = tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(32)
    metrics = direct.train_steps(batches, 3)
    assert metrics == {
        "loss": state.history[0]["train_loss"],
        "accuracy": state.history[0]["train_accuracy"],
    }
    assert int(direct.optimizer.iterations.numpy()) == 3
    for a, b in zip(direct.model.variables, looped.model.variables, strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
    with pytest.raises(TrainingError, match="^the dataset holds fewer than 4 batches$"):
        direct.train_steps(batches, 4)


def test_train_config_imports_without_tensorflow():
    code = (
        "import sys\n"
        # As `python -m tfprune.<command>` imports the package: a script's `import tfprune`
        # also registers the masked layers with Keras (tfprune/__init__.py).
        "sys.argv[:1] = ['-m']\n"
        "from tfprune.training import TrainConfig, TrainState, parse_progress_line\n"
        "config = TrainConfig(epochs=2, milestones=['3it'])\n"
        "config.validate()\n"
        "assert config.total_steps(5) == 10 and TrainState().step == 0\n"
        "assert parse_progress_line('epoch 1/2 iteration 3/10 loss 1 accuracy 0 lr 0.1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
        "print(sorted(m for m in sys.modules if m.startswith('tfprune.training.')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=_procs.ROOT,
        env=_procs.ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "[]",
        "['tfprune.training.config', 'tfprune.training.progress']",
    ]
