"""Pruning inside `model.fit`: the `PruneAt` callback and the reset of optimizer slots.

Published as `tfprune.keras` (`tfprune.keras.PruneAt`). The file is not named `keras.py`: a
script run from inside the package's directory would then import it for `import keras`.

The step of `PruneAt` is the optimizer's `iterations`, the number of updates applied so far,
so it counts across epochs and across `fit` calls that share the optimizer, and a fit resumed
by `keras.callbacks.BackupAndRestore` (which restores the optimizer) goes on counting where
the backup was taken.
"""

from __future__ import annotations

import inspect
import numbers
import sys
from collections.abc import Mapping

import keras
import numpy as np
from absl import logging

from tfprune.errors import ConfigError, DataError, ModelError
from tfprune.pruning import (
    check_ablations,
    check_method,
    check_options,
    get_masks,
    needs_data,
    prune_with_report,
)
from tfprune.pruning.masks import checked_positions
from tfprune.pruning.selection import check_density

# prune()'s own keyword arguments (scope, allocation, seed, rounds, ablations, ...); every
# other keyword of PruneAt is an option of the method.
_PRUNE_KEYWORDS = frozenset(
    name
    for name, parameter in inspect.signature(prune_with_report).parameters.items()
    if name not in ("model", "method", "density", "data")
    and parameter.kind is not inspect.Parameter.VAR_KEYWORD
)


class PruneAt(keras.callbacks.Callback):
    """Prunes the model once, just before training step `step` of `model.fit`.

    `PruneAt(method, density, step, data, **prune_kwargs)` calls
    `tfprune.prune_with_report(model, method, density, data, **prune_kwargs)` at the start of
    the batch that the optimizer's update number `step + 1` trains on, resets the optimizer's
    slots of the pruned weights (`reset_optimizer_slots`) and keeps the `PruneReport` in
    `report`. The masks are model weights applied in the forward pass, so from then on `fit`
    trains only the kept weights: a pruned weight gets a zero gradient, and with fresh slots
    (momentum, Adam's moments) its value no longer changes (decoupled weight decay, as in
    `AdamW` or `SGD(weight_decay=...)`, still shrinks it, which the mask hides and `strip`
    writes as zero).

    **Step.** `step` counts the optimizer's updates, `optimizer.iterations`, across epochs and
    across `fit` calls that share the optimizer: `step=0` is pruning at initialization, before
    the first update; `step=1000` prunes after 1000 updates, whichever epoch or `fit` call
    they happened in. Compiling the model again with a new optimizer starts the count at 0.
    With `steps_per_execution=k`, Keras calls batch hooks every k steps, so pruning happens at
    the first hook at or after `step`.

    **Once, and across `BackupAndRestore`.** A fit that starts past `step` (a second `fit`, or
    one that `keras.callbacks.BackupAndRestore` resumed from a backup taken after pruning)
    does not prune: the masks come back with the weights the backup restores. A fit resumed
    from a backup taken before `step` prunes when it reaches it; so does the same callback if
    a restore rewound the masks it had set. A fit that starts past `step` on a model without
    any pruned weight raises, since the pruning it asks for cannot have happened.

    **Magnitude pruning after training** (SPEC §4): train with `fit`, then prune by magnitude
    and fine-tune with a second `fit`. Either in one run, `fit(epochs=E + F, callbacks=
    [PruneAt("magnitude", d, step=T)])` with T the number of steps of the first E epochs, or
    in two: `fit(epochs=E)`, `tfprune.prune(model, "magnitude", d)`,
    `tfprune.keras.reset_optimizer_slots(model)`, `fit(epochs=F)` (to replay the learning-rate
    schedule from its start, compile with a new optimizer before the second `fit` instead).

    Args:
        method: A pruning method (`tfprune.method_names()`).
        density: Fraction of the prunable weights to keep, in (0, 1].
        step: The optimizer step before which to prune, >= 0.
        data: Pruning data for data-driven methods (`snip`, `grasp`, ...): an `(x, y)` tuple
            of arrays (split into batches of `batch_size`) or a `tf.data.Dataset` of `(x, y)`
            batches.
        verbose: 0 (log at INFO level) or 1 (also print one line when pruning, as Keras'
            own callbacks print).
        **prune_kwargs: Any keyword of `tfprune.prune`: `ablations`, `seed`, `rounds`,
            `allocation`, `scope`, `min_layer_density`, `batch_size`, ..., and the method's
            options.

    Attributes:
        report: The `PruneReport` of the pruning, None until the callback prunes.
        pruned_at: The step at which it pruned, None until then.
        slots_reset: `{weight path: [paths of the optimizer slots reset]}` of that pruning.

    Raises:
        ConfigError: for an unknown method or option, a bad density, step or ablation; during
            `fit`, for a fit that starts past `step` on an unpruned model.
        DataError: for a data-driven method without `data`.

    Example:

    >>> model.fit(x, y, epochs=3, callbacks=[tfprune.keras.PruneAt("snip", 0.1, data=(x, y))])
    """

    def __init__(
        self,
        method: str,
        density: float,
        step: int = 0,
        data=None,
        *,
        verbose: int = 0,
        **prune_kwargs,
    ):
        super().__init__()
        self.method = check_method(method)
        self.density = check_density(density)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ConfigError(f"step must be a non-negative integer, got {step!r}")
        self.step = int(step)
        options = {k: v for k, v in prune_kwargs.items() if k not in _PRUNE_KEYWORDS}
        check_options(method, options)
        check_ablations(prune_kwargs.get("ablations", ()))
        if data is None and needs_data(method, prune_kwargs.get("allocation")):
            raise DataError(
                f"method {method!r} needs data: pass data=(x, y) or a tf.data.Dataset of batches"
            )
        if verbose not in (0, 1):
            raise ConfigError(f"verbose must be 0 or 1, got {verbose!r}")
        self.data = data
        self.verbose = verbose
        self.prune_kwargs = dict(prune_kwargs)
        self.report = None
        self.pruned_at = None
        self.slots_reset = {}
        self._first_batch = True
        self._settled = False

    def on_train_begin(self, logs=None):
        self._first_batch = True
        self._settled = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._settled:
            return
        iteration = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        first, self._first_batch = self._first_batch, False
        if iteration < self.step:
            return
        self._settled = True
        if self.report is not None and _same_masks(get_masks(self.model), self.report.masks):
            return
        if first and iteration > self.step:
            self._check_pruned(iteration)
            return
        self._prune(iteration)

    def _check_pruned(self, iteration: int) -> None:
        """A fit that starts past `step`: the pruning happened before, unless no weight is
        pruned at all."""
        if self.density < 1 and all(np.all(m != 0) for m in get_masks(self.model).values()):
            raise ConfigError(
                f"PruneAt(step={self.step}) is in a fit that starts at step {iteration}, past its "
                f"step, and the model has no pruned weight: give a step >= {iteration}, or "
                "prune before fit with tfprune.prune"
            )
        logging.info(
            "PruneAt: the fit starts at step %d, past step %d; the model keeps its masks",
            iteration,
            self.step,
        )

    def _prune(self, iteration: int) -> None:
        self.report = prune_with_report(
            self.model, self.method, self.density, self.data, **self.prune_kwargs
        )
        self.pruned_at = iteration
        if "reinit" in self.report.ablations:
            # Every weight was drawn again: none of the optimizer's state applies to it.
            positions = {v.path: None for v in self.model.trainable_variables}
        else:
            positions = {path: mask == 0 for path, mask in self.report.masks.items()}
        self.slots_reset = reset_optimizer_slots(self.model, positions)
        message = (
            f"PruneAt: pruned with {self.method} to density {self.report.density:.6g} before "
            f"step {iteration}; reset {sum(map(len, self.slots_reset.values()))} optimizer slots"
        )
        logging.info(message)
        if self.verbose and keras.config.is_interactive_logging_enabled():
            # What Keras' own callbacks do with verbose=1.
            sys.stdout.write(message + "\n")
            sys.stdout.flush()


def reset_optimizer_slots(
    model: keras.Model,
    positions: Mapping[str, np.ndarray | None] | None = None,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> dict[str, list[str]]:
    """Sets optimizer slots back to the values a fresh optimizer gives them, where asked.

    A slot is an optimizer variable kept per model variable (SGD's momentum, Adam's first and
    second moments, Adagrad's accumulator, ...). Its fresh value is read from a new optimizer of
    the same configuration built for the variable alone: zero for momentum and Adam's moments,
    `initial_accumulator_value` for Adagrad. The slots of a variable are found through that
    new optimizer, as the optimizer variables of the same name and shape (Keras names a slot
    after its variable's path); a slot whose shape differs from its variable's (Adafactor's
    factored moments) is reset only when the whole variable is. The iteration count and the
    learning rate are left alone, and so is every entry not asked for.

    Args:
        model: The model whose variables the optimizer trains.
        positions: `{trainable variable path: None (the whole slot) or a boolean array of the
            variable's shape (True where to reset)}`. None: every pruned weight, that is every
            entry of a prunable kernel whose mask is 0.
        optimizer: The optimizer; None: `model.optimizer`.

    Returns:
        `{variable path: [paths of the slots reset]}`; empty when the optimizer has not been
        built yet (its slots will start fresh).

    Raises:
        ConfigError: for a path that names no trainable variable, or an array of another shape.
        ModelError: for a model without optimizer, an optimizer that cannot be made again from
            its configuration, or slots whose names cannot be told apart.

    Example:

    >>> tfprune.prune(model, "magnitude", 0.1)  # between two fits
    >>> _ = tfprune.keras.reset_optimizer_slots(model)
    """
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None:
        raise ModelError("the model has no optimizer: compile it, or pass optimizer=")
    if positions is None:
        positions = {path: mask == 0 for path, mask in get_masks(model).items()}
    trainable = checked_positions(model, positions)
    if not optimizer.built:
        return {}
    by_name: dict[str, list] = {}
    for slot in optimizer.variables:
        by_name.setdefault(slot.name, []).append(slot)
    reset = {}
    for path, where in positions.items():
        where = None if where is None else np.asarray(where, dtype=bool)
        if where is not None and not where.any():
            continue
        done = []
        for slot, fresh in _slots(optimizer, trainable[path], by_name):
            if where is None:
                slot.assign(fresh)
            elif tuple(slot.shape) == where.shape:
                current = keras.ops.convert_to_numpy(slot)
                slot.assign(np.where(where, fresh, current).astype(current.dtype))
            else:
                continue
            done.append(slot.path)
        reset[path] = done
    return reset


def _slots(optimizer, variable, by_name: dict) -> list[tuple[keras.Variable, np.ndarray]]:
    """`[(slot of variable in optimizer, its fresh value)]`."""
    try:
        fresh = type(optimizer).from_config(optimizer.get_config())
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ModelError(
            f"cannot make a new {type(optimizer).__name__} from its get_config() to read the "
            f"fresh values of its slots: {' '.join(str(error).split())[:200]}"
        ) from error
    existing = {id(v) for v in fresh.variables}
    fresh.build([variable])
    found = []
    for slot in (v for v in fresh.variables if id(v) not in existing):
        matches = [v for v in by_name.get(slot.name, ()) if tuple(v.shape) == tuple(slot.shape)]
        if len(matches) != 1:
            raise ModelError(
                f"cannot tell which optimizer variable is the slot {slot.name!r} of "
                f"{variable.path!r}: {len(matches)} have that name and shape (give the layers "
                "names that stay distinct once '/' is replaced by '_')"
            )
        found.append((matches[0], keras.ops.convert_to_numpy(slot)))
    return found


def _same_masks(current: dict, expected: dict) -> bool:
    return current.keys() == expected.keys() and all(
        np.array_equal(current[path], expected[path]) for path in current
    )
