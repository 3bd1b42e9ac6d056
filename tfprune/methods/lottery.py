"""`lottery`: lottery-ticket rewinding (Frankle et al.): level n removes `lottery_rate` of the
remaining weights by global |w| after training and rewinds the survivors to w_k (SPEC §4)."""

import math

from tfprune import registry
from tfprune.errors import ConfigError

DEFAULT_RATE = 0.2


def lottery_level(density: float, rate: float = DEFAULT_RATE) -> int:
    """The lottery level n whose density (1 - rate)^n is `density`.

    Raises:
        ConfigError: if `density` is not such a power.

    Example:

    >>> lottery_level(0.8**3)
    3
    """
    if not 0 < rate < 1:
        raise ConfigError(f"the lottery pruning rate must be in (0, 1), got {rate!r}")
    level = round(math.log(density) / math.log(1 - rate))
    if level < 0 or not math.isclose((1 - rate) ** level, density, rel_tol=1e-6):
        raise ConfigError(
            f"lottery reaches densities {1 - rate:g}^n; {density!r} is none of them "
            "(use lottery_oneshot for any density)"
        )
    return level


registry.register(
    registry.Method(
        name="lottery",
        kind=registry.AFTER_TRAINING,
        summary="iterative magnitude pruning, 20% per level, rewound to w_k (k = 0 by default)",
        ablations=("shuffle", "reinit"),
        reference=True,
        settings={"scored_by": "magnitude", "iterative": True, "rewind_default": 0},
        style=registry.Style("lottery", "#139fad", "h", 90),
    )
)
