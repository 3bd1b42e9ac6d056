"""`phew` (Patil and Dovrolis, ICML 2021): keep the connections crossed by random walks biased
by |θ|, alternately from the inputs and from the outputs, until the budget is met; data-free,
seeded, one shot (SPEC §7).

The scorer is in `tfprune.pruning.phew`. Its keep-scores are visit counts, 0 for every
connection no walk kept, so reversing their order means nothing: `invert` does not apply.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="phew",
        kind=registry.AT_INIT,
        options={},
        scorer="tfprune.pruning.phew:PhewScorer",
        summary=(
            "visit counts of random walks biased by |w|, input to output and back, until the "
            "budget is met (Patil and Dovrolis, ICML 2021)"
        ),
        ablations=("shuffle", "reinit"),
        style=registry.Style("phew", "#6a1b9a", "X", 160),
    )
)
