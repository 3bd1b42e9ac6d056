"""The arguments every network builder takes, checked without TensorFlow."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from tfprune.errors import ConfigError


def check_args(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    """Validates a builder's arguments and returns `input_shape` as a tuple of ints.

    Args:
        input_shape: `(height, width, channels)`, three positive ints.
        num_classes: Number of classes, at least 2.

    Returns:
        The input shape as `(height, width, channels)`.

    Raises:
        ConfigError: if either argument is invalid.

    Example:

    >>> check_args([32, 32, 3], 10)
    (32, 32, 3)
    """
    try:
        dims = tuple(input_shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or not all(_is_positive_int(d) for d in dims):
        raise ConfigError(
            f"input_shape must be (height, width, channels), three positive ints; "
            f"got {input_shape!r}"
        )
    if not _is_int(num_classes) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return tuple(int(d) for d in dims)


def _is_int(value) -> bool:
    # numpy integers register as Integral; bool is an int but never a size.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_positive_int(value) -> bool:
    return _is_int(value) and value > 0
