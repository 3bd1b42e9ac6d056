"""Converting whole models: stock layers to masked twins (`masked`) and back (`strip`).

One table maps each stock Keras class to its masked twin (`register_masked`). `masked()` and
`tfprune.strip` share one walk, `clone_and_copy`, which pairs every clone with the layer it was
made from, by object, never by name, and then copies the weights of each pair in order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import keras
import numpy as np

from tfprune._keras_compat import is_functional, sublayers
from tfprune.errors import ModelError
from tfprune.layers.base import MaskedLayer, layers_in_order, mask_map

# Stock Keras class -> its masked twin. Exact classes; see `_twin_class` for subclasses.
_MASKED_TWINS: dict[type, type] = {}


class UnprunedLayerWarning(UserWarning):
    """A layer holds weights that no mask covers, so it stays dense."""


def register_masked(stock_class: type, masked_class: type) -> None:
    """Declares `masked_class` the masked twin of `stock_class` for `masked()` and `strip()`.

    Args:
        stock_class: A Keras layer class (a custom one too).
        masked_class: A `tfprune.MaskedLayer` subclass whose `from_stock(layer)` builds the
            twin of a `stock_class` layer, whose weights other than the masks are the stock
            layer's, in the same order and with the same names, and whose `to_stock()` gives
            the layer back. With the default `from_stock`/`to_stock`, that means it takes the
            stock layer's configuration and sets `stock_class`.

    Raises:
        ModelError: if `masked_class` is not a `MaskedLayer`.

    Example:

    >>> register_masked(MyStockLayer, MyMaskedLayer)
    """
    if not (isinstance(masked_class, type) and issubclass(masked_class, MaskedLayer)):
        raise ModelError(f"{masked_class!r} is not a subclass of tfprune.MaskedLayer")
    if not (isinstance(stock_class, type) and issubclass(stock_class, keras.layers.Layer)):
        raise ModelError(f"{stock_class!r} is not a Keras layer class")
    _MASKED_TWINS[stock_class] = masked_class


def masked_twins() -> dict[type, type]:
    """A copy of the table `{stock class: masked class}`."""
    return dict(_MASKED_TWINS)


def masked(model: keras.Model) -> keras.Model:
    """Returns the same model with every stock layer that has a masked twin replaced by it.

    The new model has the original's architecture, layer names and weights; every mask starts
    at one. Functional and Sequential models are supported, nested ones included. A layer that
    holds a kernel-like weight and has no masked twin stays dense, with an
    `UnprunedLayerWarning` naming it and its parameter count (see `unpruned_layers`).

    Args:
        model: A built functional or Sequential `keras.Model`.

    Returns:
        A new `keras.Model`; the original is left unchanged.

    Raises:
        ModelError: for a subclassed or unbuilt model, or a layer option a twin cannot keep.

    Example:

    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> pruned = masked(base)
    >>> type(pruned.layers[0]).__name__
    'MaskedDense'
    """
    if not (isinstance(model, keras.Sequential) or is_functional(model)):
        raise ModelError(
            "tfprune.masked converts functional or Sequential Keras models; build a subclassed "
            "model from tfprune's masked layers (tfprune.MaskedDense, MaskedConv2D, ...) instead"
        )
    clone = clone_and_copy(model, _masked_twin, transfer_weights)
    warn_unpruned(clone)
    return clone


def _twin_class(layer: keras.layers.Layer) -> type | None:
    """The masked class for `layer`: its exact class's twin, or, for a subclass of a stock
    class that changes neither `build` nor `call`, the stock class's twin."""
    cls = type(layer)
    if cls in _MASKED_TWINS:
        return _MASKED_TWINS[cls]
    if isinstance(layer, MaskedLayer):
        return None
    for base in cls.__mro__[1:]:
        if base in _MASKED_TWINS:
            if all(getattr(cls, name) is getattr(base, name) for name in ("build", "call")):
                return _MASKED_TWINS[base]
            return None
    return None


def _masked_twin(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The masked twin of a convertible layer, or a fresh copy of any other."""
    cls = _twin_class(layer)
    if cls is None:
        return layer.__class__.from_config(layer.get_config())
    return cls.from_stock(layer)


def stock_twin(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The stock layer of a masked layer that has one, or a fresh copy of any other layer."""
    if isinstance(layer, MaskedLayer) and layer.stock_class is not None:
        return layer.to_stock()
    return layer.__class__.from_config(layer.get_config())


def unpruned_layers(model: keras.layers.Layer) -> dict[str, int]:
    """`{layer path: parameter count}` of the layers whose own kernel-like weights (trainable,
    two dimensions or more, not named `bias`) no mask covers: they stay dense when the model is
    pruned. A bias may have two dimensions or more (EinsumDense, the projections of
    MultiHeadAttention); biases are never pruned (SPEC §1)."""
    covered = mask_map(model)
    found = {}
    for layer in layers_in_order(model):
        inner = {id(w) for sub in sublayers(layer) for w in sub.weights}
        own = [w for w in layer.trainable_weights if id(w) not in inner]
        if any(len(w.shape) >= 2 and w.name != "bias" and id(w) not in covered for w in own):
            path = getattr(layer, "path", None) or layer.name
            found[path] = int(sum(int(np.prod(w.shape)) for w in own))
    return found


def warn_unpruned(model: keras.layers.Layer) -> dict[str, int]:
    """Warns (`UnprunedLayerWarning`) about every layer `unpruned_layers` finds; returns them."""
    found = unpruned_layers(model)
    for path, count in found.items():
        warnings.warn(
            f"layer {path!r} holds {count} parameters that no mask covers; it stays dense "
            "(register a masked twin with tfprune.register_masked to prune it)",
            UnprunedLayerWarning,
            stacklevel=3,
        )
    return found


def clone_and_copy(
    model: keras.Model,
    twin: Callable[[keras.layers.Layer], keras.layers.Layer],
    copy: Callable[[keras.layers.Layer, keras.layers.Layer], None],
) -> keras.Model:
    """Clones a functional or Sequential model layer by layer, then copies each layer's weights.

    `keras.models.clone_model` calls `twin` once for every layer object (nested functional and
    Sequential models are walked into; a layer shared between places is cloned once), so each
    clone is paired with the very layer it was made from, never looked up by name: nested
    models may hold layers of the same name.

    Args:
        model: A built functional or Sequential model.
        twin: Makes the clone of one layer.
        copy: `copy(original, clone)` sets the clone's weights from the original's.

    Returns:
        The clone, holding the original's weights as `copy` set them.

    Raises:
        ModelError: if the model is not built, or if a weight of `model` found no layer to go
            to (which would leave a freshly initialized weight in the clone).
    """
    if not model.built:
        raise ModelError("the model is not built: give it an Input or call it once first")
    pairs = []

    def clone_function(layer):
        clone = twin(layer)
        if isinstance(layer, keras.layers.Layer):  # not an operation (`keras.ops` call)
            pairs.append((layer, clone))
        return clone

    clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    copied = set()
    for old, new in pairs:
        copy(old, new)
        copied.update(id(weight) for weight in old.weights)
    missed = [weight.path for weight in model.weights if id(weight) not in copied]
    if missed:
        raise ModelError(
            f"cannot clone {model.name!r}: {len(missed)} weights, the first {missed[0]!r}, "
            "belong to no layer the clone was built from"
        )
    return clone


def transfer_weights(
    old: keras.layers.Layer, new: keras.layers.Layer, apply_masks: bool = False
) -> None:
    """Gives `new` every weight of `old`, a layer of the same kind or its masked/stock twin.

    The weights other than masks are paired in order and must agree in name and shape. Masks
    are copied when both layers have them; a stock layer's twin keeps masks of ones. With
    `apply_masks`, each masked kernel of `old` is copied as `kernel` where its mask is 1 and
    exactly 0.0 where it is 0 (`np.where`: a negative weight times 0 would be -0.0).

    Raises:
        ModelError: if the two layers' weights differ in number, name or shape.
    """
    old_masks, new_masks = mask_map(old), mask_map(new)
    old_mask_ids = {id(mask) for _, mask in old_masks.values()}
    new_mask_ids = {id(mask) for _, mask in new_masks.values()}
    sources = [w for w in old.weights if id(w) not in old_mask_ids]
    targets = [w for w in new.weights if id(w) not in new_mask_ids]
    if len(sources) != len(targets):
        raise ModelError(
            f"layer {old.name!r} has {len(sources)} weights but its clone {len(targets)}"
        )
    for src, dst in zip(sources, targets, strict=True):
        if src.name != dst.name or tuple(src.shape) != tuple(dst.shape):
            raise ModelError(
                f"layer {old.name!r}: weight {src.path!r} {tuple(src.shape)} does not match its "
                f"clone's {dst.path!r} {tuple(dst.shape)}"
            )
        value = keras.ops.convert_to_numpy(src)
        if apply_masks and id(src) in old_masks:
            mask = keras.ops.convert_to_numpy(old_masks[id(src)][1])
            value = np.where(mask != 0, value, np.zeros_like(value))
        dst.assign(value)
    if old_masks and new_masks:
        old_pairs, new_pairs = list(old_masks.values()), list(new_masks.values())
        if len(old_pairs) != len(new_pairs):
            raise ModelError(
                f"layer {old.name!r} has {len(old_pairs)} masks but its clone {len(new_pairs)}"
            )
        for (_, src), (_, dst) in zip(old_pairs, new_pairs, strict=True):
            dst.assign(src)
