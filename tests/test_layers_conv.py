"""Tests of the masked convolutions other than Conv2D: Conv1D/3D, the transposed, depthwise and
separable convolutions (SPEC §1, "mask" and "Prunable weights").

Every layer is checked against the stock Keras layer holding `kernel * mask`: bit for bit where
both run the same op on the same values (channels_last), against a float64 reference within
`_tolerance` bounds where they do not (channels_first, computed in channels-last order, and
dilated transposed convolutions, computed with zeros between the kernel's taps).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
import warnings
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from _procs import ENV, ROOT
from _tolerance import tolerance

import tfprune
from tfprune.errors import ModelError
from tfprune.layers import (
    MaskedConv1D,
    MaskedConv1DTranspose,
    MaskedConv2DTranspose,
    MaskedConv3D,
    MaskedConv3DTranspose,
    MaskedConvTranspose,
    MaskedDepthwiseConv,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedSeparableConv,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
    UnprunedLayerWarning,
    masked_twins,
    prunable_weights,
)

CF = "channels_first"


class Case(NamedTuple):
    cls: type
    config: dict
    shape: tuple[int, ...]  # of the input, in the layer's data format


def _cases(cls, *entries) -> list:
    return [
        pytest.param(Case(cls, config, shape), id=f"{cls.stock_class.__name__}-{i}")
        for i, (config, shape) in enumerate(entries)
    ]


# Strides, dilation, groups, causal padding, output_padding, depth_multiplier, both data
# formats, with and without bias and activation. A transposed convolution with "same" padding
# and an output_padding needs an odd kernel where output_padding is 0 (else TensorFlow refuses
# the stock layer too).
CASES = [
    *_cases(
        MaskedConv1D,
        (dict(filters=3, kernel_size=3), (2, 9, 4)),
        (dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2, activation="relu"),
         (2, 9, 4)),
        (dict(filters=4, kernel_size=2, strides=2, padding="same", groups=2, use_bias=False),
         (2, 9, 4)),
        (dict(filters=2, kernel_size=3, padding="causal", data_format=CF, activation="tanh"),
         (2, 4, 9)),
        (dict(filters=4, kernel_size=3, strides=2, groups=2, data_format=CF), (2, 4, 9)),
    ),
    *_cases(
        MaskedConv3D,
        (dict(filters=3, kernel_size=2), (2, 4, 4, 4, 2)),
        (dict(filters=2, kernel_size=(3, 2, 2), strides=(2, 1, 2), padding="same",
              use_bias=False, activation="relu"), (2, 5, 4, 5, 2)),
        (dict(filters=4, kernel_size=2, groups=2), (2, 4, 4, 4, 4)),
        (dict(filters=2, kernel_size=2, dilation_rate=2, data_format=CF), (2, 2, 5, 5, 5)),
    ),
    *_cases(
        MaskedConv1DTranspose,
        (dict(filters=4, kernel_size=3, strides=2), (2, 5, 3)),
        (dict(filters=2, kernel_size=3, strides=3, padding="same", output_padding=1,
              activation="relu"), (2, 5, 3)),
        (dict(filters=3, kernel_size=3, dilation_rate=2, use_bias=False), (2, 5, 3)),
        (dict(filters=2, kernel_size=4, strides=2, padding="same", data_format=CF,
              activation="tanh"), (2, 3, 5)),
        (dict(filters=2, kernel_size=2, dilation_rate=3, padding="same", data_format=CF),
         (2, 3, 6)),
    ),
    *_cases(
        MaskedConv2DTranspose,
        (dict(filters=3, kernel_size=3, strides=(2, 1), padding="same", output_padding=(1, 0)),
         (2, 4, 4, 3)),
        (dict(filters=2, kernel_size=2, strides=2, use_bias=False, activation="relu"),
         (2, 4, 4, 3)),
        (dict(filters=2, kernel_size=3, dilation_rate=(2, 1), padding="same"), (2, 4, 4, 3)),
        (dict(filters=2, kernel_size=3, strides=2, output_padding=1, data_format=CF),
         (2, 3, 4, 4)),
    ),
    *_cases(
        MaskedConv3DTranspose,
        (dict(filters=2, kernel_size=2, strides=2), (2, 3, 3, 3, 2)),
        (dict(filters=2, kernel_size=3, strides=(2, 1, 2), padding="same",
              output_padding=(1, 0, 0), activation="relu"), (2, 3, 3, 3, 2)),
        (dict(filters=3, kernel_size=3, padding="same", dilation_rate=2, data_format=CF,
              use_bias=False), (2, 2, 3, 3, 3)),
    ),
    *_cases(
        MaskedDepthwiseConv1D,
        (dict(kernel_size=3), (2, 9, 3)),
        (dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
         (2, 9, 3)),
        (dict(kernel_size=2, strides=2, dilation_rate=2, depth_multiplier=2, use_bias=False),
         (2, 9, 3)),
        (dict(kernel_size=3, dilation_rate=2, data_format=CF, activation="tanh"), (2, 3, 9)),
    ),
    *_cases(
        MaskedDepthwiseConv2D,
        (dict(kernel_size=(3, 2)), (2, 6, 6, 3)),
        (dict(kernel_size=3, strides=2, padding="same", depth_multiplier=3, use_bias=False),
         (2, 6, 6, 3)),
        (dict(kernel_size=2, dilation_rate=2, depth_multiplier=2, activation="relu"),
         (2, 6, 6, 3)),
        (dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2, data_format=CF),
         (2, 3, 6, 6)),
    ),
    *_cases(
        MaskedSeparableConv1D,
        (dict(filters=4, kernel_size=3), (2, 9, 3)),
        (dict(filters=2, kernel_size=3, strides=2, padding="same", depth_multiplier=2,
              activation="relu"), (2, 9, 3)),
        (dict(filters=3, kernel_size=2, dilation_rate=3, use_bias=False), (2, 9, 3)),
        (dict(filters=4, kernel_size=3, depth_multiplier=2, data_format=CF, activation="tanh"),
         (2, 3, 9)),
    ),
    *_cases(
        MaskedSeparableConv2D,
        (dict(filters=4, kernel_size=3), (2, 6, 6, 3)),
        (dict(filters=2, kernel_size=(3, 2), strides=2, padding="same", depth_multiplier=2,
              use_bias=False), (2, 6, 6, 3)),
        (dict(filters=3, kernel_size=2, strides=2, dilation_rate=2, activation="relu"),
         (2, 7, 7, 3)),
        (dict(filters=2, kernel_size=3, dilation_rate=(1, 2), padding="same", data_format=CF),
         (2, 3, 6, 6)),
    ),
]  # fmt: skip

NEW_CLASSES = [
    MaskedConv1DTranspose,
    MaskedConv2DTranspose,
    MaskedConv3DTranspose,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
]


def _random_mask(rng: np.random.Generator, shape) -> np.ndarray:
    mask = rng.integers(0, 2, size=tuple(shape)).astype(np.float32)
    mask.flat[0], mask.flat[-1] = 0.0, 1.0  # both values present whatever the draw
    return mask


def _prune_at_random(layer, rng: np.random.Generator) -> None:
    for _, mask in layer.prunable_pairs():
        mask.assign(_random_mask(rng, mask.shape))


def _stock_weights(layer) -> list:
    """The layer's weights other than masks, in order: the stock layer's."""
    masks = {id(mask) for _, mask in layer.prunable_pairs()}
    return [w for w in layer.weights if id(w) not in masks]


def _effective(layer) -> dict[str, np.ndarray]:
    """`{weight name: value}`, each masked kernel as `kernel * mask`."""
    masks = {id(kernel): mask for kernel, mask in layer.prunable_pairs()}
    values = {}
    for weight in _stock_weights(layer):
        value = weight.numpy()
        if id(weight) in masks:
            value = value * masks[id(weight)].numpy()
        values[weight.name] = value
    return values


def _mask_of(layer) -> dict[str, np.ndarray]:
    return {kernel.name: mask.numpy() for kernel, mask in layer.prunable_pairs()}


def _is_cf(case: Case) -> bool:
    return case.config.get("data_format") == CF


def _dilated_transpose(case: Case) -> bool:
    dilation = np.atleast_1d(case.config.get("dilation_rate", 1))
    return issubclass(case.cls, MaskedConvTranspose) and dilation.max() > 1


def _same_op(case: Case) -> bool:
    """Whether the masked layer runs the stock layer's op on the same values."""
    return not _is_cf(case) and not _dilated_transpose(case)


def _linear(case: Case) -> Case:
    return case._replace(config={**case.config, "activation": None})


def _to_last(array: np.ndarray) -> np.ndarray:
    return np.moveaxis(array, 1, -1)


def _to_first(array: np.ndarray) -> np.ndarray:
    return np.moveaxis(array, -1, 1)


def _stock_layer(case: Case, x_shape, weights: dict, dtype):
    """The stock layer of `case` in channels_last order, holding `weights`, built for an input
    of shape `x_shape` (channels last)."""
    stock = case.cls.stock_class(**{**case.config, "data_format": "channels_last"}, dtype=dtype)
    stock.build(tuple(x_shape))
    assert [w.name for w in stock.weights] == list(weights)
    for weight in stock.weights:
        weight.assign(weights[weight.name].astype(dtype))
    return stock


def _stock_call(case: Case, stock, x, adjoint: bool | None = None):
    """`stock(x)`. A dilated transposed convolution, which TensorFlow's CPU kernels compute only
    where oneDNN is on (and never in float64), is computed by its definition instead
    (`adjoint`, by default for those): the adjoint of the stock convolution,
    d/dz <conv(z, kernel), x>."""
    if not (_dilated_transpose(case) if adjoint is None else adjoint):
        return stock(x)
    z = tf.zeros(stock.compute_output_shape(tuple(x.shape)), x.dtype)
    with tf.GradientTape() as tape:
        tape.watch(z)
        conv = keras.ops.conv(
            z,
            stock.kernel,
            stock.strides,
            stock.padding,
            data_format="channels_last",
            dilation_rate=stock.dilation_rate,
        )
        inner = tf.reduce_sum(conv * x)
    outputs = tape.gradient(inner, z)
    if stock.use_bias:
        outputs = keras.ops.add(outputs, stock.bias)
    return stock.activation(outputs)


def _stock_output(case: Case, x: np.ndarray, weights: dict, dtype) -> np.ndarray:
    """The stock layer's output for `x` (in the layer's data format) in `dtype`.

    TensorFlow's CPU convolutions take channels_first input only where oneDNN is on, so a
    channels_first layer runs here as the same layer on the transposed input, its output
    transposed back: the same numbers, on any CPU.
    """
    x_last = _to_last(x) if _is_cf(case) else x
    stock = _stock_layer(case, x_last.shape, weights, dtype)
    outputs = keras.ops.convert_to_numpy(_stock_call(case, stock, tf.constant(x_last, dtype)))
    return _to_first(outputs) if _is_cf(case) else outputs


def _stock_gradients(case: Case, x, r, weights: dict, dtype) -> dict[str, np.ndarray]:
    """Gradients of `sum(stock(x) * r)` with respect to the stock layer's weights."""
    if _is_cf(case):
        x, r = _to_last(x), _to_last(r)
    stock = _stock_layer(case, x.shape, weights, dtype)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(_stock_call(case, stock, tf.constant(x, dtype)) * r.astype(dtype))
    grads = tape.gradient(loss, [w.value for w in stock.weights])
    return {w.name: g.numpy() for w, g in zip(stock.weights, grads, strict=True)}


def _terms(case: Case, weights: dict, input_channels: int) -> int:
    """Rounded operations along the longest chain of one output (module docstring of
    `_tolerance`): the products summed, then the bias and the activation (4 more)."""
    kernel_size = np.broadcast_to(case.config["kernel_size"], (len(case.shape) - 2,))
    if issubclass(case.cls, MaskedSeparableConv):
        depthwise = weights["depthwise_kernel"]
        return int(np.prod(kernel_size)) + depthwise.shape[-2] * depthwise.shape[-1] + 4
    if issubclass(case.cls, MaskedDepthwiseConv):
        return int(np.prod(kernel_size)) + 4
    if issubclass(case.cls, MaskedConvTranspose):
        dilation = np.broadcast_to(case.config.get("dilation_rate", 1), kernel_size.shape)
        return int(np.prod((kernel_size - 1) * dilation + 1)) * input_channels + 4
    return int(np.prod(weights["kernel"].shape[:-1])) + 4


def _input_channels(case: Case) -> int:
    return case.shape[1] if _is_cf(case) else case.shape[-1]


def _check_forward(layer, case: Case, x: np.ndarray) -> np.ndarray:
    """Checks `layer(x)` against the stock layer whose kernels are `kernel * mask`."""
    outputs = layer(x).numpy()
    weights = _effective(layer)
    if _same_op(case):
        np.testing.assert_array_equal(outputs, _stock_output(case, x, weights, "float32"))
    # Any layout: against float64, Σ|term| from |x|, |weights| and the linear layer.
    absolute = {name: np.abs(value) for name, value in weights.items()}
    scale = _stock_output(_linear(case), np.abs(x), absolute, "float64").max()
    terms = _terms(case, weights, _input_channels(case))
    reference = _stock_output(case, x, weights, "float64")
    np.testing.assert_allclose(outputs, reference, **tolerance(np.float32, terms, scale))
    return outputs


# SPEC §1 "mask": with an all-ones mask each layer is the stock layer; with a 0/1 mask it is the
# stock layer whose kernels are `kernel * mask`.


@pytest.mark.parametrize("case", CASES)
def test_matches_stock_layer(case):
    rng = np.random.default_rng(0)
    x = rng.normal(size=case.shape).astype(np.float32)
    layer = case.cls(**case.config, bias_initializer="random_normal")
    layer(x)
    stock = case.cls.stock_class(**case.config)
    stock.build(x.shape)  # builds in either layout; only channels_last runs everywhere
    assert [(w.name, tuple(w.shape)) for w in _stock_weights(layer)] == [
        (w.name, tuple(w.shape)) for w in stock.weights
    ]
    assert tuple(layer.compute_output_shape(x.shape)) == tuple(layer(x).shape)
    dense = _check_forward(layer, case, x)

    _prune_at_random(layer, rng)
    pruned = _check_forward(layer, case, x)
    assert not np.allclose(pruned, dense)


def test_dilated_transpose_by_hand():
    """y[i + d·j] += x[i]·k[j]: the transposed convolution's definition, with dilation 2."""
    layer = MaskedConv1DTranspose(1, 2, dilation_rate=2, use_bias=False)
    x = np.array([[[1.0], [2.0], [3.0]]], dtype=np.float32)
    layer(x)
    layer.kernel.assign(np.array([1.0, 10.0]).reshape(2, 1, 1))
    np.testing.assert_array_equal(layer(x).numpy().ravel(), [1.0, 2.0, 13.0, 20.0, 30.0])
    layer.mask.assign(np.array([0.0, 1.0]).reshape(2, 1, 1))
    np.testing.assert_array_equal(layer(x).numpy().ravel(), [0.0, 0.0, 10.0, 20.0, 30.0])


def test_adjoint_reference_is_the_stock_transposed_convolution():
    """The reference used for dilated transposed convolutions, checked where the stock layer
    runs in float64 (no dilation): the same numbers within float64 rounding."""
    rng = np.random.default_rng(1)
    config = dict(filters=3, kernel_size=3, strides=2, padding="same", output_padding=1)
    x = rng.normal(size=(2, 4, 4, 3))
    weights = {"kernel": rng.normal(size=(3, 3, 3, 3)), "bias": rng.normal(size=3)}
    case = Case(MaskedConv2DTranspose, config, x.shape)
    stock = _stock_layer(case, x.shape, weights, "float64")
    expected = stock(x).numpy()
    adjoint = _stock_call(case, stock, tf.constant(x), adjoint=True).numpy()
    assert not np.array_equal(adjoint, np.zeros_like(adjoint))
    np.testing.assert_allclose(adjoint, expected, **tolerance(np.float64, 3 * 3 * 3 + 4))


def test_channels_first_and_dilated_transpose_where_the_cpu_kernels_refuse(tmp_path):
    """TensorFlow's CPU kernels refuse channels_first convolutions and dilated transposed
    convolutions where oneDNN is off (the default on many CPUs): the masked layers need
    neither. Run in a process with oneDNN turned off; check against float64 here."""
    cases = [param.values[0] for param in CASES if not _same_op(param.values[0])]
    assert {case.cls for case in cases} == {param.values[0].cls for param in CASES}
    rng = np.random.default_rng(9)
    inputs = {
        f"x{i}": rng.normal(size=case.shape).astype(np.float32) for i, case in enumerate(cases)
    }
    np.savez(tmp_path / "x.npz", **inputs)
    specs = [(case.cls.__name__, case.config) for case in cases]
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tfprune.layers as layers
        inputs = np.load(sys.argv[1])
        results = {{}}
        for i, (name, config) in enumerate({specs!r}):
            x = inputs[f"x{{i}}"]
            layer = getattr(layers, name)(**config, bias_initializer="random_normal")
            layer(x)
            for _, mask in layer.prunable_pairs():
                value = np.ones(mask.shape, np.float32)
                value.flat[::3] = 0.0
                mask.assign(value)
            results[f"y{{i}}"] = layer(x).numpy()
            masks = {{id(k): m for k, m in layer.prunable_pairs()}}
            for w in layer.weights:
                if any(w is m for m in masks.values()):
                    continue
                value = w.numpy() * (masks[id(w)].numpy() if id(w) in masks else 1.0)
                results[f"w{{i}}/{{w.name}}"] = value
        np.savez(sys.argv[2], **results)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.npz"), str(tmp_path / "y.npz")],
        cwd=ROOT,
        env=dict(ENV, TF_ENABLE_ONEDNN_OPTS="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "y.npz") as saved:
        for i, case in enumerate(cases):
            prefix = f"w{i}/"
            weights = {k[len(prefix) :]: saved[k] for k in saved.files if k.startswith(prefix)}
            x = inputs[f"x{i}"]
            absolute = {name: np.abs(value) for name, value in weights.items()}
            scale = _stock_output(_linear(case), np.abs(x), absolute, "float64").max()
            terms = _terms(case, weights, _input_channels(case))
            reference = _stock_output(case, x, weights, "float64")
            np.testing.assert_allclose(
                saved[f"y{i}"], reference, **tolerance(np.float32, terms, scale)
            )


# SPEC §1 "mask": pruned weights get exactly zero gradient, the others the stock gradient.


@pytest.mark.parametrize("case", CASES)
def test_gradients(case):
    same_op = _same_op(case)
    if not same_op:
        # Compared with float64: no activation, so that the upstream gradient is `r` exactly.
        case = _linear(case)
    rng = np.random.default_rng(2)
    x = rng.normal(size=case.shape).astype(np.float32)
    layer = case.cls(**case.config, bias_initializer="random_normal")
    r = rng.normal(size=tuple(layer(x).shape)).astype(np.float32)
    _prune_at_random(layer, rng)
    weights = _stock_weights(layer)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * r)
    grads = tape.gradient(loss, [w.value for w in weights])
    grads = {w.name: g.numpy() for w, g in zip(weights, grads, strict=True)}
    masks = _mask_of(layer)

    for name, mask in masks.items():
        assert np.all(grads[name][mask == 0] == 0.0), name
    effective = _effective(layer)
    if same_op:
        # d/dw L(w * m) = m * L'(w * m), which the same ops compute from the same values.
        expected = _stock_gradients(case, x, r, effective, "float32")
        for name, grad in grads.items():
            assert np.any(expected[name] != 0), name
            np.testing.assert_array_equal(grad, expected[name] * masks.get(name, 1.0), name)
        return
    expected = _stock_gradients(case, x, r, effective, "float64")
    absolute = {name: np.abs(value) for name, value in effective.items()}
    scales = _stock_gradients(case, np.abs(x), np.abs(r), absolute, "float64")
    # One entry sums at most one product per output entry, each through one output's chain.
    terms = r.size + _terms(case, effective, _input_channels(case))
    for name, grad in grads.items():
        assert np.any(expected[name] != 0), name
        bounds = tolerance(np.float32, terms, scales[name].max())
        np.testing.assert_allclose(grad, expected[name] * masks.get(name, 1.0), **bounds)


# SPEC §1 "mask": each layer takes the stock layer's arguments and configuration, so it
# converts both ways and is saved with the model.

RICH = {
    MaskedConv1D: dict(filters=4, kernel_size=3, padding="causal", groups=2),
    MaskedConv3D: dict(filters=2, kernel_size=(1, 2, 3), strides=(1, 2, 1), data_format=CF),
    MaskedConv1DTranspose: dict(filters=3, kernel_size=3, strides=2, output_padding=1),
    MaskedConv2DTranspose: dict(filters=3, kernel_size=(3, 1), dilation_rate=(2, 1)),
    MaskedConv3DTranspose: dict(filters=2, kernel_size=2, strides=2, padding="same"),
    MaskedDepthwiseConv1D: dict(kernel_size=3, strides=2, depth_multiplier=3),
    MaskedDepthwiseConv2D: dict(kernel_size=(3, 2), dilation_rate=2, data_format=CF),
    MaskedSeparableConv1D: dict(filters=4, kernel_size=3, depth_multiplier=2),
    MaskedSeparableConv2D: dict(filters=4, kernel_size=3, strides=2, padding="same"),
}


def _options(cls) -> dict:
    """Every initializer, regularizer and constraint argument of `cls`, set off its default."""
    prefixes = {
        "kernel": not issubclass(cls, (MaskedDepthwiseConv, MaskedSeparableConv)),
        "depthwise": issubclass(cls, (MaskedDepthwiseConv, MaskedSeparableConv)),
        "pointwise": issubclass(cls, MaskedSeparableConv),
        "bias": True,
    }
    options = {"activation": "gelu", "use_bias": False, "name": "twin"}
    options["activity_regularizer"] = keras.regularizers.L1(1e-3)
    for prefix, present in prefixes.items():
        if present:
            options[f"{prefix}_initializer"] = keras.initializers.HeUniform(seed=3)
            options[f"{prefix}_regularizer"] = keras.regularizers.L2(1e-4)
            options[f"{prefix}_constraint"] = keras.constraints.MaxNorm(2.0)
    return options


@pytest.mark.parametrize("cls", list(RICH), ids=lambda cls: cls.__name__)
def test_config_is_the_stock_config(cls):
    config = {**RICH[cls], **_options(cls)}
    stock = cls.stock_class(**config)
    expected = stock.get_config()
    layer = cls(**config)
    assert layer.get_config() == expected
    assert cls.from_config(expected).get_config() == expected
    converted = cls.from_stock(stock)
    assert type(converted) is cls and converted.get_config() == expected
    back = layer.to_stock()
    assert type(back) is cls.stock_class and back.get_config() == expected
    assert keras.saving.get_registered_name(cls) == f"tfprune>{cls.__name__}"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls and restored.get_config() == expected
    # The arguments the stock layer takes by position, in its order.
    ours = [p for p in inspect.signature(cls).parameters if p != "kwargs"]
    assert ours == list(inspect.signature(cls.stock_class).parameters)[: len(ours)]


def test_every_keras_convolution_has_a_twin():
    pattern = re.compile(r"(Conv|DepthwiseConv|SeparableConv|Convolution)[123]D(Transpose)?")
    stock = {
        value
        for name, value in vars(keras.layers).items()
        if pattern.fullmatch(name) and isinstance(value, type)
    }
    assert len(stock) == 10
    twins = masked_twins()
    assert sorted(cls.__name__ for cls in stock if cls not in twins) == []
    assert all(twins[cls].stock_class is cls for cls in stock)
    for cls in NEW_CLASSES + [MaskedConv1D, MaskedConv3D]:
        assert getattr(tfprune, cls.__name__) is cls


@pytest.mark.parametrize(
    "stock, args, kwargs, match",
    [
        (keras.layers.Conv2DTranspose, (2, 3), dict(strides=2, output_padding=2), "output_padding"),
        (keras.layers.Conv1DTranspose, (2, 3), dict(strides=2, dilation_rate=2), "strides"),
        (keras.layers.DepthwiseConv2D, (3,), dict(depth_multiplier=0), "depth_multiplier"),
        (keras.layers.SeparableConv1D, (2, 3), dict(padding="causal"), "padding"),
        (keras.layers.Conv3DTranspose, (2, 3), dict(padding="causal"), "padding"),
        (keras.layers.Conv1D, (0, 3), {}, "filters"),
        (keras.layers.Conv3D, (4, 3), dict(groups=3), "groups"),
        (keras.layers.DepthwiseConv1D, (3,), dict(strides=0), "strides"),
        (keras.layers.Conv2DTranspose, (2, (3, 3, 3)), {}, "kernel_size"),
        (keras.layers.SeparableConv2D, (2, 3), dict(dilation_rate=0), "dilation_rate"),
    ],
)
def test_arguments_the_stock_layer_refuses(stock, args, kwargs, match):
    with pytest.raises(ValueError):
        stock(*args, **kwargs)
    with pytest.raises(ModelError, match=match):
        masked_twins()[stock](*args, **kwargs)


# SPEC §1 "mask" and "Prunable weights": whole models, converted, saved, stripped and pruned.


def _stock_model(rank: int) -> tuple[keras.Model, tuple[int, ...]]:
    """A stock functional model of every convolution of `rank` (channels_last: stock layers
    run channels_first only where oneDNN is on)."""
    layers = keras.layers
    if rank == 1:
        shape = (10, 3)
        stack = [
            layers.Conv1D(4, 3, padding="causal", name="conv"),
            layers.Conv1DTranspose(4, 3, strides=2, activation="relu", name="up"),
            layers.DepthwiseConv1D(3, depth_multiplier=2, use_bias=False, name="dw"),
            layers.SeparableConv1D(3, 3, padding="same", depth_multiplier=2, name="sep"),
        ]
    elif rank == 2:
        shape = (5, 5, 3)
        stack = [
            layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up"),
            layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, activation="relu", name="dw"),
            layers.SeparableConv2D(4, 3, padding="same", use_bias=False, name="sep"),
        ]
    else:
        shape = (4, 4, 4, 2)
        stack = [
            layers.Conv3D(3, 2, activation="relu", name="conv"),
            layers.Conv3DTranspose(2, 2, strides=2, name="up"),
        ]
    inputs = keras.Input(shape)
    h = inputs
    for layer in stack:
        h = layer(h)
    model = keras.Model(inputs, h, name=f"convs{rank}d")
    rng = np.random.default_rng(rank)
    for weight in model.weights:  # biases too, so that they count
        weight.assign(rng.normal(size=tuple(weight.shape)).astype(np.float32))
    return model, shape


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_masked_save_and_strip_a_stock_model(rank, tmp_path):
    model, shape = _stock_model(rank)
    rng = np.random.default_rng(10 + rank)
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnprunedLayerWarning)  # every kernel is covered
        converted = tfprune.masked(model)

    twins = masked_twins()
    for old, new in zip(model.layers[1:], converted.layers[1:], strict=True):
        assert type(new) is twins[type(old)] and new.name == old.name
        assert [w.name for w in _stock_weights(new)] == [w.name for w in old.weights]
        for old_w, new_w in zip(old.weights, _stock_weights(new), strict=True):
            np.testing.assert_array_equal(new_w.numpy(), old_w.numpy())
        for _, mask in new.prunable_pairs():
            np.testing.assert_array_equal(mask.numpy(), np.ones(tuple(mask.shape)))
    np.testing.assert_array_equal(converted(x).numpy(), model(x).numpy())

    for layer in converted.layers[1:]:
        _prune_at_random(layer, rng)
    expected = converted(x).numpy()
    assert not np.allclose(expected, model(x).numpy())

    path = str(tmp_path / "convs.keras")
    converted.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in converted.layers]
    saved_weights, loaded_weights = prunable_weights(converted), prunable_weights(loaded)
    assert list(loaded_weights) == list(saved_weights)
    for path_, weight in loaded_weights.items():
        np.testing.assert_array_equal(weight.mask.numpy(), saved_weights[path_].mask.numpy())
        np.testing.assert_array_equal(weight.kernel.numpy(), saved_weights[path_].kernel.numpy())
    np.testing.assert_array_equal(loaded(x).numpy(), expected)

    stripped = tfprune.strip(converted)
    for old, new in zip(converted.layers[1:], stripped.layers[1:], strict=True):
        assert type(new) is old.stock_class and new.name == old.name
        effective = _effective(old)
        masks = _mask_of(old)
        for weight in new.weights:
            value = weight.numpy()
            np.testing.assert_array_equal(value, effective[weight.name])
            if weight.name in masks:
                # Exact zeros, not -0.0: kernel * mask of a negative weight would be -0.0.
                pruned = value[masks[weight.name] == 0]
                assert np.all(pruned == 0.0) and not np.any(np.signbit(pruned))
    # The same ops on the same kernel values (0.0 where masked layers see ±0.0).
    np.testing.assert_array_equal(stripped(x).numpy(), expected)


@pytest.mark.parametrize("rank", [1, 2])
def test_separable_kernels_are_pruned_each_under_its_path(rank):
    converted = tfprune.masked(_stock_model(rank)[0])
    weights = prunable_weights(converted)
    sep = converted.get_layer("sep")
    assert weights["sep/depthwise_kernel"].kernel is sep.depthwise_kernel
    assert weights["sep/depthwise_kernel"].mask is sep.depthwise_kernel_mask
    assert weights["sep/pointwise_kernel"].kernel is sep.pointwise_kernel
    assert weights["sep/pointwise_kernel"].mask is sep.pointwise_kernel_mask
    assert sep.depthwise_kernel_mask.path == "sep/depthwise_kernel_mask"
    assert sep.pointwise_kernel_mask.path == "sep/pointwise_kernel_mask"
    expected_paths = {1: ["conv/kernel", "up/kernel"], 2: ["up/kernel"]}[rank] + [
        "dw/kernel",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
    ]
    assert list(weights) == expected_paths

    masks = tfprune.prune(converted, "magnitude", 0.3)
    total = sum(int(np.prod(w.kernel.shape)) for w in weights.values())
    assert list(masks) == expected_paths
    assert sum(int(mask.sum()) for mask in masks.values()) == round(0.3 * total)
    # Magnitude, globally (SPEC §2): every kept |w| is above every pruned one.
    kept, pruned = [], []
    for path, weight in weights.items():
        np.testing.assert_array_equal(weight.mask.numpy(), masks[path])
        magnitude = np.abs(weight.kernel.numpy())
        kept.append(magnitude[masks[path] == 1])
        pruned.append(magnitude[masks[path] == 0])
    assert np.concatenate(kept).min() > np.concatenate(pruned).max()
    assert all(0 < masks[path].sum() < masks[path].size for path in expected_paths[-2:])
