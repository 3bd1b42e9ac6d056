"""`rigl` (Evci et al., ICML 2020): rigged lottery, dynamic sparse training (SPEC §7).

As `set`, but each layer grows the inactive weights with the highest |∂L/∂θ| on the batch of
the update's iteration, the gradient of the masked weights' values (dense); grown weights
start at zero with fresh optimizer slots. Layer counts never change. The updates are in
`tfprune.training.sparse` (`RigL`).
"""

from tfprune import registry
from tfprune.methods.set import DROP_AND_GROW_OPTIONS, NO_FIXED_MASK

registry.register(
    registry.Method(
        name="rigl",
        kind=registry.DURING_TRAINING,
        summary="drop the lowest |θ|, grow the highest |∂L/∂θ|, from ERK (Evci et al., 2020)",
        options=DROP_AND_GROW_OPTIONS,
        settings={
            "schedule": "drop_and_grow",
            "growth": "gradient",
            "ablation_note": NO_FIXED_MASK,
        },
        ablations=(),
        reference=True,
        style=registry.Style("rigl", "#00688b", "x", 220),
    )
)
