"""Argument checks and message helpers shared by the sources and the pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune.errors import ConfigError

SPLITS = ("train", "test")


def check_int(what: str, value: Any, minimum: int) -> int:
    """`value` as an int if it is an integer >= `minimum`; raises ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{what} must be {bound}, got {value!r}")
    return int(value)


def check_limit(limit: Any) -> int | None:
    """A `limit` argument: None or a positive integer."""
    return None if limit is None else check_int("limit", limit, 1)


def check_split(split: Any) -> str:
    """A `split` argument: "train" or "test"."""
    if split not in SPLITS:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    return split


def first_line(error: BaseException) -> str:
    """The type and first line of an exception, to quote it in a one-line message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"
