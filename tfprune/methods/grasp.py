"""`grasp` (Wang et al., ICLR 2020): keep-score w ⊙ (H g), logits / T (SPEC §2).

The scorer, nested gradient tapes on the network, is in `tfprune.pruning.grasp`.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="grasp",
        kind=registry.AT_INIT,
        options={"temperature": 200.0, "from_logits": True},
        scorer="tfprune.pruning.grasp:GraspScorer",
        needs_data=True,
        summary="w ⊙ (H g), logits / 200 (Wang et al., ICLR 2020)",
        style=registry.Style("grasp", "#2ca02c", "v", 40),
    )
)
