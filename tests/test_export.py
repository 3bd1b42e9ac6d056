"""Export of pruned models: strip, `.keras`, SavedModel, TFLite, the size report and the CLI.

Loading checks run in subprocesses that never import tfprune, as a deployment target would.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import _procs
import keras
import numpy as np
import pytest
import tensorflow as tf
from _procs import ENV, ROOT
from _tolerance import tolerance

import tfprune
from tfprune import deploy
from tfprune.errors import ConfigError, ModelError, OutputError

LENET_PARAMS, LENET_PRUNABLE = 266_610, 266_200


def _pruned(name, shape, density=0.1, seed=0):
    keras.utils.set_random_seed(seed)
    model = tfprune.models.build(name, shape, 10)
    masks = tfprune.prune(model, "magnitude", density)
    return model, masks


def _batch(shape, n=4, seed=1):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _python(code, *args, timeout=300):
    """Runs `code` in a fresh interpreter (no tfprune import unless the code asks for it)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
    )


def _assert_same_logits(actual, model, x):
    """Checks logits of an exported network against the Keras model's own, `model(x)`.

    Each logit ends a chain of one dot product per layer, as long as the layer's fan-in, plus
    a bias, BatchNorm or residual add and an activation (4 more). Two evaluations in different
    kernels (eager TF, a SavedModel graph, TFLite) may each be off by that many roundings, so
    twice that; the dot products cancel, so normwise, against the largest logit.
    """
    expected = keras.ops.convert_to_numpy(model(x))
    terms = sum(
        int(np.prod(w.kernel.shape[:-1])) + 4 for w in tfprune.prunable_weights(model).values()
    )
    bounds = tolerance(np.float32, 2 * terms, scale=np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, **bounds)


def _flat_layers(model):
    """The layers of `model`, nested models replaced by their own layers."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _stock_kernels(model):
    return {
        layer.kernel.path: keras.ops.convert_to_numpy(layer.kernel)
        for layer in _flat_layers(model)
        if type(layer) in (keras.layers.Dense, keras.layers.Conv2D)
    }


def _assert_zeros_match(kernels, masks, originals):
    assert set(kernels) == set(masks)
    for path, mask in masks.items():
        zeros = kernels[path] == 0
        # Zero exactly where the mask is 0, and elsewhere only where the weight itself is 0.
        np.testing.assert_array_equal(zeros, (mask == 0) | (originals[path] == 0), err_msg=path)
        assert not np.signbit(kernels[path][mask == 0]).any(), "pruned weights are +0.0"


def _nested_model():
    inner_in = keras.Input((8,))
    inner = keras.Model(
        inner_in,
        tfprune.MaskedDense(6, activation="relu", name="hidden")(inner_in),
        name="inner",
    )
    inputs = keras.Input((6, 6, 2), name="input")
    x = tfprune.MaskedConv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = tfprune.MaskedDense(8, name="proj")(x)
    x = inner(x)
    outputs = tfprune.MaskedDense(3, name="fc")(x)
    return keras.Model(inputs, outputs, name="nested")


def _sequential_model():
    return keras.Sequential(
        [
            keras.Input((5, 5, 1)),
            tfprune.MaskedConv2D(3, 3, name="conv"),
            keras.layers.Flatten(name="flat"),
            tfprune.MaskedDense(4, name="fc"),
        ],
        name="seq",
    )


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: _pruned("lenet_300_100", (28, 28, 1))[0], (28, 28, 1)),
        (lambda: _pruned("resnet20", (16, 16, 3))[0], (16, 16, 3)),
        (_nested_model, (6, 6, 2)),
        (_sequential_model, (5, 5, 1)),
    ],
    ids=["lenet", "resnet20", "nested", "sequential"],
)
def test_strip_keeps_outputs_and_makes_the_zeros_real(build, shape):
    keras.utils.set_random_seed(3)
    model = build()
    if model.name in ("nested", "seq"):
        tfprune.prune(model, "random", 0.3, seed=2)
    masks = tfprune.get_masks(model)
    originals = {p: keras.ops.convert_to_numpy(w.kernel) for p, w in
                 tfprune.prunable_weights(model).items()}
    x = _batch(shape)

    stripped = tfprune.strip(model)

    assert stripped.name == model.name
    assert not tfprune.prunable_weights(stripped), "no masked layer is left"
    assert {type(layer).__name__ for layer in _flat_layers(stripped)} & {"Dense", "Conv2D"}
    # The same ops on the same kernel values (0.0 where the mask is 0): bit for bit.
    np.testing.assert_array_equal(stripped(x), model(x))
    _assert_zeros_match(_stock_kernels(stripped), masks, originals)
    # The masked model is unchanged: its kernels still hold the pruned values.
    for path, weight in tfprune.prunable_weights(model).items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight.kernel), originals[path])


def test_strip_refuses_a_subclassed_model_keras_cannot_copy():
    # Its __init__ takes no **kwargs, so the class cannot be made again from its config
    # (tests/test_export_any_model.py strips the subclassed models that can).
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = tfprune.MaskedDense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.ones((1, 3), np.float32))
    with pytest.raises(ModelError, match="cannot copy the subclassed model .*get_config"):
        tfprune.strip(net)


def test_export_is_the_function_and_the_default_import_path_stays_light():
    assert callable(tfprune.export) and tfprune.export is deploy.export
    proc = _python(
        """
        import os, sys
        import tfprune
        assert callable(tfprune.export), tfprune.export
        for name in ("tensorflow_model_optimization", "tfprune.interop", "tfprune.export"):
            assert name not in sys.modules, name
        assert "TF_USE_LEGACY_KERAS" not in os.environ
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_keras_export_loads_with_plain_keras(tmp_path):
    model, masks = _pruned("lenet_300_100", (28, 28, 1))
    x = _batch((28, 28, 1))
    path = str(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)

    tfprune.export(model, path, format="keras", report=False)

    proc = _python(
        """
        import sys
        import keras, numpy as np
        model = keras.models.load_model(sys.argv[1], safe_mode=True)
        np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
        np.savez(sys.argv[4], **{l.kernel.path: l.kernel.numpy() for l in model.layers
                                 if hasattr(l, "kernel")})
        assert "tfprune" not in sys.modules
        assert {type(l).__name__ for l in model.layers} == {"InputLayer", "Flatten", "Dense"}
        """,
        path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "k.npz"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_logits(np.load(tmp_path / "y.npy"), model, x)
    with np.load(tmp_path / "k.npz") as kernels:
        for path_, mask in masks.items():
            np.testing.assert_array_equal(kernels[path_] == 0, mask == 0)


_LOAD_SAVED_MODEL = """
    import sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["inputs"]
    logits = serve(inputs=tf.constant(np.load(sys.argv[2])))["logits"]
    np.save(sys.argv[3], logits.numpy())
    np.savez(sys.argv[4], **{v.name.split(":")[0]: v.numpy() for v in loaded.variables})
    assert "tfprune" not in sys.modules
"""


@pytest.mark.parametrize(
    "name, shape", [("resnet20", (32, 32, 3)), ("lenet_300_100", (28, 28, 1))]
)
def test_saved_model_loads_without_tfprune_with_the_same_outputs_and_zeros(name, shape, tmp_path):
    model, masks = _pruned(name, shape, density=0.05)
    x = _batch(shape, n=8)
    path = str(tmp_path / "export" / "saved_model")
    np.save(tmp_path / "x.npy", x)

    tfprune.export(model, path, format="saved_model", report=False)

    proc = _python(
        _LOAD_SAVED_MODEL, path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
        str(tmp_path / "v.npz"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_logits(np.load(tmp_path / "y.npy"), model, x)
    with np.load(tmp_path / "v.npz") as variables:
        for path_, mask in masks.items():
            np.testing.assert_array_equal(variables[path_] == 0, mask == 0, err_msg=path_)
    assert not [n for n in os.listdir(tmp_path / "export") if n.startswith(".tmp")]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize(
    "name, shape, sparsity",
    [
        ("lenet_300_100", (28, 28, 1), False),
        ("lenet_300_100", (28, 28, 1), True),
        pytest.param("resnet20", (16, 16, 3), True, marks=pytest.mark.slow),
    ],
)
def test_tflite_export_runs_in_the_interpreter_with_the_same_outputs(
    name, shape, sparsity, tmp_path
):
    model, _ = _pruned(name, shape, density=0.05)
    x = _batch(shape, n=5)
    path = str(tmp_path / "model.tflite")

    report = tfprune.export(model, path, format="tflite", sparsity=sparsity)

    interpreter = tf.lite.Interpreter(model_path=path)
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["inputs"], "outputs": ["logits"]}
    }
    logits = interpreter.get_signature_runner("serving_default")(inputs=x)["logits"]
    _assert_same_logits(logits, model, x)
    assert report["sparsity_optimization"] is sparsity
    if sparsity:
        assert report["ratio"]["file_bytes"] < 0.2, "sparse encoding shrinks the flatbuffer"
    else:
        assert report["ratio"]["file_bytes"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("format, name", [("keras", "m.keras"), ("saved_model", "sm")])
def test_size_report_of_lenet_at_density_0_05(format, name, tmp_path):
    model, masks = _pruned("lenet_300_100", (28, 28, 1), density=0.05)
    path = str(tmp_path / name)

    report = tfprune.export(model, path, format=format)

    with open(path + ".report.json") as f:
        assert json.load(f) == json.loads(json.dumps(report))
    mask_zeros = sum(int((m == 0).sum()) for m in masks.values())
    assert report["format"] == format and report["model"] == "lenet_300_100"
    assert report["params"] == report["dense"]["params"] == LENET_PARAMS
    assert report["prunable_params"] == LENET_PRUNABLE
    assert report["prunable_zeros"] == mask_zeros == LENET_PRUNABLE - round(0.05 * LENET_PRUNABLE)
    assert report["zeros"] >= mask_zeros and report["dense"]["prunable_zeros"] == 0
    assert report["density"] == pytest.approx(0.05)
    assert report["layer_density"] == {p: np.count_nonzero(m) / m.size for p, m in masks.items()}
    assert report["layer_params"] == {p: m.size for p, m in masks.items()}
    assert 0 < report["gzip_bytes"] < report["file_bytes"]
    assert report["ratio"]["gzip_bytes"] == report["gzip_bytes"] / report["dense"]["gzip_bytes"]
    # The target: gzip of the sparse export at most 15% of the dense one's.
    assert report["ratio"]["gzip_bytes"] <= 0.15
    again = tfprune.size_report(model, path)
    assert again["file_bytes"] == report["file_bytes"]
    assert again["gzip_bytes"] == report["gzip_bytes"]
    table = deploy.report_table(report)
    assert "gzip bytes" in table and "fc1/kernel" in table


def test_export_overwrites_atomically_and_rejects_bad_requests(tmp_path):
    model, _ = _pruned("lenet_300_100", (28, 28, 1))
    target = str(tmp_path / "sm")
    deploy.export(model, target, report=False)
    deploy.export(model, target, report=False)  # replaces the previous SavedModel
    assert os.path.exists(os.path.join(target, "saved_model.pb"))
    assert sorted(os.listdir(tmp_path)) == ["sm"]

    with pytest.raises(ConfigError, match="unknown export format"):
        tfprune.export(model, str(tmp_path / "x"), format="onnx")
    with pytest.raises(ConfigError, match="tflite format only"):
        tfprune.export(model, str(tmp_path / "x.keras"), format="keras", sparsity=True)
    with pytest.raises(ConfigError, match="does not end in .keras"):
        tfprune.export(model, str(tmp_path / "x.h5"), format="keras")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write"):
        tfprune.export(model, str(blocker / "m.keras"), format="keras")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a SavedModel"):
        tfprune.export(model, str(other), format="saved_model")
    assert (other / "readme.txt").read_text() == "keep me"
    with pytest.raises(OutputError, match="no export"):
        tfprune.size_report(model, str(tmp_path / "missing.tflite"))


# --- command line -------------------------------------------------------------------------


def _cli(*args, timeout=300):
    return _procs.run("tfprune.export", *args, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run") / "magnitude")
    proc = _procs.run(
        "tfprune.train", "--gin_file=gin_configs/magnitude.gin",
        "--gin_bindings=training.steps = 1", "--gin_bindings=experiment.train_limit = 256",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.progress = False", f"--output_dir={run_dir}", timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_cli_exports_a_finished_run(finished_run, tmp_path):
    proc = _cli(f"--run_dir={finished_run}", "--format=saved_model")
    assert proc.returncode == 0, proc.stderr[-3000:]
    export_dir = os.path.join(finished_run, "export", "saved_model")
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
    assert "gzip bytes" in proc.stdout and "fc1/kernel" in proc.stdout
    with open(export_dir + ".report.json") as f:
        report = json.load(f)
    with np.load(os.path.join(finished_run, "masks.npz")) as data:
        masks = {k: data[k] for k in data.files}
    assert report["prunable_zeros"] == sum(int((m == 0).sum()) for m in masks.values())
    assert report["ratio"]["gzip_bytes"] <= 0.15

    model = keras.models.load_model(os.path.join(finished_run, "model.keras"), safe_mode=True)
    x = _batch((28, 28, 1))
    np.save(tmp_path / "x.npy", x)
    loaded = _python(
        _LOAD_SAVED_MODEL, export_dir, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
        str(tmp_path / "v.npz"),
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    _assert_same_logits(np.load(tmp_path / "y.npy"), model, x)

    output = str(tmp_path / "out" / "lenet.tflite")
    proc = _cli(f"--run_dir={finished_run}", "--format=tflite", "--sparsity", f"--output={output}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.exists(output) and os.path.exists(output + ".report.json")


@pytest.mark.slow
def test_cli_exports_keras_to_the_default_path(finished_run):
    proc = _cli(f"--run_dir={finished_run}", "--format=keras")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = os.path.join(finished_run, "export", "model.keras")
    assert os.path.exists(path) and os.path.exists(path + ".report.json")


def test_cli_bad_inputs_fail_in_one_line(finished_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ([f"--run_dir={tmp_path / 'missing'}"], "does not exist"),
        ([f"--run_dir={unfinished}"], "not a finished run"),
        ([f"--run_dir={finished_run}", "--format=onnx"], "unknown format"),
        ([f"--run_dir={finished_run}", "--format=keras", "--sparsity"], "tflite only"),
        (
            [f"--run_dir={finished_run}", "--format=keras", f"--output={blocker}/m.keras"],
            "cannot write",
        ),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("tfprune.export: error: "), (args, proc.stderr[-2000:])
        assert message in lines[-1], (args, lines[-1])
        assert "Traceback" not in proc.stderr, args


# --- loading a saved masked model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_masked(tmp_path_factory):
    """A pruned LeNet saved with model.save: its path, masks and outputs on a fixed batch."""
    model, masks = _pruned("lenet_300_100", (28, 28, 1))
    path = str(tmp_path_factory.mktemp("saved") / "model.keras")
    model.save(path)
    return path, masks, np.asarray(model(_batch((28, 28, 1))))


def test_load_model_restores_masked_layers_masks_and_outputs(saved_masked):
    path, masks, outputs = saved_masked
    assert tfprune.load_model is deploy.load_model
    model = tfprune.load_model(path)
    assert type(model.get_layer("fc1")) is tfprune.MaskedDense
    loaded = tfprune.get_masks(model)
    assert set(loaded) == set(masks)
    for key, mask in masks.items():
        np.testing.assert_array_equal(loaded[key], mask)
    np.testing.assert_array_equal(np.asarray(model(_batch((28, 28, 1)))), outputs)


def test_plain_keras_loads_a_masked_model_once_tfprune_layers_are_imported(saved_masked):
    # Keras imports no module a .keras file names outside Keras itself (keras/src/saving/
    # serialization_lib.py), so the masked layers must be registered by importing tfprune's
    # layers (`import tfprune` alone stays light and loads no TensorFlow).
    proc = _python(
        """
        import sys
        import keras
        try:
            keras.models.load_model(sys.argv[1])
        except TypeError as error:
            assert "tfprune>MaskedDense" in str(error), str(error)[:300]
        else:
            raise AssertionError("loaded without tfprune")
        import tfprune.layers
        model = keras.models.load_model(sys.argv[1])
        assert type(model.get_layer("fc1")).__name__ == "MaskedDense"
        print("ok")
        """,
        saved_masked[0],
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def _broken_keras_files(path, folder):
    """{name: (path, expected message)} for files tfprune.load_model must refuse."""
    with open(path, "rb") as f:
        content = f.read()
    files = {}

    def write(name, data):
        target = os.path.join(folder, name)
        with open(target, "wb") as f:
            f.write(data)
        return target

    truncated = write("truncated.keras", content[: len(content) // 2])
    files["truncated"] = (
        truncated,
        f"{truncated} is not a readable .keras file (truncated or corrupt): File is not a zip file",
    )
    flipped = bytearray(content)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    flipped[info.header_offset + 200] ^= 0xFF  # inside the weights' data
    damaged = write("damaged.keras", bytes(flipped))
    files["damaged"] = (
        damaged,
        f"{damaged} is not a readable .keras file (truncated or corrupt): its member "
        "model.weights.h5 is damaged",
    )
    foreign = os.path.join(folder, "foreign.keras")
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    files["foreign"] = (
        foreign,
        f"{foreign} is not a .keras model: the archive has no metadata.json or config.json",
    )
    h5 = write("model.h5", content)
    files["h5"] = (h5, f"{h5} is not a .keras file: save the model with model.save('x.keras')")
    missing = os.path.join(folder, "missing.keras")
    files["missing"] = (missing, f"{missing} does not exist: give the path of a .keras file")
    run_dir = os.path.join(folder, "run")
    os.makedirs(run_dir)
    write(os.path.join("run", "model.keras"), content)
    files["run directory"] = (
        run_dir,
        f"{run_dir} is a directory, not a .keras file (it holds {run_dir}/model.keras)",
    )
    return files


def test_load_model_refuses_broken_files_in_one_line(saved_masked, tmp_path):
    for name, (path, message) in _broken_keras_files(saved_masked[0], str(tmp_path)).items():
        with pytest.raises(ModelError) as error:
            tfprune.load_model(path)
        assert str(error.value) == message, name


def test_cli_names_a_truncated_model_keras(saved_masked, tmp_path):
    with open(saved_masked[0], "rb") as f:
        content = f.read()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(content[:1000])
    (run_dir / "results.json").write_text("{}")
    proc = _cli(f"--run_dir={run_dir}", "--format=keras")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tfprune.export: error: {run_dir}/model.keras is not a readable .keras file "
        "(truncated or corrupt): File is not a zip file"
    )
    assert not (run_dir / "export").exists()
