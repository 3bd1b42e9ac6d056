"""`magnitude_after_training`: train dense to the end, keep the global top-|w_T|, retrain the
survivors from w_T with the schedule replayed, or from a rewind step (SPEC §4)."""

from tfprune import registry

registry.register(
    registry.Method(
        name="magnitude_after_training",
        kind=registry.AFTER_TRAINING,
        summary="global top-|w_T| after dense training, fine-tuned from w_T (or rewound to w_k)",
        ablations=("shuffle", "reinit"),
        reference=True,
        settings={"scored_by": "magnitude", "iterative": False, "rewind_default": None},
        style=registry.Style("magnitude_after_training", "#d16db3", "*", 80),
    )
)
