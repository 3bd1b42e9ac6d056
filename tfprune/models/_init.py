"""Initialisers of SPEC §5: the defaults of the paper's PyTorch code, translated to Keras.

Every function returns a *fresh* initializer. An unseeded Keras initializer fixes its seed when it
is constructed, so one instance shared by two layers would give same-shaped kernels identical
values; a fresh instance per layer draws from the global seed (`keras.utils.set_random_seed`).
"""

from __future__ import annotations

import keras

# PyTorch's BatchNorm2d defaults: its momentum 0.1 weights the new batch, Keras' weights the old.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def kernel_initializer() -> keras.initializers.Initializer:
    """Returns the kernel initializer of conv and dense layers: untruncated N(0, 2 / fan_in).

    This is PyTorch's `kaiming_normal_` (fan-in, ReLU gain). Keras' `HeNormal` draws a truncated
    normal instead, which changes the largest weights and hence what magnitude pruning keeps.

    Example:

    >>> tuple(kernel_initializer()((300, 100)).shape)
    (300, 100)
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_in", distribution="untruncated_normal"
    )


def bias_initializer() -> keras.initializers.Initializer:
    """Returns the initializer of conv and dense biases: zeros.

    Example:

    >>> float(keras.ops.sum(bias_initializer()((10,))))
    0.0
    """
    return keras.initializers.Zeros()


def gamma_initializer() -> keras.initializers.Initializer:
    """Returns the initializer of BatchNorm scales: U[0, 1], as in the paper's code.

    Example:

    >>> bool(keras.ops.all(gamma_initializer()((64,)) <= 1.0))
    True
    """
    return keras.initializers.RandomUniform(minval=0.0, maxval=1.0)


def beta_initializer() -> keras.initializers.Initializer:
    """Returns the initializer of BatchNorm offsets: zeros.

    Example:

    >>> float(keras.ops.sum(beta_initializer()((64,))))
    0.0
    """
    return keras.initializers.Zeros()
