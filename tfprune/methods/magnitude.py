"""`magnitude`: keep-score |w| (SPEC §2), at initialization or at a step t."""

import numpy as np

from tfprune import registry


class MagnitudeScorer(registry.Scorer):
    """`magnitude`: keep-score |w|."""

    def __call__(self, model, weights, batches, rng):
        return {path: np.abs(w.kernel.numpy()) for path, w in weights.items()}


registry.register(
    registry.Method(
        name="magnitude",
        kind=registry.AT_INIT,
        scorer=MagnitudeScorer,
        summary="|w|",
        style=registry.Style("magnitude", "#1f77b4", "s", 20),
    )
)
