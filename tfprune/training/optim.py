"""The optimizer and learning-rate schedule of SPEC §5 (PyTorch's SGD, stepped per iteration)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfprune.errors import ConfigError


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

    def reset_slots(self, variable, where: np.ndarray | None = None) -> None:
        """Zeroes the momentum buffer of `variable`, or only its entries where `where` is True.

        Args:
            variable: One of the variables the optimizer was built for.
            where: A boolean array of the variable's shape (for example the weights that
                dynamic sparse training regrows); None: every entry.

        Example:

        >>> opt.reset_slots(kernel, where=regrown)  # the other entries keep their momentum
        """
        if not self.momentum:
            return
        buffer = self.momentums[self._get_variable_index(variable)]
        zeros = np.zeros(tuple(buffer.shape), dtype=buffer.dtype)
        buffer.assign(zeros if where is None else np.where(where, zeros, buffer.numpy()))

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
