"""`dense`: no pruning; the reference every figure draws."""

from tfprune import registry

registry.register(
    registry.Method(
        name="dense",
        kind=registry.DENSE,
        summary="every weight kept",
        ablations=(),
        reference=True,
        style=registry.Style("dense", "#000000", "o", 0),
    )
)
