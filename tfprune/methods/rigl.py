"""`rigl` (Evci et al., ICML 2020): rigged lottery, dynamic sparse training (SPEC §7).

As `set`, but each layer grows the inactive weights with the highest |∂L/∂θ| on the batch of
the update's iteration, the gradient of the masked weights' values (dense); grown weights
start at zero with fresh optimizer slots. Layer counts never change. The updates are in
`tfprune.training.sparse` (`RigL`).
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="rigl",
        kind=registry.DURING_TRAINING,
        summary="drop the lowest |θ|, grow the highest |∂L/∂θ|, from ERK (Evci et al., 2020)",
        options={"drop_fraction": 0.3, "every": 100, "end": 0.75, "distribution": "erk"},
        settings={
            "schedule": "drop_and_grow",
            "growth": "gradient",
            # Why it takes no ablation: the error message gives it.
            "ablation_note": (
                "its mask is never fixed at one step (it drops and regrows weights until "
                "end, keeping the layer counts of its random start), so shuffle, reinit and "
                "invert have no final mask to act on"
            ),
        },
        ablations=(),
        reference=True,
        style=registry.Style("rigl", "#00688b", ">", 220),
    )
)
