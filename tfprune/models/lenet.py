"""LeNet-300-100: the fully connected network of the lottery-ticket papers."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfprune.models import _common

_HIDDEN = (300, 100)


def lenet_300_100(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """Builds LeNet-300-100: Flatten, Dense 300 + ReLU, Dense 100 + ReLU, Dense `num_classes`.

    Every Dense layer has a bias; the model outputs logits. Layers are named `fc1`, `fc2` and
    `fc` (the classifier), as in open_lth.

    Args:
        input_shape: `(height, width, channels)` of one example.
        num_classes: Number of classes, at least 2.

    Returns:
        A built functional `keras.Model` named `"lenet_300_100"`.

    Example:

    >>> model = lenet_300_100((28, 28, 1), 10)
    >>> tuple(model.output.shape)
    (None, 10)
    """
    input_shape = _common.check_args(input_shape, num_classes)
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(_HIDDEN, start=1):
        x = _common.dense(x, units, name=f"fc{index}", activation="relu")
    outputs = _common.dense(x, num_classes, name="fc")
    return keras.Model(inputs, outputs, name="lenet_300_100")
