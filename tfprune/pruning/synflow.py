"""`synflow` (Tanaka, Kunin, Yamins and Ganguli, 2020): keep-score |w ⊙ ∂R/∂w|, SPEC §2; and
`synflow_l2` (Gebhart, Saxena and Schrater, 2021), the same with squared parameters, SPEC §7.

R is the sum of the outputs of the network with every parameter replaced by its absolute
value (SynFlow) or its square (SynFlow-L2), on one all-ones input, in inference mode. For a
chain of linear layers R = 1ᵀ(∏_l |W_l|)1, or 1ᵀ(∏_l W_l ⊙ W_l)1: the sum over all input-output
paths of the product of their weights' magnitudes (or squares, the path kernel's trace). The two
methods differ only in that transformation of the parameters (`Linearisation`), everything
else is shared. R is computed on one of two networks:

- a float64 copy of the model (SPEC §2), for functional and Sequential models whose layers
  rebuild from their configuration (`get_config`/`from_config`);
- the model itself, in its own dtype, when no such copy can be built (a subclassed model, or a
  layer that does not rebuild). The absolute values are fed to the model as the values of its
  variables (a `keras.StatelessScope`), so its variables are never written: they keep their values
  bit for bit, also when the computation fails. Float32 has a far smaller range than float64,
  so a deep network's R can overflow; that raises `ModelError` rather than scoring with
  infinities.

Integer inputs (token ids) and the `ones_response` protocol: for a model that reads integer
ids, the all-ones input means an all-ones one-hot vector into each layer that reads the ids,
that is, the sum of every row of its (absolute, masked) table. A layer makes itself usable
here by defining a method

    ones_response(inputs) -> outputs

which, given the integer input tensor it would be called on (its values do not matter, only
its shape), returns what the layer outputs for an all-ones one-hot input at every position,
computed from its current weights (through `self.masked(...)`, so that R is differentiated
through them and pruned entries count as zero). For an embedding with table E (V x D) and mask
M it is `ones(shape(inputs) + (1,)) * sum_v (E ⊙ M)[v]`. SynFlow calls it in place of the
layer's `call`. Every layer that reads an integer input directly must define it, or SynFlow
raises `ModelError`; which layers read an input is known only for functional and Sequential
models, so a subclassed model with integer inputs is refused too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfprune._keras_compat import all_layers, is_functional
from tfprune.errors import ConfigError, ModelError
from tfprune.layers import MaskedLayer
from tfprune.pruning.scorers import (
    cached_function,
    dense_gradients,
    stateless_outputs,
    unwrapped_errors,
)
from tfprune.registry import Scorer

_DTYPE = "float64"


@dataclasses.dataclass(frozen=True)
class Linearisation:
    """How a SynFlow-type method transforms the parameters before computing R.

    Attributes:
        method: The method's name, for messages.
        described: What the transformed network is, for messages ("absolute-valued").
        transform: t, applied to every parameter of the copy (kernels, biases, BatchNorm gamma
            and beta; never the masks or the data statistics).
        kernel_factor: |w t'(w)| of a kernel w, in float64: since ∂R/∂w = t'(w) ∂R/∂t(w), the
            keep-score |w ⊙ ∂R/∂w| is `kernel_factor(w) * |∂R/∂t(w)|`.
    """

    method: str
    described: str
    transform: Callable[[np.ndarray], np.ndarray]
    kernel_factor: Callable[[np.ndarray], np.ndarray]


def _twice_square(w: np.ndarray) -> np.ndarray:
    return 2.0 * np.square(w)


#: SynFlow: |θ|, so |w t'(w)| = |w|.
ABSOLUTE = Linearisation("synflow", "absolute-valued", np.abs, np.abs)
#: SynFlow-L2: θ ⊙ θ, so |w t'(w)| = 2 w².
SQUARE = Linearisation("synflow_l2", "squared", np.square, _twice_square)


class SynflowScorer(Scorer):
    """`synflow`: keep-score |w ⊙ ∂R/∂w| of the linearised network, 100 rounds by default.

    The network is copied in float64 and every parameter of the copy (kernels, biases,
    BatchNorm gamma and beta, and any other floating weight except the masks and the
    statistics of BatchNormalization and Normalization layers, which are copied as they are)
    is replaced by its absolute value. The copy runs in inference mode on one all-ones input
    of shape `(1, *input_shape)` (one per model input); R is the sum of all its outputs and w
    its (absolute) kernels, masked like the model's, so pruned weights score 0. The model
    itself is never changed. A model that cannot be copied (subclassed, or with a layer that
    does not rebuild from its configuration) is scored on itself, in its own dtype, with the
    same absolute values passed in statelessly (see the module docstring).

    The float64 copy and its traced gradient are built once per model and input shape, and
    reused by every later call on that model (`score` or `prune`, any number of rounds): a
    call reads the model's current parameters once, and each round feeds the current masks.

    Attributes:
        input_shape: The shape of one example without the batch axis (a tuple per input for
            several inputs), set by `score`/`prune` from their `input_shape`; None takes the
            model's declared input shape, or for a subclassed model the shape it was built
            or called with.

    Example:

    >>> masks = tfprune.prune(model, "synflow", 0.01)  # 100 rounds
    >>> masks = tfprune.prune(subclassed, "synflow", 0.01, input_shape=(32, 32, 3))
    """

    input_shape = None

    #: The transformation of the parameters; a subclass changes it (`synflow_l2`).
    linearisation: ClassVar[Linearisation] = ABSOLUTE

    def __init__(self):
        self._flow = None

    def __call__(self, model, weights, batches, rng):
        if self._flow is None or self._flow.model is not model:
            self._flow = _flow_of(model, weights, self.input_shape, self.linearisation)
        return self._flow.scores(weights)


class SynflowL2Scorer(SynflowScorer):
    """`synflow_l2`: keep-score |w ⊙ ∂R/∂w| with R the output sum of the network whose
    parameters are squared, 100 rounds by default.

    Everything else is SynFlow's (`SynflowScorer`): the float64 copy, masks, BatchNorm in
    inference mode with its moving statistics as they are, the all-ones input. Squared are
    the kernels, the biases and BatchNorm's gamma and beta: every parameter, as SynFlow takes
    the absolute value of every parameter. The PHEW authors' path-kernel code squares the
    parameters alone, in inference mode, as do public SynFlow-L2 pruners that square the
    module's parameters; others square the whole PyTorch state dict, BatchNorm's running
    mean and variance included. tfprune keeps the statistics, as SPEC §2 does for SynFlow, so
    that both methods see the same inference-mode normalisation.

    With R(w) = R̃(w ⊙ w), ∂R/∂w = 2w ⊙ ∂R̃/∂(w ⊙ w), so the keep-score is
    2 w² ⊙ |∂R̃/∂(w ⊙ w)|; the factor 2 changes no mask.

    Example:

    >>> masks = tfprune.prune(model, "synflow_l2", 0.01)  # 100 rounds
    """

    linearisation = SQUARE


def _flow_of(model: keras.Model, weights, input_shape, linearisation) -> _Flow:
    """The flow of `model` for one scoring call: built once per model, input shape and
    method (`cached_function`), with the model's current parameters read in."""
    shapes = _input_shapes(model, input_shape)
    key = ("flow", linearisation.method, tuple(tuple(shape) for shape in shapes), tuple(weights))
    flow = cached_function(model, key, lambda: _make_flow(model, weights, shapes, linearisation))
    if flow.fallback is not None:
        logging.warning(
            "%s computes on model %r itself in %s: %s",
            linearisation.method,
            model.name,
            model.compute_dtype,
            flow.fallback,
        )
    flow.read_parameters(weights)
    return flow


def _make_flow(model: keras.Model, weights, shapes, linearisation=ABSOLUTE) -> _Flow:
    """The float64 copy's flow, or the model's own when the copy cannot be built."""
    ones_layers = _ones_response_layers(model)
    try:
        copy = _float64_copy(model)
        pairs = _paired_variables(model, copy)
    except ModelError as error:
        flow = _Flow(model, model, weights, shapes, ones_layers, None, linearisation)
        flow.fallback = error
        return flow
    # The copy is private to the scorer, so its layers answer with their ones response for good.
    copy_ones_layers = _ones_response_layers(copy)
    for layer in copy_ones_layers:
        _answer_ones(layer)
    return _Flow(model, copy, weights, shapes, [], pairs, linearisation)


class _Flow:
    """R, the output sum of a network with transformed parameters, and its kernel gradients.

    Args:
        model: The model scored.
        network: The network R is computed on: `model` itself, or its float64 copy.
        weights: The model's prunable weights.
        shapes: The example shape of each input.
        ones_layers: Layers of `network` to answer with their ones response while R is
            computed (restored afterwards).
        pairs: For a copy, `{id(copy variable): model variable}`; None for the model itself.
        linearisation: The transformation of the parameters (SynFlow's absolute value by
            default).
    """

    #: Why R is computed on the model itself (the copy could not be built); None for a copy.
    fallback = None

    def __init__(self, model, network, weights, shapes, ones_layers, pairs, linearisation):
        # The flow is cached on the model itself (`cached_function`): the two are freed
        # together.
        self.model = model
        self._linearisation = linearisation
        self._ones_layers = ones_layers
        masks = {id(w.mask): path for path, w in weights.items()}
        kernels = {id(w.kernel): path for path, w in weights.items()}
        statistics = _statistics(model)
        # Per slot of the network's variables: the model variable it takes its value from,
        # the network's dtype, and whether the linearisation transforms it.
        self._sources = {"trainable": [], "non_trainable": []}
        self._mask_slots = {}
        kernel_slots = {}
        for group, variables in (
            ("trainable", network.trainable_variables),
            ("non_trainable", network.non_trainable_variables),
        ):
            for index, variable in enumerate(variables):
                source = variable if pairs is None else pairs[id(variable)]
                if id(source) in masks:
                    self._mask_slots[masks[id(source)]] = (group, index, variable.dtype)
                elif id(source) in kernels:
                    kernel_slots[kernels[id(source)]] = (group, index)
                # Parameters are transformed; masks and statistics of the data are not.
                transformed = id(source) not in masks and id(source) not in statistics
                self._sources[group].append((source, variable.dtype, transformed))
        # The values R is computed from, in variables of the flow's own (never the model's),
        # so that a round passes only the masks; None in the masks' slots.
        self._parameters = None
        self._factors = None
        slots = [kernel_slots[path] for path in weights]
        mask_slots = list(self._mask_slots.values())
        dtypes = _input_dtypes(network, len(shapes))
        ones = [
            tf.ones((1, *shape), dtype=dtype) for shape, dtype in zip(shapes, dtypes, strict=True)
        ]
        ones = ones[0] if len(ones) == 1 else ones

        # Traced without AutoGraph, as Keras traces its own training step: the network's
        # Python code runs once per trace, and the trace serves every round and every call.
        # A round passes the model's masks as they are and gets the keep-scores back, computed
        # (with the checks of R) in the graph: no per-round copies of the weights in Python.
        @tf.function(autograph=False)
        def flow_scores(masks):
            values = {
                group: [None if v is None else tf.convert_to_tensor(v) for v in variables]
                for group, variables in self._parameters.items()
            }
            for (group, index, dtype), mask in zip(mask_slots, masks, strict=True):
                values[group][index] = tf.cast(mask, dtype)
            trainable, non_trainable = values["trainable"], values["non_trainable"]
            kernels = [values[group][index] for group, index in slots]
            with tf.GradientTape() as tape:
                tape.watch(kernels)
                outputs = stateless_outputs(network, trainable, non_trainable, ones, False)
                flow = tf.add_n(
                    [tf.reduce_sum(tf.cast(o, tf.float64)) for o in tf.nest.flatten(outputs)]
                )
            grads = dense_gradients(tape, flow, kernels)
            finite = tf.reduce_all(
                [tf.math.is_finite(flow)]
                + [tf.reduce_all(tf.math.is_finite(grad)) for grad in grads]
            )
            scores = [
                factor * tf.abs(tf.cast(grad, tf.float64))
                for factor, grad in zip(self._factors, grads, strict=True)
            ]
            nonzero = tf.reduce_any([tf.reduce_any(score != 0) for score in scores])
            return flow, scores, finite, nonzero

        self._flow_scores = flow_scores
        self._dtype = network.compute_dtype

    def read_parameters(self, weights) -> None:
        """Reads the model's current parameters: the transformed values R is computed from,
        and each kernel's factor |w t'(w)|."""
        transform = self._linearisation.transform
        first = self._parameters is None
        if first:
            self._parameters = {}
        masks = {slot[:2] for slot in self._mask_slots.values()}
        for group, sources in self._sources.items():
            variables = self._parameters.setdefault(group, [])
            for index, (source, dtype, transformed) in enumerate(sources):
                if (group, index) in masks:
                    if first:
                        variables.append(None)
                    continue
                value = np.asarray(source.numpy())
                if transformed and np.issubdtype(value.dtype, np.floating):
                    # In float64, rounded once to the network's dtype: a float32 square of a
                    # float32 weight would round twice on the float64 copy.
                    value = transform(value.astype(np.float64))
                value = tf.constant(value, dtype=dtype)
                if first:
                    variables.append(tf.Variable(value, trainable=False))
                else:
                    variables[index].assign(value)
        factors = [
            self._linearisation.kernel_factor(np.float64(w.kernel.numpy()))
            for w in weights.values()
        ]
        if first:
            self._factors = [tf.Variable(f, trainable=False, dtype=tf.float64) for f in factors]
        else:
            for variable, factor in zip(self._factors, factors, strict=True):
                variable.assign(factor)

    def scores(self, weights) -> dict[str, np.ndarray]:
        """Returns `{path: |w ⊙ ∂R/∂w|}` under the model's current masks."""
        name, described = self._linearisation.method, self._linearisation.described
        masks = [tf.convert_to_tensor(weights[path].mask.value) for path in self._mask_slots]
        with _ones_responses(self._ones_layers), unwrapped_errors():
            flow, scores, finite, nonzero = self._flow_scores(masks)
        if not finite:
            raise ModelError(
                f"{name}'s R, the output sum of the {described} {self.model.name!r}, "
                f"overflows {self._dtype} ({flow.numpy()}); score a float64 copy of it "
                "(a functional or Sequential model whose layers rebuild from get_config)"
            )
        # Without `numpy()`'s copy: the tensors are this call's own.
        scores = {path: np.asarray(score) for path, score in zip(weights, scores, strict=True)}
        if not nonzero:
            logging.warning(
                "%s scores every weight of %r 0: its output sum does not depend on the "
                "kernels (a softmax output sums to 1: score the logits)",
                name,
                self.model.name,
            )
        return scores


def _statistics(model: keras.Model) -> set[int]:
    """`id`s of the variables that hold statistics of the data, not parameters: BatchNorm's
    moving mean and variance, and every weight of a Normalization layer."""
    found = set()
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.update(id(v) for v in (layer.moving_mean, layer.moving_variance))
        elif isinstance(layer, keras.layers.Normalization):
            found.update(id(v) for v in layer.weights)
    return found


def _float64_copy(model: keras.Model) -> keras.Model:
    """Returns an untrained copy of `model` with every floating layer rebuilt in float64."""
    if not (isinstance(model, keras.Sequential) or is_functional(model)):
        raise ModelError(
            "synflow copies the network in float64, which needs a functional or Sequential "
            f"Keras model; {type(model).__name__} is subclassed"
        )
    # Rebuilding unseeded initializers draws seeds from Python's `random`; restoring its state
    # keeps scoring from shifting the run's later random draws.
    state = random.getstate()
    try:
        return keras.models.clone_model(model, clone_function=_float64_twin, recursive=True)
    except (TypeError, ValueError, KeyError, NotImplementedError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ModelError(
            f"synflow cannot copy model {model.name!r} in float64 ({reason}); give every "
            "layer a get_config/from_config that rebuilds it"
        ) from error
    finally:
        random.setstate(state)


def _float64_twin(operation):
    """The float64 twin of a layer; a fresh copy of a plain operation (such as the `Add` of
    `a + b` in a functional model), which computes in the dtype of its inputs, or of a layer
    that does not compute in floats."""
    config = operation.get_config()
    if isinstance(operation, keras.layers.Layer) and _is_float(operation.compute_dtype):
        config["dtype"] = _DTYPE
    return operation.__class__.from_config(config)


def _paired_variables(model: keras.Model, copy: keras.Model) -> dict[int, keras.Variable]:
    """`{id(copy variable): model variable}`, the two models' variables paired in order.

    Raises:
        ModelError: if the copy's variables differ from the model's in number, name or shape,
            or in path for floating ones (a seed generator's state is numbered anew).
    """
    mismatch = len(model.variables) != len(copy.variables) or any(
        a.name != b.name
        or tuple(a.shape) != tuple(b.shape)
        or (_is_float(a.dtype) and a.path != b.path)
        for a, b in zip(model.variables, copy.variables, strict=False)
    )
    if mismatch:
        raise ModelError(
            f"synflow cannot copy model {model.name!r}: its float64 copy has other "
            "variables; give every layer a get_config that rebuilds it"
        )
    return {id(b): a for a, b in zip(model.variables, copy.variables, strict=True)}


def _input_shapes(model: keras.Model, given) -> list[tuple[int, ...]]:
    """The example shape of each model input: `given` (checked against what the model
    declares), the model's declared input shapes, or a subclassed model's built shape.

    Raises:
        ModelError: if no fixed shape is known.
        ConfigError: if `given` contradicts the model's inputs.
    """
    declared = _declared_inputs(model)
    if given is not None:
        given = [given] if isinstance(given[0], int) else list(given)
        if declared is not None:
            if len(given) != len(declared):
                raise ConfigError(
                    f"input_shape gives {len(given)} shapes for a model with {len(declared)} inputs"
                )
            for shape, tensor in zip(given, declared, strict=True):
                expected = tuple(tensor.shape[1:])
                if len(shape) != len(expected) or any(
                    e is not None and e != s for s, e in zip(shape, expected, strict=True)
                ):
                    raise ConfigError(
                        f"input_shape {shape} does not fit the model's input of shape "
                        f"{tuple(tensor.shape)}"
                    )
        return [tuple(shape) for shape in given]
    if declared is not None:
        shapes = [tuple(tensor.shape[1:]) for tensor in declared]
    else:
        shapes = _built_shapes(model)
    if shapes is None or any(d is None for shape in shapes for d in shape):
        raise ModelError(
            f"synflow needs a fixed input shape to build its all-ones input; model "
            f"{model.name!r} takes inputs of shape {shapes if shapes else 'unknown'}: pass "
            "input_shape=(...), the shape of one example"
        )
    return shapes


def _declared_inputs(model: keras.Model):
    """A functional or Sequential model's input tensors, or None."""
    if not (isinstance(model, keras.Sequential) or is_functional(model)):
        return None
    try:
        return list(model.inputs)
    except (AttributeError, ValueError):
        return None


def _built_shapes(model: keras.Model):
    """The example shapes a subclassed model was built or first called with (batch axis
    dropped), from its public build configuration; None if unknown."""
    config = model.get_build_config() if model.built else None
    if not config or len(config) != 1:
        return None
    (shape,) = config.values()
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], (tuple, list)):
        return [tuple(s[1:]) for s in shape]
    if isinstance(shape, (tuple, list)) and len(shape) > 1:
        return [tuple(shape[1:])]
    return None


def _input_dtypes(network: keras.Model, count: int) -> list:
    declared = _declared_inputs(network)
    if declared is None:
        return [network.compute_dtype] * count
    return [tensor.dtype for tensor in declared]


def _ones_response_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers that read the model's integer inputs, each checked to define
    `ones_response`.

    Raises:
        ModelError: if an integer input is read by a layer without `ones_response`, or the
            model is subclassed and holds a layer that reads integer ids.
    """
    declared = _declared_inputs(model)
    if declared is None:
        readers = [
            layer
            for layer in all_layers(model, include_self=False)
            if hasattr(layer, "ones_response")
            or isinstance(layer, keras.layers.Embedding)
            or getattr(layer, "stock_class", None) is keras.layers.Embedding
        ]
        if readers:
            raise ModelError(
                f"synflow cannot tell which layers of subclassed model {model.name!r} read "
                f"integer ids (it holds {readers[0].name!r}): build it as a functional model "
                "with an integer keras.Input"
            )
        return []
    found = []
    for tensor in declared:
        if _is_float(tensor.dtype):
            continue
        for layer in _readers(model, tensor):
            if not (
                isinstance(layer, MaskedLayer) and callable(getattr(layer, "ones_response", None))
            ):
                raise ModelError(
                    f"synflow feeds an all-ones input, but the integer input "
                    f"{tensor.name!r} of {model.name!r} is read by {layer.name!r} "
                    f"({type(layer).__name__}), which defines no ones_response (the response "
                    "to an all-ones one-hot input)"
                )
            if layer not in found:
                found.append(layer)
    return found


def _readers(model: keras.Model, tensor) -> list:
    """The operations of a functional or Sequential model that take `tensor` as an input."""
    if isinstance(model, keras.Sequential):
        return list(model.layers[:1])
    readers = []
    for operation in model.operations:
        if isinstance(operation, keras.layers.InputLayer):
            continue
        try:
            inputs = keras.tree.flatten(operation.input)
        except (AttributeError, ValueError):
            continue
        if any(t is tensor for t in inputs):
            readers.append(operation)
    return readers


def _answer_ones(layer: keras.layers.Layer) -> None:
    """Makes `layer` answer every call with its `ones_response`."""

    def call(inputs, *args, **kwargs):
        return layer.ones_response(inputs)

    layer.call = call


@contextlib.contextmanager
def _ones_responses(layers):
    """Makes `layers` answer with their `ones_response` while the context is open."""
    try:
        for layer in layers:
            _answer_ones(layer)
        yield
    finally:
        for layer in layers:
            if "call" in vars(layer):
                del layer.call


def _is_float(dtype) -> bool:
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype))
