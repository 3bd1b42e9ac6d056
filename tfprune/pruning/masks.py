"""Reading, writing and summarising a model's masks, addressed by kernel path."""

from __future__ import annotations

import os
import zipfile

import keras
import numpy as np

from tfprune._io import atomic_path
from tfprune.errors import ConfigError, DataError
from tfprune.layers import prunable_weights


def get_masks(model: keras.layers.Layer) -> dict[str, np.ndarray]:
    """Returns `{kernel path: mask}` of every prunable kernel of `model` (copies)."""
    # `Variable.numpy` returns a copy already.
    return {path: w.mask.numpy() for path, w in prunable_weights(model).items()}


def assign_masks(model: keras.layers.Layer, masks: dict[str, np.ndarray]) -> None:
    """Assigns `masks` to the model's mask variables.

    Args:
        model: A model with masked layers.
        masks: `{kernel path: 0/1 array}` naming exactly the model's prunable kernels.

    Raises:
        ConfigError: if the paths, shapes or values do not fit the model.
    """
    weights = prunable_weights(model)
    if set(weights) != set(masks):
        extra, missing = sorted(set(masks) - set(weights)), sorted(set(weights) - set(masks))
        raise ConfigError(
            f"masks do not fit the model: unknown paths {extra[:3]}, missing paths {missing[:3]}"
        )
    values = {}
    for path, weight in weights.items():
        value = np.asarray(masks[path])
        if value.shape != tuple(weight.mask.shape):
            raise ConfigError(
                f"mask for {path} has shape {value.shape}, the kernel {tuple(weight.mask.shape)}"
            )
        if not np.all((value == 0) | (value == 1)):
            raise ConfigError(f"mask for {path} has values other than 0 and 1")
        values[path] = value
    # Assigned only once every mask is checked, so a rejected call leaves the model unchanged.
    assign_selected(weights, values)


def assign_selected(weights: dict, masks: dict[str, np.ndarray]) -> None:
    """Assigns masks that selection made (0/1 arrays of the kernels' shapes, one per path of
    `prunable_weights`, as `weights` lists them) without checking them again."""
    for path, weight in weights.items():
        weight.mask.assign(np.asarray(masks[path], dtype=weight.mask.dtype))


def checked_positions(model: keras.layers.Layer, positions: dict) -> dict:
    """`{path: trainable variable}` of `model`, after checking that every path of `positions`
    (`{path: None or a boolean array of the variable's shape}`) names one.

    Raises:
        ConfigError: for a path that names no trainable variable, or an array of another shape.
    """
    trainable = {v.path: v for v in model.trainable_variables}
    for path, where in positions.items():
        if path not in trainable:
            raise ConfigError(f"no trainable variable of the model has the path {path!r}")
        if where is not None and np.shape(where) != tuple(trainable[path].shape):
            raise ConfigError(
                f"positions of shape {np.shape(where)} for {path}, whose shape is "
                f"{tuple(trainable[path].shape)}"
            )
    return trainable


def layer_densities(masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Returns `{path: fraction of the kernel kept}`."""
    return {path: float(np.count_nonzero(m)) / m.size for path, m in masks.items()}


def overall_density(masks: dict[str, np.ndarray]) -> float:
    """Returns kept / total over all the prunable weights in `masks`."""
    total = sum(m.size for m in masks.values())
    return float(sum(np.count_nonzero(m) for m in masks.values())) / total


def collapsed_layers(masks: dict[str, np.ndarray]) -> list[str]:
    """Returns the paths of the kernels that keep no weight at all (layer collapse)."""
    return [path for path, m in masks.items() if not np.any(m)]


def save_masks(path: str, masks: dict[str, np.ndarray]) -> None:
    """Writes `masks` to an `.npz` file atomically (temporary file, then rename).

    Masks are stored as uint8, keyed by kernel path.
    """
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v, dtype=np.uint8) for k, v in masks.items()})


def load_masks(path: str) -> dict[str, np.ndarray]:
    """Reads masks written by `save_masks` as float32 0/1 arrays."""
    if not os.path.exists(path):
        raise DataError(f"no mask file at {path}")
    try:
        with np.load(path) as data:
            return {key: data[key].astype(np.float32) for key in data.files}
    except (OSError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split())[:200]
        raise DataError(
            f"{path} is not a mask file written by save_masks (an .npz of arrays): {reason}"
        ) from None
