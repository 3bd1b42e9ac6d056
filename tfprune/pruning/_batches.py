"""Normalising the `data` argument of the scorers into a list of checked `(x, y)` batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfprune.errors import DataError

DEFAULT_BATCH_SIZE = 128


def as_batches(
    data,
    num_classes: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    input_shape: Sequence[int | None] | None = None,
):
    """Returns `data` as a list of `(x float32, y int32)` numpy batches, checked.

    Args:
        data: A `tf.data.Dataset` of `(x, y)` batches, or an `(x, y)` tuple of arrays, which is
            split into batches of `batch_size` in order.
        num_classes: The model's number of outputs; labels must lie in [0, num_classes).
        batch_size: Batch size for tuple data.
        input_shape: The model's input shape without the batch dimension (None entries take
            any size); None skips the check.

    Raises:
        DataError: if `data` is empty, has the wrong structure, dtype or shape, non-finite
            inputs, or labels that are not class indices in range.
    """
    if isinstance(data, tf.data.Dataset):
        batches = []
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise DataError("a pruning dataset must yield (x, y) batches")
            batches.append((np.asarray(element[0]), np.asarray(element[1])))
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise DataError(
                f"data=(x, y) needs arrays of equal length, got shapes {x.shape} and {y.shape}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        batches = [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]
    else:
        raise DataError(
            f"data must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple, got "
            f"{type(data).__name__}"
        )
    batches = [_check_batch(x, y, num_classes, input_shape) for x, y in batches]
    if not batches or sum(len(y) for _, y in batches) == 0:
        raise DataError("the pruning data is empty: give at least one (x, y) example")
    return batches


def _check_batch(x: np.ndarray, y: np.ndarray, num_classes: int, input_shape):
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"inputs must be real numbers (float or int), got dtype {x.dtype}")
    if input_shape is not None and not _fits(x.shape[1:], tuple(input_shape)):
        raise DataError(
            f"inputs of shape {x.shape} do not fit the model's input shape "
            f"{(None, *input_shape)}: give x of shape (n, {', '.join(map(str, input_shape))})"
        )
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"inputs hold {bad} NaN or infinite values: give finite inputs")
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == num_classes and y.shape[0] == x.shape[0]:
        y = np.argmax(y, axis=1)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"labels must be a vector of class indices (or one-hot rows) matching the "
            f"{x.shape[0]} inputs, got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        fractional = y[~np.equal(np.mod(y, 1), 0)]
        if fractional.size:
            raise DataError(
                f"labels must be integer class indices, got {fractional[0]} (dtype {y.dtype})"
            )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}) for a model with {num_classes} outputs, "
            f"got values from {y.min():g} to {y.max():g}"
        )
    return x.astype(np.float32), y.astype(np.int32)


def _fits(shape: tuple, expected: tuple) -> bool:
    """Whether inputs of `shape` fit `expected`, as Keras takes them (a missing or extra
    trailing axis of size 1 is allowed)."""
    if len(shape) == len(expected) + 1 and shape[-1] == 1:
        shape = shape[:-1]
    elif len(expected) == len(shape) + 1 and expected[-1] in (1, None):
        expected = expected[:-1]
    return len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )
