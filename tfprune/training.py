"""Training: the optimizer and schedule of SPEC §5, and a resumable, distributed training loop.

The loop runs inside a `tf.distribute` strategy: the model and optimizer must be created in
its scope, the train step runs per replica through `strategy.run`, and the global batch is
split across replicas. Checkpoints are written atomically every epoch and the loop resumes from
the newest readable one. Pruning at a given step is a hook (`on_step`) that the caller supplies.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from keras import ops

from tfprune._io import atomic_path, make_temp_dir
from tfprune.errors import ConfigError, OutputError, TrainingError
from tfprune.steps import to_iterations

CHECKPOINT_PREFIX = "ckpt-"
# Without a terminal, a progress line is written at most this often (and at each epoch's end).
PLAIN_PROGRESS_SECONDS = 5.0


@keras.saving.register_keras_serializable(package="tfprune")
class SGD(keras.optimizers.Optimizer):
    """Stochastic gradient descent as PyTorch's `torch.optim.SGD` computes it.

    `g ← g + weight_decay · w` (coupled L2, on every parameter), `b ← momentum · b + g`,
    `w ← w − lr · b`. Unlike `keras.optimizers.SGD`, the learning rate multiplies the whole
    momentum buffer at each step, so a learning-rate drop takes effect at once.

    Args:
        learning_rate: A float or a `LearningRateSchedule`.
        momentum: Momentum factor (0 disables the buffer). Not Nesterov.
        weight_decay: Coupled L2 coefficient added to the gradient.
        **kwargs: Base `keras.optimizers.Optimizer` arguments, except `weight_decay`.

    Example:

    >>> opt = SGD(0.1, momentum=0.9, weight_decay=1e-4)
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        name: str = "sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0 or weight_decay < 0:
            raise ConfigError(
                f"momentum and weight_decay must be >= 0, got {momentum} and {weight_decay}"
            )
        self.momentum = float(momentum)
        # The base class's `weight_decay` is decoupled; this one is added to the gradient.
        self.coupled_weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum:
            for variable in variables:
                self.momentums.append(self.add_variable_from_reference(variable, "momentum"))

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            gradient = ops.add(gradient, ops.multiply(self.coupled_weight_decay, variable))
        if self.momentum:
            buffer = self.momentums[self._get_variable_index(variable)]
            self.assign(buffer, ops.add(ops.multiply(self.momentum, buffer), gradient))
            gradient = buffer
        self.assign_sub(variable, ops.multiply(learning_rate, gradient))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.coupled_weight_decay})
        return config


@keras.saving.register_keras_serializable(package="tfprune")
class PiecewiseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Per-iteration learning rate: linear warmup, then ×`gamma` at each boundary.

    `lr(t) = base · gamma^(#boundaries ≤ t) · min(1, t / warmup_steps)`, as the paper's code
    computes it (the warmup factor starts at 0 on the first iteration).

    Args:
        base_learning_rate: Learning rate after warmup and before the first boundary.
        boundaries: Iterations at which the rate is multiplied by `gamma`.
        gamma: The multiplier.
        warmup_steps: Length of the linear warmup in iterations (0: none).

    Example:

    >>> PiecewiseSchedule(0.1, [100], 0.1)(150)  # 0.01
    """

    def __init__(
        self,
        base_learning_rate: float,
        boundaries: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_steps: int = 0,
    ):
        self.base_learning_rate = float(base_learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        factor = tf.constant(1.0)
        for boundary in self.boundaries:
            factor *= tf.where(step >= boundary, self.gamma, 1.0)
        if self.warmup_steps:
            factor *= tf.minimum(1.0, step / self.warmup_steps)
        return self.base_learning_rate * factor

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "boundaries": self.boundaries,
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
        }


@dataclasses.dataclass
class TrainConfig:
    """How to train (SPEC §5). Durations accept `"<n>ep"`, `"<n>it"` or ints (iterations).

    Args:
        epochs: Training length in epochs (ignored when `steps` is set).
        steps: Training length as a step position, for example `"5000it"`.
        batch_size: Global batch size, split across replicas.
        learning_rate: Base learning rate.
        momentum: SGD momentum (0 for plain SGD).
        weight_decay: Coupled L2 coefficient on all parameters.
        milestones: Positions where the learning rate is multiplied by `gamma`; an int means
            an epoch, as in the paper's tables.
        gamma: The learning-rate multiplier at each milestone.
        warmup: Linear warmup length.
        keep_checkpoints: How many of the newest checkpoints to keep.
        log_every_steps: How often the progress display and TensorBoard get the train metrics.
        progress: Show the progress on stdout: keras' progress bar on a terminal, else a
            plain line (see `format_progress_line`) every `log_every_steps` iterations, at
            most every `PLAIN_PROGRESS_SECONDS` seconds, and at the end of each epoch.
        steps_per_execution: Iterations run by one call of the compiled training function
            (fewer Python round trips). Stop requests are noticed between calls.
        deterministic: Make TensorFlow's ops deterministic for the whole process
            (`tf.config.experimental.enable_op_determinism`). With the seeds an experiment
            sets, a run repeated, or killed and resumed, then gives the same numbers bit for
            bit on the same machine and software.
    """

    epochs: int = 10
    steps: str | int | None = None
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    milestones: Sequence[str | int] = ()
    gamma: float = 0.1
    warmup: str | int = "0it"
    keep_checkpoints: int = 2
    log_every_steps: int = 50
    progress: bool = True
    steps_per_execution: int = 10
    deterministic: bool = False

    def validate(self) -> None:
        """Raises ConfigError for a value that cannot be trained with."""
        for name in ("batch_size", "keep_checkpoints", "log_every_steps", "steps_per_execution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"training.{name} must be a positive integer, got {value!r}")
        if self.steps is None and (
            isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1
        ):
            raise ConfigError(f"training.epochs must be a positive integer, got {self.epochs!r}")
        for name in ("learning_rate", "momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"training.{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(
                f"training.deterministic must be True or False, got {self.deterministic!r}"
            )
        # Positions are converted only when training starts: check their form now.
        for name in ("steps", "warmup"):
            if getattr(self, name) is not None:
                to_iterations(getattr(self, name), 1, f"training.{name}")
        milestones = self.milestones
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, (list, tuple)):
            raise ConfigError(
                f"training.milestones must be a list of epochs or positions like '500it', got "
                f"{milestones!r}"
            )
        for milestone in milestones:
            to_iterations(milestone, 1, "training.milestones")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The training length in iterations."""
        if self.steps is not None:
            total = to_iterations(self.steps, steps_per_epoch, "training.steps")
        else:
            total = self.epochs * steps_per_epoch
        if total < 1:
            raise ConfigError("training must last at least one iteration")
        return total

    def schedule(self, steps_per_epoch: int) -> PiecewiseSchedule:
        """The per-iteration learning-rate schedule."""
        boundaries = [
            m * steps_per_epoch
            if isinstance(m, int) and not isinstance(m, bool)
            else to_iterations(m, steps_per_epoch, "training.milestones")
            for m in self.milestones
        ]
        warmup = to_iterations(self.warmup, steps_per_epoch, "training.warmup")
        return PiecewiseSchedule(self.learning_rate, sorted(boundaries), self.gamma, warmup)


@dataclasses.dataclass
class TrainState:
    """What a checkpoint stores besides the variables."""

    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    wall_seconds: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)
    # The running train metrics of the current epoch (a checkpoint written mid-epoch).
    sums: dict = dataclasses.field(default_factory=dict)


def enable_determinism(seed: int | None = None) -> None:
    """Makes TensorFlow's ops deterministic and, given a seed, seeds Python, NumPy and TF.

    `tf.config.experimental.enable_op_determinism` holds for the whole process; ops without a
    deterministic implementation then raise instead of running.
    """
    tf.config.experimental.enable_op_determinism()
    if seed is not None:
        keras.utils.set_random_seed(seed)


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """`(is_chief, number of workers)` of this process in `strategy`'s cluster.

    The chief is the task of type "chief" if the cluster has one, else worker 0 (as in
    `TF_CONFIG`); a strategy without a cluster runs on one worker, the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 1
    jobs = resolver.cluster_spec().as_dict()
    workers = sum(len(resolver.cluster_spec().task_indices(job)) for job in jobs)
    task_type, task_id = resolver.task_type, resolver.task_id
    chief = task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in jobs
    )
    return chief, workers


def copy_first_replica(strategy: tf.distribute.Strategy, variables: Sequence) -> None:
    """Gives every replica of `variables` the value the first replica holds.

    The replicas of a variable written in cross-replica context hold one value already; with
    several workers, each computed its own, and the chief's (its first replica's) is kept.
    """
    variables = list(variables)

    @tf.function
    def first_values():
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        values = [tf.convert_to_tensor(v.value) for v in variables]
        kept = [tf.where(first, value, tf.zeros_like(value)) for value in values]
        return context.all_reduce(tf.distribute.ReduceOp.SUM, kept)

    results = strategy.run(first_values)
    for variable, value in zip(variables, results, strict=True):
        variable.assign(strategy.experimental_local_results(value)[0])


class ProgressDisplay:
    """Training progress on stdout: keras' progress bar on a terminal, plain lines elsewhere.

    Redirected to a file, the bar's ANSI codes, carriage returns and backspaces would fill it;
    there, each `update` writes one `format_progress_line` instead, at most every `interval`
    seconds (the first update and the last of each epoch always).

    Args:
        total_steps: Iterations of the whole training.
        steps_per_epoch: Iterations in one epoch.
        enabled: False shows nothing.
        stream: Where the plain lines go (default: `sys.stdout` at construction); the bar
            goes to `sys.stdout`.
        interval: Seconds between plain lines.
        clock: A monotonic clock in seconds.

    Example:

    >>> progress = ProgressDisplay(100, 50)
    >>> progress.start_epoch(0, 0, 50)
    >>> progress.update(10, 0.6931, 0.5, 0.1)
    epoch 1/2 iteration 10/100 loss 0.6931 accuracy 0.5000 lr 0.1
    """

    def __init__(
        self,
        total_steps: int,
        steps_per_epoch: int,
        enabled: bool = True,
        stream=None,
        interval: float = PLAIN_PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total_steps = total_steps
        self.epochs = math.ceil(total_steps / steps_per_epoch)
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.bar = _is_terminal(self.stream)
        self.interval = interval
        self.clock = clock
        self._epoch = self._epoch_start = self._epoch_end = 0
        self._progbar = None
        self._last_line = None

    def start_epoch(self, epoch: int, step: int, epoch_end: int) -> None:
        """Epoch `epoch` (from 0) runs from iteration `step` to `epoch_end`."""
        self._epoch, self._epoch_start, self._epoch_end = epoch, step, epoch_end
        if self.enabled and self.bar:
            self._progbar = keras.utils.Progbar(
                epoch_end - step, stateful_metrics=["loss", "accuracy", "lr"]
            )

    def update(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        """The train metrics after iteration `step` (the running means of the epoch)."""
        if not self.enabled:
            return
        if self.bar:
            values = [("loss", loss), ("accuracy", accuracy), ("lr", lr)]
            self._progbar.update(step - self._epoch_start, values)
            return
        now = self.clock()
        recent = self._last_line is not None and now - self._last_line < self.interval
        if recent and step < self._epoch_end:
            return
        self._last_line = now
        line = format_progress_line(
            self._epoch + 1, self.epochs, step, self.total_steps, loss, accuracy, lr
        )
        self.stream.write(line + "\n")
        self.stream.flush()


def _is_terminal(stream) -> bool:
    # A notebook's output is no terminal but redraws the bar as one does.
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def format_progress_line(
    epoch: int, epochs: int, step: int, total_steps: int, loss: float, accuracy: float, lr: float
) -> str:
    """One plain progress line: `epoch 2/10 iteration 300/4690 loss 0.4123 accuracy 0.8512
    lr 0.1` (epoch from 1, iteration counted over the whole training)."""
    return (
        f"epoch {epoch}/{epochs} iteration {step}/{total_steps} loss {loss:.4f} "
        f"accuracy {accuracy:.4f} lr {lr:g}"
    )


_PROGRESS_LINE = re.compile(
    r"^epoch (\d+)/(\d+) iteration (\d+)/(\d+) loss (\S+) accuracy (\S+) lr (\S+)$"
)


def parse_progress_line(line: str) -> dict | None:
    """The numbers of a `format_progress_line` line (keys `epoch`, `epochs`, `step`,
    `total_steps`, `loss`, `accuracy`, `lr`), or None for any other line."""
    match = _PROGRESS_LINE.match(line.strip())
    if not match:
        return None
    names = ("epoch", "epochs", "step", "total_steps", "loss", "accuracy", "lr")
    try:
        return {
            name: (int if index < 4 else float)(value)
            for index, (name, value) in enumerate(zip(names, match.groups(), strict=True))
        }
    except ValueError:
        return None


class Trainer:
    """Trains a Keras model with a custom, resumable, distributed loop.

    Args:
        model: The model, created in `strategy.scope()`. It must output logits.
        config: The training settings.
        train_data: `epoch, skip_batches -> tf.data.Dataset` of one epoch's `(x, y)` global
            batches, skipping the first `skip_batches`; its order must depend only on the epoch.
        eval_data: `() -> tf.data.Dataset` of `(x, y)` evaluation batches.
        steps_per_epoch: Iterations in one epoch.
        output_dir: Where checkpoints, snapshots and TensorBoard logs go. With several
            workers only the chief writes there; every worker resumes from the chief's
            checkpoints, so `output_dir` must be on a filesystem they all see.
        strategy: The `tf.distribute` strategy (default: the current one).
        on_step: Called as `on_step(step, state)` before the iteration `step` runs, for every
            step in `hook_steps` (and once more with the final step); the pruning hook. It may
            change the model's masks.
        should_stop: Polled between calls of the compiled training function (every
            `config.steps_per_execution` iterations at most); when it returns True (on any
            worker: they agree), a checkpoint is written and `Interrupted` is raised.
        start_step: Where a fresh run starts (rewinding: the schedule and the data order
            resume there); ignored when a checkpoint is restored.
        keep_steps: Iterations at which the model's variables are saved for good, as
            `snapshots/step-<n>.npz` (the weights after n iterations; see `load_snapshot`).
        hook_steps: The iterations `on_step` needs to see; None: every iteration (which runs
            the iterations one compiled call at a time).
    """

    def __init__(
        self,
        model: keras.Model,
        config: TrainConfig,
        train_data: Callable[[int, int], tf.data.Dataset],
        eval_data: Callable[[], tf.data.Dataset],
        steps_per_epoch: int,
        output_dir: str,
        strategy: tf.distribute.Strategy | None = None,
        on_step: Callable[[int, TrainState], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        start_step: int = 0,
        keep_steps: Sequence[int] = (),
        hook_steps: Sequence[int] | None = None,
    ):
        config.validate()
        if config.deterministic:
            enable_determinism()
        self.model = model
        self.config = config
        self.train_data = train_data
        self.eval_data = eval_data
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.output_dir = output_dir
        self.checkpoint_dir = os.path.join(output_dir, "checkpoints")
        self.strategy = strategy or tf.distribute.get_strategy()
        self.on_step = on_step or (lambda step, state: None)
        self.should_stop = should_stop or (lambda: False)
        self.start_step = int(start_step)
        if not 0 <= self.start_step < self.total_steps:
            raise ConfigError(
                f"training cannot start at iteration {start_step}: it lasts {self.total_steps}"
            )
        self.keep_steps = {int(s) for s in keep_steps}
        self.hook_steps = None if hook_steps is None else {int(s) for s in hook_steps}
        self.snapshot_dir = os.path.join(output_dir, "snapshots")
        self.is_chief, self.num_workers = worker_role(self.strategy)
        with self.strategy.scope():
            self.schedule = config.schedule(self.steps_per_epoch)
            self.optimizer = SGD(self.schedule, config.momentum, config.weight_decay)
            self.optimizer.build(model.trainable_variables)
            self._sums = {
                name: tf.Variable(
                    0.0,
                    trainable=False,
                    dtype=tf.float64,
                    aggregation=tf.VariableAggregation.SUM,
                    synchronization=tf.VariableSynchronization.ON_READ,
                )
                for name in ("loss", "correct", "count")
            }
        self._train_steps = self._make_train_steps()
        self._eval_step = self._make_eval_step()
        self._any_worker = None

    def run(self) -> TrainState:
        """Trains to the end, resuming from the newest checkpoint; returns the final state."""
        if self.is_chief:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        state = self.restore()
        if self.num_workers > 1:
            self._check_same_step(0 if state is None else state.step)
        if state is None:
            state = TrainState(step=self.start_step)
            self.optimizer.iterations.assign(self.start_step)
        else:
            logging.info("resuming at iteration %d of %d", state.step, self.total_steps)
        writer = (
            tf.summary.create_file_writer(os.path.join(self.output_dir, "tensorboard"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        started = time.time() - state.wall_seconds
        progress = ProgressDisplay(self.total_steps, self.steps_per_epoch, self.config.progress)
        while state.step < self.total_steps:
            epoch = state.step // self.steps_per_epoch
            skip = state.step % self.steps_per_epoch
            epoch_end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
            epoch_started = time.time()
            self._reset_sums()
            if skip and state.sums:
                self._restore_sums(state.sums)
            progress.start_epoch(epoch, state.step, epoch_end)
            logging.info("epoch %d: iterations %d to %d", epoch + 1, state.step, epoch_end)
            iterator = iter(
                self.strategy.experimental_distribute_dataset(
                    _shard_by_data(self.train_data(epoch, skip).take(epoch_end - state.step))
                )
            )
            done = 0
            while state.step < epoch_end:
                self._before_step(state)
                count = self._next_call_length(state.step, done, epoch_end)
                try:
                    self._train_steps(iterator, tf.constant(count, tf.int32))
                except tf.errors.OutOfRangeError:
                    raise TrainingError(
                        f"the training data ended before iteration {state.step + count}, "
                        f"expected {epoch_end}"
                    ) from None
                state.step += count
                done += count
                if done % self.config.log_every_steps == 0 or state.step == epoch_end:
                    train = self._read_sums()
                    self._check_finite(train["loss"], state.step)
                    progress.update(
                        state.step,
                        train["loss"],
                        train["accuracy"],
                        self.learning_rate(state.step - 1),
                    )
                    with writer.as_default(step=state.step):
                        tf.summary.scalar("train/loss", train["loss"])
                        tf.summary.scalar("train/lr", self.learning_rate(state.step - 1))
                if state.step < epoch_end and self._stop_requested():
                    state.wall_seconds = time.time() - started
                    state.sums = self._sum_values()
                    self.save(state)
                    raise Interrupted(state.step)
            train = self._read_sums()
            evaluation = self.evaluate()
            record = {
                "epoch": epoch + 1,
                "step": state.step,
                "train_loss": train["loss"],
                "train_accuracy": train["accuracy"],
                "test_loss": evaluation["loss"],
                "test_accuracy": evaluation["accuracy"],
                "lr": self.learning_rate(state.step - 1),
                "seconds": time.time() - epoch_started,
            }
            state.history.append(record)
            logging.info(
                "epoch %d (iteration %d): train loss %.4f acc %.4f, test loss %.4f acc %.4f",
                epoch + 1,
                state.step,
                record["train_loss"],
                record["train_accuracy"],
                record["test_loss"],
                record["test_accuracy"],
            )
            # train/loss of this step went out with the last periodic log, just above.
            with writer.as_default(step=state.step):
                for key in ("train_accuracy", "test_loss", "test_accuracy"):
                    tf.summary.scalar(key.replace("_", "/", 1), record[key])
            writer.flush()
            state.wall_seconds = time.time() - started
            state.sums = {}
            self.save(state)
            if state.step < self.total_steps and self._stop_requested():
                raise Interrupted(state.step)
        self._before_step(state)
        return state

    def _next_call_length(self, step: int, done: int, epoch_end: int) -> int:
        """How many iterations the next compiled call runs from `step`: up to the next log
        line, hook step, snapshot step or the end of the epoch."""
        if self.hook_steps is None:
            return 1
        log = self.config.log_every_steps
        ends = [epoch_end, step + self.config.steps_per_execution, step + log - done % log]
        ends += [s for s in self.hook_steps | self.keep_steps if s > step]
        return min(ends) - step

    def _before_step(self, state: TrainState) -> None:
        hooked = self.hook_steps is None or state.step in self.hook_steps
        if hooked or state.step == self.total_steps:
            self.on_step(state.step, state)
        if state.step in self.keep_steps and self.is_chief:
            path = os.path.join(self.snapshot_dir, f"step-{state.step:09d}.npz")
            if not os.path.exists(path):
                os.makedirs(self.snapshot_dir, exist_ok=True)
                save_snapshot(self.model, path)

    def reset_optimizer_slots(self) -> None:
        """Zeroes the optimizer's buffers (momentum), keeping its iteration count."""
        for buffer in self.optimizer.momentums:
            buffer.assign(np.zeros(tuple(buffer.shape), dtype=buffer.dtype))

    def learning_rate(self, step: int) -> float:
        """The learning rate used at iteration `step`."""
        return float(self.schedule(step))

    def evaluate(self) -> dict[str, float]:
        """Mean loss and accuracy of the model on the evaluation data.

        With several replicas, every replica first takes the first replica's BatchNorm moving
        statistics: in training each replica normalises its share of the batch and updates
        its own copy, as PyTorch's DataParallel does, which keeps device 0's.
        """
        if self.strategy.num_replicas_in_sync > 1:
            copy_first_replica(self.strategy, self.model.non_trainable_variables)
        self._reset_sums()
        for x, y in self.strategy.experimental_distribute_dataset(_shard_by_data(self.eval_data())):
            self._eval_step(x, y)
        return self._read_sums()

    def _make_train_steps(self):
        model, optimizer, sums = self.model, self.optimizer, self._sums

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)
                per_example = keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True
                )
                loss = tf.nn.compute_average_loss(per_example)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(gradients, model.trainable_variables)
            _accumulate(sums, per_example, logits, y)

        # One trace serves the whole run: the iterator's element spec leaves the batch
        # dimension open (a short last batch), and `count` is a tensor.
        @tf.function
        def train_steps(iterator, count):
            for _ in tf.range(count):
                x, y = next(iterator)
                self.strategy.run(replica_step, args=(x, y))

        return train_steps

    def _make_eval_step(self):
        model, sums = self.model, self._sums

        def replica_step(x, y):
            logits = tf.cast(model(x, training=False), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            _accumulate(sums, per_example, logits, y)

        @tf.function
        def eval_step(x, y):
            self.strategy.run(replica_step, args=(x, y))

        return eval_step

    def _reset_sums(self) -> None:
        for variable in self._sums.values():
            variable.assign(0.0)

    def _sum_values(self) -> dict[str, float]:
        return {name: float(variable.numpy()) for name, variable in self._sums.items()}

    def _restore_sums(self, values: dict[str, float]) -> None:
        """Gives the first replica the sums of a checkpoint, the others zero."""
        names = sorted(self._sums)

        @tf.function
        def assign():
            first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
            for name in names:
                value = tf.constant(values.get(name, 0.0), tf.float64)
                self._sums[name].assign(tf.where(first, value, tf.zeros_like(value)))

        self.strategy.run(assign)

    def _read_sums(self) -> dict[str, float]:
        sums = self._sum_values()
        if not sums["count"]:
            return {"loss": float("nan"), "accuracy": float("nan")}
        return {"loss": sums["loss"] / sums["count"], "accuracy": sums["correct"] / sums["count"]}

    def _stop_requested(self) -> bool:
        """`should_stop()`, agreed between the workers: any worker asking stops them all."""
        stop = bool(self.should_stop())
        if self.num_workers == 1:
            return stop
        if self._any_worker is None:

            @tf.function
            def any_worker(flag):
                context = tf.distribute.get_replica_context()
                # An input placeholder has no device, and a collective needs one: copy the flag
                # under the replica's device scope.
                return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(flag))

            self._any_worker = any_worker
        total = self.strategy.run(self._any_worker, args=(tf.constant(float(stop)),))
        return float(self.strategy.experimental_local_results(total)[0]) > 0

    def _check_same_step(self, step: int) -> None:
        """Raises TrainingError unless every worker restored the same iteration."""

        @tf.function
        def moments():
            context = tf.distribute.get_replica_context()
            value = tf.constant(float(step), tf.float64)
            return context.all_reduce(
                tf.distribute.ReduceOp.SUM, [tf.ones_like(value), value, value * value]
            )

        results = self.strategy.run(moments)
        n, total, squares = (float(self.strategy.experimental_local_results(r)[0]) for r in results)
        # Equal values are the only ones with n * sum(s^2) == (sum(s))^2.
        if n * squares != total * total:
            raise TrainingError(
                f"the workers resumed from different iterations (this one from {step}): put "
                "the output directory on a filesystem every worker sees"
            )

    def _check_finite(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss} by iteration {step}; lower the learning rate "
                f"(the last good checkpoint in {self.checkpoint_dir} is kept)"
            )

    # Checkpoints: a directory per checkpoint, written under a temporary name and renamed.

    def _variables(self):
        return list(self.model.variables) + list(self.optimizer.variables)

    def save(self, state: TrainState) -> str | None:
        """Writes a checkpoint of the model, the optimizer and `state`; returns its path.

        Only the chief writes (the other workers hold the same values); elsewhere this
        returns None.
        """
        if not self.is_chief:
            return None
        variables = self._variables()
        target = os.path.join(self.checkpoint_dir, f"{CHECKPOINT_PREFIX}{state.step:09d}")
        tmp = make_temp_dir(self.checkpoint_dir)
        try:
            with open(os.path.join(tmp, "variables.npz"), "wb") as f:
                _write_variables(f, variables)
            metadata = dataclasses.asdict(state)
            metadata["paths"] = [v.path for v in variables]
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(metadata, f)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in checkpoints(self.checkpoint_dir)[self.config.keep_checkpoints :]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def restore(self) -> TrainState | None:
        """Loads the newest readable checkpoint into the model and optimizer, if there is one.

        A damaged checkpoint (a file truncated, garbled or missing) is skipped for the next
        older one, whichever of its files is broken.

        Raises:
            ConfigError: if a checkpoint holds the variables of another model (its variable
                paths or shapes differ from the model's): restoring it would be wrong.
        """
        for path in checkpoints(self.checkpoint_dir):
            try:
                return self._load(path)
            except ConfigError as error:
                raise ConfigError(
                    f"{error}; train it in another output directory, or overwrite that one"
                ) from None
            except _DAMAGED as error:
                logging.warning(
                    "checkpoint %s is unreadable (%s); trying an older one", path, _reason(error)
                )
        return None

    def _load(self, path: str) -> TrainState:
        with open(os.path.join(path, "state.json")) as f:
            metadata = json.load(f)
        if not isinstance(metadata, dict):
            raise ValueError("state.json does not hold a JSON object")
        paths = metadata.pop("paths", None)
        state = TrainState(**metadata)
        variables = self._variables()
        archive = os.path.join(path, "variables.npz")
        _assign(variables, _read_variables(archive, variables, f"checkpoint {path}", paths))
        return state


# What reading a damaged checkpoint file raises (numpy, zipfile, json, the TrainState fields).
_DAMAGED = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def _write_variables(f, variables: Sequence) -> None:
    """Writes the values of `variables` and their paths as an `.npz` archive to `f`."""
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    np.savez(f, paths=np.array([v.path for v in variables]), **arrays)


def _read_variables(
    path: str, variables: Sequence, what: str, paths: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Reads the values `_write_variables` wrote for `variables`, checking each variable's path.

    Args:
        path: The `.npz` file.
        variables: The variables the values are for, in the order they were written.
        what: How errors name the file ("checkpoint ...", "snapshot ...").
        paths: The paths stored beside the file, for a file that holds none (checkpoints
            written before the archive held them).

    Raises:
        ConfigError: naming the first variable whose path or shape differs, or the counts.
        The errors of a damaged file (`_DAMAGED`) otherwise.
    """
    with np.load(path) as data:
        stored = [str(p) for p in data["paths"]] if "paths" in data.files else paths
        if stored is None:
            raise KeyError("the file lists no variable paths")
        values = [data[f"v{i}"] for i in range(min(len(stored), len(variables)))]
    for i, (variable, name) in enumerate(zip(variables, stored, strict=False)):
        if not _same_path(variable.path, name) or tuple(variable.shape) != values[i].shape:
            raise ConfigError(
                f"{what} was written by another model: its variable {i} is {name!r} of shape "
                f"{values[i].shape}, the model's is {variable.path!r} of shape "
                f"{tuple(variable.shape)}"
            )
    if len(stored) != len(variables):
        raise ConfigError(
            f"{what} was written by another model: it holds {len(stored)} variables, the model "
            f"{len(variables)}"
        )
    return values


def _same_path(a: str, b: str) -> bool:
    """Whether two variable paths name the same variable, up to the `_<n>` suffixes Keras adds
    to make automatic names unique in a process (a model rebuilt in the same process is
    `sequential_1/dense_1/kernel` where it was `sequential/dense/kernel`)."""
    return a == b or _AUTO_SUFFIX.sub("", a) == _AUTO_SUFFIX.sub("", b)


_AUTO_SUFFIX = re.compile(r"_\d+(?=[/_]|$)")


def _assign(variables: Sequence, values: Sequence[np.ndarray]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


class Interrupted(Exception):
    """Training stopped on request after writing a checkpoint."""

    def __init__(self, step: int):
        super().__init__(f"training interrupted at iteration {step}; a checkpoint was written")
        self.step = step


def save_snapshot(model: keras.Model, path: str) -> None:
    """Writes every variable of `model` (weights, BN statistics, masks) to `path` atomically."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        _write_variables(f, model.variables)


def load_snapshot(model: keras.Model, path: str) -> None:
    """Assigns the variables saved by `save_snapshot` to `model`, each to the variable of the
    same path.

    Raises:
        ConfigError: if the snapshot holds another model's variables (naming the first that
            differs).
        OutputError: if the file is damaged.
    """
    try:
        values = _read_variables(path, model.variables, f"snapshot {path}")
    except ConfigError:
        raise
    except _DAMAGED as error:
        raise OutputError(
            f"snapshot {path} is unreadable ({_reason(error)}): delete the run directory that "
            "holds it to compute it again"
        ) from None
    _assign(model.variables, values)


def checkpoints(checkpoint_dir: str) -> list[str]:
    """The checkpoint directories in `checkpoint_dir`, newest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    names = [n for n in os.listdir(checkpoint_dir) if n.startswith(CHECKPOINT_PREFIX)]
    return [os.path.join(checkpoint_dir, n) for n in sorted(names, reverse=True)]


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Splits each global batch between the workers (every worker reads the same batches),
    so that a multi-worker run sees the data in the order of a single-worker run."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _accumulate(sums, per_example, logits, labels) -> None:
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), labels), tf.float64)
    sums["loss"].assign_add(tf.reduce_sum(tf.cast(per_example, tf.float64)))
    sums["correct"].assign_add(tf.reduce_sum(correct))
    sums["count"].assign_add(tf.cast(tf.size(labels), tf.float64))
