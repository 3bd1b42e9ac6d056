"""`iter_snip` and `force` (de Jorge et al., ICLR 2021): keep-scores from ∂L/∂c, SPEC §7.

Both differentiate the loss of the pruned network θ̄ = θ ⊙ c with respect to the mask c.
Since c enters the forward pass only through θ̄, ∂L/∂c = θ ⊙ ∂L/∂θ̄, so

- FORCE's keep-score |θ ⊙ ∂L(θ̄)/∂θ̄| is |∂L/∂c|: the unpruned weight times the gradient at the
  pruned network, non-zero for pruned weights too, which therefore can come back in a later
  round (the method is registered with `settings={"revives": True}`, and selection then ranks
  every weight that was alive when the `prune` call began);
- Iterative SNIP's keep-score |θ̄ ⊙ ∂L(θ̄)/∂θ̄| is c ⊙ |∂L/∂c|: pruned weights score 0 and,
  as for every method that does not revive, stay pruned.

L is the loss of all the pruning data: the batch-size-weighted mean of the batch losses (the
batch mean of `batches.loss`), so ∂L/∂c is the weighted mean of the batch gradients and the
absolute value is taken once, after averaging, as the authors' code does (SNIP takes it per
batch; on one batch the two agree). BatchNorm normalises with the statistics of each batch, as
for SNIP, and the model runs statelessly, so nothing of it is written.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfprune.errors import ModelError
from tfprune.pruning._losses import DEFAULT_LOSS
from tfprune.pruning.scorers import (
    cached_function,
    dense_gradients,
    stateless_outputs,
    unwrapped_errors,
    variable_values,
)
from tfprune.registry import Scorer


class MaskGradientScorer(Scorer):
    """Keep-scores from |∂L/∂c|, the gradient of the pruning loss with respect to the masks.

    Args:
        from_logits: Whether the model outputs logits (tfprune's networks do), for the
            default cross-entropy; a given or compiled loss reads the outputs itself.
    """

    #: Options that configure the default cross-entropy only, with the value at which each
    #: changes nothing (the one a given or compiled loss accepts).
    default_loss_options = {"from_logits": True}

    def __init__(self, from_logits: bool = True):
        self.from_logits = bool(from_logits)

    def __call__(self, model, weights, batches, rng):
        gradients = mask_gradients(model, weights, batches, self.from_logits)
        return {
            path: self.keep_score(np.float64(w.mask.numpy()), gradients[path])
            for path, w in weights.items()
        }

    def keep_score(self, mask: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """The keep-score of one kernel from its mask c and ∂L/∂c (float64 arrays)."""
        raise NotImplementedError


class IterSnipScorer(MaskGradientScorer):
    """`iter_snip`: keep-score |θ̄ ⊙ ∂L(θ̄)/∂θ̄| = c ⊙ |∂L/∂c|, so pruned weights score 0.

    Example:

    >>> masks = tfprune.prune(model, "iter_snip", 0.01, data=(x, y))  # 60 rounds
    """

    def keep_score(self, mask, gradient):
        return mask * np.abs(gradient)


class ForceScorer(MaskGradientScorer):
    """`force`: keep-score |θ ⊙ ∂L(θ̄)/∂θ̄| = |∂L/∂c|, pruned weights included.

    Example:

    >>> masks = tfprune.prune(model, "force", 0.01, data=(x, y))  # 60 rounds
    """

    def keep_score(self, mask, gradient):
        return np.abs(gradient)


def mask_gradients(model: keras.Model, weights, batches, from_logits: bool = True) -> dict:
    """`{path: ∂L/∂c}` at the model's current masks, float64 arrays of the kernels' shapes.

    L is the batch-size-weighted mean of the batch losses of `batches` (`batches.loss`, or the
    mean sparse categorical cross-entropy of the outputs, `from_logits` saying whether they are
    logits); the model runs statelessly in training mode, so BatchNorm uses batch statistics
    and its moving averages are not touched. The traced gradient is cached per model and loss,
    so the rounds of one `prune` call trace it once.

    Raises:
        ModelError: if a mask is not among the model's non-trainable variables.
    """
    loss = getattr(batches, "loss", DEFAULT_LOSS)
    sizes = getattr(batches, "sizes", None) or [len(y) for _, y in batches]
    function = cached_function(
        model,
        ("mask_gradients", tuple(weights), bool(from_logits), loss.key),
        lambda: _make_mask_gradients(model, weights, from_logits, loss),
    )
    trainable = variable_values(model.trainable_variables)
    non_trainable = variable_values(model.non_trainable_variables)
    total = sum(sizes)
    gradients = {path: np.zeros(tuple(w.kernel.shape)) for path, w in weights.items()}
    for size, (x, y) in zip(sizes, batches, strict=True):
        with unwrapped_errors():
            grads = function(trainable, non_trainable, x, y)
        for path, grad in zip(weights, grads, strict=True):
            gradients[path] += (size / total) * np.float64(grad.numpy())
    return gradients


def _mask_positions(model: keras.Model, weights) -> list[int]:
    """The index of each mask in `model.non_trainable_variables`."""
    position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    indices = []
    for path, w in weights.items():
        if id(w.mask) not in position:
            raise ModelError(
                f"the mask of {path} is not a non-trainable variable of model {model.name!r}, "
                "so the loss cannot be differentiated with respect to it"
            )
        indices.append(position[id(w.mask)])
    return indices


def _make_mask_gradients(model, weights, from_logits, loss):
    mask_index = _mask_positions(model, weights)

    @tf.function(reduce_retracing=True)
    def gradients(trainable, non_trainable, x, y):
        masks = [non_trainable[i] for i in mask_index]
        with tf.GradientTape() as tape:
            tape.watch(masks)
            outputs = stateless_outputs(model, trainable, non_trainable, x, True)
            if loss.is_default:
                value = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(
                        y, _at_least_float32(outputs), from_logits=from_logits
                    )
                )
            else:
                value = loss(y, outputs)
        return dense_gradients(tape, value, masks)

    return gradients


def _at_least_float32(outputs):
    """The outputs for the cross-entropy: a float64 model keeps its precision."""
    return outputs if outputs.dtype == tf.float64 else tf.cast(outputs, tf.float32)
