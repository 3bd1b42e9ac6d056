"""The training loop: a resumable, distributed loop that calls its callbacks' hooks.

The loop runs inside a `tf.distribute` strategy: the model and optimizer must be created in
its scope, the train step runs per replica through `strategy.run`, and the global batch is
split across replicas. It resumes from the newest readable checkpoint; evaluation, logging,
TensorBoard, snapshots, checkpoints and mask updates are callbacks (`tfprune.training.callbacks`).
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfprune.errors import ConfigError, TrainingError
from tfprune.pruning.masks import checked_positions
from tfprune.training.acceleration import check_precision, loss_scaled, uses_xla
from tfprune.training.callbacks import (
    Callback,
    Checkpointing,
    Evaluation,
    ProgressLogger,
    Snapshots,
    StepFunction,
    TensorBoard,
)
from tfprune.training.checkpoint import restore_checkpoint, save_checkpoint
from tfprune.training.config import TrainConfig, TrainState
from tfprune.training.distribute import (
    StopAgreement,
    check_same_step,
    copy_first_replica,
    shard_by_data,
    worker_role,
)
from tfprune.training.optim import SGD


def enable_determinism(seed: int | None = None) -> None:
    """Makes TensorFlow's ops deterministic and, given a seed, seeds Python, NumPy and TF.

    `tf.config.experimental.enable_op_determinism` holds for the whole process; ops without a
    deterministic implementation then raise instead of running.

    Example:

    >>> enable_determinism(seed=0)
    """
    tf.config.experimental.enable_op_determinism()
    if seed is not None:
        keras.utils.set_random_seed(seed)


class Interrupted(Exception):
    """Training stopped on request after writing a checkpoint."""

    def __init__(self, step: int):
        super().__init__(f"training interrupted at iteration {step}; a checkpoint was written")
        self.step = step


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
            change the model's masks. (A `callbacks.StepFunction`.)
        should_stop: Polled between calls of the compiled training function (every
            `config.steps_per_execution` iterations at most); when it returns True (on any
            worker: they agree), a checkpoint is written and `Interrupted` is raised.
        start_step: Where a fresh run starts (rewinding: the schedule and the data order
            resume there); ignored when a checkpoint is restored.
        keep_steps: Iterations at which the model's variables are saved for good, as
            `snapshots/step-<n>.npz` (the weights after n iterations; see `load_snapshot`).
        hook_steps: The iterations `on_step` needs to see; None: every iteration (which runs
            the iterations one compiled call at a time; pass `()` when only `callbacks` need
            to see iterations).
        callbacks: More hooks (`Callback`), called after `on_step` and before the progress,
            TensorBoard, snapshot and checkpoint callbacks (see `tfprune.training.callbacks`).

    Attributes:
        jit_compile: Whether the steps are compiled with XLA (`config.jit_compile` resolved
            for this model and strategy; see `TrainConfig`).
        optimizer: The SGD that updates the model.
        loss_scale: The `keras.optimizers.LossScaleOptimizer` around `optimizer` under
            `config.precision = "mixed_float16"`, else None.

    Raises:
        ConfigError: for a setting that cannot be trained with, or a model built under
            another dtype policy than `config.precision`.

    Example:

    >>> trainer = Trainer(model, TrainConfig(epochs=2), train_data, eval_data, 469, "run",
    ...                   hook_steps=(), callbacks=[MyMaskUpdate(steps=[100, 200])])
    >>> state = trainer.run()
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
        callbacks: Sequence[Callback] = (),
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
        self.should_stop = should_stop or (lambda: False)
        self.start_step = int(start_step)
        if not 0 <= self.start_step < self.total_steps:
            raise ConfigError(
                f"training cannot start at iteration {start_step}: it lasts {self.total_steps}"
            )
        self.is_chief, self.num_workers = worker_role(self.strategy)
        check_precision(config.precision, model)
        self.jit_compile = uses_xla(config.jit_compile, model, self.strategy)
        # Even without `on_step`, the default `hook_steps=None` runs one iteration a call.
        if on_step is None and hook_steps is not None:
            adapter = []
        else:
            adapter = [StepFunction(on_step, hook_steps)]
        self.callbacks = [
            Evaluation(),
            *adapter,
            *callbacks,
            ProgressLogger(),
            TensorBoard(),
            Snapshots(keep_steps),
            Checkpointing(),
        ]
        with self.strategy.scope():
            self.schedule = config.schedule(self.steps_per_epoch)
            self.optimizer = SGD(self.schedule, config.momentum, config.weight_decay)
            self.loss_scale = loss_scaled(config.precision, self.optimizer)
            (self.loss_scale or self.optimizer).build(model.trainable_variables)
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
        self._gradients = None  # traced by `loss_gradients` on first use
        self._stop_agreement = StopAgreement(self.strategy, self.num_workers)
        # Set by `run` from the callbacks' `hook_steps`.
        self._hooks, self._stops, self._every_step = [], [], True

    def run(self) -> TrainState:
        """Trains to the end, resuming from the newest checkpoint; returns the final state.

        Raises:
            Interrupted: when `should_stop` asked, once a checkpoint is written.
            TrainingError: if the loss is no longer finite or the training data ends early.
            ConfigError: if the output directory holds the checkpoints of another model.
        """
        if self.is_chief:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        state = self.restore()
        if self.num_workers > 1:
            check_same_step(self.strategy, 0 if state is None else state.step)
        if state is None:
            state = TrainState(step=self.start_step)
            self.optimizer.iterations.assign(self.start_step)
        else:
            logging.info("resuming at iteration %d of %d", state.step, self.total_steps)
        self._plan_hooks()
        self._call("on_train_begin", state)
        started = time.time() - state.wall_seconds
        while state.step < self.total_steps:
            self._run_epoch(state, started)
        self._before_step(state)
        self._call("on_train_end", state)
        return state

    def _run_epoch(self, state: TrainState, started: float) -> None:
        """Runs the epoch that `state.step` is in, from there to its end."""
        epoch = state.step // self.steps_per_epoch
        skip = state.step % self.steps_per_epoch
        epoch_end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
        epoch_started = time.time()
        self._reset_sums()
        if skip and state.sums:
            self._restore_sums(state.sums)
        self._call("on_epoch_begin", state, epoch, epoch_end)
        iterator = iter(
            self.strategy.experimental_distribute_dataset(
                shard_by_data(self.train_data(epoch, skip).take(epoch_end - state.step))
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
                metrics = {**train, "lr": self.learning_rate(state.step - 1)}
                self._call("on_log", state, metrics)
            if state.step < epoch_end and self._stop_requested():
                state.wall_seconds = time.time() - started
                state.sums = self._sum_values()
                self._call("on_interrupt", state)
                raise Interrupted(state.step)
        train = self._read_sums()
        logs = {
            "epoch": epoch + 1,
            "step": state.step,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
        }
        self._call("on_evaluate", state, logs)
        logs["lr"] = self.learning_rate(state.step - 1)
        logs["seconds"] = time.time() - epoch_started
        state.history.append(logs)
        state.wall_seconds = time.time() - started
        state.sums = {}
        self._call("on_epoch_end", state, logs)
        if state.step < self.total_steps and self._stop_requested():
            raise Interrupted(state.step)

    def _call(self, hook: str, state: TrainState, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, state, *args)

    def _plan_hooks(self) -> None:
        """Asks each callback for its steps: who sees which iteration, and where the compiled
        calls stop."""
        self._hooks, stops = [], set()
        for callback in self.callbacks:
            steps = callback.hook_steps(self)
            steps = None if steps is None else frozenset(int(s) for s in steps)
            self._hooks.append((callback, steps))
            stops |= steps or set()
        self._every_step = any(steps is None for _, steps in self._hooks)
        self._stops = sorted(stops)

    def _next_call_length(self, step: int, done: int, epoch_end: int) -> int:
        """How many iterations the next compiled call runs from `step`: up to the next log
        line, hook step or the end of the epoch."""
        if self._every_step:
            return 1
        log = self.config.log_every_steps
        ends = [epoch_end, step + self.config.steps_per_execution, step + log - done % log]
        following = bisect.bisect_right(self._stops, step)
        if following < len(self._stops):
            ends.append(self._stops[following])
        return min(ends) - step

    def _before_step(self, state: TrainState) -> None:
        """Calls `on_step_begin` of the callbacks that asked for iteration `state.step`."""
        for callback, steps in self._hooks:
            if steps is None or state.step in steps:
                callback.on_step_begin(self, state)

    def reset_optimizer_slots(
        self, positions: Mapping[str, np.ndarray | None] | None = None
    ) -> None:
        """Zeroes the optimizer's buffers (momentum), keeping its iteration count.

        Args:
            positions: `{trainable variable path: None (the whole buffer) or a boolean array
                of the variable's shape (the entries to zero, for example the weights RigL
                regrows)}`; None: every buffer.

        Raises:
            ConfigError: for a path that names no trainable variable, or an array of another
                shape (nothing is reset then).

        Example:

        >>> trainer.reset_optimizer_slots({"fc1/kernel": regrown})
        """
        if positions is None:
            positions = {v.path: None for v in self.model.trainable_variables}
        trainable = checked_positions(self.model, positions)
        for path, where in positions.items():
            where = None if where is None else np.asarray(where, dtype=bool)
            self.optimizer.reset_slots(trainable[path], where)

    def batch(self, step: int) -> tuple:
        """The global batch `(x, y)` that iteration `step` trains on.

        The training data is a pure function of the epoch, so this is the batch the loop
        feeds (or fed) to that iteration, read again from `train_data`.

        Raises:
            ConfigError: for a step outside training.
            TrainingError: if the training data ends before that batch.

        Example:

        >>> x, y = trainer.batch(state.step)  # in a hook: the batch about to be trained on
        """
        if not 0 <= step < self.total_steps:
            raise ConfigError(
                f"iteration {step} is outside training (iterations 0 to {self.total_steps - 1})"
            )
        epoch, skip = divmod(int(step), self.steps_per_epoch)
        for x, y in self.train_data(epoch, skip).take(1):
            return x, y
        raise TrainingError(f"the training data holds no batch for iteration {step}")

    def loss_gradients(
        self, x, y, values: Mapping[str, np.ndarray | tf.Tensor] | None = None
    ) -> dict[str, np.ndarray]:
        """Gradients of the training loss on the batch `(x, y)`, changing nothing.

        The loss is the one the loop minimises, the mean sparse cross-entropy of the logits
        over the batch (the optimizer adds the weight decay; regularization losses of the
        model are left out). The model runs statelessly in training mode: BatchNorm uses the
        batch's statistics and its moving averages stay as they are.

        Args:
            x, y: A global batch, for example `batch(step)`.
            values: `{variable path: value}` to use instead of the variables' values
                (trainable or not). For example the masked kernel `kernel * mask` with the mask
                at ones gives the gradient with respect to the masked weights' values, dense,
                which RigL grows from.

        Returns:
            `{trainable variable path: gradient}` (float32 arrays of the variables' shapes).

        Raises:
            ConfigError: for a path that names no variable of the model, or a value of
                another shape.

        Example:

        >>> grads = trainer.loss_gradients(*trainer.batch(100))
        """
        # Imported here: the loop itself does not need the pruning stage's stateless call.
        from tfprune.pruning.scorers import stateless_outputs, variable_values

        model = self.model
        values = dict(values or {})
        variables = {v.path: v for v in model.variables}
        for path, value in values.items():
            if path not in variables:
                raise ConfigError(f"no variable of the model has the path {path!r}")
            if tuple(np.shape(value)) != tuple(variables[path].shape):
                raise ConfigError(
                    f"a value of shape {tuple(np.shape(value))} for {path}, whose shape is "
                    f"{tuple(variables[path].shape)}"
                )

        def replaced(group):
            current = variable_values(group)
            return [
                tf.convert_to_tensor(values[v.path], dtype=v.dtype) if v.path in values else c
                for v, c in zip(group, current, strict=True)
            ]

        if self._gradients is None:

            @tf.function(reduce_retracing=True)
            def gradients(trainable, non_trainable, x, y):
                with tf.GradientTape() as tape:
                    tape.watch(trainable)
                    logits = stateless_outputs(model, trainable, non_trainable, x, True)
                    loss = tf.reduce_mean(
                        keras.losses.sparse_categorical_crossentropy(
                            y, tf.cast(logits, tf.float32), from_logits=True
                        )
                    )
                grads = tape.gradient(
                    loss, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )
                return [tf.convert_to_tensor(g) for g in grads]

            self._gradients = gradients
        grads = self._gradients(
            replaced(model.trainable_variables), replaced(model.non_trainable_variables), x, y
        )
        trainable = model.trainable_variables
        return {v.path: np.asarray(g.numpy()) for v, g in zip(trainable, grads, strict=True)}

    def learning_rate(self, step: int) -> float:
        """The learning rate used at iteration `step`."""
        return float(self.schedule(step))

    def train_steps(self, dataset: tf.data.Dataset, count: int) -> dict[str, float]:
        """Runs `count` iterations of the compiled training step on `dataset`'s global batches,
        outside `run` (no hooks, logs or checkpoints); returns when they are done.

        Returns:
            The mean train `loss` and `accuracy` over these iterations.

        Raises:
            TrainingError: if `dataset` holds fewer than `count` batches.

        Example:

        >>> trainer.train_steps(tf.data.Dataset.from_tensors((x, y)).repeat(10), 10)
        """
        self._reset_sums()
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        try:
            self._train_steps(iterator, tf.constant(count, tf.int32))
        except tf.errors.OutOfRangeError:
            raise TrainingError(f"the dataset holds fewer than {count} batches") from None
        return self._read_sums()

    def evaluate(self) -> dict[str, float]:
        """Mean loss and accuracy of the model on the evaluation data.

        With several replicas, every replica first takes the first replica's BatchNorm moving
        statistics: in training each replica normalises its share of the batch and updates
        its own copy, as PyTorch's DataParallel does, which keeps device 0's.
        """
        if self.strategy.num_replicas_in_sync > 1:
            copy_first_replica(self.strategy, self.model.non_trainable_variables)
        self._reset_sums()
        for x, y in self.strategy.experimental_distribute_dataset(shard_by_data(self.eval_data())):
            self._eval_step(x, y)
        return self._read_sums()

    def _make_train_steps(self):
        model, optimizer, sums = self.model, self.optimizer, self._sums
        loss_scale = self.loss_scale

        def gradients_of(x, y):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)
                per_example = keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True
                )
                loss = tf.nn.compute_average_loss(per_example)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                if loss_scale is not None:
                    loss = loss_scale.scale_loss(loss)
            return tape.gradient(loss, model.trainable_variables), per_example, logits

        def update(gradients, per_example, logits, y):
            (loss_scale or optimizer).apply(gradients, model.trainable_variables)
            _accumulate(sums, per_example, logits, y)

        def whole_step(x, y):
            update(*gradients_of(x, y), y)

        if not self.jit_compile:
            replica_step = whole_step
        elif self.strategy.num_replicas_in_sync == 1:
            replica_step = tf.function(whole_step, jit_compile=True)
        else:
            # The optimizer sums the replicas' gradients with a `merge_call`, which XLA
            # compiles only on GPUs: the forward and backward passes are compiled, each on
            # its replica's device (XLA would run every replica's on the first device).
            compiled = tf.function(gradients_of, jit_compile=True)

            def replica_step(x, y):
                with tf.device(x.device):
                    gradients, per_example, logits = compiled(x, y)
                update(gradients, per_example, logits, y)

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

        def outputs_of(x, y):
            logits = tf.cast(model(x, training=False), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            return per_example, logits

        if self.jit_compile:
            compiled = tf.function(outputs_of, jit_compile=True)

            def replica_step(x, y):
                with tf.device(x.device):
                    per_example, logits = compiled(x, y)
                _accumulate(sums, per_example, logits, y)

        else:

            def replica_step(x, y):
                _accumulate(sums, *outputs_of(x, y), y)

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
        return self._stop_agreement(bool(self.should_stop()))

    def _check_finite(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss} by iteration {step}; lower the learning rate "
                f"(the last good checkpoint in {self.checkpoint_dir} is kept)"
            )

    def _variables(self):
        return list(self.model.variables) + list((self.loss_scale or self.optimizer).variables)

    def save(self, state: TrainState) -> str | None:
        """Writes a checkpoint of the model, the optimizer and `state`; returns its path.

        Only the chief writes (the other workers hold the same values); elsewhere this
        returns None.
        """
        if not self.is_chief:
            return None
        return save_checkpoint(
            self.checkpoint_dir, self._variables(), state, self.config.keep_checkpoints
        )

    def restore(self) -> TrainState | None:
        """Loads the newest readable checkpoint into the model and optimizer, if there is one.

        A damaged checkpoint (a file truncated, garbled or missing) is skipped for the next
        older one, whichever of its files is broken.

        Raises:
            ConfigError: if a checkpoint holds the variables of another model (its variable
                paths or shapes differ from the model's): restoring it would be wrong.
        """
        return restore_checkpoint(self.checkpoint_dir, self._variables())


def _accumulate(sums, per_example, logits, labels) -> None:
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), labels), tf.float64)
    sums["loss"].assign_add(tf.reduce_sum(tf.cast(per_example, tf.float64)))
    sums["correct"].assign_add(tf.reduce_sum(correct))
    sums["count"].assign_add(tf.cast(tf.size(labels), tf.float64))
