"""Keras dtype policies: building a network under one, and computing it in float32 for a while.

A network built under a mixed policy (`"mixed_float16"`, `"mixed_bfloat16"`) keeps float32
variables (and float32 masks: `MaskedLayer.masked` multiplies kernel and mask in float32 and
casts the product to the compute dtype) and computes in 16 bits. Pruning scores it in float32:
`computed_in_float32` gives its layers their variables' dtype as compute dtype for as long as
the scoring lasts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from tfprune.layers.base import layers_in_order


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Builds the layers created in the block under the Keras dtype policy `name`.

    Keras' global policy is set for the block and restored after it, so that nothing built
    later in the same process (another run, a test) inherits it.

    Args:
        name: A Keras dtype policy name: `"float32"`, `"mixed_float16"`, `"mixed_bfloat16"`.

    Example:

    >>> with dtype_policy("mixed_bfloat16"):
    ...     model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def computed_in_float32(model: keras.layers.Layer) -> Iterator[None]:
    """Makes every layer of `model` under a mixed policy compute in its variables' dtype
    (float32) inside the block; the layers get their policies back after it.

    A layer whose compute dtype is its variables' dtype (float32, float64) is left alone, so
    a float64 network stays float64. Functions traced inside the block trace float32
    computations.

    Example:

    >>> with computed_in_float32(model):
    ...     scores = scorer(model, weights, batches, rng)
    """
    changed = []
    for layer in layers_in_order(model):
        policy = layer.dtype_policy
        if policy.compute_dtype != policy.variable_dtype:
            changed.append((layer, policy))
            layer.dtype_policy = policy.variable_dtype
    try:
        yield
    finally:
        for layer, policy in changed:
            layer.dtype_policy = policy
