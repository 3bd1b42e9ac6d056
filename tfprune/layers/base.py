"""The base of every masked layer, and the list of a model's prunable (kernel, mask) pairs.

A masked layer owns, next to each prunable weight, a non-trainable 0/1 `mask` of the weight's
shape, and its forward pass reads `weight * mask`. So pruned weights contribute nothing,
receive exactly zero gradient from the loss, and the masks are saved and restored with the
model. tfprune's own layers (`tfprune.layers`) are built on `MaskedLayer`, and so is any custom
layer a user makes prunable (see `MaskedLayer`).
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import keras
from keras import ops

from tfprune._keras_compat import read_in_own_dtype, sublayers
from tfprune.errors import ModelError

PACKAGE = "tfprune"


class MaskedLayer(keras.layers.Layer):
    """A Keras layer some of whose weights are pruned by masks applied in its forward pass.

    Subclass it to make a custom layer prunable: in `build`, create each prunable weight and
    call `add_mask(weight)`; in `call`, use `self.masked(weight)` wherever the weight is read.
    `tfprune.prunable_weights`, every scorer, the ablations, `strip` and `export` then see the
    weight. Weights without a mask (biases, scales) stay dense.

    A masked twin of a stock layer also sets `stock_class`, the stock Keras class it mirrors:
    its configuration is the stock layer's, so `tfprune.masked` can convert the stock layer
    (`from_stock`) and `tfprune.strip` can turn it back (`to_stock`). Register such a twin with
    `tfprune.register_masked(stock_class, masked_class)`.

    Example:

    >>> class Scale(MaskedLayer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight(name="w", shape=input_shape[-1:])
    ...         self.add_mask(self.w)
    ...     def call(self, x):
    ...         return x * self.masked(self.w)
    >>> layer = Scale()
    >>> _ = layer(keras.ops.ones((2, 3)))
    >>> [kernel.name for kernel, _ in layer.prunable_pairs()]
    ['w']
    """

    #: The stock Keras layer this layer mirrors, or None for a layer of its own.
    stock_class: type | None = None

    def add_mask(self, weight: keras.Variable, name: str | None = None) -> keras.Variable:
        """Creates the mask of `weight` (all ones) and records the pair; call it in `build`.

        Args:
            weight: A weight of this layer, created with `add_weight`.
            name: The mask's name; by default `"mask"` for a weight named `kernel`, else
                `"<weight name>_mask"`.

        Returns:
            The mask variable: non-trainable, not autocast, of the weight's shape.
        """
        if name is None:
            name = "mask" if weight.name == "kernel" else f"{weight.name}_mask"
        # Written in cross-replica context only (pruning); every replica then reads the same
        # value, and a write from replica context keeps the first replica's value.
        mask = self.add_weight(
            name=name,
            shape=tuple(weight.shape),
            initializer="ones",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        # Kept out of Keras' attribute tracking: the variables are tracked by add_weight.
        pairs = self.__dict__.get("_tfprune_pairs", ())
        object.__setattr__(self, "_tfprune_pairs", (*pairs, (weight, mask)))
        return mask

    def masked(self, weight: keras.Variable):
        """`weight * mask` for a weight registered with `add_mask`, as the forward pass reads it.

        The product is taken in the weight's own dtype and then cast as the call reads the
        weight: under a mixed policy, one float32 multiply and one cast to the compute dtype,
        the cast `strip`'s stock layer makes (instead of two casts and a multiply in 16 bits,
        slow on CPUs), and the gradient reaches the kernel through a float32 multiply too.
        Values and gradients are those of the masked float32 kernel read in the compute dtype.
        """
        for kernel, mask in self.prunable_pairs():
            if kernel is weight:
                value, cast = read_in_own_dtype(weight)
                return cast(ops.multiply(value, ops.cast(mask, value.dtype)))
        raise ModelError(f"layer {self.name!r}: {weight.name!r} has no mask (see add_mask)")

    def prunable_pairs(self) -> list[tuple[keras.Variable, keras.Variable]]:
        """This layer's own `(weight, mask)` pairs, in the order `add_mask` was called."""
        return list(self.__dict__.get("_tfprune_pairs", ()))

    @classmethod
    def from_stock(cls, layer: keras.layers.Layer) -> MaskedLayer:
        """The masked twin of a stock layer: same configuration, masks of ones, not built.

        Every option of the stock layer is kept. An option this class does not take is
        accepted only at its default (None, False, 0, or empty); any other value raises, so a
        setting is never dropped in silence.

        Raises:
            ModelError: naming the layer and the option that cannot be kept.
        """
        config = layer.get_config()
        accepted = _accepted_keys(cls)
        for key in [key for key in config if key not in accepted]:
            if config[key] not in (None, False, 0, "", (), [], {}):
                raise ModelError(
                    f"layer {layer.name!r} ({type(layer).__name__}) sets {key}="
                    f"{config[key]!r}, which {cls.__name__} does not support"
                )
            del config[key]
        return cls.from_config(config)

    def to_stock(self) -> keras.layers.Layer:
        """The stock layer of the same configuration (`stock_class`), not built.

        Raises:
            ModelError: for a layer without a stock class.
        """
        if self.stock_class is None:
            raise ModelError(f"layer {self.name!r} ({type(self).__name__}) has no stock twin")
        return self.stock_class.from_config(self.get_config())


class PrunableWeight(NamedTuple):
    """A prunable kernel, its mask and the layer that owns them."""

    kernel: keras.Variable
    mask: keras.Variable
    layer: keras.layers.Layer


def prunable_weights(model: keras.layers.Layer) -> dict[str, PrunableWeight]:
    """Lists a model's prunable (kernel, mask) pairs, keyed by the kernel variable's path.

    Nested models and layers are searched too. The order is the order in which the layers
    appear in the model (and, inside a layer, the order of `add_mask`), which is also the flat
    order used to break ties in selection.

    Keras gives two variables the same path when it builds same-named layers of different
    sub-models outside their parents' name scopes (`keras.models.load_model` and
    `clone_model` do so for nested Sequential models). Such kernels are keyed instead by the
    names of the layers that lead to them from `model`, `"<sub-model>/<layer>/<weight>"`,
    which is the path the model had when it was built.

    Args:
        model: A built Keras model or layer.

    Returns:
        An ordered dict `{path: PrunableWeight(kernel, mask, layer)}`.

    Raises:
        ModelError: if the model is not built, or two kernels have the same path and the same
            layer names lead to them.
    """
    pairs = []
    for layer, names in _layers_with_names(model):
        if not isinstance(layer, MaskedLayer):
            continue
        if not layer.built:
            raise ModelError(
                f"layer {layer.name!r} is not built: call the model on an input "
                "(or build it) before pruning"
            )
        for kernel, mask in layer.prunable_pairs():
            pairs.append((kernel, mask, layer, "/".join((*names, kernel.name))))
    counts: dict[str, int] = {}
    for kernel, *_ in pairs:
        counts[kernel.path] = counts.get(kernel.path, 0) + 1
    found: dict[str, PrunableWeight] = {}
    for kernel, mask, layer, named in pairs:
        path = kernel.path if counts[kernel.path] == 1 else named
        if path in found:
            raise ModelError(
                f"two prunable kernels share the path {path!r}: give the layers unique names"
            )
        found[path] = PrunableWeight(kernel, mask, layer)
    return found


def _layers_with_names(root: keras.layers.Layer):
    """`layers_in_order`, each layer with the names of the layers from `root`'s children down
    to it (the layer's own included)."""
    seen, stack = set(), [(root, ())]
    while stack:
        layer, names = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer, names
        stack.extend((sub, (*names, sub.name)) for sub in reversed(sublayers(layer)))


def layers_in_order(root: keras.layers.Layer):
    """Yields `root` and every layer under it, depth first, in the order each model lists them.

    Keras' own traversal (`tfprune._keras_compat.all_layers`) reverses the sublayers of nested
    models, so the walk is done here.
    """
    for layer, _ in _layers_with_names(root):
        yield layer


def mask_map(layer: keras.layers.Layer) -> dict[int, tuple[keras.Variable, keras.Variable]]:
    """`{id(kernel): (kernel, mask)}` of every masked layer in `layer` (itself included)."""
    return {
        id(kernel): (kernel, mask)
        for sub in layers_in_order(layer)
        if isinstance(sub, MaskedLayer)
        for kernel, mask in sub.prunable_pairs()
    }


def _accepted_keys(cls: type) -> set[str]:
    """The keyword arguments `cls(...)` takes: its own and its bases' up to `Layer`'s."""
    keys = {"name", "trainable", "dtype", "autocast", "input_dim", "input_shape", "batch_size"}
    for klass in cls.__mro__:
        if klass in (keras.layers.Layer, object):
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                keys.add(parameter.name)
    keys.discard("self")
    return keys


def check_data_format(value: str | None) -> str:
    """`value` in lower case, checked; `None` is Keras' configured image data format."""
    if value is None:
        return keras.config.image_data_format()
    data_format = str(value).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ModelError(f"data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return data_format


def int_tuple(value, rank: int, what: str) -> tuple[int, ...]:
    """An int or a sequence of `rank` ints, as a tuple of `rank` ints."""
    if isinstance(value, int):
        return (value,) * rank
    result = tuple(int(v) for v in value)
    if len(result) != rank:
        raise ModelError(f"{what} must be an int or {rank} ints, got {value!r}")
    return result
