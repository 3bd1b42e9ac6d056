"""`lottery_oneshot`: prune to the density at once by |w_T|, rewind to w_k, train from k
(SPEC §4)."""

from tfprune import registry

registry.register(
    registry.Method(
        name="lottery_oneshot",
        kind=registry.AFTER_TRAINING,
        summary="one-shot magnitude pruning after training, rewound to w_k (k = 0 by default)",
        ablations=("shuffle", "reinit"),
        reference=True,
        settings={"scored_by": "magnitude", "iterative": False, "rewind_default": 0},
        style=registry.Style("lottery_oneshot", "#94951b", "p", 100),
    )
)
