"""Pruning Keras models tfprune did not build (SPEC §1 "mask", §2 the scorers, §3 selection).

For each model: every kernel-like weight (trainable, two dimensions or more) is prunable; each
of random, magnitude, SNIP, GraSP and SynFlow keeps exactly round(density · N) of the N
prunable weights; `fit` leaves the pruned weights untouched and the masks as they were; and a
`.keras` file and a SavedModel give back the pruned model's outputs.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.pruning import assign_masks, get_masks

METHODS = ("random", "magnitude", "snip", "grasp", "synflow")
DENSITY = 0.2
BATCH = 4


def _mobilenet_v2():
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    return model, _images((32, 32, 3)), _labels(10), None


def _efficientnet_b0():
    model = keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    return model, _images((32, 32, 3)), _labels(10), None


def _text_cnn():
    ids = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(50, 8)(ids)
    h = keras.layers.Conv1D(8, 3, padding="causal", activation="relu")(h)
    h = keras.layers.SeparableConv1D(8, 3, padding="same", depth_multiplier=2)(h)
    h = keras.layers.DepthwiseConv1D(3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalMaxPooling1D()(h)
    logits = keras.layers.Dense(4)(h)
    x = np.random.default_rng(1).integers(0, 50, size=(BATCH * 2, 12)).astype(np.int32)
    return keras.Model(ids, logits, name="text_cnn"), x, _labels(4), None


def _transformer_block():
    ids = keras.Input((10,), dtype="int32")
    h = keras.layers.Embedding(40, 16)(ids)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = keras.layers.LayerNormalization()(h + attended)
    ffn = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dense(16)(ffn))
    h = keras.layers.GlobalAveragePooling1D()(h)
    logits = keras.layers.Dense(3)(h)
    x = np.random.default_rng(2).integers(0, 40, size=(BATCH * 2, 10)).astype(np.int32)
    return keras.Model(ids, logits, name="transformer"), x, _labels(3), None


def _autoencoder_2d():
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(h)
    outputs = keras.layers.Conv2D(1, 3, padding="same")(h)
    x = _images((16, 16, 1))
    return keras.Model(inputs, outputs, name="autoencoder"), x, x, "mse"


def _autoencoder_3d():
    inputs = keras.Input((8, 8, 8, 1))
    h = keras.layers.Conv3D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv3DTranspose(4, 3, strides=2, padding="same", activation="relu")(h)
    outputs = keras.layers.Conv3D(1, 3, padding="same")(h)
    x = _images((8, 8, 8, 1))
    return keras.Model(inputs, outputs, name="volumes"), x, x, "mse"


@keras.saving.register_keras_serializable(package="tfprune_tests")
class SmallNet(keras.Model):
    """A subclassed model written with tfprune's layers, as the README suggests."""

    def __init__(self, classes: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = MaskedConv2D(6, 3, activation="relu", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.hidden = MaskedDense(12, activation="relu", name="hidden")
        self.logits = MaskedDense(classes, name="logits")

    def call(self, x):
        return self.logits(self.hidden(self.pool(self.conv(x))))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def _subclassed():
    model = SmallNet()
    x = _images((10, 10, 3))
    model(x[:1])
    return model, x, _labels(5), None


def _shared_names():
    def inner(name):
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, name="fc"),
                keras.layers.BatchNormalization(name="bn"),
            ],
            name=name,
        )

    inputs = keras.Input((6,))
    a, b = inner("a"), inner("b")
    # Different BatchNorm statistics in the two sub-models, so a mix-up shows.
    b.get_layer("bn").moving_mean.assign(np.full((8,), 0.5, np.float32))
    logits = keras.layers.Dense(3, name="fc")(keras.layers.Concatenate()([a(inputs), b(inputs)]))
    x = np.random.default_rng(3).normal(size=(BATCH * 2, 6)).astype(np.float32)
    return keras.Model(inputs, logits, name="shared_names"), x, _labels(3), None


def _images(shape):
    return np.random.default_rng(4).normal(size=(BATCH * 2, *shape)).astype(np.float32)


def _labels(classes):
    return (np.arange(BATCH * 2) % classes).astype(np.int32)


MODELS = {
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_b0": _efficientnet_b0,
    "text_cnn": _text_cnn,
    "transformer_block": _transformer_block,
    "autoencoder_2d": _autoencoder_2d,
    "autoencoder_3d": _autoencoder_3d,
    "subclassed": _subclassed,
    "shared_names": _shared_names,
}
LARGE = {"mobilenet_v2", "efficientnet_b0"}


def _pruned_model(name):
    """The model of `name` made prunable, its data and its loss (None: classification)."""
    keras.utils.set_random_seed(0)
    model, x, y, loss = MODELS[name]()
    if name != "subclassed":
        stock_outputs = np.asarray(model(x, training=False))
        with warnings.catch_warnings():
            warnings.simplefilter("error", tfprune.UnprunedLayerWarning)
            model = tfprune.masked(model)
        # The conversion keeps every weight: the masked model computes the stock outputs.
        np.testing.assert_allclose(
            np.asarray(model(x, training=False)), stock_outputs, **_output_tolerance(model, x)
        )
    return model, x, y, loss


def _output_tolerance(model, x):
    """A float32 tolerance for two evaluations of `model` that may sum in other orders: the
    longest chain of rounded terms is at most the sum of the kernels' fan-ins."""
    terms = sum(
        int(np.prod(w.kernel.shape[:-1])) + 1 for w in prunable_weights(model).values()
    )
    scale = float(np.max(np.abs(np.asarray(model(x, training=False))))) or 1.0
    return tolerance("float32", terms, scale)


def _expected_kept(model) -> int:
    total = sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())
    return round(DENSITY * total)


def _kept(masks) -> int:
    return int(sum(np.count_nonzero(m) for m in masks.values()))


def _params():
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name for name in MODELS
    ]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_kernel_like_weight_is_prunable(name):
    model, _, _, _ = _pruned_model(name)
    kernels = {w.kernel.path for w in prunable_weights(model).values()}
    # A bias is never pruned, even a 2-D one (EinsumDense, attention projections).
    kernel_like = {
        w.path for w in model.trainable_weights if len(w.shape) >= 2 and w.name != "bias"
    }
    assert kernels == kernel_like
    assert tfprune.unpruned_layers(model) == {}


@pytest.mark.parametrize("name", _params())
def test_each_method_reaches_the_density_over_every_kernel(name):
    model, x, y, loss = _pruned_model(name)
    ones = {path: np.ones_like(mask) for path, mask in get_masks(model).items()}
    expected = _expected_kept(model)
    for method in METHODS:
        assign_masks(model, ones)
        options = {"rounds": 10} if method == "synflow" and name in LARGE else {}
        # A model compiled with a loss is scored with it; an uncompiled one with
        # cross-entropy on its logits.
        if loss is not None:
            model.compile(loss=loss)
        masks = tfprune.prune(model, method, DENSITY, data=(x, y), batch_size=BATCH, **options)
        assert _kept(masks) == expected, method
        assert _kept(get_masks(model)) == expected, method


@pytest.mark.parametrize("name", _params())
def test_fit_keeps_the_zeros_and_the_files_keep_the_outputs(name, tmp_path):
    model, x, y, loss = _pruned_model(name)
    # Every layer keeps half its weights, so that every kernel of these small networks still
    # has weights that train (at lower densities whole ReLU layers of them die).
    tfprune.prune(model, "random", 0.5, allocation="layer")
    masks = get_masks(model)
    before = {path: np.array(w.kernel.numpy()) for path, w in prunable_weights(model).items()}
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    after = prunable_weights(model)
    for path, mask in masks.items():
        kernel = after[path].kernel.numpy()
        # A pruned weight gets no gradient, so Adam never moves it; the mask stays.
        np.testing.assert_array_equal(kernel[mask == 0], before[path][mask == 0])
        np.testing.assert_array_equal(after[path].mask.numpy(), mask)
        assert np.any(kernel[mask == 1] != before[path][mask == 1]), path
    outputs = np.asarray(model(x, training=False))

    model.save(tmp_path / "model.keras")
    loaded = tfprune.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), outputs)
    np.testing.assert_array_equal(_kept(get_masks(loaded)), _kept(masks))

    tfprune.export(model, str(tmp_path / "saved"), format="saved_model")
    served = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    result = served(inputs=tf.constant(x))
    (served_outputs,) = result.values()
    np.testing.assert_allclose(served_outputs.numpy(), outputs, **_output_tolerance(model, x))


def test_two_sub_models_with_the_same_layer_names_keep_their_own_weights():
    keras.utils.set_random_seed(0)
    stock, x, _, _ = _shared_names()
    model = tfprune.masked(stock)
    for sub in ("a", "b"):
        for layer in ("fc", "bn"):
            old = stock.get_layer(sub).get_layer(layer)
            new = model.get_layer(sub).get_layer(layer)
            kept = [w for w in new.weights if w.name != "mask"]
            assert [w.name for w in kept] == [w.name for w in old.weights]
            for w_old, w_new in zip(old.weights, kept, strict=True):
                np.testing.assert_array_equal(w_new.numpy(), w_old.numpy())
    assert not math.isclose(
        float(model.get_layer("b").get_layer("bn").moving_mean.numpy()[0]),
        float(model.get_layer("a").get_layer("bn").moving_mean.numpy()[0]),
    )


def test_a_layer_no_mask_covers_is_named_by_masked_and_by_the_pruning_report():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    h = keras.layers.LSTM(4, name="lstm")(inputs)
    stock = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    with pytest.warns(tfprune.UnprunedLayerWarning, match=r"'lstm/lstm_cell' holds 128 param"):
        model = tfprune.masked(stock)
    # kernel 3x16 + recurrent kernel 4x16 + bias 16 = 128 parameters stay dense.
    with pytest.warns(tfprune.UnprunedLayerWarning, match="lstm_cell"):
        report = tfprune.prune_with_report(model, "magnitude", 0.5)
    assert report.unpruned_layers == {"lstm/lstm_cell": 128}
    assert list(report.masks) == ["out/kernel"]
    assert _kept(report.masks) == 4
