"""Training: the optimizer, the schedule, checkpoints and resume (SPEC §5)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

from tfprune.errors import ConfigError, TrainingError
from tfprune.layers import MaskedDense
from tfprune.steps import to_iterations
from tfprune.training import SGD, PiecewiseSchedule, TrainConfig, Trainer, checkpoints


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


def _toy_problem(seed=0, n=96):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


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


def _trainer(output_dir, config, x, y, **kwargs):
    model = _toy_model()

    def train_data(epoch, skip):
        order = np.random.default_rng(epoch).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(32).skip(skip)

    def eval_data():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    return Trainer(model, config, train_data, eval_data, 3, str(output_dir), **kwargs)


def test_trainer_learns_and_checkpoints_every_epoch(tmp_path):
    x, y = _toy_problem()
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
    x, y = _toy_problem()
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
    x, y = _toy_problem()
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
    x, y = _toy_problem()
    config = TrainConfig(epochs=2, learning_rate=0.5, progress=False)
    trainer = _trainer(tmp_path, config, x, y)
    trainer.run()
    newest = checkpoints(trainer.checkpoint_dir)[0]
    with open(os.path.join(newest, "variables.npz"), "wb") as f:
        f.write(b"garbage")
    assert _trainer(tmp_path, config, x, y).restore().step == 3


def test_checkpoint_state_is_json(tmp_path):
    x, y = _toy_problem()
    trainer = _trainer(tmp_path, TrainConfig(epochs=1, progress=False), x, y)
    trainer.run()
    with open(os.path.join(checkpoints(trainer.checkpoint_dir)[0], "state.json")) as f:
        state = json.load(f)
    assert state["step"] == 3 and len(state["history"]) == 1
    assert len(state["paths"]) == len(trainer.model.variables + trainer.optimizer.variables)


def test_nan_loss_stops_with_a_clear_error_and_keeps_checkpoints(tmp_path):
    x, y = _toy_problem()
    config = TrainConfig(epochs=3, learning_rate=0.5, progress=False, log_every_steps=1)
    trainer = _trainer(tmp_path, config, x, y)
    trainer.run()
    diverging = TrainConfig(epochs=4, learning_rate=1e38, progress=False, log_every_steps=1)
    with pytest.raises(TrainingError, match="nan|inf"):
        _trainer(tmp_path, diverging, x, y).run()
    assert os.path.basename(checkpoints(trainer.checkpoint_dir)[0]) == "ckpt-000000009"


def test_on_step_hook_runs_before_each_iteration_and_at_the_end(tmp_path):
    x, y = _toy_problem()
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
