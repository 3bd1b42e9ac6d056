"""Tests of the masked layers, `prunable_weights` and `tfprune.masked` (SPEC §1, "mask")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from _procs import ENV, ROOT
from _tolerance import tolerance

import tfprune
from tfprune.errors import ModelError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.layers.precision import dtype_policy


def _random_mask(rng: np.random.Generator, shape) -> np.ndarray:
    mask = rng.integers(0, 2, size=shape).astype(np.float32)
    mask.flat[0], mask.flat[-1] = 0.0, 1.0  # both values present whatever the draw
    return mask


def _twin(stock: keras.layers.Layer, cls, config: dict, x: np.ndarray):
    """Builds a masked layer with the stock layer's configuration and weights."""
    layer = cls(**config)
    layer(x)
    layer.kernel.assign(stock.kernel)
    if layer.bias is not None:
        layer.bias.assign(stock.bias)
    return layer


def _masked_cnn(rng: np.random.Generator) -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    h = MaskedConv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = MaskedDense(8, activation="relu", name="hidden")(h)
    outputs = MaskedDense(3, name="logits")(h)
    model = keras.Model(inputs, outputs, name="small_cnn")
    for weight in prunable_weights(model).values():
        weight.mask.assign(_random_mask(rng, weight.mask.shape))
    return model


# SPEC §1 "mask": with an all-ones mask the layers are stock Dense/Conv2D; with a 0/1 mask
# they are the stock layer whose kernel is `kernel * mask`.

CONV_CONFIGS = [
    dict(filters=4, kernel_size=3),
    dict(filters=4, kernel_size=(3, 2), strides=2, padding="same"),
    dict(filters=3, kernel_size=3, dilation_rate=2, padding="same", use_bias=False),
    dict(filters=5, kernel_size=1, strides=(2, 1), activation="relu"),
    dict(filters=2, kernel_size=2, padding="valid", dilation_rate=(1, 2), activation="tanh"),
    dict(filters=4, kernel_size=3, padding="same", data_format="channels_first"),
    dict(filters=3, kernel_size=2, strides=2, data_format="channels_first", use_bias=False),
]
DENSE_CONFIGS = [
    (dict(units=4), (5, 3)),
    (dict(units=6, activation="relu"), (5, 7)),
    (dict(units=2, use_bias=False), (5, 3)),
    (dict(units=3, activation="sigmoid"), (2, 4, 5)),
]


def _conv_input(config: dict, rng: np.random.Generator) -> np.ndarray:
    if config.get("data_format") == "channels_first":
        return rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    return rng.normal(size=(2, 9, 9, 3)).astype(np.float32)


def _stock_conv(config: dict, x: np.ndarray, kernel: np.ndarray, bias, dtype="float32"):
    """The stock `Conv2D` of `config` with `kernel` and `bias`, run on `x` in `dtype`.

    TensorFlow's CPU Conv2D takes channels_first (NCHW) input only where oneDNN is on, so a
    channels_first layer runs here as the same layer on the transposed input, its output
    transposed back: the same numbers, on any CPU.
    """
    channels_first = config.get("data_format") == "channels_first"
    if channels_first:
        x = np.transpose(x, (0, 2, 3, 1))
    stock = keras.layers.Conv2D(**{**config, "data_format": "channels_last"}, dtype=dtype)
    stock.build(x.shape)
    stock.kernel.assign(kernel.astype(dtype))
    if stock.use_bias:
        stock.bias.assign(bias.astype(dtype))
    outputs = stock(x.astype(dtype)).numpy()
    return np.transpose(outputs, (0, 3, 1, 2)) if channels_first else outputs


def _assert_float64_conv(outputs: np.ndarray, config: dict, x, kernel, bias) -> None:
    """Checks float32 `outputs` against the stock layer of `config` run in float64."""
    # Each output is a sum of kh·kw·c_in products, then the bias and the activation (4 more:
    # tanh is within a few ulp); Σ|term| comes from |x|, |kernel| and |bias|.
    linear = {**config, "activation": None}
    terms = int(np.prod(kernel.shape[:-1])) + 4
    scale = _stock_conv(linear, np.abs(x), np.abs(kernel), np.abs(bias), "float64").max()
    reference = _stock_conv(config, x, kernel, bias, "float64")
    np.testing.assert_allclose(outputs, reference, **tolerance(np.float32, terms, scale))


def _check_conv(layer: MaskedConv2D, config: dict, x: np.ndarray) -> np.ndarray:
    """Checks `layer(x)` against the stock layer whose kernel is `kernel * mask`."""
    outputs = layer(x).numpy()
    kernel = layer.kernel.numpy() * layer.mask.numpy()
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.filters, np.float32)
    if config.get("data_format") != "channels_first":
        # The same convolution op on the same input and kernel: bit for bit.
        np.testing.assert_array_equal(outputs, _stock_conv(config, x, kernel, bias))
    _assert_float64_conv(outputs, config, x, kernel, bias)  # any layout
    return outputs


@pytest.mark.parametrize("config", CONV_CONFIGS)
def test_conv_matches_stock_conv(config):
    rng = np.random.default_rng(0)
    x = _conv_input(config, rng)
    layer = MaskedConv2D(**config, bias_initializer="random_normal")
    dense = _check_conv(layer, config, x)

    layer.mask.assign(_random_mask(rng, layer.mask.shape))
    pruned = _check_conv(layer, config, x)
    assert not np.allclose(pruned, dense)


def test_channels_first_conv_where_the_cpu_kernel_refuses_nchw(tmp_path):
    """TensorFlow's CPU Conv2D raises UnimplementedError for NCHW input where oneDNN is off,
    as it is by default on CPUs without AVX-512 VNNI and the like: the masked layer's
    channels_first path must not need it. Run in a process with oneDNN turned off."""
    config = dict(filters=4, kernel_size=3, strides=2, data_format="channels_first")
    x = _conv_input(config, np.random.default_rng(9))
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from tfprune.layers import MaskedConv2D
        x = np.load(sys.argv[1])
        layer = MaskedConv2D(**{config!r}, bias_initializer="random_normal")
        layer(x)
        mask = np.ones(layer.mask.shape, np.float32)
        mask[0, 1], mask[2, 2, 1] = 0.0, 0.0
        layer.mask.assign(mask)
        np.savez(sys.argv[2], y=layer(x).numpy(), kernel=layer.kernel.numpy() * mask,
                 bias=layer.bias.numpy())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "y.npz")],
        cwd=ROOT, env=dict(ENV, TF_ENABLE_ONEDNN_OPTS="0"), capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "y.npz") as saved:
        _assert_float64_conv(saved["y"], config, x, saved["kernel"], saved["bias"])


@pytest.mark.parametrize("config, input_shape", DENSE_CONFIGS)
def test_dense_matches_stock_dense(config, input_shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=input_shape).astype(np.float32)
    stock = keras.layers.Dense(**config, bias_initializer="random_normal")
    expected = stock(x).numpy()
    layer = _twin(stock, MaskedDense, config, x)
    np.testing.assert_array_equal(layer(x).numpy(), expected)

    mask = _random_mask(rng, layer.mask.shape)
    layer.mask.assign(mask)
    pruned_stock = keras.layers.Dense(**config)
    pruned_stock(x)
    pruned_stock.kernel.assign(stock.kernel.numpy() * mask)
    if stock.use_bias:
        pruned_stock.bias.assign(stock.bias)
    pruned = layer(x).numpy()
    # The same matmul on the same input and kernel values: bit for bit.
    np.testing.assert_array_equal(pruned, pruned_stock(x).numpy())
    assert not np.allclose(pruned, expected)


def test_dense_by_hand():
    layer = MaskedDense(2, activation="relu")
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    layer(x)
    layer.kernel.assign(np.array([[1.0, -1.0], [2.0, 1.0], [-1.0, 3.0]]))
    layer.bias.assign(np.array([0.5, -0.5]))
    layer.mask.assign(np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]))
    # [1*1 + 3*(-1) + 0.5, 1*(-1) + 2*1 - 0.5] = [-1.5, 0.5], then relu.
    np.testing.assert_array_equal(layer(x).numpy(), [[0.0, 0.5]])


# SPEC §1 "mask": a non-trainable variable of the kernel's shape; pruned weights get exactly
# zero gradient.


@pytest.mark.parametrize(
    "layer, x_shape",
    [
        (lambda: MaskedDense(5), (4, 3)),
        (lambda: MaskedConv2D(4, 3, padding="same"), (2, 5, 5, 3)),
        (lambda: MaskedConv2D(2, (1, 3), use_bias=False), (2, 5, 5, 3)),
    ],
)
def test_mask_variable(layer, x_shape):
    layer = layer()
    layer(np.zeros(x_shape, dtype=np.float32))
    mask = layer.mask
    assert not mask.trainable
    assert all(v is not mask for v in layer.trainable_weights)
    assert any(v is mask for v in layer.non_trainable_weights)
    assert tuple(mask.shape) == tuple(layer.kernel.shape)
    np.testing.assert_array_equal(mask.numpy(), np.ones(tuple(layer.kernel.shape)))
    assert mask.aggregation == "only_first_replica"
    assert mask.path.endswith("/mask")


@pytest.mark.parametrize("cls, config, x_shape", [
    (MaskedDense, dict(units=5, activation="tanh"), (4, 3)),
    (MaskedConv2D, dict(filters=4, kernel_size=3, padding="same"), (2, 5, 5, 3)),
])
def test_gradient_is_zero_at_pruned_weights(cls, config, x_shape):
    rng = np.random.default_rng(2)
    x = rng.normal(size=x_shape).astype(np.float32)
    layer = cls(**config)
    layer(x)
    mask = _random_mask(rng, layer.mask.shape)
    layer.mask.assign(mask)
    stock = (keras.layers.Dense if cls is MaskedDense else keras.layers.Conv2D)(**config)
    stock(x)
    stock.kernel.assign(layer.kernel.numpy() * mask)
    stock.bias.assign(layer.bias)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x)))
    grad = tape.gradient(loss, layer.kernel.value).numpy()
    with tf.GradientTape() as tape:
        stock_loss = tf.reduce_sum(tf.square(stock(x)))
    stock_grad = tape.gradient(stock_loss, stock.kernel.value).numpy()

    assert np.all(grad[mask == 0] == 0.0)
    assert np.count_nonzero(grad[mask == 1]) == np.count_nonzero(mask)
    # d/dw L(w * m) = m * L'(w * m): the kept weights get the stock layer's gradient, which
    # the same ops compute from the same values, so bit for bit.
    np.testing.assert_array_equal(grad, stock_grad * mask)


@pytest.mark.parametrize("cls, stock_cls, config, x_shape", [
    (MaskedDense, keras.layers.Dense, dict(units=5, activation="tanh"), (4, 3)),
    (MaskedConv2D, keras.layers.Conv2D, dict(filters=4, kernel_size=3), (2, 5, 5, 3)),
])
def test_mixed_precision_layer_masks_in_float32_as_its_stock_twin_reads(
    cls, stock_cls, config, x_shape
):
    rng = np.random.default_rng(3)
    x = rng.normal(size=x_shape).astype(np.float32)
    with dtype_policy("mixed_bfloat16"):
        layer, stock = cls(**config), stock_cls(**config)
    layer(x), stock(x)
    mask = _random_mask(rng, layer.mask.shape)
    layer.mask.assign(mask)
    stock.kernel.assign(layer.kernel.numpy() * mask)
    stock.bias.assign(layer.bias)

    # One multiply of the float32 variables, then the cast to bfloat16 the stock layer makes.
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x_shape)).graph
    multiplies = [op for op in graph.get_operations() if op.type == "Mul"]
    assert [(op.outputs[0].dtype, tuple(op.outputs[0].shape)) for op in multiplies] == [
        (tf.float32, tuple(mask.shape))
    ]
    with tf.GradientTape() as tape:
        outputs = layer(x)
        loss = tf.reduce_sum(tf.square(tf.cast(outputs, tf.float32)))
    grad = tape.gradient(loss, layer.kernel.value).numpy()
    with tf.GradientTape() as tape:
        stock_outputs = stock(x)
        stock_loss = tf.reduce_sum(tf.square(tf.cast(stock_outputs, tf.float32)))
    stock_grad = tape.gradient(stock_loss, stock.kernel.value).numpy()

    assert outputs.dtype == tf.bfloat16 and grad.dtype == np.float32
    # The same ops on the same values: bit for bit.
    np.testing.assert_array_equal(outputs.numpy(), stock_outputs.numpy())
    assert np.all(grad[mask == 0] == 0.0)
    assert np.count_nonzero(grad[mask == 1]) == np.count_nonzero(mask)
    np.testing.assert_array_equal(grad, stock_grad * mask)


# SPEC §1 "mask": the mask is saved with the model (configuration, .keras archive).


def test_config_round_trip():
    layer = MaskedConv2D(
        6,
        (3, 1),
        strides=(2, 1),
        padding="SAME",
        dilation_rate=1,
        groups=2,
        activation="relu",
        use_bias=False,
        kernel_initializer="he_uniform",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        name="c1",
    )
    config = layer.get_config()
    assert config["filters"] == 6
    assert config["kernel_size"] == (3, 1)
    assert config["strides"] == (2, 1)
    assert config["padding"] == "same"
    assert config["dilation_rate"] == (1, 1)
    assert config["groups"] == 2
    assert config["use_bias"] is False
    assert config["name"] == "c1"
    clone = MaskedConv2D.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.kernel_regularizer, keras.regularizers.L2)
    assert clone.kernel_regularizer.l2 == pytest.approx(1e-4)

    dense = MaskedDense(7, activation="softmax", bias_initializer="ones", name="d1")
    dense_config = dense.get_config()
    assert dense_config["units"] == 7
    assert MaskedDense.from_config(dense_config).get_config() == dense_config
    assert keras.saving.get_registered_name(MaskedDense) == "tfprune>MaskedDense"
    assert keras.saving.get_registered_name(MaskedConv2D) == "tfprune>MaskedConv2D"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(dense))
    assert type(restored) is MaskedDense
    assert restored.get_config() == dense_config


def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    model = _masked_cnn(rng)
    x = rng.normal(size=(4, 6, 6, 2)).astype(np.float32)
    expected = model(x, training=False).numpy()
    masks = tfprune.get_masks(model)
    kernels = {path: w.kernel.numpy() for path, w in prunable_weights(model).items()}

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)

    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    loaded_weights = prunable_weights(loaded)
    assert list(loaded_weights) == list(masks)
    for key, weight in loaded_weights.items():
        np.testing.assert_array_equal(weight.mask.numpy(), masks[key])
        np.testing.assert_array_equal(weight.kernel.numpy(), kernels[key])
        assert not weight.mask.trainable
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)


def test_fit_keeps_pruned_weights_at_zero():
    """tfmot-style behavioural test: train 2 epochs on random data, pruned weights stay 0."""
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)
    model = _masked_cnn(rng)
    before = {
        path: (w.kernel.numpy(), w.mask.numpy()) for path, w in prunable_weights(model).items()
    }
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = rng.normal(size=(64, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)

    for path, weight in prunable_weights(model).items():
        kernel, mask = before[path]
        np.testing.assert_array_equal(weight.mask.numpy(), mask)
        effective = weight.kernel.numpy() * weight.mask.numpy()
        assert np.all(effective[mask == 0] == 0.0)
        # Plain SGD and zero gradient: the pruned entries of the kernel never move.
        np.testing.assert_array_equal(weight.kernel.numpy()[mask == 0], kernel[mask == 0])
        assert not np.allclose(weight.kernel.numpy()[mask == 1], kernel[mask == 1])


# SPEC §1 "Prunable weights": every Dense and Conv2D kernel, addressed by its path.


def _nested_model(masked_layers: bool = True) -> keras.Model:
    dense = MaskedDense if masked_layers else keras.layers.Dense
    conv = MaskedConv2D if masked_layers else keras.layers.Conv2D
    head = keras.Sequential(
        [dense(6, activation="relu", name="head_hidden"), dense(3, name="head_out")],
        name="head",
    )
    inputs = keras.Input((8, 8, 2))
    h = conv(4, 3, name="stem")(inputs)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    h = keras.layers.ReLU(name="stem_relu")(h)
    h = conv(5, 3, strides=2, use_bias=False, name="body")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    h = dense(7, activation="relu", name="neck")(h)
    outputs = head(h)
    return keras.Model(inputs, outputs, name="nested")


def test_prunable_weights_paths_and_order():
    model = _nested_model()
    weights = prunable_weights(model)
    assert list(weights) == [
        "stem/kernel",
        "body/kernel",
        "neck/kernel",
        "head/head_hidden/kernel",
        "head/head_out/kernel",
    ]
    for path, weight in weights.items():
        assert weight.kernel.path == path
        assert weight.kernel is weight.layer.kernel
        assert weight.mask is weight.layer.mask
    assert [w.layer.name for w in weights.values()] == [
        "stem", "body", "neck", "head_hidden", "head_out"
    ]
    assert sum(int(np.prod(w.kernel.shape)) for w in weights.values()) == (
        3 * 3 * 2 * 4 + 3 * 3 * 4 * 5 + 5 * 7 + 7 * 6 + 6 * 3
    )


def test_prunable_weights_of_a_layer_and_of_a_stock_model():
    layer = MaskedDense(3)
    layer(np.zeros((1, 2), dtype=np.float32))
    assert list(prunable_weights(layer)) == [layer.kernel.path]
    assert prunable_weights(_nested_model(masked_layers=False)) == {}


def test_prunable_weights_of_unbuilt_model():
    with pytest.raises(ModelError, match="not built"):
        prunable_weights(keras.Sequential([MaskedDense(3, name="late")]))
    with pytest.raises(ModelError, match="'late2'"):
        prunable_weights(MaskedConv2D(3, 3, name="late2"))


# SPEC §1 "Prunable weights": `tfprune.masked` turns a stock model's Dense/Conv2D into masked
# layers without changing what it computes.


def _randomise_batch_norm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model._flatten_layers(recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:
                shape = tuple(variable.shape)
                variable.assign(rng.uniform(0.5, 1.5, size=shape).astype(np.float32))


def _check_masked_copy(
    original: keras.Model, converted: keras.Model, x: np.ndarray, modes=(False, True)
) -> None:
    old_layers = original._flatten_layers(include_self=False, recursive=True)
    new_layers = {layer.name: layer for layer in converted._flatten_layers(include_self=False)}
    for old in old_layers:
        if isinstance(old, keras.layers.InputLayer):
            continue  # a nested model's clone gets a fresh, renamed input
        new = new_layers[old.name]
        if type(old) is keras.layers.Dense:
            assert type(new) is MaskedDense
        elif type(old) is keras.layers.Conv2D:
            assert type(new) is MaskedConv2D
        else:
            assert type(new) is type(old)
            assert new is not old
        if isinstance(new, (MaskedDense, MaskedConv2D)):
            np.testing.assert_array_equal(new.kernel.numpy(), old.kernel.numpy())
            np.testing.assert_array_equal(new.mask.numpy(), np.ones(tuple(old.kernel.shape)))
            assert new.use_bias == old.use_bias
            assert new.activation is old.activation
            if old.use_bias:
                np.testing.assert_array_equal(new.bias.numpy(), old.bias.numpy())
    # Stock and masked layers run the same ops on the same weights (the mask is all ones).
    for training in modes:
        np.testing.assert_array_equal(
            converted(x, training=training).numpy(), original(x, training=training).numpy()
        )


def test_masked_sequential():
    rng = np.random.default_rng(5)
    model = keras.Sequential(
        [
            keras.Input((7, 7, 3)),
            keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(5, activation="tanh", bias_initializer="random_normal"),
            keras.layers.Dense(2, use_bias=False),
        ]
    )
    before = [w.numpy() for w in model.weights]
    converted = tfprune.masked(model)
    assert isinstance(converted, keras.Sequential)
    assert [type(layer).__name__ for layer in converted.layers] == [
        "MaskedConv2D", "MaxPooling2D", "Flatten", "Dropout", "MaskedDense", "MaskedDense"
    ]
    x = rng.normal(size=(3, 7, 7, 3)).astype(np.float32)
    # Dropout draws differently in each model, so compare in inference mode only.
    _check_masked_copy(model, converted, x, modes=(False,))
    conv = converted.layers[0]
    assert conv.strides == (2, 2) and conv.padding == "same"
    assert converted.layers[4].get_config()["bias_initializer"] == (
        model.layers[4].get_config()["bias_initializer"]
    )

    # The copy owns its variables: writing to it leaves the original as it was.
    for weight in prunable_weights(converted).values():
        weight.kernel.assign(np.zeros(tuple(weight.kernel.shape)))
        weight.mask.assign(np.zeros(tuple(weight.mask.shape)))
    assert [type(layer) for layer in model.layers if layer.weights] == [
        keras.layers.Conv2D, keras.layers.Dense, keras.layers.Dense
    ]
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(new.numpy(), old)


def test_masked_functional_with_nested_sequential():
    rng = np.random.default_rng(6)
    model = _nested_model(masked_layers=False)
    _randomise_batch_norm(model, rng)
    before = [w.numpy() for w in model.weights]
    converted = tfprune.masked(model)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(new.numpy(), old)
    assert isinstance(converted.get_layer("head"), keras.Sequential)
    assert list(prunable_weights(converted)) == list(prunable_weights(_nested_model()))
    bn, old_bn = converted.get_layer("stem_bn"), model.get_layer("stem_bn")
    assert bn.moving_mean is not old_bn.moving_mean
    np.testing.assert_array_equal(bn.moving_variance.numpy(), old_bn.moving_variance.numpy())
    # Training mode last: it moves the BatchNorm statistics of both models.
    x = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
    _check_masked_copy(model, converted, x)


def test_masked_rejects_subclassed_and_unbuilt_models():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ModelError, match="subclassed"):
        tfprune.masked(model)
    with pytest.raises(ModelError, match="not built"):
        tfprune.masked(keras.Sequential([keras.layers.Dense(2)]))


# SPEC §1 + STYLE "Pitfalls": importing tfprune keeps Keras 3 and never pulls in tfmot.


def test_import_keeps_keras_3():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = (
        "import os, sys, tfprune, keras\n"
        "print(os.environ.get('TF_USE_LEGACY_KERAS'))\n"
        "print(keras.__version__)\n"
        "print('tensorflow_model_optimization' in sys.modules)\n"
        "print('tf_keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    unset, version, tfmot, tf_keras = result.stdout.split()
    assert unset == "None"
    assert version.startswith("3")
    assert tfmot == "False"
    assert tf_keras == "False"


# The whole flow (SPEC §1, §2): stock model → masked → SNIP → fit → save and reload.


def test_stock_model_snip_fit_save(tmp_path):
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    outputs = keras.layers.Dense(4)(h)
    model = tfprune.masked(keras.Model(inputs, outputs))
    x = rng.normal(size=(40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 4, size=40)

    masks = tfprune.prune(model, "snip", 0.1, data=(x, y))
    total = sum(m.size for m in masks.values())
    assert total == 3 * 3 * 1 * 6 + 216 * 16 + 16 * 4
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)

    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for path, weight in prunable_weights(model).items():
        np.testing.assert_array_equal(weight.mask.numpy(), masks[path])
        effective = weight.kernel.numpy() * weight.mask.numpy()
        assert np.all(effective[masks[path] == 0] == 0.0)

    path = str(tmp_path / "snip.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    reloaded = tfprune.get_masks(loaded)
    assert list(reloaded) == list(masks)
    for key, mask in masks.items():
        np.testing.assert_array_equal(reloaded[key], mask)
    np.testing.assert_array_equal(
        loaded(x[:5], training=False).numpy(), model(x[:5], training=False).numpy()
    )


def _two_branches_with_same_names(rng: np.random.Generator) -> keras.Model:
    """Two nested models, each holding a Dense `fc` and a BatchNormalization `bn`, with
    different weights: a copy that looks layers up by name gives one branch the other's (or
    fresh) weights."""

    def branch(name: str) -> keras.Model:
        inputs = keras.Input((4,))
        h = keras.layers.Dense(3, name="fc")(inputs)
        h = keras.layers.BatchNormalization(name="bn")(h)
        return keras.Model(inputs, h, name=name)

    inputs = keras.Input((4,))
    left, right = branch("left"), branch("right")
    outputs = keras.layers.Concatenate(name="cat")([left(inputs), right(inputs)])
    model = keras.Model(inputs, outputs)
    for weight in model.weights:
        low = 0.5 if "variance" in weight.name else -1.0
        weight.assign(rng.uniform(low, 2.0, size=tuple(weight.shape)).astype("float32"))
    return model


def _sublayer_weights(model: keras.Model) -> list[tuple[str, str, str, np.ndarray]]:
    """(branch, layer, weight name, value) of every weight, read through the model objects."""
    return [
        (branch.name, layer.name, weight.name, keras.ops.convert_to_numpy(weight))
        for branch in model.layers
        if isinstance(branch, keras.Model)
        for layer in branch.layers
        for weight in layer.weights
        if weight.name != "mask"
    ]


@pytest.mark.parametrize("convert", ["masked", "strip"])
def test_nested_models_with_repeated_layer_names_keep_their_own_weights(convert):
    original = _two_branches_with_same_names(np.random.default_rng(5))
    converted = tfprune.masked(original)
    if convert == "strip":
        converted = tfprune.strip(converted)
    expected, got = _sublayer_weights(original), _sublayer_weights(converted)
    assert [item[:3] for item in got] == [item[:3] for item in expected]
    assert len(got) == 12  # per branch: fc kernel and bias, bn gamma, beta, mean, variance
    for (branch, layer, name, want), (*_, value) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(value, want, err_msg=f"{branch}/{layer}/{name}")
    # The two branches really differ, so a cross-copy could not pass the check above.
    assert not np.array_equal(expected[2][3], expected[8][3])
