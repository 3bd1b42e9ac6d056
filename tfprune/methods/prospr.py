"""`prospr` (Alizadeh et al., ICLR 2022): keep-score |∂L_M(θ_M)/∂c| at c = 1, θ_0 = θ ⊙ c and
θ_M after M steps of plain SGD, differentiated through the steps (SPEC §7).

The scorer, nested gradient tapes on the network, is in `tfprune.pruning.prospr`.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="prospr",
        kind=registry.AT_INIT,
        options={"steps": 3, "learning_rate": 0.1, "inner_batches": "same", "from_logits": True},
        scorer="tfprune.pruning.prospr:ProsprScorer",
        needs_data=True,
        summary="|∂L(θ_M)/∂c|, θ_0 = θ ⊙ c, 3 SGD steps (Alizadeh et al., ICLR 2022)",
        style=registry.Style("prospr", "#283593", "d", 115),
    )
)
