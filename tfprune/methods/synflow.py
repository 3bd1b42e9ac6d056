"""`synflow` (Tanaka et al., NeurIPS 2020): keep-score |w ⊙ ∂R/∂w| on a float64 copy with
|parameters| and an all-ones input, 100 rounds (SPEC §2).

The scorer is in `tfprune.pruning.synflow`.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="synflow",
        kind=registry.AT_INIT,
        options={},
        scorer="tfprune.pruning.synflow:SynflowScorer",
        default_rounds=100,
        summary="|w ⊙ ∂R/∂w|, R the output sum of |network| on ones (Tanaka et al., 2020)",
        style=registry.Style("synflow", "#d62728", "D", 50),
    )
)
