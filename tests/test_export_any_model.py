"""Strip and export of subclassed models and of models with several or integer inputs.

Exactness: the weights are multiples of 1/8 in [-1, 1] and the inputs multiples of 1/4 in
[-2, 2], and the networks are two matrix products deep with fan-ins below 64, so every product
and every partial sum is a multiple of 2^-8 below 2^12: exactly representable in float32. Any
summation order, kernel or runtime (eager Keras, a SavedModel graph, TFLite) then gives the
same bits, and the outputs are compared exactly.
"""

import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from _procs import ENV, ROOT

import tfprune
from tfprune.errors import ConfigError, ModelError


@keras.saving.register_keras_serializable(package="tfprune_tests")
class ConvNet(keras.Model):
    """A subclassed network of masked layers: Conv2D, then Dense."""

    def __init__(self, filters=3, units=4, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.units = filters, units
        self.conv = tfprune.MaskedConv2D(filters, 3, activation="relu", name="conv")
        self.flat = keras.layers.Flatten(name="flat")
        self.fc = tfprune.MaskedDense(units, name="fc")

    def call(self, x):
        return self.fc(self.flat(self.conv(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "units": self.units}


@keras.saving.register_keras_serializable(package="tfprune_tests")
class TokenNet(keras.Model):
    """A subclassed network fed token ids: a stock Embedding, then a masked Dense."""

    def __init__(self, vocabulary=20, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        self.embed = keras.layers.Embedding(vocabulary, 4, name="embed")
        self.flat = keras.layers.Flatten(name="flat")
        self.fc = tfprune.MaskedDense(3, name="fc")

    def call(self, ids):
        return self.fc(self.flat(self.embed(ids)))

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary}


def _dyadic(model, seed=0, density=0.4):
    """Gives every weight a nonzero multiple of 1/8 in [-1, 1], then prunes at random."""
    rng = np.random.default_rng(seed)
    masks = {id(mask) for w in tfprune.prunable_weights(model).values() for mask in [w.mask]}
    for weight in model.weights:
        if id(weight) not in masks:
            shape = tuple(weight.shape)
            weight.assign(rng.choice([-1, 1], shape) * rng.integers(1, 9, shape) / 8)
    return tfprune.prune(model, "random", density, seed=seed)


def _inputs(shape, n=5, seed=1):
    return (np.random.default_rng(seed).integers(-8, 9, (n, *shape)) / 4).astype(np.float32)


def _ids(n=5, seed=2):
    return np.random.default_rng(seed).integers(0, 20, (n, 5)).astype(np.int32)


def _conv_net():
    keras.utils.set_random_seed(0)
    net = ConvNet(name="convnet")
    net(np.zeros((1, 5, 5, 2), np.float32))
    return net


def _originals(model):
    return {
        p: keras.ops.convert_to_numpy(w.kernel) for p, w in tfprune.prunable_weights(model).items()
    }


def _assert_exact_zeros(value, mask, original, what):
    """Zero exactly where the mask is 0 (as +0.0), the original value elsewhere."""
    np.testing.assert_array_equal(value, np.where(mask == 0, 0.0, original), err_msg=what)
    assert not np.signbit(value[mask == 0]).any(), f"{what}: pruned weights are +0.0"


def _interpreter(path):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    return interpreter, interpreter.get_signature_runner("serving_default")


def test_strip_copies_a_subclassed_model_with_exact_zeros_and_the_same_outputs():
    keras.utils.set_random_seed(5)
    model = _conv_net()
    tfprune.prune(model, "random", 0.3, seed=4)
    masks, originals = tfprune.get_masks(model), _originals(model)
    x = np.random.default_rng(0).normal(size=(4, 5, 5, 2)).astype(np.float32)

    stripped = tfprune.strip(model)

    assert type(stripped) is ConvNet and stripped is not model and stripped.name == "convnet"
    copied = list(tfprune.prunable_weights(stripped).values())
    assert len(copied) == len(masks) == 2
    for (path, mask), weight in zip(masks.items(), copied, strict=True):
        _assert_exact_zeros(keras.ops.convert_to_numpy(weight.kernel), mask, originals[path], path)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight.mask), mask)
    for old, new in zip(model.weights, stripped.weights, strict=True):
        if old.name == "bias":
            np.testing.assert_array_equal(new, old)
    # kernel * mask in both: the same ops on the same values, bit for bit.
    np.testing.assert_array_equal(stripped(x), model(x))
    # The original still holds the values of its pruned weights.
    for path, weight in tfprune.prunable_weights(model).items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight.kernel), originals[path])
        assert np.count_nonzero(originals[path][masks[path] == 0]) == (masks[path] == 0).sum()


def test_strip_refuses_subclassed_models_it_cannot_copy():
    with pytest.raises(ModelError, match="'convnet' is not built"):
        tfprune.strip(ConvNet(name="convnet"))

    class Unconfigurable(keras.Model):
        def __init__(self, activation, **kwargs):
            super().__init__(**kwargs)
            self.fc = tfprune.MaskedDense(2, activation=activation)

        def call(self, x):
            return self.fc(x)

    model = Unconfigurable(lambda v: v, name="odd")
    model(np.ones((1, 3), np.float32))
    with pytest.raises(ModelError, match=r"cannot copy the subclassed model 'odd'.*get_config"):
        tfprune.strip(model)
    with pytest.raises(ModelError, match="cannot copy"):
        tfprune.export(model, "/nonexistent/never-written.keras", format="keras")


_SERVE_WITHOUT_TFPRUNE = """
    import sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert list(serve.structured_input_signature[1]) == ["inputs"], serve.structured_input_signature
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 5, 5, 2], spec
    np.save(sys.argv[3], serve(inputs=tf.constant(np.load(sys.argv[2])))["logits"].numpy())
    np.savez(sys.argv[4], *[v.numpy() for v in loaded.variables])
    assert "tfprune" not in sys.modules
"""


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_a_subclassed_model_exports_to_every_format_with_exact_zeros_and_outputs(tmp_path):
    model = _conv_net()
    masks = _dyadic(model)
    originals = _originals(model)
    x = _inputs((5, 5, 2))
    expected = keras.ops.convert_to_numpy(model(x))

    report = tfprune.export(model, str(tmp_path / "net.keras"), format="keras")
    loaded = keras.models.load_model(tmp_path / "net.keras")
    assert type(loaded) is ConvNet
    np.testing.assert_array_equal(loaded(x), expected)
    for (path, mask), weight in zip(
        masks.items(), tfprune.prunable_weights(loaded).values(), strict=True
    ):
        _assert_exact_zeros(keras.ops.convert_to_numpy(weight.kernel), mask, originals[path], path)
    # Counted on the original's kernels, by their paths.
    assert report["layer_params"] == {p: m.size for p, m in masks.items()}
    assert report["prunable_zeros"] == sum(int((m == 0).sum()) for m in masks.values())
    assert report["dense"]["prunable_zeros"] == 0
    assert report["density"] == tfprune.overall_density(masks)

    saved = str(tmp_path / "saved")
    tfprune.export(model, saved, format="saved_model", report=False)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_SERVE_WITHOUT_TFPRUNE),
            saved,
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
            str(tmp_path / "v.npz"),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
    with np.load(tmp_path / "v.npz") as stored:
        # The SavedModel's variables are the stripped copy's weights, in the model's order.
        values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    assert len(values) == len(model.weights)
    paths = {id(w.kernel): p for p, w in tfprune.prunable_weights(model).items()}
    checked = 0
    for weight, value in zip(model.weights, values, strict=True):
        if id(weight) in paths:
            path = paths[id(weight)]
            _assert_exact_zeros(value, masks[path], originals[path], path)
            checked += 1
    assert checked == len(masks)

    tflite = tmp_path / "net.tflite"
    tfprune.export(model, str(tflite), format="tflite", report=False)
    _, runner = _interpreter(tflite)
    np.testing.assert_array_equal(runner(inputs=x)["logits"], expected)


def _two_way_model():
    """Two inputs (a sequence, a volume) and two outputs, from MaskedConv1D/3D and
    MaskedDense."""
    keras.utils.set_random_seed(0)
    seq = keras.Input((6, 2), name="seq")
    vol = keras.Input((4, 4, 4, 1), name="vol")
    a = keras.layers.Flatten(name="flat_a")(tfprune.MaskedConv1D(2, 3, name="conv1d")(seq))
    b = keras.layers.Flatten(name="flat_b")(tfprune.MaskedConv3D(2, 2, name="conv3d")(vol))
    both = keras.layers.Concatenate(name="cat")([a, b])
    scores = tfprune.MaskedDense(3, name="scores")(both)
    extra = tfprune.MaskedDense(2, name="extra")(a)
    return keras.Model([seq, vol], [scores, extra], name="two_way")


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_several_inputs_and_outputs_are_served_under_their_names(tmp_path):
    model = _two_way_model()
    _dyadic(model, seed=3)
    seq, vol = _inputs((6, 2), seed=4), _inputs((4, 4, 4, 1), seed=5)
    scores, extra = (keras.ops.convert_to_numpy(y) for y in model([seq, vol]))

    path = str(tmp_path / "saved")
    tfprune.export(model, path, format="saved_model", report=False)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert {
        k: (s.dtype, s.shape.as_list()) for k, s in serve.structured_input_signature[1].items()
    } == {"seq": (tf.float32, [None, 6, 2]), "vol": (tf.float32, [None, 4, 4, 4, 1])}
    served = serve(seq=tf.constant(seq), vol=tf.constant(vol))
    assert sorted(served) == ["extra", "scores"]
    np.testing.assert_array_equal(served["scores"], scores)
    np.testing.assert_array_equal(served["extra"], extra)

    tflite = tmp_path / "two_way.tflite"
    tfprune.export(model, str(tflite), format="tflite", report=False)
    interpreter, runner = _interpreter(tflite)
    assert interpreter.get_signature_list()["serving_default"] == {
        "inputs": ["seq", "vol"],
        "outputs": ["extra", "scores"],
    }
    served = runner(seq=seq, vol=vol)
    np.testing.assert_array_equal(served["scores"], scores)
    np.testing.assert_array_equal(served["extra"], extra)

    tfprune.export(model, str(tmp_path / "two_way.keras"), format="keras", report=False)
    reloaded = keras.models.load_model(tmp_path / "two_way.keras")
    for got, want in zip(reloaded([seq, vol]), (scores, extra), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_integer_token_ids_stay_int32_in_the_saved_model_and_tflite(tmp_path):
    keras.utils.set_random_seed(0)
    ids = keras.Input((5,), dtype="int32", name="ids")
    hidden = keras.layers.Flatten(name="flat")(keras.layers.Embedding(20, 4, name="embed")(ids))
    base = keras.Model(ids, keras.layers.Dense(3, name="fc")(hidden), name="tokens")
    with warnings.catch_warnings():
        # An Embedding without a masked twin stays dense; with one, it is pruned too.
        warnings.simplefilter("ignore", tfprune.UnprunedLayerWarning)
        model = tfprune.masked(base)
    _dyadic(model, density=0.5)
    tokens = _ids()
    expected = keras.ops.convert_to_numpy(model(tokens))

    path = str(tmp_path / "saved")
    tfprune.export(model, path, format="saved_model", report=False)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["inputs"]
    assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, 5]
    np.testing.assert_array_equal(serve(inputs=tf.constant(tokens))["logits"], expected)

    tflite = tmp_path / "tokens.tflite"
    tfprune.export(model, str(tflite), format="tflite", report=False)
    _, runner = _interpreter(tflite)
    assert runner.get_input_details()["inputs"]["dtype"] == np.int32
    np.testing.assert_array_equal(runner(inputs=tokens)["logits"], expected)


def test_a_subclassed_model_takes_its_input_dtype_from_the_input_signature(tmp_path):
    keras.utils.set_random_seed(0)
    model = TokenNet(name="tokennet")
    model(_ids())
    _dyadic(model, density=0.5)
    tokens = _ids(seed=7)
    expected = keras.ops.convert_to_numpy(model(tokens))

    # Keras records no input dtype for a subclassed model: the default is its input_dtype.
    tfprune.export(model, str(tmp_path / "default"), report=False)
    serve = tf.saved_model.load(str(tmp_path / "default")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["inputs"].dtype == tf.float32

    ids_spec = keras.InputSpec(shape=(None, 5), dtype="int32")
    tfprune.export(model, str(tmp_path / "ids"), report=False, input_signature=ids_spec)
    serve = tf.saved_model.load(str(tmp_path / "ids")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["inputs"].dtype == tf.int32
    np.testing.assert_array_equal(serve(inputs=tf.constant(tokens))["logits"], expected)


def test_inputs_that_cannot_be_served_are_refused_before_writing(tmp_path):
    model = _conv_net()
    target = tmp_path / "saved"
    with pytest.raises(ConfigError, match="input_signature must be a tf.TensorSpec"):
        tfprune.export(model, str(target), input_signature="float32")
    with pytest.raises(ConfigError, match="input_signature must be"):
        tfprune.export(model, str(target), input_signature=keras.InputSpec(shape=(None, 5)))

    class Pair(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.fc = tfprune.MaskedDense(2, name="fc")

        def call(self, a, b):
            return self.fc(a + b)

    pair = Pair(name="pair")
    pair(np.ones((1, 3), np.float32), np.ones((1, 3), np.float32))
    with pytest.raises(ModelError, match=r"the call of 'pair' takes 2 arguments \(a, b\)"):
        tfprune.export(pair, str(target), format="tflite")
    assert list(tmp_path.iterdir()) == []


def test_sequential_and_dict_input_models_are_served_with_their_input_names(tmp_path):
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential([keras.Input((5,)), tfprune.MaskedDense(3, name="fc")])
    first, second = keras.Input((2,), name="first"), keras.Input((3,), name="second")
    joined = keras.layers.Concatenate(name="cat")([first, second])
    by_name = keras.Model(
        {"first": first, "second": second}, tfprune.MaskedDense(2, name="fc")(joined)
    )
    x = _inputs((5,))
    feeds = {"first": _inputs((2,), seed=8), "second": _inputs((3,), seed=9)}

    for name, model, inputs, call in [
        ("sequential", sequential, {"inputs": x}, x),
        ("by_name", by_name, feeds, feeds),
    ]:
        _dyadic(model, density=0.5)
        tfprune.export(model, str(tmp_path / name), report=False)
        serve = tf.saved_model.load(str(tmp_path / name)).signatures["serving_default"]
        assert sorted(serve.structured_input_signature[1]) == sorted(inputs), name
        served = serve(**{k: tf.constant(v) for k, v in inputs.items()})["logits"]
        np.testing.assert_array_equal(served, model(call), err_msg=name)

    with pytest.raises(ModelError, match="not built"):
        tfprune.export(keras.Sequential([tfprune.MaskedDense(2)]), str(tmp_path / "unbuilt"))
