"""Training-step positions as values: `"500it"` (iterations) or `"2ep"` (epochs)."""

from __future__ import annotations

import numbers
import re

from tfprune.errors import ConfigError

_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


def to_iterations(step: str | int, steps_per_epoch: int, what: str = "step") -> int:
    """Converts a step position to an iteration count.

    Args:
        step: `"<n>it"`, `"<n>ep"` or a non-negative int (iterations).
        steps_per_epoch: Iterations in one epoch.
        what: The setting's name, used in error messages.

    Returns:
        The position in iterations.

    Example:

    >>> to_iterations("2ep", 469)
    938
    """
    if isinstance(step, bool):
        raise ConfigError(f"{what} must look like '500it' or '2ep', got {step!r}")
    if isinstance(step, numbers.Integral):
        if step < 0:
            raise ConfigError(f"{what} must not be negative, got {step!r}")
        return int(step)
    match = _PATTERN.match(step) if isinstance(step, str) else None
    if not match:
        raise ConfigError(f"{what} must look like '500it' or '2ep', got {step!r}")
    count, unit = int(match.group(1)), match.group(2)
    return count * steps_per_epoch if unit == "ep" else count
