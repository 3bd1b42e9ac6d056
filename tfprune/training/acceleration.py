"""How the training step runs: compiled with XLA or not, and in which precision.

`TrainConfig.jit_compile` and `TrainConfig.precision` are resolved and checked here against
the model and the strategy; the `Trainer` builds its step from the answers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfprune.errors import ConfigError
from tfprune.layers.base import layers_in_order

# The layers XLA runs slower than TensorFlow's oneDNN kernels on a CPU (see
# `TrainConfig.jit_compile`); a masked twin counts through its `stock_class`.
_CONVOLUTIONS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)

_HALF = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def uses_xla(setting: bool | str, model: keras.Model, strategy: tf.distribute.Strategy) -> bool:
    """Whether the training step is compiled with XLA under `TrainConfig.jit_compile = setting`.

    `"auto"` compiles on GPUs and TPUs, and on the CPU for a network without convolutions
    trained on one replica (the cases where XLA measured faster; see `TrainConfig`).

    Example:

    >>> uses_xla("auto", lenet, tf.distribute.get_strategy())
    True
    """
    if setting != "auto":
        return bool(setting)
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: TensorFlow places the ops, on a GPU if any
        devices = [device.name for device in tf.config.list_logical_devices()]
    if any(tf.DeviceSpec.from_string(d).device_type not in (None, "CPU") for d in devices):
        return True
    if strategy.num_replicas_in_sync > 1:
        return False
    return not any(
        issubclass(getattr(layer, "stock_class", None) or type(layer), _CONVOLUTIONS)
        for layer in layers_in_order(model)
    )


def check_precision(precision: str, model: keras.Model) -> None:
    """Raises ConfigError unless `model` computes as `TrainConfig.precision = precision` says.

    A network trained under `"mixed_float16"` or `"mixed_bfloat16"` must have been built under
    that dtype policy (`tfprune.layers.precision.dtype_policy`, which `RunContext.build_model`
    uses), and one trained under `"float32"` must not compute in 16 bits: the loss scaling the
    loop adds for float16 would be missing or useless otherwise.
    """
    computes = {layer.compute_dtype for layer in layers_in_order(model)}
    half = sorted(computes & set(_HALF.values()))
    wanted = _HALF.get(precision)
    if wanted is None and half:
        raise ConfigError(
            f"training.precision is {precision!r} but model {model.name!r} computes in "
            f"{half[0]}: set training.precision = 'mixed_{half[0]}'"
        )
    if wanted is not None and wanted not in computes:
        raise ConfigError(
            f"training.precision is {precision!r} but model {model.name!r} does not compute "
            f"in {wanted}: build it under the {precision!r} dtype policy"
        )


def loss_scaled(precision: str, optimizer: keras.optimizers.Optimizer):
    """`optimizer` wrapped in a `keras.optimizers.LossScaleOptimizer` for float16, else None.

    The wrapper scales the loss (`scale_loss`), unscales the gradients, skips a step whose
    gradients are not finite and adapts the scale; the wrapped optimizer does the update.
    """
    if precision != "mixed_float16":
        return None
    return keras.optimizers.LossScaleOptimizer(optimizer)
