"""The loss L that the data-driven scorers differentiate (SPEC §2).

L comes from, in this order: the `loss` argument of `tfprune.score`/`prune`, the loss the
model was compiled with (`model.compile(loss=...)`, read from the public `model.loss` and
`model.get_compile_config()`), or, for a model that is not compiled, the default: the mean
sparse categorical cross-entropy of the model's logits. A loss is given as `compile` takes it:
a Keras loss name (`"mse"`, `"sparse_categorical_crossentropy"`, `"crossentropy"`), a
`keras.losses.Loss`, a callable `(y_true, y_pred) -> loss` (per example, per element or
already reduced), or a list or dict of those with one per output. One loss for a model with
several outputs is applied to every output, as `compile` does. Every loss is reduced to the
batch mean, and the outputs' losses are added, weighted by the compiled `loss_weights`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfprune.errors import ConfigError, DataError, ModelError

DEFAULT = "default"  # the sparse categorical cross-entropy of the logits
ARGUMENT = "argument"  # the `loss` argument
COMPILED = "compiled"  # the model's compiled loss

# Identifiers `compile` resolves from the shapes of targets and predictions.
_AUTO_CROSSENTROPY = ("crossentropy", "ce")


class PruningLoss:
    """A loss of `(y_true, y_pred)` reduced to the batch mean: the L of SNIP and GraSP.

    Calling it returns one scalar tensor: the sum over the model's outputs of each output's
    loss (per example or per element values are averaged over the batch), weighted by
    `loss_weights`. Floating targets are cast to their prediction's dtype, predictions
    narrower than float32 are cast to float32; integer targets stay integers.

    The default loss (`is_default`) is not called: each scorer computes its own cross-entropy
    from the logits, with its options (`from_logits`, GraSP's `temperature`).

    Args:
        spec: The loss as `model.compile(loss=...)` takes it; None for the default.
        source: `DEFAULT`, `ARGUMENT` or `COMPILED`.
        loss_weights: A number, or a list or dict with one weight per output (compiled losses).
        output_names: The model's output names, to match dict losses and targets.

    Raises:
        ConfigError: for a loss that is neither a Keras loss, its name, a callable, nor a list
            or dict of them.
    """

    def __init__(self, spec=None, source: str = DEFAULT, loss_weights=None, output_names=None):
        self.source = source
        self.spec = spec
        self.loss_weights = loss_weights
        self.output_names = list(output_names) if output_names else None
        if source == DEFAULT:
            self._losses = None
        elif isinstance(spec, dict):
            self._losses = {str(name): _resolve(value) for name, value in spec.items()}
        elif isinstance(spec, (list, tuple)):
            self._losses = [_resolve(value) for value in spec]
        else:
            self._losses = _resolve(spec)
        self.key = (source, _key(spec), _key(loss_weights), _key(self.output_names))

    @property
    def is_default(self) -> bool:
        """Whether this is the default cross-entropy, which the scorers compute themselves."""
        return self.source == DEFAULT

    @property
    def description(self) -> str:
        """How messages name this loss."""
        if self.source == DEFAULT:
            return "the default cross-entropy"
        shown = self.spec if isinstance(self.spec, str) else type(self.spec).__name__
        if self.source == COMPILED:
            return f"the compiled loss ({shown})"
        return f"loss={shown}"

    def __call__(self, y_true, y_pred) -> tf.Tensor:
        """The batch-mean loss of one batch, summed over the outputs.

        Raises:
            DataError: if the targets do not match the model's outputs.
            ConfigError: if the losses or weights do not match them.
        """
        names, predictions = _flat_outputs(y_pred, self.output_names)
        losses = self._per_output(self._losses, names, len(predictions), "loss")
        if all(loss is None for loss in losses):
            raise ConfigError(f"{self.description} gives no output of the model a loss")
        weights = self._weights(names, len(predictions))
        targets = _flat_targets(y_true, names, len(predictions), losses)
        total = None
        for loss, weight, target, prediction in zip(
            losses, weights, targets, predictions, strict=True
        ):
            if loss is None:
                continue
            if prediction.dtype in (tf.float16, tf.bfloat16):
                prediction = tf.cast(prediction, tf.float32)
            if target.dtype.is_floating and target.dtype != prediction.dtype:
                target = tf.cast(target, prediction.dtype)
            value = tf.reduce_mean(_apply(loss, target, prediction))
            if weight != 1:
                value = value * tf.cast(weight, value.dtype)
            total = value if total is None else total + tf.cast(value, total.dtype)
        return total

    def _weights(self, names, count) -> list[float]:
        weights = self.loss_weights
        if weights is None:
            return [1.0] * count
        if isinstance(weights, (int, float)):
            return [float(weights)] * count
        weights = self._per_output(weights, names, count, "loss_weights")
        return [1.0 if w is None else float(w) for w in weights]

    def _per_output(self, value, names, count, what) -> list:
        """`value` (one for all outputs, a list, or a dict by output name) as a list in the
        order of the outputs."""
        if isinstance(value, dict):
            if names is None:
                raise ConfigError(
                    f"{what} is a dict by output name, but the model's outputs have no names: "
                    "give a list with one entry per output"
                )
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ConfigError(
                    f"{what} names {unknown}, which are not outputs of the model ({names})"
                )
            return [value.get(name) for name in names]
        if isinstance(value, list):
            if len(value) != count:
                raise ConfigError(
                    f"{what} lists {len(value)} entries for a model with {_outputs(count)}"
                )
            return value
        return [value] * count


def resolve_loss(model: keras.Model, loss=None) -> PruningLoss:
    """The loss L for `model`: `loss` if given, else its compiled loss, else the default.

    Raises:
        ConfigError: for a loss that cannot be used.
        ModelError: for a model compiled without a loss (and no `loss` given).
    """
    names = getattr(model, "output_names", None)
    if loss is not None:
        return PruningLoss(_plain(loss), ARGUMENT, output_names=names)
    if not getattr(model, "compiled", False):
        return DEFAULT_LOSS
    if model.loss is None:
        raise ModelError(
            f"model {model.name!r} is compiled without a loss: pass loss= (a Keras loss, its "
            "name, or a callable (y_true, y_pred) -> loss)"
        )
    weights = model.get_compile_config().get("loss_weights")
    return PruningLoss(_plain(model.loss), COMPILED, _plain(weights), names)


def _resolve(identifier):
    """One output's loss as a callable, or None (no loss for that output)."""
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier.lower() in _AUTO_CROSSENTROPY:
        return _auto_crossentropy
    if isinstance(identifier, keras.losses.Loss):
        if identifier.reduction == "sum":
            raise ConfigError(
                f"loss {identifier.name!r} sums over the batch (reduction='sum'); the scores "
                "need its batch mean: use reduction='sum_over_batch_size'"
            )
        return identifier
    if isinstance(identifier, (str, dict)):
        try:
            return keras.losses.get(identifier)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"unknown loss {identifier!r}: give a Keras loss name (e.g. 'mse'), a "
                "keras.losses.Loss, or a callable (y_true, y_pred) -> loss"
            ) from error
    if callable(identifier):
        return identifier
    raise ConfigError(
        f"loss must be a Keras loss name, a keras.losses.Loss, a callable (y_true, y_pred) -> "
        f"loss, or a list or dict of them; got {type(identifier).__name__}"
    )


def _auto_crossentropy(y_true, y_pred):
    """`compile`'s `"crossentropy"`: binary, sparse or categorical from the shapes."""
    if y_pred.shape[-1] == 1:
        return keras.losses.binary_crossentropy(y_true, y_pred)
    if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] == 1:
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return keras.losses.categorical_crossentropy(y_true, y_pred)


def _apply(loss, target, prediction):
    try:
        return loss(target, prediction)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        message = " ".join(str(error).split())
        raise DataError(
            f"the loss cannot be computed on targets of shape {tuple(target.shape)} "
            f"({target.dtype.name}) and outputs of shape {tuple(prediction.shape)} "
            f"({prediction.dtype.name}): {message}"
        ) from error


def _flat_outputs(y_pred, output_names):
    """`(names or None, [output tensors])` in the model's output order."""
    if isinstance(y_pred, dict):
        names = list(y_pred)
        return names, [y_pred[name] for name in names]
    if isinstance(y_pred, (list, tuple)):
        outputs = list(y_pred)
        names = output_names if output_names and len(output_names) == len(outputs) else None
        return names, outputs
    return (output_names if output_names and len(output_names) == 1 else None), [y_pred]


def _flat_targets(y_true, names, count, losses) -> list:
    """The targets as a list in the order of the outputs (None where an output has no loss)."""
    if isinstance(y_true, dict):
        missing = [
            name
            for name, loss in zip(names or [], losses, strict=False)
            if loss is not None and name not in y_true
        ]
        if names is None or missing:
            raise DataError(
                f"targets are a dict by output name ({sorted(y_true)}), but the model's "
                f"outputs are {names if names else 'unnamed'}: give one target per output"
            )
        return [y_true.get(name) for name in names]
    if isinstance(y_true, (list, tuple)):
        if len(y_true) != count:
            raise DataError(
                f"{len(y_true)} target arrays for a model with {_outputs(count)}: give one "
                "target per output"
            )
        return list(y_true)
    if count != 1:
        raise DataError(
            f"one target array for a model with {count} outputs: give a tuple of {count} "
            "targets, or a dict by output name"
        )
    return [y_true]


def _outputs(count: int) -> str:
    return "1 output" if count == 1 else f"{count} outputs"


def _plain(value):
    """Keras' tracked lists and dicts (what `model.loss` holds) as plain ones."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _key(value):
    """A hashable stand-in for a loss specification, to cache traced functions by it. The
    objects it names by `id` are held by the loss, and the loss by the cached function."""
    if isinstance(value, dict):
        return ("dict", tuple((key, _key(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_key(item) for item in value))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return ("object", id(value))


#: The default loss: the scorers' own cross-entropy of the logits.
DEFAULT_LOSS = PruningLoss()
