"""`set` (Mocanu et al., 2018): sparse evolutionary training (SPEC §7).

Starts from a random mask at the density (ERK layer counts by default, or uniform); every
`every` iterations until `end`, each layer drops the fraction (α/2)(1 + cos(π t / T_end)) of
its active weights with the lowest |θ| (α = `drop_fraction`) and grows as many at random,
at zero with fresh optimizer slots. Layer counts never change. The updates are in
`tfprune.training.sparse` (`SparseEvolutionary`).
"""

from tfprune import registry

# Shared with `rigl`, which differs only in how it grows.
DROP_AND_GROW_OPTIONS = {"drop_fraction": 0.3, "every": 100, "end": 0.75, "distribution": "erk"}
# Why a drop-and-grow method takes no ablation: the error message gives it.
NO_FIXED_MASK = (
    "its mask is never fixed at one step (it drops and regrows weights until end, keeping the "
    "layer counts of its random start), so shuffle, reinit and invert have no final mask to "
    "act on"
)

registry.register(
    registry.Method(
        name="set",
        kind=registry.DURING_TRAINING,
        summary="drop the lowest |θ|, regrow at random, from an ERK start (Mocanu et al., 2018)",
        options=DROP_AND_GROW_OPTIONS,
        settings={"schedule": "drop_and_grow", "growth": "random", "ablation_note": NO_FIXED_MASK},
        ablations=(),
        reference=True,
        style=registry.Style("set", "#37474f", "<", 210),
    )
)
