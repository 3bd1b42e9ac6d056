"""`random`: keep-scores drawn from U(0, 1) with the run's seed (SPEC §2).

With another allocation than `global` it is the per-layer baseline of SPEC §3: `layer` (the
old `uniform`), `erk`, `ratio_of:<method>`: the layer counts come from the allocation and the
positions are random.
"""

from tfprune import registry


class RandomScorer(registry.Scorer):
    """`random`: keep-scores drawn from U(0, 1) with the run's seed."""

    def __call__(self, model, weights, batches, rng):
        return {path: rng.random(tuple(w.kernel.shape)) for path, w in weights.items()}


registry.register(
    registry.Method(
        name="random",
        kind=registry.AT_INIT,
        scorer=RandomScorer,
        summary="U(0, 1), seeded",
        # The floor every panel of the report shows, and the method the allocation aliases name.
        settings={"baseline": True},
        style=registry.Style("random", "#7f7f7f", "o", 10),
    )
)
