"""`ntk_sap` (Wang, Li and Sun, ICLR 2023): keep-score
|∂/∂c E ‖f(x; θ ⊙ c) − f(x; (θ + Δ) ⊙ c)‖²| with θ redrawn from the initializers, x ~ N(0, I)
and Δ ~ N(0, ε²), 20 rounds (SPEC §7).

The scorer, stateless forward passes of the network with redrawn weights, is in
`tfprune.pruning.ntk_sap`.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="ntk_sap",
        kind=registry.AT_INIT,
        options={"epsilon": 0.01, "samples": 5, "input_batch": 100},
        scorer="tfprune.pruning.ntk_sap:NtkSapScorer",
        default_rounds=20,
        summary=(
            "|∂/∂c E‖f(x; θ⊙c) − f(x; (θ+Δ)⊙c)‖²|, θ redrawn, x ~ N(0, I), Δ ~ N(0, ε²) "
            "(Wang, Li and Sun, ICLR 2023)"
        ),
        style=registry.Style("ntk_sap", "#ad1457", "8", 140),
    )
)
