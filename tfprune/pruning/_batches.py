"""Normalising the `data` argument of the scorers into checked `(x, y)` batches.

`x` is one array, or a tuple, list or dict of arrays for a model with several inputs; `y` the
same for several outputs. Inputs take the dtype of the model input they feed where it is
floating (float32 by default); integer inputs (token ids) of an integer model input, or of a
subclassed model, stay integers. With
the default loss (sparse categorical cross-entropy of the logits) `y` must be class indices in
range or one-hot rows; with a given or compiled loss any finite numeric targets of any shape
are accepted, since the loss decides what they mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfprune.errors import DataError, ModelError
from tfprune.pruning._losses import PruningLoss

DEFAULT_BATCH_SIZE = 128


class Batches(Sequence):
    """The pruning data of one scoring call: checked `(x, y)` batches and the loss L on them.

    A sequence of `(x, y)` tuples, so `for x, y in batches` works, with:

    Attributes:
        sizes: The number of examples in each batch.
        total: The number of examples in all batches.
        loss: The `PruningLoss` the data-driven scorers differentiate.
    """

    def __init__(self, items: list, sizes: list[int], loss: PruningLoss):
        self._items = list(items)
        self.sizes = tuple(int(size) for size in sizes)
        self.total = sum(self.sizes)
        self.loss = loss

    def __getitem__(self, index):
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)


def as_batches(
    data,
    model: keras.Model,
    loss: PruningLoss,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Batches:
    """Returns `data` as checked numpy `Batches` for scoring `model` with `loss`.

    Args:
        data: A `tf.data.Dataset` of `(x, y)` batches, or an `(x, y)` tuple of arrays (or of
            tuples/dicts of arrays), which is split into batches of `batch_size` in order.
        model: The model to be scored; its inputs (shapes and dtypes) and, for the default
            loss, its number of classes are checked against.
        loss: The loss L; the default one needs class-index labels.
        batch_size: Batch size for tuple data.

    Raises:
        DataError: if `data` is empty, has the wrong structure, dtype or shape, non-finite
            inputs or targets, or (default loss) labels that are not class indices in range.
        ModelError: if the default loss is asked of a model with several outputs.
    """
    raw = _split(data, batch_size)
    specs = _input_specs(model)
    default_float = np.float64 if model.compute_dtype == "float64" else np.float32
    items, sizes, classes = [], [], None
    for x, y in raw:
        x, size = _check_inputs(x, specs, default_float)
        if loss.is_default:
            if classes is None:
                classes = _num_classes(model, x)
            y = _check_labels(y, size, classes, _leaves(x)[0].shape)
        else:
            y = _check_targets(y, size)
        items.append((x, y))
        sizes.append(size)
    if not items or sum(sizes) == 0:
        raise DataError("the pruning data is empty: give at least one (x, y) example")
    return Batches(items, sizes, loss)


def _split(data, batch_size) -> list:
    if isinstance(data, tf.data.Dataset):
        batches = []
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise DataError("a pruning dataset must yield (x, y) batches")
            batches.append((_numpy(element[0]), _numpy(element[1])))
        return batches
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _numpy(data[0]), _numpy(data[1])
        lengths = {_length(leaf) for leaf in _leaves(x) + _leaves(y)}
        if None in lengths or len(lengths) != 1:
            shapes = " and ".join(str(_shapes(part)) for part in (x, y))
            raise DataError(f"data=(x, y) needs arrays of equal length, got shapes {shapes}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        (n,) = lengths
        return [
            (_slice(x, i, i + batch_size), _slice(y, i, i + batch_size))
            for i in range(0, n, batch_size)
        ]
    raise DataError(
        f"data must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple, got "
        f"{type(data).__name__}"
    )


def _check_inputs(x, specs, default_float):
    """`x` with every leaf checked and cast, and the batch size: floating leaves, and integer
    ones where the model declares a floating input, become the declared dtype (else
    `default_float`); other integer leaves stay as they are."""
    leaves = _leaves(x)
    matched = _match_specs(x, leaves, specs)
    checked = []
    for leaf, spec in zip(leaves, matched, strict=True):
        if not (np.issubdtype(leaf.dtype, np.floating) or np.issubdtype(leaf.dtype, np.integer)):
            raise DataError(f"inputs must be real numbers (float or int), got dtype {leaf.dtype}")
        if spec is not None and not _fits(leaf.shape[1:], spec[0]):
            expected = ", ".join(map(str, spec[0]))
            raise DataError(
                f"inputs of shape {leaf.shape} do not fit the model's input shape "
                f"{(None, *spec[0])}: give x of shape (n, {expected})"
            )
        if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
            bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
            raise DataError(f"inputs hold {bad} NaN or infinite values: give finite inputs")
        if spec is not None and spec[1].is_floating:
            leaf = leaf.astype(spec[1].as_numpy_dtype)
        elif np.issubdtype(leaf.dtype, np.floating):
            leaf = leaf.astype(default_float)
        checked.append(leaf)
    sizes = {_length(leaf) for leaf in checked}
    if len(sizes) != 1 or None in sizes:
        raise DataError(f"the inputs of a batch differ in length: shapes {_shapes(x)}")
    return _pack(x, checked), sizes.pop()


def _check_labels(y, size: int, num_classes: int, x_shape):
    """Class indices (or one-hot rows) for the default cross-entropy, as int32."""
    if _is_structure(y):
        raise DataError(
            "the default cross-entropy takes one array of class indices; pass loss= (or "
            "compile the model with a loss) for several outputs"
        )
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == num_classes and y.shape[0] == size:
        one_hot = np.all((y == 0) | (y == 1)) and np.all(np.sum(y, axis=1) == 1)
        if not one_hot:
            raise DataError(
                f"labels of shape {y.shape} are not one-hot rows: give class indices or "
                "one-hot rows, or pass loss= for other targets"
            )
        y = np.argmax(y, axis=1)
    if y.ndim != 1 or y.shape[0] != size:
        raise DataError(
            f"labels must be a vector of class indices (or one-hot rows) matching the "
            f"{x_shape[0]} inputs, got shape {y.shape}"
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
    return y.astype(np.int32)


def _check_targets(y, size: int):
    """Targets for a given or compiled loss: finite numbers, one row per example."""
    checked = []
    for leaf in _leaves(y):
        if leaf.dtype == np.bool_:
            leaf = leaf.astype(np.float32)
        if not (np.issubdtype(leaf.dtype, np.floating) or np.issubdtype(leaf.dtype, np.integer)):
            raise DataError(f"targets must be real numbers (float or int), got dtype {leaf.dtype}")
        if leaf.ndim == 0 or leaf.shape[0] != size:
            raise DataError(
                f"targets of shape {leaf.shape} do not match the {size} inputs of the batch: "
                "give one target row per example"
            )
        if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
            bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
            raise DataError(f"targets hold {bad} NaN or infinite values: give finite targets")
        checked.append(leaf)
    return _pack(y, checked)


def _num_classes(model: keras.Model, x) -> int:
    """The size of the model's single output's last axis: declared by a functional or
    Sequential model, or seen by running a subclassed one on one example (inference mode,
    statelessly, so nothing of the model changes)."""
    outputs = getattr(model, "outputs", None)
    if outputs is not None:
        shapes = [tuple(output.shape) for output in outputs]
    else:
        from tfprune.pruning.scorers import stateless_outputs, variable_values

        first = _pack(x, [leaf[:1] for leaf in _leaves(x)])
        produced = stateless_outputs(
            model,
            variable_values(model.trainable_variables),
            variable_values(model.non_trainable_variables),
            first,
            False,
        )
        shapes = [tuple(output.shape) for output in tf.nest.flatten(produced)]
    if len(shapes) != 1:
        raise ModelError(
            f"model {model.name!r} has {len(shapes)} outputs; the default cross-entropy scores "
            "one: pass loss= (or compile the model with a loss)"
        )
    classes = shapes[0][-1] if shapes[0] else None
    if classes is None:
        raise ModelError(
            f"model {model.name!r} gives outputs of shape {shapes[0]}: the default "
            "cross-entropy needs a known number of classes on the last axis; pass loss="
        )
    return int(classes)


def _input_specs(model: keras.Model):
    """`[(shape without the batch axis, dtype)]` of a functional or Sequential model's inputs,
    in order (with their names), or None when the model does not declare them."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [
        (getattr(t, "name", None), tuple(t.shape[1:]), tf.dtypes.as_dtype(t.dtype)) for t in inputs
    ]


def _match_specs(x, leaves, specs) -> list:
    """The model input spec `(shape, dtype)` of each leaf of `x` (None where unknown)."""
    if specs is None:
        return [None] * len(leaves)
    if isinstance(x, dict):
        by_name = {name: (shape, dtype) for name, shape, dtype in specs}
        if set(x) <= set(by_name):
            return [by_name[key] for key in x]
        return [None] * len(leaves)
    if len(leaves) != len(specs):
        raise DataError(
            f"the model takes {len(specs)} inputs, got {len(leaves)} input arrays: give x as "
            "one array per input (a tuple, or a dict by input name)"
        )
    return [(shape, dtype) for _, shape, dtype in specs]


def _is_structure(value) -> bool:
    """Whether `value` holds several arrays (a dict, or a tuple or list of arrays) rather than
    being one array (a list of numbers, or of lists of numbers, is one array)."""
    if isinstance(value, dict):
        return True
    return (
        isinstance(value, (tuple, list))
        and bool(value)
        and all(isinstance(item, (np.ndarray, tf.Tensor)) or _is_structure(item) for item in value)
    )


def _numpy(value):
    """`value` with every array as a numpy array (a structure of arrays stays a structure)."""
    if isinstance(value, dict):
        return {key: _numpy(value[key]) for key in value}
    if _is_structure(value):
        return type(value)(_numpy(item) for item in value)
    return np.asarray(value)


def _leaves(value) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [leaf for key in value for leaf in _leaves(value[key])]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _pack(structure, leaves: list):
    """`leaves` put back into the structure of `structure` (as `_leaves` flattened it)."""
    leaves = iter(leaves)

    def rebuild(value):
        if isinstance(value, dict):
            return {key: rebuild(value[key]) for key in value}
        if isinstance(value, (tuple, list)):
            return type(value)(rebuild(item) for item in value)
        return next(leaves)

    return rebuild(structure)


def _slice(value, start: int, stop: int):
    return _pack(value, [leaf[start:stop] for leaf in _leaves(value)])


def _length(leaf: np.ndarray) -> int | None:
    return None if leaf.ndim == 0 else int(leaf.shape[0])


def _shapes(value):
    shapes = [leaf.shape for leaf in _leaves(value)]
    return shapes[0] if not isinstance(value, (dict, tuple, list)) else shapes


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
