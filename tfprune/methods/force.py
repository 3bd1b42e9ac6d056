"""`force` (de Jorge et al., ICLR 2021): keep-score |θ ⊙ ∂L(θ̄)/∂θ̄|, θ̄ = θ ⊙ c, on the
geometric schedule d^(i/R), 60 rounds by default (SPEC §7).

The unpruned weight θ times the gradient at the pruned network gives pruned weights a score, so
a weight pruned in one round can come back in a later one: the entry's setting `revives` makes
selection rank, every round, all the weights that were alive when the `prune` call began.
Weights already pruned before the call stay pruned (the paper starts from the dense network).
The default rounds are those of the authors' published commands (`--num_steps 60 --mode exp` in
github.com/naver/force; the script's bare default is 10). The scorer, a gradient with respect
to the masks, is in `tfprune.pruning.force`.
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="force",
        kind=registry.AT_INIT,
        options={"from_logits": True},
        scorer="tfprune.pruning.force:ForceScorer",
        needs_data=True,
        default_rounds=60,
        settings={"revives": True},
        summary="|θ ⊙ ∂L(θ̄)/∂θ̄|, pruned weights may return, 60 rounds (de Jorge et al., 2021)",
        style=registry.Style("force", "#00695c", ">", 120),
    )
)
