"""`snip` (Lee et al., ICLR 2019): keep-score |w ⊙ ∂L/∂w| (SPEC §2)."""

import numpy as np

from tfprune import registry


class SnipScorer(registry.Scorer):
    """`snip` (Lee et al., 2019): keep-score |w ⊙ ∂L/∂w|, BatchNorm on batch statistics.

    L is the batch-mean loss of the pruning data (`batches.loss`): the `loss` given to
    `score`/`prune`, else the model's compiled loss, else the cross-entropy of its outputs.

    Args:
        from_logits: Whether the model outputs logits (tfprune's networks do), for the
            default cross-entropy; a given or compiled loss reads the outputs itself.
    """

    #: Options that configure the default cross-entropy only, with the value at which each
    #: changes nothing (the one a given or compiled loss accepts).
    default_loss_options = {"from_logits": True}

    def __init__(self, from_logits: bool = True):
        self.from_logits = from_logits

    def __call__(self, model, weights, batches, rng):
        from tfprune.pruning.scorers import kernel_gradients

        sizes = getattr(batches, "sizes", None) or [len(y) for _, y in batches]
        total = sum(sizes)
        scores = {path: np.zeros(tuple(w.kernel.shape)) for path, w in weights.items()}
        for size, grads in kernel_gradients(model, weights, batches, self.from_logits):
            for path, w in weights.items():
                # The absolute value is taken per batch, then batches are averaged by size.
                scores[path] += (size / total) * np.abs(w.kernel.numpy() * grads[path])
        return scores


registry.register(
    registry.Method(
        name="snip",
        kind=registry.AT_INIT,
        scorer=SnipScorer,
        needs_data=True,
        summary="|w ⊙ ∂L/∂w| (Lee et al., ICLR 2019)",
        style=registry.Style("snip", "#e2700c", "^", 30),
    )
)
