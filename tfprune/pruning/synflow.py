"""`synflow` (Tanaka, Kunin, Yamins and Ganguli, 2020): keep-score |w ⊙ ∂R/∂w|, SPEC §2."""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf

from tfprune._keras_compat import all_layers, is_functional
from tfprune.errors import ModelError
from tfprune.registry import Scorer

_DTYPE = "float64"


class SynflowScorer(Scorer):
    """`synflow`: keep-score |w ⊙ ∂R/∂w| of the linearised network, 100 rounds by default.

    The network is copied in float64 and every parameter of the copy (kernels, biases,
    BatchNorm gamma and beta, and any other weight except the masks and the BatchNorm moving
    statistics, which are copied as they are) is replaced by its absolute value. The copy
    runs in inference mode on one all-ones input of shape `(1, *input_shape)`; R is the sum of
    its outputs and w its (absolute) kernels, masked like the model's, so pruned weights score
    0. The model itself is never changed.

    The copy and its traced gradient are built on the first call and reused by the later
    rounds of the same `prune` call, which only refresh the masks.

    Example:

    >>> masks = tfprune.prune(model, "synflow", 0.01)  # 100 rounds
    """

    def __init__(self):
        self._flow = None

    def __call__(self, model, weights, batches, rng):
        if self._flow is None or self._flow.model is not model:
            self._flow = _LinearisedCopy(model, weights)
        return self._flow.scores(weights)


class _LinearisedCopy:
    """A float64, absolute-valued copy of a model and the traced gradient of its output sum."""

    def __init__(self, model: keras.Model, weights):
        self.model = model
        copy = _float64_copy(model)
        if len(model.variables) != len(copy.variables) or any(
            a.path != b.path or tuple(a.shape) != tuple(b.shape)
            for a, b in zip(model.variables, copy.variables, strict=True)
        ):
            raise ModelError(
                f"synflow cannot copy model {model.name!r}: its float64 copy has other "
                "variables; give every layer a get_config that rebuilds it"
            )
        masks = {id(w.mask): path for path, w in weights.items()}
        kernels = {id(w.kernel): path for path, w in weights.items()}
        statistics = {
            id(v)
            for layer in all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)
        }
        original = {id(b): a for a, b in zip(model.variables, copy.variables, strict=True)}
        self._values = {"trainable": [], "non_trainable": []}
        self._mask_slots = {}
        kernel_slots = {}
        for group, variables in (
            ("trainable", copy.trainable_variables),
            ("non_trainable", copy.non_trainable_variables),
        ):
            for index, variable in enumerate(variables):
                source = original[id(variable)]
                value = np.asarray(source.numpy())
                if id(source) in masks:
                    self._mask_slots[masks[id(source)]] = (group, index, variable.dtype)
                elif id(source) in kernels:
                    kernel_slots[kernels[id(source)]] = (group, index)
                if (
                    np.issubdtype(value.dtype, np.floating)
                    and id(source) not in masks
                    and id(source) not in statistics
                ):
                    value = np.abs(value)
                self._values[group].append(tf.constant(value, dtype=variable.dtype))
        self._kernels = {path: np.abs(np.float64(w.kernel.numpy())) for path, w in weights.items()}
        slots = [kernel_slots[path] for path in weights]
        ones = tf.ones((1, *_input_shape(model)), dtype=copy.inputs[0].dtype)

        @tf.function
        def flow_gradients(trainable, non_trainable):
            values = {"trainable": trainable, "non_trainable": non_trainable}
            kernels = [values[group][index] for group, index in slots]
            with tf.GradientTape() as tape:
                tape.watch(kernels)
                outputs, _ = copy.stateless_call(trainable, non_trainable, ones, training=False)
                flow = tf.add_n(
                    [tf.reduce_sum(tf.cast(o, tf.float64)) for o in tf.nest.flatten(outputs)]
                )
            return tape.gradient(flow, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        self._flow_gradients = flow_gradients

    def scores(self, weights) -> dict[str, np.ndarray]:
        """Returns `{path: |w ⊙ ∂R/∂w|}` under the model's current masks."""
        values = {group: list(tensors) for group, tensors in self._values.items()}
        for path, (group, index, dtype) in self._mask_slots.items():
            values[group][index] = tf.constant(weights[path].mask.numpy(), dtype=dtype)
        grads = self._flow_gradients(values["trainable"], values["non_trainable"])
        return {
            path: self._kernels[path] * np.abs(grad.numpy())
            for path, grad in zip(weights, grads, strict=True)
        }


def _float64_copy(model: keras.Model) -> keras.Model:
    """Returns an untrained copy of `model` with every layer rebuilt in float64."""
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
        raise ModelError(
            f"synflow cannot copy model {model.name!r} in float64 ({error}); give every layer "
            "a get_config/from_config that rebuilds it"
        ) from error
    finally:
        random.setstate(state)


def _float64_twin(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = layer.get_config()
    config["dtype"] = _DTYPE
    return layer.__class__.from_config(config)


def _input_shape(model: keras.Model) -> tuple[int, ...]:
    """The shape of one example, e.g. `(H, W, C)`, from the model's single input."""
    if len(model.inputs) != 1:
        raise ModelError(
            f"synflow needs a model with one input, {model.name!r} has {len(model.inputs)}"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(dim is None for dim in shape):
        raise ModelError(
            f"synflow needs a fixed input shape to build its all-ones input; {model.name!r} "
            f"takes inputs of shape {tuple(model.inputs[0].shape)}"
        )
    return shape
