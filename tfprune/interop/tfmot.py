"""Hand masks computed by tfprune to a tf_keras model pruned with tfmot.

For users already on the TensorFlow Model Optimization Toolkit: compute masks with tfprune
(any method, ablation or run's `masks.npz`), then train a tf_keras model wrapped by
`tfmot.sparsity.keras.prune_low_magnitude` with exactly those masks.

Needs the optional extra: `pip install "tfprune[tfmot]"` (tensorflow-model-optimization and
tf_keras). Importing this module imports tfmot, which sets `TF_USE_LEGACY_KERAS=1` for the
whole process, so nothing else in tfprune imports it; import it explicitly:

    from tfprune.interop import tfmot as tfprune_tfmot

Masks are matched to the wrapped layers by layer name: a tfprune mask key is the Keras kernel
path (`"fc1/kernel"`, or `"block/fc1/kernel"` in a nested model) and addresses the tf_keras
layer named after the path's last component before `kernel` (`"fc1"`); a bare layer name
works too. Give the tf_keras layers the names of the tfprune model's layers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from absl import logging

from tfprune.errors import ModelError


class FixedMasks(tfmot.sparsity.keras.PruningSchedule):
    """A pruning schedule that never recomputes the masks, so tfprune's masks stay as given.

    Example:

    >>> wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=FixedMasks())
    """

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0, dtype=tf.float32)

    def get_config(self) -> dict:
        return {"class_name": self.__class__.__name__, "config": {}}


def layer_name(key: str) -> str:
    """The layer a tfprune mask key addresses: `"block/fc1/kernel"` -> `"fc1"`.

    Example:

    >>> layer_name("stage1_block1_conv1/kernel")
    'stage1_block1_conv1'
    """
    parts = [part for part in str(key).split("/") if part]
    if len(parts) >= 2 and parts[-1].split(":")[0] == "kernel":
        return parts[-2]
    return parts[-1] if parts else str(key)


def pruning_wrappers(model) -> dict:
    """The tfmot pruning wrappers of a tf_keras model, nested models included, by layer name.

    Raises:
        ModelError: if two wrapped layers share a name.
    """
    found = {}
    stack = [model]
    while stack:
        layer = stack.pop()
        if hasattr(layer, "pruning_vars") and hasattr(layer, "layer"):
            name = layer.layer.name
            if name in found:
                raise ModelError(f"two pruned layers are named {name!r}: give them unique names")
            found[name] = layer
            continue
        stack.extend(getattr(layer, "layers", []))
    return found


def apply_masks(model, masks: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Assigns tfprune masks to the mask variables of a tfmot-pruned tf_keras model.

    Each wrapped layer's mask variable gets the 0/1 mask and its kernel becomes
    `kernel * mask` (the weights tfmot itself keeps). Wrapped layers without a mask keep theirs.
    To keep the masks through training, wrap with `pruning_schedule=FixedMasks()` (or use
    `prune_with_masks`), and train with `tfmot.sparsity.keras.UpdatePruningStep()`.

    Args:
        model: A built tf_keras model returned by `tfmot.sparsity.keras.prune_low_magnitude`.
        masks: `{kernel path or layer name: 0/1 array of the kernel's shape}`, e.g.
            `tfprune.get_masks(model)` or `tfprune.load_masks("run/masks.npz")`.

    Returns:
        `{mask key: name of the wrapped layer it was assigned to}`.

    Raises:
        ModelError: if a mask matches no wrapped layer, two masks address the same layer, a
            shape differs, or a mask holds values other than 0 and 1.
    """
    wrappers = pruning_wrappers(model)
    if not wrappers:
        raise ModelError(
            "the model has no tfmot pruning wrappers: wrap it with "
            "tfmot.sparsity.keras.prune_low_magnitude first"
        )
    assigned: dict[str, str] = {}
    for key, mask in masks.items():
        name = layer_name(key)
        wrapper = wrappers.get(name)
        if wrapper is None:
            raise ModelError(
                f"mask {key!r} addresses layer {name!r}, which is not a pruned layer of the "
                f"model; pruned layers: {', '.join(sorted(wrappers))}"
            )
        if name in assigned.values():
            raise ModelError(f"two masks address layer {name!r}")
        weight, mask_var, _ = _kernel_vars(wrapper)
        value = np.asarray(mask)
        if tuple(value.shape) != tuple(mask_var.shape):
            raise ModelError(
                f"mask {key!r} has shape {value.shape}, layer {name!r} a kernel of shape "
                f"{tuple(mask_var.shape)}"
            )
        if not np.isin(value, (0, 1)).all():
            raise ModelError(f"mask {key!r} holds values other than 0 and 1")
        value = value.astype(mask_var.dtype.as_numpy_dtype)
        mask_var.assign(value)
        weight.assign(np.where(value != 0, weight.numpy(), np.zeros_like(weight.numpy())))
        assigned[key] = name
    unmasked = sorted(set(wrappers) - set(assigned.values()))
    if unmasked:
        logging.info("pruned layers without a tfprune mask keep theirs: %s", ", ".join(unmasked))
    return assigned


def prune_with_masks(model, masks: Mapping[str, np.ndarray]):
    """Wraps a tf_keras model for tfmot pruning with fixed tfprune masks.

    Only the layers that `masks` addresses are wrapped, with `FixedMasks()`, so tfmot never
    changes the masks. As in tfmot's `clone_model` recipe, the result shares its layers (and
    so its weights) with `model`. Train with `tfmot.sparsity.keras.UpdatePruningStep()` as
    usual and call `tfmot.sparsity.keras.strip_pruning` at the end.

    Args:
        model: A built tf_keras Sequential or functional model.
        masks: `{kernel path or layer name: 0/1 array}`, as for `apply_masks`.

    Returns:
        The wrapped tf_keras model, masks assigned.

    Example:

    >>> masks = tfprune.load_masks("runs/x/masks.npz")
    >>> pruned = prune_with_masks(tf_keras_lenet, masks)
    """
    names = {layer_name(key) for key in masks}

    def wrap(layer):
        if layer.name in names:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=FixedMasks())
        return layer

    wrapped = tf_keras.models.clone_model(model, clone_function=wrap)
    apply_masks(wrapped, masks)
    return wrapped


def _kernel_vars(wrapper):
    for weight, mask, threshold in wrapper.pruning_vars:
        if weight.name.split("/")[-1].startswith("kernel"):
            return weight, mask, threshold
    if len(wrapper.pruning_vars) == 1:
        return wrapper.pruning_vars[0]
    raise ModelError(f"cannot find the kernel of pruned layer {wrapper.layer.name!r}")
