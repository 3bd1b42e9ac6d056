"""Checkpoints and snapshots: variables saved with their paths, restored by path.

A checkpoint is a directory `ckpt-<step>` holding `variables.npz` (every variable of the model
and the optimizer, with its path) and `state.json` (the `TrainState` and the paths); it is
written under a temporary name and renamed. Restoring takes the newest readable checkpoint,
checks that each stored variable has the path and shape of the variable it goes to (never by
position alone) and skips a damaged checkpoint for the next older one. A snapshot is one
`.npz` file of a model's variables, kept for good (the weights after n iterations).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from tfprune._io import atomic_path, make_temp_dir
from tfprune.errors import ConfigError, OutputError
from tfprune.training.config import TrainState

if TYPE_CHECKING:
    import keras

CHECKPOINT_PREFIX = "ckpt-"

# What reading a damaged checkpoint file raises (numpy, zipfile, json, the TrainState fields).
_DAMAGED = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def checkpoints(checkpoint_dir: str) -> list[str]:
    """The checkpoint directories in `checkpoint_dir`, newest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    names = [n for n in os.listdir(checkpoint_dir) if n.startswith(CHECKPOINT_PREFIX)]
    return [os.path.join(checkpoint_dir, n) for n in sorted(names, reverse=True)]


def save_checkpoint(checkpoint_dir: str, variables: Sequence, state: TrainState, keep: int) -> str:
    """Writes a checkpoint of `variables` and `state` into `checkpoint_dir` atomically.

    Args:
        checkpoint_dir: An existing directory.
        variables: The model's variables, then the optimizer's.
        state: Saved beside them; `state.step` names the checkpoint.
        keep: How many of the newest checkpoints stay; older ones are deleted.

    Returns:
        The checkpoint's directory.

    Example:

    >>> save_checkpoint("run/checkpoints", model.variables, TrainState(step=3), keep=2)
    'run/checkpoints/ckpt-000000003'
    """
    target = os.path.join(checkpoint_dir, f"{CHECKPOINT_PREFIX}{state.step:09d}")
    tmp = make_temp_dir(checkpoint_dir)
    try:
        with open(os.path.join(tmp, "variables.npz"), "wb") as f:
            _write_variables(f, variables)
        metadata = dataclasses.asdict(state)
        metadata["paths"] = [v.path for v in variables]
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(metadata, f)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoints(checkpoint_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def restore_checkpoint(checkpoint_dir: str, variables: Sequence) -> TrainState | None:
    """Loads the newest readable checkpoint of `checkpoint_dir` into `variables`.

    A damaged checkpoint (a file truncated, garbled or missing) is skipped for the next older
    one, whichever of its files is broken.

    Args:
        checkpoint_dir: Where `save_checkpoint` wrote.
        variables: The variables, in the order they were saved.

    Returns:
        The checkpoint's state, or None when no checkpoint is readable.

    Raises:
        ConfigError: if a checkpoint holds the variables of another model (its variable
            paths or shapes differ from the model's): restoring it would be wrong.
    """
    for path in checkpoints(checkpoint_dir):
        try:
            return _load(path, variables)
        except ConfigError as error:
            raise ConfigError(
                f"{error}; train it in another output directory, or overwrite that one"
            ) from None
        except _DAMAGED as error:
            logging.warning(
                "checkpoint %s is unreadable (%s); trying an older one", path, _reason(error)
            )
    return None


def _load(path: str, variables: Sequence) -> TrainState:
    with open(os.path.join(path, "state.json")) as f:
        metadata = json.load(f)
    if not isinstance(metadata, dict):
        raise ValueError("state.json does not hold a JSON object")
    paths = metadata.pop("paths", None)
    state = TrainState(**metadata)
    archive = os.path.join(path, "variables.npz")
    _assign(variables, _read_variables(archive, variables, f"checkpoint {path}", paths))
    return state


def save_snapshot(model: keras.Model, path: str) -> None:
    """Writes every variable of `model` (weights, BN statistics, masks) to `path` atomically."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        _write_variables(f, model.variables)


def load_snapshot(model: keras.Model, path: str) -> None:
    """Assigns the variables saved by `save_snapshot` to `model`, each to the variable of the
    same path.

    Raises:
        ConfigError: if the snapshot holds another model's variables (naming the first that
            differs).
        OutputError: if the file is damaged.
    """
    try:
        values = _read_variables(path, model.variables, f"snapshot {path}")
    except ConfigError:
        raise
    except _DAMAGED as error:
        raise OutputError(
            f"snapshot {path} is unreadable ({_reason(error)}): delete the run directory that "
            "holds it to compute it again"
        ) from None
    _assign(model.variables, values)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def _write_variables(f, variables: Sequence) -> None:
    """Writes the values of `variables` and their paths as an `.npz` archive to `f`."""
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    np.savez(f, paths=np.array([v.path for v in variables]), **arrays)


def _read_variables(
    path: str, variables: Sequence, what: str, paths: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Reads the values `_write_variables` wrote for `variables`, checking each variable's path.

    Args:
        path: The `.npz` file.
        variables: The variables the values are for, in the order they were written.
        what: How errors name the file ("checkpoint ...", "snapshot ...").
        paths: The paths stored beside the file, for a file that holds none (checkpoints
            written before the archive held them).

    Raises:
        ConfigError: naming the first variable whose path or shape differs, or the counts.
        The errors of a damaged file (`_DAMAGED`) otherwise.
    """
    with np.load(path) as data:
        stored = [str(p) for p in data["paths"]] if "paths" in data.files else paths
        if stored is None:
            raise KeyError("the file lists no variable paths")
        values = [data[f"v{i}"] for i in range(min(len(stored), len(variables)))]
    for i, (variable, name) in enumerate(zip(variables, stored, strict=False)):
        if not _same_path(variable.path, name) or tuple(variable.shape) != values[i].shape:
            raise ConfigError(
                f"{what} was written by another model: its variable {i} is {name!r} of shape "
                f"{values[i].shape}, the model's is {variable.path!r} of shape "
                f"{tuple(variable.shape)}"
            )
    if len(stored) != len(variables):
        raise ConfigError(
            f"{what} was written by another model: it holds {len(stored)} variables, the model "
            f"{len(variables)}"
        )
    return values


def _same_path(a: str, b: str) -> bool:
    """Whether two variable paths name the same variable, up to the `_<n>` suffixes Keras adds
    to make automatic names unique in a process (a model rebuilt in the same process is
    `sequential_1/dense_1/kernel` where it was `sequential/dense/kernel`)."""
    return a == b or _AUTO_SUFFIX.sub("", a) == _AUTO_SUFFIX.sub("", b)


_AUTO_SUFFIX = re.compile(r"_\d+(?=[/_]|$)")


def _assign(variables: Sequence, values: Sequence[np.ndarray]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
