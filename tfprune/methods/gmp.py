"""`gmp` (Zhu and Gupta, 2017): gradual magnitude pruning during training (SPEC §7).

From the dense network, the density follows d_t = d_f + (1 − d_f)(1 − (t − t_0)/(nΔt))³ at
t = t_0, t_0 + Δt, …, t_0 + nΔt (`begin`, `every`, n the updates that fit before `end`);
each update keeps the largest |θ| among the weights still alive, over all layers (`scope`
`global`) or in each (`layer`). Positions are fractions of training or steps (`'500it'`).

Its mask is final from the last update on, so the ablations act there, as on pruning at a
step t: `shuffle` permutes each layer's final mask, `reinit` redraws every weight from its
initializer, and training goes on with fresh optimizer slots; `invert` keeps the smallest |θ|
at every update. The updates are in `tfprune.training.sparse` (`GradualMagnitude`).
"""

from tfprune import registry

registry.register(
    registry.Method(
        name="gmp",
        kind=registry.DURING_TRAINING,
        summary="gradual magnitude pruning, cubic density schedule (Zhu & Gupta, 2017)",
        options={"begin": 0.25, "end": 0.75, "every": 100, "scope": "global"},
        settings={"schedule": "cubic"},
        reference=True,
        style=registry.Style("gmp", "#4e342e", "H", 200),
    )
)
