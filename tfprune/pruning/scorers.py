"""Keep-scores of the pruning methods (SPEC §2) and the registry that names them.

A scorer is a small class: it receives the model, its prunable weights, the pruning batches
(for methods that need data) and a numpy random generator, and returns `{path: keep-score}`
with one array of the kernel's shape per prunable kernel, where higher means more worth
keeping. Selection, rounds and masks are shared and live elsewhere.
"""

from __future__ import annotations

import inspect
import weakref
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf

from tfprune.errors import ConfigError
from tfprune.layers import PrunableWeight

_REGISTRY: dict[str, type[Scorer]] = {}


class Scorer:
    """Base class of the scorers.

    Subclasses set `name` (the method's registry name), `needs_data` and, for methods that
    are iterative by definition, `default_rounds`; they take their options as keyword arguments
    of `__init__` and implement `__call__`. One instance serves one `prune`/`score` call, all
    its rounds included, so it may cache work (a network copy, a traced function) on `self`.
    """

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    default_rounds: ClassVar[int] = 1

    def __call__(
        self,
        model: keras.Model,
        weights: dict[str, PrunableWeight],
        batches: list[tuple[np.ndarray, np.ndarray]] | None,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Returns `{path: keep-score}` for every path of `weights`."""
        raise NotImplementedError


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator that makes a scorer available by its `name`."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"scorer name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def scorer_names() -> list[str]:
    """The names of the registered scorers, sorted."""
    return sorted(_REGISTRY)


def get_scorer(name: str, **options) -> Scorer:
    """Returns the scorer registered as `name`, configured with `options`.

    Raises:
        ConfigError: for an unknown name or an option the scorer does not take.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown pruning method {name!r}; choose one of {', '.join(scorer_names())}"
        )
    cls = _REGISTRY[name]
    accepted = [
        p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(
            f"method {name!r} takes no option {unknown[0]!r} (its options: {allowed})"
        )
    return cls(**options)


@register_scorer
class RandomScorer(Scorer):
    """`random`: keep-scores drawn from U(0, 1) with the run's seed."""

    name = "random"

    def __call__(self, model, weights, batches, rng):
        return {path: rng.random(tuple(w.kernel.shape)) for path, w in weights.items()}


@register_scorer
class MagnitudeScorer(Scorer):
    """`magnitude`: keep-score |w|."""

    name = "magnitude"

    def __call__(self, model, weights, batches, rng):
        return {path: np.abs(w.kernel.numpy()) for path, w in weights.items()}


@register_scorer
class SnipScorer(Scorer):
    """`snip` (Lee et al., 2019): keep-score |w ⊙ ∂L/∂w|, BatchNorm on batch statistics.

    Args:
        from_logits: Whether the model outputs logits (tfprune's networks do).
    """

    name = "snip"
    needs_data = True

    def __init__(self, from_logits: bool = True):
        self.from_logits = from_logits

    def __call__(self, model, weights, batches, rng):
        total = sum(len(y) for _, y in batches)
        scores = {path: np.zeros(tuple(w.kernel.shape)) for path, w in weights.items()}
        for size, grads in kernel_gradients(model, weights, batches, self.from_logits):
            for path, w in weights.items():
                # The absolute value is taken per batch, then batches are averaged by size.
                scores[path] += (size / total) * np.abs(w.kernel.numpy() * grads[path])
        return scores


def kernel_gradients(
    model: keras.Model,
    weights: dict[str, PrunableWeight],
    batches: list[tuple[np.ndarray, np.ndarray]],
    from_logits: bool = True,
    training: bool = True,
):
    """Yields `(batch size, {path: ∂L/∂w})` for each batch, L the batch's mean cross-entropy.

    The model runs statelessly, so BatchNorm in training mode uses batch statistics without
    touching the moving averages. Gradients are float64 numpy arrays. The traced gradient
    function is cached per model, so scoring the same model again costs no retracing.
    """
    function = cached_function(
        model,
        ("kernel_gradients", tuple(weights), from_logits, training),
        lambda: _make_kernel_gradients(model, weights, from_logits, training),
    )
    trainable_values = variable_values(model.trainable_variables)
    non_trainable_values = variable_values(model.non_trainable_variables)
    for x, y in batches:
        grads = function(trainable_values, non_trainable_values, x, y)
        yield (
            len(y),
            {path: g.numpy().astype(np.float64) for path, g in zip(weights, grads, strict=True)},
        )


def variable_values(variables) -> list[tf.Tensor]:
    """The current values of `variables` as tensors, to be differentiated with a tape.

    Under a `tf.distribute` strategy a variable is a distributed container that a tape cannot
    watch outside a replica; its value (the replicas hold the same one) can be.
    """
    return [tf.convert_to_tensor(v.value) for v in variables]


def kernel_positions(model: keras.Model, weights: dict[str, PrunableWeight]) -> list[int]:
    """The index of each prunable kernel in `model.trainable_variables`."""
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    indices = []
    for path, w in weights.items():
        if id(w.kernel) not in position:
            raise ConfigError(f"kernel {path} is not trainable, so it has no gradient to score")
        indices.append(position[id(w.kernel)])
    return indices


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_function(model: keras.Model, key: tuple, make):
    """Returns `make()` cached for `(model, key)`; the cache entry dies with the model."""
    functions = _FUNCTIONS.setdefault(model, {})
    if key not in functions:
        functions[key] = make()
    return functions[key]


def _make_kernel_gradients(model, weights, from_logits, training):
    kernel_index = kernel_positions(model, weights)

    @tf.function(reduce_retracing=True)
    def gradients(trainable_values, non_trainable_values, x, y):
        with tf.GradientTape() as tape:
            tape.watch(trainable_values)
            logits, _ = model.stateless_call(
                trainable_values, non_trainable_values, x, training=training
            )
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, tf.cast(logits, tf.float32), from_logits=from_logits
                )
            )
        return tape.gradient(
            loss,
            [trainable_values[i] for i in kernel_index],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    return gradients
