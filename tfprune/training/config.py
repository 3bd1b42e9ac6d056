"""How to train (SPEC §5) and what a checkpoint stores besides the variables.

This module imports neither TensorFlow nor Keras, so that a sweep can plan and check its
configurations without them; positions are step values (`tfprune.steps`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tfprune.errors import ConfigError
from tfprune.steps import to_iterations

if TYPE_CHECKING:
    from tfprune.training.optim import PiecewiseSchedule


#: The values of `TrainConfig.jit_compile` and `TrainConfig.precision`.
JIT_COMPILE = (True, False, "auto")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


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
        jit_compile: Compile the training and evaluation steps with XLA: True, False, or
            `"auto"`, which compiles them on a GPU or TPU (as Keras' `jit_compile="auto"`
            does) and on the CPU only for a network without convolutions, trained on one
            replica, where XLA measured faster (`scripts/benchmark.py --sections=train`, 2
            busy CPU cores, batch 128, density 0.05, float32: LeNet-300-100 1.22× the
            images/s of the uncompiled step, ResNet-20 0.3-0.6×, XLA's convolutions being
            slower than oneDNN's). With one replica the whole step is compiled (forward,
            backward and the SGD update); with several, the forward and backward passes, since the
            gradients' sum across replicas runs outside XLA on a CPU. Masks, checkpoints and
            resumption are as without XLA; the numbers differ by float32 rounding (XLA
            fuses operations).
        precision: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`: the Keras dtype
            policy the network is built under (`RunContext.build_model`). Under a mixed
            policy the variables and masks stay float32 and the layers compute in 16 bits;
            the loss is computed in float32, scaled for float16
            (`keras.optimizers.LossScaleOptimizer`), and pruning scores the network in
            float32.

    Example:

    >>> TrainConfig(epochs=2, milestones=["300it"]).total_steps(469)
    938
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
    jit_compile: bool | str = "auto"
    precision: str = "float32"

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
        if self.jit_compile not in JIT_COMPILE or not isinstance(self.jit_compile, (bool, str)):
            raise ConfigError(
                f"training.jit_compile must be True, False or 'auto', got {self.jit_compile!r}"
            )
        if self.precision not in PRECISIONS or not isinstance(self.precision, str):
            raise ConfigError(
                f"training.precision must be one of {', '.join(map(repr, PRECISIONS))}, got "
                f"{self.precision!r}"
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
        """The per-iteration learning-rate schedule (this imports TensorFlow)."""
        # Imported here: checking or planning a configuration needs no TensorFlow.
        from tfprune.training.optim import PiecewiseSchedule

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
    """What a checkpoint stores besides the variables.

    Args:
        step: Iterations done.
        history: One record per finished epoch (`epoch`, `step`, train and test metrics,
            `lr`, `seconds`).
        wall_seconds: Training time so far, over every resumption.
        extra: What hooks keep across resumptions (for example the pruning report).
        sums: The running train metrics of the current epoch (a checkpoint written
            mid-epoch).
    """

    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    wall_seconds: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)
    sums: dict = dataclasses.field(default_factory=dict)
