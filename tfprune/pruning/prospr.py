"""`prospr` (Alizadeh, Tailor, Zintgraf, van Amersfoort, Farquhar, Lane and Gal, 2022):
keep-score |∂L_M(θ_M)/∂c| at c = 1, differentiated through M steps of SGD (SPEC §7)."""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf

from tfprune._keras_compat import exact_batch_moments
from tfprune.errors import ConfigError
from tfprune.pruning._losses import DEFAULT_LOSS
from tfprune.pruning.scorers import (
    cached_function,
    dense_gradients,
    kernel_positions,
    positive_number,
    stateless_outputs,
    unwrapped_errors,
    variable_values,
)
from tfprune.registry import Scorer

#: How the inner steps take their batches (the `inner_batches` option).
INNER_BATCHES = ("same", "cycle")


class ProsprScorer(Scorer):
    """`prospr`: keep-score |∂L_M(θ_M)/∂c| at c = 1, the meta-gradient of the loss after M
    steps of SGD with respect to the mask (Prospect Pruning).

    The mask is applied once, at the start: θ_0 = θ ⊙ c. Then M steps of plain SGD (no momentum,
    no weight decay) train every trainable parameter of the model (kernels, biases, BatchNorm
    gamma and beta): θ_{k+1} = θ_k − η ∇_θ L_k(θ_k). The keep-score of a weight is the absolute
    derivative of the loss L_M(θ_M) with respect to its mask entry, at c = 1, through all M
    steps (nested `tf.GradientTape`s, so the second derivatives of the steps are included).
    The model runs statelessly in training mode, so BatchNorm normalises with batch
    statistics, and neither its weights nor its moving averages are touched. BatchNorm's batch
    moments are computed so that they differentiate twice exactly (Keras' moments stop the
    gradient through the mean inside the variance, which is exact for a first derivative only).

    With M = 0 the score is |∂L/∂c| = |θ ⊙ ∂L/∂θ|, SNIP's. Masks already in the model (an
    earlier round of the geometric schedule, or a model pruned before) stay in force during
    the steps, as they do in the layers' forward pass: the network trained is the pruned one,
    and its pruned weights score 0.

    L is the batch-mean loss of the pruning data (`batches.loss`): the `loss` given to
    `score`/`prune`, else the model's compiled loss, else the cross-entropy of its outputs.

    The batches of the steps (`inner_batches`):

    - `"same"` (the default): each pruning batch serves for all M steps and for L_M, and the
      per-batch scores |∂L_M/∂c| are averaged, weighted by batch size (the absolute value is
      taken per batch, as for SNIP). With one pruning batch (10 examples per class of a
      10-class dataset, batch size 128) this is the authors' code as published, which takes
      one batch for the steps and the meta-loss.
    - `"cycle"`: step k uses batch k mod B and L_M batch M mod B, B the number of pruning
      batches (the authors' `new_data_in_inner` option: a fresh batch for each step and for
      the meta-loss, wrapping around). Batches beyond the first M + 1 are not used.

    Args:
        steps: M, the SGD steps differentiated through (3 in the paper), 0 or more.
        learning_rate: η, the step size of the steps (0.1, the authors' default).
        inner_batches: `"same"` or `"cycle"` (above).
        from_logits: Whether the model outputs logits (tfprune's networks do), for the
            default cross-entropy; a given or compiled loss reads the outputs itself.

    Raises:
        ConfigError: for a negative or non-integer `steps`, a `learning_rate` that is not a
            positive number, or an unknown `inner_batches`.

    Example:

    >>> masks = tfprune.prune(model, "prospr", 0.05, data=(x, y))
    >>> scores = tfprune.score(model, "prospr", data=(x, y), steps=5, learning_rate=0.05)
    """

    #: Options that configure the default cross-entropy only, with the value at which each
    #: changes nothing (the one a given or compiled loss accepts).
    default_loss_options = {"from_logits": True}

    def __init__(
        self,
        steps: int = 3,
        learning_rate: float = 0.1,
        inner_batches: str = "same",
        from_logits: bool = True,
    ):
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ConfigError(f"prospr steps must be a non-negative integer, got {steps!r}")
        learning_rate = positive_number(learning_rate, "prospr learning_rate")
        if inner_batches not in INNER_BATCHES:
            raise ConfigError(
                f"prospr inner_batches must be one of {', '.join(map(repr, INNER_BATCHES))}, "
                f"got {inner_batches!r}"
            )
        self.steps = int(steps)
        self.learning_rate = float(learning_rate)
        self.inner_batches = inner_batches
        self.from_logits = bool(from_logits)

    def __call__(self, model, weights, batches, rng):
        loss = getattr(batches, "loss", DEFAULT_LOSS)
        sizes = getattr(batches, "sizes", None) or [len(y) for _, y in batches]
        meta_gradients = self._function(model, weights, loss)
        trainable = variable_values(model.trainable_variables)
        non_trainable = variable_values(model.non_trainable_variables)
        scores = [np.zeros(tuple(w.kernel.shape)) for w in weights.values()]
        with exact_batch_moments(model), unwrapped_errors():
            for weight, sequence in self._plan(list(batches), sizes):
                grads = meta_gradients(trainable, non_trainable, sequence)
                for acc, grad in zip(scores, grads, strict=True):
                    acc += weight * np.abs(grad.numpy().astype(np.float64))
        return dict(zip(weights, scores, strict=True))

    def _plan(self, batches: list, sizes) -> list[tuple[float, list]]:
        """`[(weight, [batch of step 0, ..., batch of step M - 1, batch of L_M])]`."""
        if self.inner_batches == "cycle":
            return [(1.0, [batches[k % len(batches)] for k in range(self.steps + 1)])]
        total = sum(sizes)
        return [
            (size / total, [batch] * (self.steps + 1))
            for size, batch in zip(sizes, batches, strict=True)
        ]

    def _function(self, model, weights, loss):
        """The traced meta-gradient of `model`, cached per model, settings and loss."""
        key = ("prospr", tuple(weights), self.learning_rate, self.from_logits, loss.key)
        return cached_function(model, key, lambda: self._trace(model, weights, loss))

    def _trace(self, model, weights, pruning_loss):
        kernel_index = kernel_positions(model, weights)
        learning_rate = self.learning_rate

        def loss(trainable, non_trainable, x, y):
            outputs = stateless_outputs(model, trainable, non_trainable, x, True)
            if not pruning_loss.is_default:
                return pruning_loss(y, outputs)
            if outputs.dtype != tf.float64:
                # At least float32 for the loss; a float64 model keeps its precision.
                outputs = tf.cast(outputs, tf.float32)
            return tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, outputs, from_logits=self.from_logits
                )
            )

        @tf.function(reduce_retracing=True)
        def meta_gradients(trainable, non_trainable, sequence):
            # The number of steps is the length of `sequence`, fixed when it is traced.
            masks = [tf.ones_like(trainable[i]) for i in kernel_index]
            with tf.GradientTape() as outer:
                outer.watch(masks)
                params = list(trainable)
                for i, mask in zip(kernel_index, masks, strict=True):
                    params[i] = trainable[i] * mask  # θ_0 = θ ⊙ c, once
                for x, y in sequence[:-1]:
                    with tf.GradientTape() as inner:
                        inner.watch(params)
                        value = loss(params, non_trainable, x, y)
                    grads = dense_gradients(inner, value, params)
                    # Recorded on the outer tape: the step is differentiated through.
                    # η as a constant of the parameter's dtype (a float32 0.1 cast to
                    # float64 would be another step size).
                    params = [
                        p - tf.constant(learning_rate, p.dtype) * g if p.dtype.is_floating else p
                        for p, g in zip(params, grads, strict=True)
                    ]
                x, y = sequence[-1]
                final = loss(params, non_trainable, x, y)
            return dense_gradients(outer, final, masks)

        return meta_gradients
