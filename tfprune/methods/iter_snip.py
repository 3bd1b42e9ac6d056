"""`iter_snip` (de Jorge et al., ICLR 2021): keep-score |θ̄ ⊙ ∂L(θ̄)/∂θ̄|, θ̄ = θ ⊙ c, on the
geometric schedule d^(i/R), 60 rounds by default (SPEC §7).

Pruned weights score 0 and stay pruned. The default rounds are those of the authors' published
commands (`--num_steps 60 --mode exp` in github.com/naver/force; the script's bare default is 10).
The scorer, a gradient with respect to the masks, is in `tfprune.pruning.force`.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="iter_snip",
        kind=registry.AT_INIT,
        options={"from_logits": True},
        scorer="tfprune.pruning.force:IterSnipScorer",
        needs_data=True,
        default_rounds=60,
        summary="|θ̄ ⊙ ∂L(θ̄)/∂θ̄|, 60 rounds d^(i/60) (de Jorge et al., ICLR 2021)",
        style=registry.Style("iter_snip", "#8c2d04", "<", 110),
    )
)
