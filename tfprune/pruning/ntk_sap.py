"""`ntk_sap` (Wang, Li and Sun, "NTK-SAP: Improving neural network pruning by aligning training
dynamics", ICLR 2023): NTK spectrum-aware pruning, without data (SPEC §7).

The trace of a network's neural tangent kernel on inputs x is ‖J‖², the squared norm of the
Jacobian of the outputs with respect to the weights, and ‖f(x; θ) − f(x; θ + Δ)‖² / ε² estimates
it for a perturbation Δ ~ N(0, ε²). NTK-SAP keeps the mask entries c to which that estimate, for
the pruned network θ ⊙ c and averaged over the initialization distribution, is most sensitive:

    keep-score = |∂/∂c E_{θ, x, Δ} ‖f(x; θ ⊙ c) − f(x; (θ + Δ) ⊙ c)‖²| ⊙ [c ≠ 0]

Each sample of the expectation draws, from the scorer's random generator:

- θ: every parameter a layer initializes (kernels, biases, BatchNorm gamma and beta), from the
  layer's own initializer reseeded (the authors' multi-sampling: the kernel of the
  initialization distribution, not of the weights at hand), as the `reinit` ablation draws them;
- x: `input_batch` inputs from N(0, I), of the model's input shape;
- Δ: a perturbation of every prunable kernel, from N(0, ε²); the other parameters of the
  perturbed network are those of θ.

The mean over `samples` samples (per round) is the expectation. BatchNorm normalizes both
networks with the batch statistics of the unperturbed one on the sample's inputs and masks,
held constant (not differentiated): the authors compute them in train mode with momentum 1 and
then run both networks in eval mode. The model is never written: the redrawn values, the
perturbed kernels and the statistics are passed to it statelessly.

Defaults, from the authors' code and their script for ResNet-20 on CIFAR-10: ε = 0.01
(`--ntksap_epsilon`), 5 samples per round (`--ntksap_R 5`), 20 rounds (`--prune-epochs 20`), and
100 Gaussian inputs per sample (their pruning set, 10 examples per CIFAR-10 class, is one batch
of at most 256, whose shape the Gaussian inputs take). Where this implementation differs from
their code, by choice: the expectation is a mean rather than a sum (the scale changes no mask),
the variance is the biased one a Keras BatchNorm normalizes a batch with (PyTorch's running
variance is unbiased), and the first sample's statistics are batch statistics too (their loop
switches the network to train mode only at the end of the first sample, with
`--prune-train-mode False`).
"""

from __future__ import annotations

import dataclasses
import numbers

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfprune._keras_compat import all_layers, is_functional
from tfprune.errors import ConfigError, ModelError
from tfprune.pruning.ablations import initialized_variables, reseeded
from tfprune.pruning.scorers import (
    cached_function,
    dense_gradients,
    kernel_positions,
    positive_number,
    stateless_outputs,
    unwrapped_errors,
    variable_values,
)
from tfprune.pruning.synflow import _declared_inputs, _input_shapes
from tfprune.registry import Scorer

_SEED_RANGE = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Draw:
    """One sample of NTK-SAP's expectation.

    Attributes:
        inputs: One array per model input, `(input_batch, *example shape)`, from N(0, I).
        parameters: `(variable, value)` pairs: the value drawn for every variable a layer
            initializes (BatchNorm statistics excepted).
        perturbations: `{kernel path: Δ}`, Δ ~ N(0, ε²) of the kernel's shape.
    """

    inputs: tuple[np.ndarray, ...]
    parameters: tuple[tuple[keras.Variable, np.ndarray], ...]
    perturbations: dict[str, np.ndarray]


class NtkSapScorer(Scorer):
    """`ntk_sap`: keep-score |∂/∂c E‖f(x; θ⊙c) − f(x; (θ+Δ)⊙c)‖²| ⊙ [c ≠ 0], 20 rounds.

    θ is redrawn from the layers' initializers, x ~ N(0, I) and Δ ~ N(0, ε²) for every sample
    (see the module docstring); the expectation is the mean of `samples` samples, and each
    sample's ‖·‖² is the mean over its inputs of the squared difference of all outputs. The
    score is the mask gradient itself, not multiplied by the weights; pruned entries score 0.
    No data is used: the inputs take the model's input shape (or `input_shape`).

    Args:
        epsilon: ε, the standard deviation of the kernel perturbation Δ.
        samples: Samples per round (the authors' R), each with its own θ, x and Δ.
        input_batch: Gaussian inputs per sample.

    Attributes:
        input_shape: The shape of one example without the batch axis (a tuple per input for
            several inputs), set by `score`/`prune` from their `input_shape`; None takes the
            model's declared input shape, or for a subclassed model the shape it was built
            or called with.

    Raises:
        ConfigError: for an option out of range.

    Example:

    >>> masks = tfprune.prune(model, "ntk_sap", 0.05)  # 20 rounds, 5 samples each
    >>> scores = tfprune.score(model, "ntk_sap", seed=1, samples=10)
    """

    input_shape = None

    def __init__(self, epsilon: float = 0.01, samples: int = 5, input_batch: int = 100):
        epsilon = positive_number(epsilon, "ntk_sap's epsilon")
        for name, value in (("samples", samples), ("input_batch", input_batch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(f"ntk_sap's {name} must be a positive integer, got {value!r}")
        self.epsilon = float(epsilon)
        self.samples = int(samples)
        self.input_batch = int(input_batch)
        self._sampler = None

    def __call__(self, model, weights, batches, rng):
        sampler = self._sampler_for(model, weights)
        total = {path: np.zeros(tuple(w.kernel.shape)) for path, w in weights.items()}
        for draw in self.draw(model, weights, rng):
            for path, grad in sampler.mask_gradients(draw, weights).items():
                total[path] += grad
        scores = {}
        for path, w in weights.items():
            if not np.all(np.isfinite(total[path])):
                raise ModelError(
                    f"ntk_sap's estimate for {path} of {model.name!r} is not finite: its "
                    "outputs overflow with the redrawn weights"
                )
            scores[path] = np.abs(total[path] / self.samples) * (w.mask.numpy() != 0)
        return scores

    def draw(self, model, weights, rng) -> list[Draw]:
        """The `samples` draws of one round, in the order the scorer makes them from `rng`.

        Each draw takes, in turn, its inputs, one seed per initialized variable and the
        perturbation of each kernel (in the order of `weights`).

        Args:
            model: The model scored.
            weights: `{kernel path: PrunableWeight}`.
            rng: The NumPy generator of the scores.

        Returns:
            One `Draw` per sample.
        """
        sampler = self._sampler_for(model, weights)
        draws = []
        for _ in range(self.samples):
            inputs = tuple(
                rng.standard_normal((self.input_batch, *shape)).astype(dtype)
                for shape, dtype in zip(sampler.shapes, sampler.dtypes, strict=True)
            )
            parameters = tuple(
                (variable, _drawn(initializer, int(rng.integers(_SEED_RANGE)), variable))
                for variable, initializer in sampler.initialized
            )
            perturbations = {
                path: rng.normal(0.0, self.epsilon, size=tuple(w.kernel.shape)).astype(
                    np.dtype(w.kernel.dtype)
                )
                for path, w in weights.items()
            }
            draws.append(Draw(inputs, parameters, perturbations))
        return draws

    def _sampler_for(self, model, weights) -> _Sampler:
        if self._sampler is None or self._sampler.model is not model:
            self._sampler = _Sampler(model, weights, self.input_shape)
        return self._sampler


def _drawn(initializer, seed: int, variable: keras.Variable) -> np.ndarray:
    fresh = reseeded(initializer, seed)
    return keras.ops.convert_to_numpy(fresh(tuple(variable.shape), dtype=variable.dtype))


class _Sampler:
    """What every sample of one model needs: the variables to redraw, the input shapes, the
    BatchNorm statistics to replace, and the traced mask gradient."""

    def __init__(self, model: keras.Model, weights, input_shape):
        self.model = model
        declared_dtypes = _input_dtypes(model)
        self.shapes = _gaussian_shapes(model, input_shape)
        self.dtypes = declared_dtypes or [model.compute_dtype] * len(self.shapes)
        self._trainable = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self._non_trainable = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        statistics, held = _batch_statistics(model, self._non_trainable)
        self.initialized = _initialized(model, held)
        kernel_slots = tuple(kernel_positions(model, weights))
        mask_slots = []
        for path, w in weights.items():
            if id(w.mask) not in self._non_trainable:
                raise ModelError(f"the mask of {path} is not a non-trainable variable of the model")
            mask_slots.append(self._non_trainable[id(w.mask)])
        self._function = cached_function(
            model,
            ("ntk_sap", tuple(weights), kernel_slots, tuple(mask_slots), statistics),
            lambda: _make_mask_gradients(model, kernel_slots, tuple(mask_slots), statistics),
        )

    def mask_gradients(self, draw: Draw, weights) -> dict[str, np.ndarray]:
        """`{path: ∂/∂c ‖f(x; θ⊙c) − f(x; (θ+Δ)⊙c)‖² / input_batch}` of one draw."""
        trainable = variable_values(self.model.trainable_variables)
        non_trainable = variable_values(self.model.non_trainable_variables)
        for variable, value in draw.parameters:
            if id(variable) in self._trainable:
                trainable[self._trainable[id(variable)]] = tf.constant(value)
            else:
                non_trainable[self._non_trainable[id(variable)]] = tf.constant(value)
        perturbations = [tf.constant(draw.perturbations[path]) for path in weights]
        inputs = [tf.constant(x) for x in draw.inputs]
        with unwrapped_errors():
            grads = self._function(
                trainable, non_trainable, perturbations, inputs[0] if len(inputs) == 1 else inputs
            )
        return {path: np.float64(g.numpy()) for path, g in zip(weights, grads, strict=True)}


def _make_mask_gradients(model, kernel_slots, mask_slots, statistics):
    @tf.function(reduce_retracing=True)
    def mask_gradients(trainable, non_trainable, perturbations, inputs):
        non_trainable = list(non_trainable)
        if statistics:
            _hold_batch_statistics(model, trainable, non_trainable, inputs, statistics)
        masks = [non_trainable[i] for i in mask_slots]
        perturbed = list(trainable)
        for index, delta in zip(kernel_slots, perturbations, strict=True):
            perturbed[index] = trainable[index] + delta
        batch = tf.cast(tf.shape(tf.nest.flatten(inputs)[0])[0], tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(masks)
            clean = stateless_outputs(model, trainable, non_trainable, inputs, False)
            noisy = stateless_outputs(model, perturbed, non_trainable, inputs, False)
            distance = tf.add_n(
                [
                    tf.reduce_sum(tf.square(tf.cast(a, tf.float64) - tf.cast(b, tf.float64)))
                    for a, b in zip(tf.nest.flatten(clean), tf.nest.flatten(noisy), strict=True)
                ]
            )
            value = distance / batch
        return dense_gradients(tape, value, masks)

    return mask_gradients


def _hold_batch_statistics(model, trainable, non_trainable, inputs, statistics) -> None:
    """Replaces, in `non_trainable`, the moving statistics of the BatchNorm layers by the batch
    statistics of the network on `inputs`, as constants.

    A BatchNorm layer run in training mode sets its moving mean to `mean · momentum + batch mean
    · (1 − momentum)` (and its variance likewise); from moving statistics of 0 that leaves the
    batch statistics times (1 − momentum).
    """
    probe = list(non_trainable)
    for mean_index, variance_index, _ in statistics:
        probe[mean_index] = tf.zeros_like(probe[mean_index])
        probe[variance_index] = tf.zeros_like(probe[variance_index])
    updated = _updated_state(model, trainable, probe, inputs)
    for mean_index, variance_index, momentum in statistics:
        for index in (mean_index, variance_index):
            value = updated[index]
            non_trainable[index] = tf.stop_gradient(value / tf.cast(1.0 - momentum, value.dtype))


def _updated_state(model, trainable, non_trainable, inputs) -> list:
    """The non-trainable values after one stateless call of `model` in training mode."""
    if isinstance(model, keras.Sequential) or is_functional(model):
        _, updated = model.stateless_call(trainable, non_trainable, inputs, training=True)
        return list(updated)
    mapping = [
        *zip(model.trainable_variables, trainable, strict=True),
        *zip(model.non_trainable_variables, non_trainable, strict=True),
    ]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model(inputs, training=True)
    return [scope.get_current_value(v) for v in model.non_trainable_variables]


def _batch_statistics(model, non_trainable) -> tuple[tuple, set[int]]:
    """The BatchNorm layers that normalize with batch statistics, as `(moving mean index,
    moving variance index, momentum)` in `model.non_trainable_variables`, and the `id`s of the
    statistics of every BatchNorm layer (never redrawn: a frozen layer keeps its own).

    Raises:
        ModelError: for a BatchNorm layer whose batch statistics cannot be read (batch
            renormalization, momentum 1).
    """
    found, held = [], set()
    for layer in all_layers(model, include_self=False):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        held.update((id(layer.moving_mean), id(layer.moving_variance)))
        if not layer.trainable:
            continue  # Keras normalizes with its moving statistics, in training mode too
        if layer.renorm or not 0 <= layer.momentum < 1:
            raise ModelError(
                f"ntk_sap normalizes with batch statistics, which BatchNormalization layer "
                f"{layer.name!r} (renorm={layer.renorm}, momentum={layer.momentum}) does not "
                "report; use renorm=False and a momentum below 1"
            )
        found.append(
            (
                non_trainable[id(layer.moving_mean)],
                non_trainable[id(layer.moving_variance)],
                float(layer.momentum),
            )
        )
    return tuple(found), held


def _initialized(model, held: set[int]) -> list[tuple[keras.Variable, object]]:
    """`(variable, initializer)` of every variable a layer of `model` initializes, except the
    statistics `held`, in the order of `model.variables` (which does not depend on how the
    layers nest); other variables keep their values in every sample (warned about)."""
    pairs, unknown = initialized_variables(model, skip=held)
    for variable in unknown:
        logging.warning(
            "ntk_sap: no initializer known for %s; every sample uses its current value",
            variable.path,
        )
    position = {id(v): i for i, v in enumerate(model.variables)}
    return sorted(pairs, key=lambda pair: position[id(pair[0])])


def _input_dtypes(model) -> list | None:
    """The dtype of each model input, checked to be floating; None for a subclassed model,
    whose inputs declare no dtype (it then computes in its own).

    Raises:
        ModelError: for an integer input, or a subclassed model holding an Embedding.
    """
    declared = _declared_inputs(model)
    if declared is None:
        for layer in all_layers(model, include_self=False):
            if (
                isinstance(layer, keras.layers.Embedding)
                or getattr(layer, "stock_class", None) is keras.layers.Embedding
            ):
                raise ModelError(
                    f"ntk_sap feeds inputs drawn from N(0, I), but model {model.name!r} holds "
                    f"{layer.name!r}, which reads integer ids; ntk_sap scores models with "
                    "floating inputs only"
                )
        return None
    dtypes = []
    for tensor in declared:
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise ModelError(
                f"ntk_sap feeds inputs drawn from N(0, I), but input {tensor.name!r} of "
                f"{model.name!r} is {dtype}; ntk_sap scores models with floating inputs only"
            )
        dtypes.append(dtype)
    return dtypes


def _gaussian_shapes(model, given) -> list[tuple[int, ...]]:
    """The example shape of each input: `given` (checked), or the model's own.

    Raises:
        ModelError: if the model declares no fixed shape and none is given.
        ConfigError: if `given` contradicts the model's inputs.
    """
    try:
        return _input_shapes(model, given)
    except ModelError:
        raise ModelError(
            f"ntk_sap needs a fixed input shape to draw its Gaussian inputs, and model "
            f"{model.name!r} declares none: pass input_shape=(...), the shape of one example"
        ) from None
