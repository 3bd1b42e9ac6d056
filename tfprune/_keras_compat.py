"""Every private Keras and TensorFlow API tfprune uses, each with the reason it is needed.

Keras keeps these out of its public API, so any release may change them. No other module of
tfprune imports `keras.src` or reads a private attribute of a Keras object; the assumptions made
here are checked on the installed versions by tests/test_architecture.py, which names the one
that no longer holds.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf
from keras import ops

# Why private: under a mixed dtype policy, `Layer.__call__` opens an `AutocastScope` in which
# every float variable made with `autocast=True` reads cast to the compute dtype, and Keras offers
# no public way to read one in its own dtype there, nor to ask whether a variable autocasts
# (`Variable._autocast`). `read_in_own_dtype` reads a kernel in float32 inside such a call, so
# that a masked layer multiplies kernel and mask in float32 and casts the product once.
from keras.src.backend import AutocastScope, get_autocast_scope

# Why private: `MultiHeadAttention.build` makes its query, key, value, output (and gate)
# projections by calling the name `EinsumDense` of the module imported here, and Keras offers no
# argument or hook to make them of another class. `attention_projections` replaces that name
# while a masked attention layer is built, so its projections are masked layers, which save and
# load as the stock ones do.
from keras.src.layers.attention import multi_head_attention as _multi_head_attention

# Why private: `keras.Model(inputs, outputs)` builds an instance of this class, and Keras 3
# exports neither the class nor a predicate for it (`keras.Model` is also the base of subclassed
# models; `keras.Sequential` is public, and a Sequential model is not a Functional one).
# `keras.models.clone_model` rebuilds functional and Sequential models only, so tfprune tells
# them from subclassed models before cloning, with a message of its own.
from keras.src.models.functional import Functional


def is_functional(model: keras.layers.Layer) -> bool:
    """Whether `model` is a functional model, built as `keras.Model(inputs, outputs)`.

    A subclass of `keras.Model` whose constructor passes inputs and outputs to
    `super().__init__` counts too (Keras makes it a functional model); a Sequential model
    does not.

    Args:
        model: Any Keras layer or model.

    Returns:
        True for a functional model, False for a Sequential, subclassed or non-model one.

    Example:

    >>> inputs = keras.Input((3,))
    >>> is_functional(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    True
    """
    return isinstance(model, Functional)


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers that `layer` holds directly, in the order they were assigned to it.

    Why private (`Layer._layers`): only models have the public `layers`, and a Sequential
    model's leaves out its input layer; a plain layer that holds layers (a residual block)
    has no public list of them.

    Args:
        layer: A Keras layer or model.

    Returns:
        Its direct sublayers (not theirs); a Sequential model's input layer comes first.
    """
    return list(layer._layers)


def all_layers(model: keras.layers.Layer, include_self: bool = True) -> list[keras.layers.Layer]:
    """`model` (if `include_self`) and every layer under it, in Keras' own traversal order.

    Why private (`Layer._flatten_layers`): Keras 3 has no public recursive list of layers.
    `tfprune.pruning.ablations.reinitialize` draws one seed per layer in this order, so
    its results depend on it.

    Args:
        model: A Keras layer or model.
        include_self: Whether `model` itself comes first.

    Returns:
        The layers, each once, depth first: `model`'s sublayers in order, and right after
        each of them its own sublayers, in reverse order (Keras' `deque.extendleft`).
    """
    return list(model._flatten_layers(include_self=include_self, recursive=True))


@contextlib.contextmanager
def exact_batch_moments(model: keras.layers.Layer) -> Iterator[None]:
    """Makes the model's BatchNorm layers compute batch moments that differentiate twice.

    Keras' batch moments come from `tf.nn.moments`, whose variance stops the gradient through
    the mean: the first derivative is exact, the second is not. While this context is open,
    each BatchNormalization layer of `model` uses plain mean and variance instead (same values).

    Why private: a BatchNormalization layer computes its batch moments in the method
    `_moments(inputs, mask)` over the axes `_reduction_axes`, and Keras offers no public way to
    compute them otherwise. The replacement is set on each layer object and removed on exit.

    Args:
        model: The model whose BatchNormalization layers (nested ones included) to change.

    Example:

    >>> with exact_batch_moments(model):
    ...     hessian_gradient(...)
    """
    layers = [
        layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer._moments = types.MethodType(_exact_moments, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer._moments


def _exact_moments(layer, inputs, mask):
    if mask is not None:
        # Keras' masked moments do not stop any gradient.
        return type(layer)._moments(layer, inputs, mask)
    axes = layer._reduction_axes
    mean = ops.mean(inputs, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(inputs - mean), axis=axes)
    return ops.squeeze(mean, axis=axes), variance


def plain_trackable() -> tf.__internal__.tracking.AutoTrackable:
    """An empty object that `tf.saved_model.save` writes with whatever is assigned to it.

    Why private (`tf.__internal__.tracking.AutoTrackable`): the public trackables bring state
    of their own. `tf.Module` makes `variables` a read-only property (the export lists the
    weights as the loaded object's `variables`), `keras.export.ExportArchive` tracks every
    weight twice, as a Keras and as a TensorFlow variable. AutoTrackable, the base of
    `tf.Module`, is exported only under `tf.__internal__`.
    """
    return tf.__internal__.tracking.AutoTrackable()


# The projection class of the attention layers being built in each thread (None: the stock
# `EinsumDense`). The module's name is replaced under the lock, and the replacement reads this,
# so an attention layer built at the same time in another thread keeps stock projections.
_PROJECTIONS = threading.local()
_PROJECTIONS_LOCK = threading.RLock()


def _projection(*args, **kwargs) -> keras.layers.Layer:
    factory = getattr(_PROJECTIONS, "factory", None) or keras.layers.EinsumDense
    return factory(*args, **kwargs)


@contextlib.contextmanager
def attention_projections(factory: Callable[..., keras.layers.Layer]) -> Iterator[None]:
    """Makes the `keras.layers.MultiHeadAttention` layers built in this context, in this
    thread, create their projections with `factory` instead of `keras.layers.EinsumDense`.

    Why private: `MultiHeadAttention.build` calls the name `EinsumDense` of its module
    (`keras.src.layers.attention.multi_head_attention`) for each projection, with the
    arguments of `keras.layers.EinsumDense`; that name is replaced while the context is open.
    A lock keeps two threads from replacing it at once, and other threads still get
    `EinsumDense`. Contexts nest.

    Args:
        factory: Called as `keras.layers.EinsumDense` would be (equation, output_shape,
            bias_axes, activation, name, initializers, ...); returns the projection layer.

    Example:

    >>> with attention_projections(MaskedEinsumDense):
    ...     attention.build(query_shape, value_shape)
    """
    with _PROJECTIONS_LOCK:
        name, outer = _multi_head_attention.EinsumDense, getattr(_PROJECTIONS, "factory", None)
        _multi_head_attention.EinsumDense = _projection
        _PROJECTIONS.factory = factory
        try:
            yield
        finally:
            _PROJECTIONS.factory = outer
            _multi_head_attention.EinsumDense = name


def read_in_own_dtype(variable: keras.Variable) -> tuple[tf.Tensor, Callable]:
    """`(value, cast)`: the value of `variable` in its own dtype (or the value a
    `keras.StatelessScope` gives it, in that value's dtype), and the cast that reading it here
    would have applied (the current autocast scope's, for a variable that autocasts; else none).

    `cast(f(value))` is then what `f` of the variable as read here would give, with `f`
    computed in the variable's own dtype.

    Example:

    >>> value, cast = read_in_own_dtype(self.kernel)  # float32 under "mixed_bfloat16"
    >>> masked = cast(ops.multiply(value, ops.cast(self.mask, value.dtype)))  # bfloat16
    """
    scope = get_autocast_scope()
    with AutocastScope(None):
        # A tensor, read here: `ops.convert_to_tensor` may hand back the variable itself, which
        # would be read (and autocast) later, outside this scope.
        value = tf.convert_to_tensor(variable.value)
    if scope is not None and getattr(variable, "_autocast", False):
        return value, scope.maybe_cast
    return value, _unchanged


def _unchanged(value):
    return value
