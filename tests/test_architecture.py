"""The package's shape: private Keras APIs only in tfprune/_keras_compat.py, and the assumptions
that module makes about the installed Keras and TensorFlow still hold.

Each assumption test names what broke, so that a Keras upgrade that changes a private API fails
here, with the function of tfprune/_keras_compat.py to update, rather than as a wrong number
somewhere else.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import approx

from tfprune import _keras_compat
from tfprune._keras_compat import (
    all_layers,
    attention_projections,
    exact_batch_moments,
    is_functional,
    plain_trackable,
    sublayers,
    read_in_own_dtype,
)
from tfprune.errors import ModelError
from tfprune.layers import MaskedConv2D, MaskedEinsumDense, MaskedMultiHeadAttention
from tfprune.layers import attention as attention_module

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfprune")
COMPAT = os.path.join(PACKAGE, "_keras_compat.py")
# Private Keras and TensorFlow names that tfprune uses, all through tfprune/_keras_compat.py.
PRIVATE = re.compile(
    r"keras\.src|keras/src|from keras import src|tf\.__internal__"
    r"|\._(?:flatten_layers|layers|moments|reduction_axes)\b"
)
BROKEN = f"Keras {keras.__version__}, TensorFlow {tf.__version__}: "


def _sources() -> dict[str, list[str]]:
    """`{path relative to tfprune/: lines}` of every Python file of the package."""
    sources = {}
    for directory, subdirectories, files in os.walk(PACKAGE):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    sources[os.path.relpath(path, PACKAGE)] = f.read().splitlines()
    return sources


def _private_uses(sources: dict[str, list[str]]) -> list[str]:
    return [
        f"tfprune/{path}:{number}: {line.strip()}"
        for path, lines in sorted(sources.items())
        for number, line in enumerate(lines, 1)
        if PRIVATE.search(line)
    ]


def test_only_the_compat_module_uses_private_keras_apis():
    sources = _sources()
    # The scan sees the whole package, the compat module and the modules that use it included.
    assert {
        "_keras_compat.py",
        os.path.join("layers", "base.py"),
        os.path.join("layers", "attention.py"),
        "deploy.py",
        os.path.join("pruning", "grasp.py"),
    } <= set(sources)
    compat = sources.pop("_keras_compat.py")
    assert any("from keras.src." in line for line in compat)
    assert _private_uses(sources) == [], (
        "private Keras/TensorFlow APIs belong in tfprune/_keras_compat.py, with the reason"
    )


def test_the_scan_finds_a_private_use():
    # A scan that finds nothing proves nothing: it must find these.
    found = _private_uses(
        {
            "a.py": ["from keras.src.models import Functional", "x = 1"],
            "b.py": ["for layer in model._flatten_layers():", "layer._layers", "y = m._layer"],
            "c.py": ["root = tf.__internal__.tracking.AutoTrackable()"],
        }
    )
    assert found == [
        "tfprune/a.py:1: from keras.src.models import Functional",
        "tfprune/b.py:1: for layer in model._flatten_layers():",
        "tfprune/b.py:2: layer._layers",
        "tfprune/c.py:1: root = tf.__internal__.tracking.AutoTrackable()",
    ]


# --- the assumptions of tfprune/_keras_compat.py ----------------------------------------------


def _nested_model() -> keras.Model:
    inner = keras.Sequential(
        [
            keras.Input((3,), name="y"),
            keras.layers.Dense(4, name="a"),
            keras.layers.Dense(4, name="b"),
        ],
        name="inner",
    )
    x = keras.Input((3,), name="x")
    y = keras.layers.Dense(2, name="c")(keras.layers.Dense(4, name="d")(inner(x)))
    return keras.Model(x, y, name="outer")


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


class _SubclassedFunctional(keras.Model):
    def __init__(self):
        inputs = keras.Input((3,))
        super().__init__(inputs, keras.layers.Dense(2)(inputs))


def test_functional_is_what_keras_model_of_inputs_and_outputs_builds():
    inputs = keras.Input((3,))
    checks = {
        "keras.Model(inputs, outputs)": (keras.Model(inputs, keras.layers.Dense(2)(inputs)), True),
        "a keras.Model subclass calling keras.Model(inputs, outputs)": (
            _SubclassedFunctional(),
            True,
        ),
        "keras.Sequential": (keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), False),
        "a keras.Model subclass with its own call": (_Subclassed(), False),
    }
    for what, (model, functional) in checks.items():
        assert is_functional(model) is functional, (
            f"{BROKEN}{what} is {'no longer ' if functional else ''}an instance of "
            "keras.src.models.functional.Functional: update _keras_compat.is_functional"
        )


def test_sublayers_are_the_layers_assigned_in_order():
    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.second = keras.layers.Dense(2, name="second")
            self.first = keras.layers.Dense(2, name="first")

    assert hasattr(Block(), "_layers"), f"{BROKEN}Layer has no _layers: update sublayers"
    assert [layer.name for layer in sublayers(Block())] == ["second", "first"], (
        f"{BROKEN}Layer._layers no longer lists the sublayers in assignment order"
    )
    model = _nested_model()
    assert [layer.name for layer in sublayers(model)] == ["x", "inner", "d", "c"], (
        f"{BROKEN}a functional model's _layers are not its layers in order"
    )


def test_all_layers_is_keras_depth_first_order():
    # ablations.reinitialize draws one seed per layer in this order: a change in it would change
    # what `reinit` draws for the same seed.
    signature = inspect.signature(keras.layers.Layer._flatten_layers)
    assert list(signature.parameters) == ["self", "include_self", "recursive"], (
        f"{BROKEN}Layer._flatten_layers{signature} changed: update _keras_compat.all_layers"
    )
    model = _nested_model()
    order = ["outer", "x", "inner", "b", "a", "y", "d", "c"]
    assert [layer.name for layer in all_layers(model)] == order, (
        f"{BROKEN}Layer._flatten_layers lists the layers in another order: reinit would draw "
        "other values for the same seed"
    )
    assert [layer.name for layer in all_layers(model, include_self=False)] == order[1:]


def _batch_norm_model() -> keras.Model:
    x = keras.Input((2, 2, 3))
    h = keras.layers.BatchNormalization(dtype="float64", name="bn1")(x)
    y = keras.layers.BatchNormalization(axis=1, dtype="float64", name="bn2")(h)
    return keras.Model(x, y)


def test_batch_normalization_computes_its_moments_in_moments(monkeypatch):
    signature = inspect.signature(keras.layers.BatchNormalization._moments)
    assert list(signature.parameters) == ["self", "inputs", "mask"], (
        f"{BROKEN}BatchNormalization._moments{signature} changed: update "
        "_keras_compat.exact_batch_moments"
    )
    model = _batch_norm_model()
    inputs = np.random.default_rng(0).normal(size=(4, 2, 2, 3))
    stock = keras.ops.convert_to_numpy(model(inputs, training=True))
    calls = []

    def counted(layer, inputs, mask):
        calls.append((layer.name, tuple(layer._reduction_axes)))
        return exact_moments(layer, inputs, mask)

    exact_moments = _keras_compat._exact_moments
    monkeypatch.setattr(_keras_compat, "_exact_moments", counted)
    with exact_batch_moments(model):
        exact = keras.ops.convert_to_numpy(model(inputs, training=True))
    assert calls == [("bn1", (0, 1, 2)), ("bn2", (0, 2, 3))], (
        f"{BROKEN}BatchNormalization no longer computes its batch moments by calling "
        "self._moments over self._reduction_axes: GraSP's Hessian would be inexact"
    )
    # Same values; only the second derivative differs. 4*2*2 values per mean, then a variance.
    assert exact == approx(stock, "float64", terms=2 * 16 + 8)
    assert all("_moments" not in vars(layer) for layer in model.layers), "the patch stayed"


def test_exact_batch_moments_differentiate_twice():
    # Where tf.nn.moments stops the gradient through the mean, the second derivative of the
    # batch variance comes out wrong; with exact moments it is the textbook one.
    layer = keras.layers.BatchNormalization(center=False, scale=False, dtype="float64")
    x = tf.constant([[1.0], [2.0], [4.0]], dtype=tf.float64)
    model = keras.Sequential([keras.Input((1,), dtype="float64"), layer])
    model(x, training=True)
    mean, variance = _keras_compat._exact_moments(layer, x, None)
    assert float(mean[0]) == approx(7 / 3, "float64", terms=4)
    assert float(variance[0]) == approx(14 / 9, "float64", terms=8)
    with exact_batch_moments(model), tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            _, variance = layer._moments(x, None)
        grad = inner.gradient(variance, x)  # d var / d x_i = 2 (x_i - mean) / n
        total = tf.reduce_sum(grad * tf.constant([[1.0], [0.0], [0.0]], tf.float64))
    hessian_row = outer.gradient(total, x)  # d² var / dx_0 dx_j = 2 (δ_0j - 1/n) / n
    expected = [2 * (1 - 1 / 3) / 3, -2 / 9, -2 / 9]
    assert hessian_row.numpy().ravel() == approx(expected, "float64", terms=8)


def test_plain_trackable_saves_what_is_assigned(tmp_path):
    root = plain_trackable()
    assert type(root) is tf.__internal__.tracking.AutoTrackable
    root.variables = [tf.Variable([1.5, -2.0], name="w")]
    tf.saved_model.save(root, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    assert [v.numpy().tolist() for v in loaded.variables] == [[1.5, -2.0]], (
        f"{BROKEN}an AutoTrackable root no longer saves its assigned variables"
    )


class _DtypeProbe(keras.layers.Layer):
    """Records the dtypes its weight reads in, plainly and through `read_in_own_dtype`."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(2,), initializer="ones")
        self.seen = []

    def call(self, inputs):
        value, cast = read_in_own_dtype(self.w)
        self.seen += [keras.ops.convert_to_tensor(self.w).dtype, value.dtype, cast(value).dtype]
        return inputs


def test_read_in_own_dtype_reads_float32_inside_a_mixed_policy_call():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = _DtypeProbe()
    finally:
        keras.config.set_dtype_policy(previous)
    layer(np.ones((1, 2), np.float32))
    assert layer.seen == [tf.bfloat16, tf.float32, tf.bfloat16], (
        f"{BROKEN}keras.src.backend.AutocastScope(None) no longer stops the autocast of a "
        "mixed-policy call, or Variable._autocast is gone: update "
        "_keras_compat.read_in_own_dtype"
    )
    # Outside a call (no autocast scope): the variable's own dtype, and no cast.
    value, cast = read_in_own_dtype(layer.w)
    assert value.dtype == cast(value).dtype == tf.float32


class _Projection(MaskedEinsumDense):
    """A projection class of its own, so the test sees which layers the factory made."""


def _built_attention(layer: keras.layers.MultiHeadAttention) -> keras.layers.MultiHeadAttention:
    layer.build((2, 4, 6), (2, 3, 5))
    return layer


def _projections(layer: keras.layers.Layer) -> dict[str, type]:
    return {
        sub.name: type(sub)
        for sub in sublayers(layer)
        if isinstance(sub, (keras.layers.EinsumDense, MaskedEinsumDense))
    }


STOCK_PROJECTIONS = dict.fromkeys(["query", "key", "gate", "value", "attention_output"])


def test_attention_builds_its_projections_through_its_module_name():
    signature = inspect.signature(keras.layers.MultiHeadAttention.build)
    assert list(signature.parameters) == ["self", "query_shape", "value_shape", "key_shape"], (
        f"{BROKEN}MultiHeadAttention.build{signature} changed: update MaskedMultiHeadAttention"
    )
    module = _keras_compat._multi_head_attention
    assert module.EinsumDense is keras.layers.EinsumDense, (
        f"{BROKEN}keras.src.layers.attention.multi_head_attention no longer names "
        "EinsumDense: update _keras_compat.attention_projections"
    )
    made = []

    def factory(*args, **kwargs):
        made.append(kwargs["name"])
        return _Projection(*args, **kwargs)

    with attention_projections(factory):
        layer = _built_attention(keras.layers.MultiHeadAttention(2, 3, use_gate=True))
    assert made == list(STOCK_PROJECTIONS), (
        f"{BROKEN}MultiHeadAttention.build no longer makes its projections by calling "
        "EinsumDense of its module: MaskedMultiHeadAttention would not be pruned"
    )
    assert _projections(layer) == dict.fromkeys(STOCK_PROJECTIONS, _Projection)
    assert module.EinsumDense is keras.layers.EinsumDense, "the name stayed replaced"
    after = _built_attention(keras.layers.MultiHeadAttention(2, 3, use_gate=True))
    assert _projections(after) == dict.fromkeys(STOCK_PROJECTIONS, keras.layers.EinsumDense)


def test_attention_projections_nest_and_leave_other_threads_stock():
    built = {}

    def other_thread():
        built["other"] = _projections(_built_attention(keras.layers.MultiHeadAttention(2, 3)))

    with attention_projections(_Projection):
        with attention_projections(MaskedEinsumDense):
            built["inner"] = _projections(_built_attention(keras.layers.MultiHeadAttention(2, 3)))
        # Built while this thread holds the replacement: another thread gets stock layers.
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        built["outer"] = _projections(_built_attention(keras.layers.MultiHeadAttention(2, 3)))
    names = ["query", "key", "value", "attention_output"]
    assert built == {
        "inner": dict.fromkeys(names, MaskedEinsumDense),
        "other": dict.fromkeys(names, keras.layers.EinsumDense),
        "outer": dict.fromkeys(names, _Projection),
    }


def test_masked_attention_refuses_stock_projections(monkeypatch):
    # If the replacement stopped working, the layer would silently stay dense: it must raise.
    monkeypatch.setattr(
        attention_module, "attention_projections", lambda factory: contextlib.nullcontext()
    )
    with pytest.raises(ModelError) as error:
        _built_attention(MaskedMultiHeadAttention(2, 3, name="mha"))
    assert str(error.value) == (
        f"layer 'mha': Keras {keras.__version__} built the projections query, key, value, "
        "attention_output unmasked; tfprune._keras_compat.attention_projections needs updating "
        "for this Keras version"
    )


# --- what the public API does instead -----------------------------------------------------------


def test_conv_data_format_follows_the_keras_config():
    assert keras.config.image_data_format() == "channels_last"
    assert MaskedConv2D(2, 3).data_format == "channels_last"
    assert MaskedConv2D(2, 3, data_format="Channels_First").data_format == "channels_first"
    keras.config.set_image_data_format("channels_first")
    try:
        assert MaskedConv2D(2, 3).data_format == "channels_first"
    finally:
        keras.config.set_image_data_format("channels_last")
    with pytest.raises(ModelError) as error:
        MaskedConv2D(2, 3, data_format="NHWC")
    assert str(error.value) == (
        "data_format must be 'channels_last' or 'channels_first', got 'NHWC'"
    )
