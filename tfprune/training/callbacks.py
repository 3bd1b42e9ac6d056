"""What the training loop calls: a small `Callback` base and the callbacks it runs.

`Trainer` runs, in this order: `Evaluation`, the `on_step` adapter (`StepFunction`), the
callbacks it was given, `ProgressLogger`, `TensorBoard`, `Snapshots` and `Checkpointing`; so a
checkpoint holds what the callbacks before it changed, and a snapshot at step n holds the masks
a mask update at n set. `MaskUpdate` is the hook of pruning during training: gradual magnitude
pruning, and dynamic sparse training (SET, RigL) that drops and regrows weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from absl import logging

from tfprune.errors import ConfigError
from tfprune.layers import prunable_weights
from tfprune.training.checkpoint import save_snapshot
from tfprune.training.config import TrainState
from tfprune.training.progress import ProgressDisplay

if TYPE_CHECKING:
    from tfprune.training.loop import Trainer


class Callback:
    """Hooks of the training loop; each does nothing unless a subclass overrides it.

    Every hook gets the `Trainer` (its model, optimizer, strategy, settings) and the
    `TrainState`. The loop calls them in this order:

    - `on_train_begin` once `run` has restored the newest checkpoint (or starts afresh);
    - per epoch: `on_epoch_begin`; `on_step_begin` before the compiled calls that start at one
      of the callback's `hook_steps`; `on_log` with the running train metrics; at the epoch's
      end `on_evaluate`, then `on_epoch_end`;
    - `on_interrupt` when a stop is requested in the middle of an epoch (an `Interrupted`
      error follows);
    - after the last epoch, `on_step_begin` at `trainer.total_steps` if the callback asks for
      that step, then `on_train_end`.

    Example:

    >>> class PrintLoss(Callback):
    ...     def on_log(self, trainer, state, metrics):
    ...         print(state.step, metrics["loss"])
    """

    def hook_steps(self, trainer: Trainer) -> Iterable[int] | None:
        """The iterations before which `on_step_begin` runs; the compiled training calls stop
        there. None: every iteration (one iteration a call). Asked once per `run`.

        Returns:
            Iterations from `trainer.start_step` to `trainer.total_steps` (the end of
            training) or None; the default is none.
        """
        return ()

    def on_train_begin(self, trainer: Trainer, state: TrainState) -> None:
        """Training starts (or resumes) at iteration `state.step`."""

    def on_epoch_begin(self, trainer: Trainer, state: TrainState, epoch: int, epoch_end: int):
        """Epoch `epoch` (from 0) runs from iteration `state.step` to `epoch_end`."""

    def on_step_begin(self, trainer: Trainer, state: TrainState) -> None:
        """Before iteration `state.step` runs (after `state.step` iterations): the model, its
        masks and the optimizer's slots may be changed here."""

    def on_log(self, trainer: Trainer, state: TrainState, metrics: dict[str, float]) -> None:
        """The epoch's running train metrics (`loss`, `accuracy`, and `lr` of the last
        iteration) every `config.log_every_steps` iterations and at the epoch's end."""

    def on_evaluate(self, trainer: Trainer, state: TrainState, logs: dict) -> None:
        """The epoch's iterations are done: add metrics to its record `logs` (which holds
        `epoch`, `step`, `train_loss`, `train_accuracy`)."""

    def on_epoch_end(self, trainer: Trainer, state: TrainState, logs: dict) -> None:
        """The epoch's record `logs` is complete (`lr` and `seconds` added) and is the last
        of `state.history`."""

    def on_interrupt(self, trainer: Trainer, state: TrainState) -> None:
        """Training stops in the middle of an epoch; `state.sums` holds its running sums."""

    def on_train_end(self, trainer: Trainer, state: TrainState) -> None:
        """Training reached `trainer.total_steps`."""


class MaskUpdate(Callback):
    """Changes masks before chosen iterations: the hook of pruning during training.

    Before each iteration in `hook_steps`, `update` returns new masks for some prunable
    kernels. They are assigned; the weights they regrow (mask 0 → 1) start at zero with zeroed
    optimizer slots, as SET and RigL ask (SPEC §7); the weights they drop keep their values
    under the mask (the forward pass uses `kernel * mask`, so they get no gradient and act as
    zero). The compiled training calls stop at those iterations, so `update` sees the model
    after exactly `state.step` iterations, and later checkpoints hold the new masks.

    With several workers every worker must return the same masks (draw them from the same
    seed, or `copy_first_replica` what `update` changed).

    Args:
        steps: The iterations before which `update` runs (None: every iteration).
            A subclass may instead override `hook_steps`, for example to derive them from
            `trainer.total_steps`.

    Example:

    >>> class DropHalf(MaskUpdate):  # at iteration 100, prunes the first half of a kernel
    ...     def update(self, trainer, state):
    ...         mask = np.ones((784, 300), np.float32)
    ...         mask[:392] = 0
    ...         return {"fc1/kernel": mask}
    >>> trainer = Trainer(..., callbacks=[DropHalf(steps=[100])])
    """

    def __init__(self, steps: Iterable[int] | None = ()):
        self.steps = None if steps is None else frozenset(int(s) for s in steps)

    def hook_steps(self, trainer: Trainer) -> Iterable[int] | None:
        return self.steps

    def update(self, trainer: Trainer, state: TrainState) -> Mapping[str, np.ndarray]:
        """The new masks before iteration `state.step`.

        It may also change weights, or reset optimizer slots through
        `trainer.reset_optimizer_slots`.

        Returns:
            `{kernel path: 0/1 array of the kernel's shape}` for the kernels whose masks
            change; the others keep theirs.
        """
        raise NotImplementedError

    def on_step_begin(self, trainer: Trainer, state: TrainState) -> None:
        masks = self.update(trainer, state)
        if masks:
            _assign_some_masks(trainer, masks, type(self).__name__)


def _assign_some_masks(trainer: Trainer, masks: Mapping[str, np.ndarray], source: str) -> None:
    """Assigns `masks` (some of the model's) and starts the weights they regrow at zero with
    zeroed optimizer slots."""
    weights = prunable_weights(trainer.model)
    values = {}
    for path, mask in masks.items():
        if path not in weights:
            raise ConfigError(f"{source} returned a mask for {path!r}, no prunable kernel")
        value = np.asarray(mask)
        if value.shape != tuple(weights[path].mask.shape):
            raise ConfigError(
                f"{source} returned a mask of shape {value.shape} for {path}, whose kernel has "
                f"shape {tuple(weights[path].mask.shape)}"
            )
        if not np.all((value == 0) | (value == 1)):
            raise ConfigError(f"{source} returned a mask for {path} with values other than 0, 1")
        values[path] = value
    # Assigned only once every mask is checked, so a rejected update leaves the model unchanged.
    regrown = {}
    for path, value in values.items():
        weight = weights[path]
        grown = (value == 1) & (np.asarray(weight.mask.numpy()) == 0)
        if grown.any():
            kernel = np.asarray(weight.kernel.numpy())
            weight.kernel.assign(np.where(grown, np.zeros_like(kernel), kernel))
            regrown[path] = grown
        weight.mask.assign(value.astype(weight.mask.dtype))
    if regrown:
        trainer.reset_optimizer_slots(regrown)


class StepFunction(MaskUpdate):
    """Calls `fn(step, state)` before each iteration in `steps` and at the end of training:
    `Trainer(on_step=fn, hook_steps=steps)`, the pruning at step t of `tfprune.experiment`.

    `fn` changes the model itself (and may call `trainer.reset_optimizer_slots`).

    Args:
        fn: The hook; None calls nothing (the steps still end the compiled calls).
        steps: Its iterations; None: every iteration.
    """

    def __init__(self, fn: Callable[[int, TrainState], None] | None, steps: Iterable[int] | None):
        super().__init__(steps)
        self.fn = fn

    def hook_steps(self, trainer: Trainer) -> Iterable[int] | None:
        return None if self.steps is None else self.steps | {trainer.total_steps}

    def update(self, trainer: Trainer, state: TrainState) -> Mapping[str, np.ndarray]:
        if self.fn is not None:
            self.fn(state.step, state)
        return {}


class Evaluation(Callback):
    """Evaluates the model at each epoch's end: `test_loss`, `test_accuracy` in its record."""

    def on_evaluate(self, trainer: Trainer, state: TrainState, logs: dict) -> None:
        evaluation = trainer.evaluate()
        logs["test_loss"] = evaluation["loss"]
        logs["test_accuracy"] = evaluation["accuracy"]


class ProgressLogger(Callback):
    """The progress on stdout (`ProgressDisplay`, if `config.progress`) and a log line at the
    start and end of each epoch."""

    def __init__(self):
        self.display = None

    def on_train_begin(self, trainer: Trainer, state: TrainState) -> None:
        self.display = ProgressDisplay(
            trainer.total_steps, trainer.steps_per_epoch, trainer.config.progress
        )

    def on_epoch_begin(self, trainer: Trainer, state: TrainState, epoch: int, epoch_end: int):
        self.display.start_epoch(epoch, state.step, epoch_end)
        logging.info("epoch %d: iterations %d to %d", epoch + 1, state.step, epoch_end)

    def on_log(self, trainer: Trainer, state: TrainState, metrics: dict[str, float]) -> None:
        self.display.update(state.step, metrics["loss"], metrics["accuracy"], metrics["lr"])

    def on_epoch_end(self, trainer: Trainer, state: TrainState, logs: dict) -> None:
        logging.info(
            "epoch %d (iteration %d): train loss %.4f acc %.4f, test loss %.4f acc %.4f",
            logs["epoch"],
            logs["step"],
            logs["train_loss"],
            logs["train_accuracy"],
            logs["test_loss"],
            logs["test_accuracy"],
        )


class TensorBoard(Callback):
    """Writes the metrics to `<output_dir>/tensorboard` (on the chief): `train/loss` and
    `train/lr` at each log, `train/accuracy`, `test/loss`, `test/accuracy` at each epoch's
    end, each tag once per iteration."""

    def __init__(self):
        self.writer = None

    def on_train_begin(self, trainer: Trainer, state: TrainState) -> None:
        self.writer = (
            tf.summary.create_file_writer(os.path.join(trainer.output_dir, "tensorboard"))
            if trainer.is_chief
            else tf.summary.create_noop_writer()
        )

    def on_log(self, trainer: Trainer, state: TrainState, metrics: dict[str, float]) -> None:
        with self.writer.as_default(step=state.step):
            tf.summary.scalar("train/loss", metrics["loss"])
            tf.summary.scalar("train/lr", metrics["lr"])

    def on_epoch_end(self, trainer: Trainer, state: TrainState, logs: dict) -> None:
        # train/loss of this step went out with the epoch's last log.
        with self.writer.as_default(step=state.step):
            for key in ("train_accuracy", "test_loss", "test_accuracy"):
                tf.summary.scalar(key.replace("_", "/", 1), logs[key])
        self.writer.flush()

    def on_train_end(self, trainer: Trainer, state: TrainState) -> None:
        self.writer.close()


class Snapshots(Callback):
    """Saves the model's variables for good before the iterations `steps`, as
    `<output_dir>/snapshots/step-<n>.npz` (the weights after n iterations; the chief writes,
    and a snapshot already there is kept; see `load_snapshot`).

    Args:
        steps: The iterations.
    """

    def __init__(self, steps: Iterable[int]):
        self.steps = frozenset(int(s) for s in steps)

    def hook_steps(self, trainer: Trainer) -> Iterable[int] | None:
        return self.steps

    def on_step_begin(self, trainer: Trainer, state: TrainState) -> None:
        if not trainer.is_chief:
            return
        directory = os.path.join(trainer.output_dir, "snapshots")
        path = os.path.join(directory, f"step-{state.step:09d}.npz")
        if not os.path.exists(path):
            os.makedirs(directory, exist_ok=True)
            save_snapshot(trainer.model, path)


class Checkpointing(Callback):
    """Writes a checkpoint (`Trainer.save`) at each epoch's end and when training is stopped
    in the middle of one."""

    def on_epoch_end(self, trainer: Trainer, state: TrainState, logs: dict) -> None:
        trainer.save(state)

    def on_interrupt(self, trainer: Trainer, state: TrainState) -> None:
        trainer.save(state)
