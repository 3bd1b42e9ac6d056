"""Scorers by name, and the gradients they are computed from.

A scorer is a small class (`tfprune.registry.Scorer`, one per method file in
`tfprune/methods/`): it receives the model, its prunable weights, the pruning batches (for
methods that need data) and a numpy random generator, and returns `{path: keep-score}` with one
array of the kernel's shape per prunable kernel, where higher means more worth keeping.
Selection, rounds and masks are shared and live elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from tfprune import registry
from tfprune._keras_compat import is_functional
from tfprune.errors import ConfigError, DataError, TfpruneError
from tfprune.layers import PrunableWeight
from tfprune.pruning._losses import DEFAULT_LOSS
from tfprune.registry import Scorer, register_scorer  # noqa: F401  re-exported


def positive_number(value, what: str) -> float:
    """`value` as a float, checked to be a finite real number above 0 (not a bool).

    Raises:
        ConfigError: "<what> must be a positive number, got <value>".
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def scorer_names() -> list[str]:
    """The names of the methods scored at initialization, sorted."""
    return sorted(registry.names((registry.AT_INIT,)))


def get_scorer(name: str, **options) -> Scorer:
    """Returns the scorer of the method registered as `name`, configured with `options`.

    Raises:
        ConfigError: for a name that is not a scored method, or an option it does not take.
    """
    entry = registry.find(name) if isinstance(name, str) else None
    if entry is None or entry.kind != registry.AT_INIT:
        raise ConfigError(
            f"unknown pruning method {name!r}; choose one of {', '.join(scorer_names())}"
        )
    registry.check_options(name, options)
    return entry.scorer_class()(**options)


def kernel_gradients(
    model: keras.Model,
    weights: dict[str, PrunableWeight],
    batches,
    from_logits: bool = True,
    training: bool = True,
):
    """Yields `(batch size, {path: ∂L/∂w})` for each batch, L the batch's mean loss.

    L is `batches.loss` (see `tfprune.pruning._losses`): a given or compiled loss, or by
    default the mean sparse categorical cross-entropy of the outputs (`from_logits` says
    whether they are logits). A plain list of `(x, y)` batches uses the default.

    The model runs statelessly, so BatchNorm in training mode uses batch statistics without
    touching the moving averages. Gradients are float64 numpy arrays. One batch (the usual
    pruning batch) is differentiated eagerly; for several, the gradient function is traced
    once per model and loss (see `scoring_function`).
    """
    loss = getattr(batches, "loss", DEFAULT_LOSS)
    sizes = getattr(batches, "sizes", None) or [len(y) for _, y in batches]
    function = scoring_function(
        model,
        ("kernel_gradients", tuple(weights), from_logits, training, loss.key),
        lambda: _kernel_gradients(model, weights, from_logits, training, loss),
        len(sizes),
    )
    trainable_values = variable_values(model.trainable_variables)
    non_trainable_values = variable_values(model.non_trainable_variables)
    for size, (x, y) in zip(sizes, batches, strict=True):
        with unwrapped_errors():
            grads = function(trainable_values, non_trainable_values, x, y)
        yield (
            size,
            {path: g.numpy().astype(np.float64) for path, g in zip(weights, grads, strict=True)},
        )


def variable_values(variables) -> list[tf.Tensor]:
    """The current values of `variables` as tensors, to be differentiated with a tape.

    Under a `tf.distribute` strategy a variable is a distributed container that a tape cannot
    watch outside a replica; its value (the replicas hold the same one) can be.
    """
    return [tf.convert_to_tensor(v.value) for v in variables]


def stateless_outputs(model: keras.Model, trainable_values, non_trainable_values, x, training):
    """The outputs of `model` on `x` with its variables read from the given values.

    Nothing of the model is written: BatchNorm in training mode, say, records its new moving
    averages in the stateless scope only. A functional or Sequential model runs through
    `stateless_call`; any other model through `model(x, training=...)` inside a
    `keras.StatelessScope`, so that, as in any Keras call, `training` reaches the layers its
    `call` does not pass it to (and a `call` without a `training` argument still runs).

    Args:
        model: A built Keras model.
        trainable_values, non_trainable_values: Tensors in the order of
            `model.trainable_variables` and `model.non_trainable_variables`.
        x: The inputs.
        training: The Keras training flag.
    """
    if isinstance(model, keras.Sequential) or is_functional(model):
        outputs, _ = model.stateless_call(
            trainable_values, non_trainable_values, x, training=training
        )
        return outputs
    mapping = [
        *zip(model.trainable_variables, trainable_values, strict=True),
        *zip(model.non_trainable_variables, non_trainable_values, strict=True),
    ]
    with keras.StatelessScope(state_mapping=mapping):
        return model(x, training=training)


@contextlib.contextmanager
def unwrapped_errors() -> Iterator[None]:
    """Turns the errors of a traced scoring function into one-line tfprune errors.

    AutoGraph re-raises an exception from traced code as an exception of its own, with a
    message of several lines, keeping the original as its context: the original tfprune
    error is re-raised instead. An operation that rejects the data when it runs (a label out
    of range for a sparse cross-entropy, say) raises `DataError` with TensorFlow's reason.
    Other exceptions pass unchanged.

    Raises:
        DataError: for an operation that rejected the data.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        lines = [
            line.strip()
            for line in str(error.message).splitlines()
            if line.strip()
            and not line.startswith((" ", "\t", "Graph execution error", "Detected at node"))
        ]
        reason = lines[-1] if lines else type(error).__name__
        raise DataError(f"the pruning data cannot be scored: {reason}") from error
    except Exception as error:
        cause = error.__cause__ or error.__context__
        while cause is not None and not isinstance(cause, TfpruneError):
            cause = cause.__cause__ or cause.__context__
        if cause is None or isinstance(error, TfpruneError):
            raise
        raise cause from None


def kernel_positions(model: keras.Model, weights: dict[str, PrunableWeight]) -> list[int]:
    """The index of each prunable kernel in `model.trainable_variables`."""
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    indices = []
    for path, w in weights.items():
        if id(w.kernel) not in position:
            raise ConfigError(f"kernel {path} is not trainable, so it has no gradient to score")
        indices.append(position[id(w.kernel)])
    return indices


class _FunctionCache(dict):
    """A model's traced scoring functions, `{key: function}`, held by the model itself.

    The functions refer to the model, so a cache keyed weakly by the model would keep it alive
    for good. Held by the model, the model and its functions form one reference cycle, which
    the garbage collector frees once nothing else refers to the model. A copy of the model
    (`copy.copy`, `copy.deepcopy`, pickling) starts with an empty cache: the functions belong
    to the original.
    """

    def __copy__(self):
        return _FunctionCache()

    def __deepcopy__(self, memo):
        return _FunctionCache()

    def __reduce__(self):
        return (_FunctionCache, ())


# Set with `object.__setattr__`, out of Keras' attribute tracking: not a weight, not saved.
_CACHE_ATTRIBUTE = "_tfprune_scoring_functions"


def cached_functions(model: keras.Model) -> dict:
    """`{key: function}` cached for `model` (empty if none)."""
    return model.__dict__.get(_CACHE_ATTRIBUTE) or {}


def cached_function(model: keras.Model, key: tuple, make):
    """Returns `make()` cached for `(model, key)`; the cache entry dies with the model."""
    functions = model.__dict__.get(_CACHE_ATTRIBUTE)
    if functions is None:
        functions = _FunctionCache()
        object.__setattr__(model, _CACHE_ATTRIBUTE, functions)
    if key not in functions:
        functions[key] = make()
    return functions[key]


def scoring_function(model: keras.Model, key: tuple, make, batches: int):
    """The function `make()` returns, run eagerly for one batch or traced for several.

    Tracing a scoring function and optimising its graph for the first run cost several
    training steps of the same network, more than running it eagerly once: a scorer called on
    one batch (the pruning batch SPEC §2 draws) runs eagerly. On several batches the trace
    pays for itself; it is made once per `(model, key)` (`cached_function`) and reused by
    every later call, one batch or more.

    Args:
        model: The model scored, which the traced function's cache entry lives with.
        key: What else the function depends on (method, options, loss).
        make: Returns the plain Python function (or a tuple of functions, each traced).
        batches: The number of batches it is about to run on.
    """
    if batches > 1 or key in cached_functions(model):
        return cached_function(model, key, lambda: _each(make(), _traced))
    return _each(make(), _eager)


def _each(functions, wrap):
    """`wrap` applied to one function or to each of a tuple of them."""
    if isinstance(functions, tuple):
        return tuple(wrap(function) for function in functions)
    return wrap(functions)


def _traced(function):
    return tf.function(function, reduce_retracing=True)


def _eager(function):
    """`function` taking its numpy arguments as tensors, as a `tf.function` does."""

    def run(*args):
        return function(*tf.nest.map_structure(_as_tensor, args))

    return run


def _as_tensor(value):
    return tf.convert_to_tensor(value) if isinstance(value, (np.ndarray, np.generic)) else value


def _kernel_gradients(model, weights, from_logits, training, loss):
    kernel_index = kernel_positions(model, weights)

    def gradients(trainable_values, non_trainable_values, x, y):
        with tf.GradientTape() as tape:
            tape.watch(trainable_values)
            outputs = stateless_outputs(model, trainable_values, non_trainable_values, x, training)
            if loss.is_default:
                value = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(
                        y, tf.cast(outputs, tf.float32), from_logits=from_logits
                    )
                )
            else:
                value = loss(y, outputs)
        return dense_gradients(tape, value, [trainable_values[i] for i in kernel_index])

    return gradients


def dense_gradients(tape: tf.GradientTape, target, sources) -> list[tf.Tensor]:
    """`tape.gradient(target, sources)` as dense tensors, zero where `target` does not depend
    on a source. An Embedding's gradient comes as `tf.IndexedSlices` (the rows looked up);
    scores need it at the kernel's shape."""
    grads = tape.gradient(target, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [tf.convert_to_tensor(g) for g in grads]
