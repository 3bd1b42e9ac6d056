"""`grasp` (Wang, Zhang and Grosse, 2020): keep-score w ⊙ (H g), SPEC §2."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfprune._keras_compat import exact_batch_moments
from tfprune.pruning._losses import DEFAULT_LOSS
from tfprune.pruning.scorers import (
    dense_gradients,
    kernel_positions,
    positive_number,
    scoring_function,
    stateless_outputs,
    unwrapped_errors,
    variable_values,
)
from tfprune.registry import Scorer


class GraspScorer(Scorer):
    """`grasp`: keep-score w ⊙ (H g), logits divided by a temperature, BN on batch statistics.

    L is the batch-mean loss of the pruning data (`batches.loss`). By default (no `loss`
    given, the model not compiled) it is the mean cross-entropy of `logits / temperature`.
    A given or compiled loss receives the outputs unchanged: the temperature softens the
    default cross-entropy's softmax and has no meaning for a loss in general (dividing a
    regression's outputs by T would change what the loss measures), so `score`/`prune`
    refuse a temperature other than 1 (and `from_logits=False`) with such a loss; a
    classifier scored with its own loss can divide its logits inside that loss.

    g = ∇_w L over the prunable kernels (treated as a constant) and H the Hessian of L with
    respect to those kernels; H g is the gradient of ⟨stop_gradient(g), ∇_w L⟩ (nested
    `tf.GradientTape`). The model runs statelessly in training mode, so BatchNorm normalises
    with batch statistics and its moving averages are not touched.

    The GraSP paper scores S = -w ⊙ (H g) and removes the weights with the highest S; the
    keep-score here is -S, so keeping the top keep-scores is the published method.

    With several batches, g is the batch-size-weighted mean of the per-batch gradients (the
    GraSP authors accumulate g over all the pruning data), then H g is the batch-size-weighted
    mean of the per-batch products H_b g, and the keep-score is w ⊙ H g.

    Args:
        temperature: T, which divides the logits of the default cross-entropy (200 in the
            paper).
        from_logits: Whether the model outputs logits (tfprune's networks do), for the
            default cross-entropy. If it outputs probabilities, their logarithms serve as the
            logits.

    Example:

    >>> scores = tfprune.score(model, "grasp", data=(x, y))
    >>> scores = tfprune.score(regressor, "grasp", data=(x, y), loss="mse")
    """

    #: Options that configure the default cross-entropy only, with the value at which each
    #: changes nothing (the one a given or compiled loss accepts).
    default_loss_options = {"temperature": 1.0, "from_logits": True}

    def __init__(self, temperature: float = 200.0, from_logits: bool = True):
        self.temperature = positive_number(temperature, "grasp temperature")
        self.from_logits = bool(from_logits)

    def __call__(self, model, weights, batches, rng):
        loss = getattr(batches, "loss", DEFAULT_LOSS)
        sizes = getattr(batches, "sizes", None) or [len(y) for _, y in batches]
        key = ("grasp", tuple(weights), self.temperature, self.from_logits, loss.key)
        gradient, hessian_gradient = scoring_function(
            model, key, lambda: self._functions(model, weights, loss), len(sizes)
        )
        trainable = variable_values(model.trainable_variables)
        non_trainable = variable_values(model.non_trainable_variables)
        with exact_batch_moments(model), unwrapped_errors():
            if len(sizes) == 1:
                # g is this batch's gradient: H g in one pass, with the same operations.
                ((x, y),) = batches
                hg = [p.numpy() for p in hessian_gradient(trainable, non_trainable, x, y, None)]
            else:
                hg = _hessian_gradient(
                    gradient, hessian_gradient, trainable, non_trainable, weights, batches, sizes
                )
        return {
            path: np.float64(w.kernel.numpy()) * np.asarray(product, dtype=np.float64)
            for (path, w), product in zip(weights.items(), hg, strict=True)
        }

    def _functions(self, model, weights, pruning_loss):
        """The plain `(gradient, hessian_gradient)` of `model` and the pruning loss;
        `hessian_gradient(..., g=None)` takes the batch's own gradient for g."""
        kernel_index = kernel_positions(model, weights)

        def loss(trainable, non_trainable, x, y):
            outputs = stateless_outputs(model, trainable, non_trainable, x, True)
            if not pruning_loss.is_default:
                return pruning_loss(y, outputs)
            if outputs.dtype != tf.float64:
                # At least float32 for the loss; a float64 model keeps its precision.
                outputs = tf.cast(outputs, tf.float32)
            if not self.from_logits:
                outputs = tf.math.log(tf.maximum(outputs, keras.config.epsilon()))
            return tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, outputs / self.temperature, from_logits=True
                )
            )

        def gradient(trainable, non_trainable, x, y):
            kernels = [trainable[i] for i in kernel_index]
            with tf.GradientTape() as tape:
                tape.watch(kernels)
                value = loss(trainable, non_trainable, x, y)
            return dense_gradients(tape, value, kernels)

        def hessian_gradient(trainable, non_trainable, x, y, g):
            kernels = [trainable[i] for i in kernel_index]
            with tf.GradientTape() as outer:
                outer.watch(kernels)
                with tf.GradientTape() as inner:
                    inner.watch(kernels)
                    value = loss(trainable, non_trainable, x, y)
                grads = dense_gradients(inner, value, kernels)
                if g is None:
                    g = [tf.stop_gradient(grad) for grad in grads]
                # g is a constant (an input, or a stopped gradient): only ∇L is
                # differentiated again.
                inner_product = tf.add_n(
                    [tf.reduce_sum(a * b) for a, b in zip(g, grads, strict=True)]
                )
            return dense_gradients(outer, inner_product, kernels)

        return gradient, hessian_gradient


def _hessian_gradient(
    gradient, hessian_gradient, trainable, non_trainable, weights, batches, sizes
):
    """H g over several batches: g their size-weighted mean gradient, then the size-weighted
    mean of the per-batch products H_b g, as float64 numpy arrays."""
    total = sum(sizes)
    g = [np.zeros(tuple(w.kernel.shape)) for w in weights.values()]
    for size, (x, y) in zip(sizes, batches, strict=True):
        for acc, grad in zip(g, gradient(trainable, non_trainable, x, y), strict=True):
            acc += (size / total) * grad.numpy()
    g = [tf.constant(acc, dtype=w.kernel.dtype) for acc, w in zip(g, weights.values(), strict=True)]
    hg = [np.zeros(tuple(w.kernel.shape)) for w in weights.values()]
    for size, (x, y) in zip(sizes, batches, strict=True):
        products = hessian_gradient(trainable, non_trainable, x, y, g)
        for acc, product in zip(hg, products, strict=True):
            acc += (size / total) * product.numpy()
    return hg
