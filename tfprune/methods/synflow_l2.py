"""`synflow_l2` (Gebhart, Saxena and Schrater, 2021): keep-score |w ⊙ ∂R/∂w| with R the output
sum of the float64 copy whose parameters are squared, on an all-ones input; iterative like
SynFlow, 100 rounds (SPEC §7).

The scorer is in `tfprune.pruning.synflow`, shared with `synflow`: the two differ only in the
transformation of the parameters (absolute value or square).
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="synflow_l2",
        kind=registry.AT_INIT,
        options={},
        scorer="tfprune.pruning.synflow:SynflowL2Scorer",
        default_rounds=100,
        summary=(
            "|w ⊙ ∂R/∂w|, R the output sum of the network with squared parameters on ones "
            "(Gebhart et al., 2021)"
        ),
        style=registry.Style("synflow_l2", "#827717", "P", 150),
    )
)
