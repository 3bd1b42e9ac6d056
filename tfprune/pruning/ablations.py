"""The paper's ablations (SPEC §3): `shuffle`, `reinit` and `invert`.

Each is a pure, seeded function: the same seed gives the same result. `invert` acts inside
selection (keep the lowest keep-scores, every round); `shuffle` acts on the final masks and
`reinit` on the weights, so the three compose in any order.
"""

from __future__ import annotations

import keras
import numpy as np
from absl import logging

from tfprune import streams
from tfprune._keras_compat import all_layers
from tfprune.registry import ABLATIONS, check_ablations  # noqa: F401  re-exported

# (variable attribute, initializer attribute) pairs of the stock and masked layers.
_INITIALIZED = (
    ("kernel", "kernel_initializer"),
    ("depthwise_kernel", "depthwise_initializer"),
    ("pointwise_kernel", "pointwise_initializer"),
    ("embeddings", "embeddings_initializer"),
    ("bias", "bias_initializer"),
    ("gamma", "gamma_initializer"),
    ("beta", "beta_initializer"),
    ("moving_mean", "moving_mean_initializer"),
    ("moving_variance", "moving_variance_initializer"),
)
_NOT_REINITIALIZED = ("mask", "seed_generator")


def shuffle_masks(masks: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Permutes each layer's mask independently; per-layer counts are preserved exactly.

    The whole layer is permuted, so on a network pruned before (for example a later level of
    iterative pruning) positions pruned earlier can be chosen again; that is the ablation.

    Args:
        masks: `{path: 0/1 mask}`.
        seed: The run's seed.

    Returns:
        `{path: shuffled mask}` with the same shapes and counts.

    Example:

    >>> shuffled = shuffle_masks({"k": np.array([1.0, 1.0, 0.0, 0.0])}, seed=0)
    """
    rng = streams.generator(seed, "shuffle")
    return {
        path: rng.permutation(mask.ravel()).reshape(mask.shape).astype(np.float32)
        for path, mask in masks.items()
    }


def reinitialize(model: keras.Model, seed: int) -> list[str]:
    """Draws fresh values for the model's weights from each layer's own initializers.

    Kernels, biases and BatchNorm parameters and statistics are redrawn with seeds derived
    from `seed` (a stream the original initialization never used); masks are kept.

    Args:
        model: The model whose weights to redraw in place.
        seed: The run's seed.

    Returns:
        The paths of the variables that were redrawn.
    """
    rng = streams.generator(seed, "reinit")
    pairs, unknown = initialized_variables(model)
    redrawn = []
    for variable, initializer in pairs:
        fresh = reseeded(initializer, int(rng.integers(2**31 - 1)))
        variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
        redrawn.append(variable.path)
    for variable in unknown:
        logging.warning("reinit: no initializer known for %s; left unchanged", variable.path)
    return redrawn


def initialized_variables(model: keras.Model, skip=frozenset()) -> tuple[list, list]:
    """The variables of `model` that a layer initializes, each with its initializer.

    Args:
        model: The model to look through (nested layers included).
        skip: `id`s of variables to leave out of both lists.

    Returns:
        `(pairs, unknown)`: `[(variable, initializer)]` in the order of Keras' layer traversal
        (each variable once), and the other variables, masks and seed-generator states
        excepted, in the order of `model.variables`, for which no initializer is known.
    """
    pairs, handled = [], set(skip)
    for layer in all_layers(model, include_self=False):
        for variable_name, initializer_name in _INITIALIZED:
            variable = getattr(layer, variable_name, None)
            initializer = getattr(layer, initializer_name, None)
            if not isinstance(variable, keras.Variable) or initializer is None:
                continue
            if id(variable) in handled:
                continue
            handled.add(id(variable))
            pairs.append((variable, initializer))
    unknown = [
        variable
        for variable in model.variables
        if id(variable) not in handled and not variable.path.endswith(_NOT_REINITIALIZED)
    ]
    return pairs, unknown


def reseeded(initializer, seed: int):
    """A copy of `initializer` (anything `keras.initializers.get` takes) drawing from `seed`;
    an initializer without a seed (constants) is copied as it is."""
    config = keras.initializers.serialize(keras.initializers.get(initializer))
    if isinstance(config, dict) and "seed" in config.get("config", {}):
        config["config"]["seed"] = seed
    return keras.initializers.deserialize(config)
