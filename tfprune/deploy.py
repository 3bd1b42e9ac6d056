"""Export of pruned models: stock-Keras strip, `.keras`, SavedModel and TFLite, with a size report.

The stage after training. `strip(model)` turns a masked model into the same network built from
stock `Dense`/`Conv2D` layers whose kernels hold `kernel * mask`, so the pruned weights are real
zeros in the weights and nothing of tfprune is needed to load the result. `export(model, path,
format=...)` writes a stripped model atomically and, beside it, `<path>.report.json`: parameters,
zeros, density per layer, file size and gzip-compressed size, against the dense model of the same
architecture (`size_report`).

The command line, `python -m tfprune.export`, exports a finished run's final model.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib

import keras
import numpy as np
import tensorflow as tf

from tfprune._io import atomic_path, make_temp_dir, write_text
from tfprune._keras_compat import is_functional, plain_trackable
from tfprune.errors import ConfigError, ModelError, OutputError
from tfprune.layers import clone_and_copy, stock_twin, transfer_weights

FORMATS = ("keras", "saved_model", "tflite")
#: Name of the SavedModel signature, of its single input and of its single output.
SIGNATURE = "serving_default"
INPUT_NAME = "inputs"
OUTPUT_NAME = "logits"
REPORT_SUFFIX = ".report.json"
# What `model.save("x.keras")` always writes into the archive.
_KERAS_MEMBERS = ("metadata.json", "config.json")


def strip(model: keras.Model) -> keras.Model:
    """Returns the same network with stock layers and the masks multiplied into the kernels.

    Every `MaskedDense`/`MaskedConv2D` becomes a `keras.layers.Dense`/`Conv2D` with the same
    configuration, name and bias, whose kernel is `kernel` where the mask is 1 and exactly `0.0`
    where it is 0; every other layer is copied with its weights. The outputs equal the masked
    model's (to float rounding) and loading the result needs nothing from tfprune. Functional
    and Sequential models are supported, nested ones included; the original is left unchanged.

    Args:
        model: A built functional or Sequential `keras.Model` (masked or not).

    Returns:
        A new `keras.Model` with the same name, architecture and layer names.

    Raises:
        ModelError: for a subclassed or unbuilt model.

    Example:

    >>> net = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    >>> type(strip(net).get_layer("fc1")).__name__
    'Dense'
    """
    return _strip(model, apply_masks=True)


def export(
    model: keras.Model,
    path: str,
    format: str = "saved_model",
    *,
    sparsity: bool = False,
    report: bool = True,
) -> dict | None:
    """Writes the stripped model to `path` and its size report to `<path>.report.json`.

    Formats:

    - `"keras"`: a `.keras` file of `strip(model)` (stock layers only).
    - `"saved_model"`: a SavedModel directory whose signature `serving_default` takes one
      tensor named `inputs` and returns `{"logits": ...}`; load it with `tf.saved_model.load`.
    - `"tflite"`: a float32 TFLite flatbuffer with the same signature names. `sparsity=True`
      converts with `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` (sparse weight encoding).

    The write is atomic: a file is written beside the target and renamed over it, a SavedModel
    is written to a temporary directory beside the target and renamed.

    Args:
        model: A built functional or Sequential `keras.Model` (masked or not).
        path: The file (`.keras` for `"keras"`) or SavedModel directory to write.
        format: One of `FORMATS`.
        sparsity: For `"tflite"` only: convert with the experimental sparsity optimisation.
        report: Also compute the size report and write it beside the export.

    Returns:
        The size report (see `size_report`), or None when `report=False`.

    Raises:
        ConfigError: for an unknown format, `sparsity` outside TFLite, a `.keras` path that
            does not end in `.keras`.
        ModelError: for a model that cannot be exported (subclassed, unbuilt, several inputs).
        OutputError: if `path` cannot be written.

    Example:

    >>> net = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    >>> _ = tfprune.prune(net, "magnitude", 0.05)
    >>> report = tfprune.export(net, "/tmp/lenet.keras", format="keras")
    >>> report["density"]
    0.05
    """
    _check_format(format, path, sparsity)
    stripped = strip(model)
    _write(stripped, path, format, sparsity)
    if not report:
        return None
    content = _report(model, stripped, path, format, sparsity)
    try:
        write_text(report_path(path), json.dumps(content, indent=2) + "\n")
    except OSError as error:
        raise OutputError(f"cannot write {report_path(path)}: {error}") from error
    return content


def load_model(path: str | os.PathLike, **kwargs) -> keras.Model:
    """Loads a `.keras` model, masked layers included, with Keras' safe mode on by default.

    `keras.models.load_model` finds tfprune's layers only once tfprune is imported (Keras
    imports no module named in the file outside Keras); this function needs nothing more. The
    file is checked first, so that a missing, truncated or foreign file gets a one-line error.

    Args:
        path: A `.keras` file (a run's `model.keras`, or `model.save("name.keras")`).
        **kwargs: Passed to `keras.models.load_model` (`compile`, `safe_mode`, ...).

    Returns:
        The model, with its masks.

    Raises:
        ModelError: for a path that does not exist, a directory, a file that is not a `.keras`
            file or is truncated or corrupt, or a model Keras cannot rebuild.

    Example:

    >>> net = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    >>> net.save("/tmp/lenet.keras")
    >>> type(tfprune.load_model("/tmp/lenet.keras").get_layer("fc1")).__name__
    'MaskedDense'
    """
    path = os.fspath(path)
    _check_keras_file(path)
    kwargs.setdefault("safe_mode", True)
    try:
        return keras.models.load_model(path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as error:
        # Keras appends the whole object config to some messages: keep the sentence before it.
        reason = " ".join(str(error).split()).split(" Full object config:")[0]
        raise ModelError(f"cannot load {path}: {reason[:300]}") from error


def _check_keras_file(path: str) -> None:
    if not os.path.exists(path):
        raise ModelError(f"{path} does not exist: give the path of a .keras file")
    if os.path.isdir(path):
        hint = ""
        if os.path.isfile(os.path.join(path, "model.keras")):
            hint = f" (it holds {os.path.join(path, 'model.keras')})"
        elif os.path.isfile(os.path.join(path, "saved_model.pb")):
            hint = " (a SavedModel: load it with tf.saved_model.load)"
        raise ModelError(f"{path} is a directory, not a .keras file{hint}")
    if not path.endswith(".keras"):
        raise ModelError(f"{path} is not a .keras file: save the model with model.save('x.keras')")
    broken = f"{path} is not a readable .keras file (truncated or corrupt)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ModelError(f"{broken}: {error}") from None
    if damaged is not None:
        raise ModelError(f"{broken}: its member {damaged} is damaged")
    missing = [name for name in _KERAS_MEMBERS if name not in names]
    if missing:
        raise ModelError(
            f"{path} is not a .keras model: the archive has no {' or '.join(missing)}"
        )


def report_path(path: str) -> str:
    """Where `export` writes the report of the export at `path`: `<path>.report.json`.

    For a SavedModel directory `d/saved_model`, that is the file `d/saved_model.report.json`
    beside the directory (nothing is added inside the SavedModel).
    """
    return os.path.normpath(path) + REPORT_SUFFIX


def size_report(
    model: keras.Model, path: str, format: str | None = None, *, sparsity: bool = False
) -> dict:
    """The size and sparsity of the export of `model` at `path`, against the dense model.

    The dense reference is the same network with every mask set to one (the raw kernel values),
    exported the same way to a temporary directory and measured like the export.

    Args:
        model: The model that was exported (masked or not).
        path: The export: a `.keras` or TFLite file, or a SavedModel directory.
        format: One of `FORMATS`; None infers it (directory: SavedModel, `.keras`: keras,
            otherwise TFLite).
        sparsity: Whether the TFLite export used the sparsity optimisation (so the dense
            reference is converted the same way).

    Returns:
        A JSON-able dict: `format`, `path`, `sparsity_optimization`, `model`, `params` (every
        exported weight), `prunable_params` (Dense/Conv2D kernels), `zeros` (exactly zero
        weights, all of them), `prunable_zeros` (in the kernels), `density` (nonzero fraction
        of the kernels), `layer_density` (`{kernel path: nonzero fraction}`), `layer_params`,
        `file_bytes` (a directory: the sum of its files), `gzip_bytes` (gzip -9 of the file, or
        of a deterministic tar of the directory), `dense` (the same keys for the dense model)
        and `ratio` (`file_bytes` and `gzip_bytes` of the export over the dense model's).

    Raises:
        ConfigError: for an unknown format.
        OutputError: if `path` does not exist.
    """
    if format is None:
        format = _infer_format(path)
    _check_format(format, path, sparsity)
    if not os.path.exists(path):
        raise OutputError(f"no export at {path}: export the model first")
    return _report(model, strip(model), path, format, sparsity)


def report_table(report: dict) -> str:
    """Formats a size report as a short plain-text table (what the command line prints)."""
    dense = report["dense"]
    rows = [
        ("", "export", "dense", "ratio"),
        ("params", f"{report['params']:,}", f"{dense['params']:,}", ""),
        ("prunable params", f"{report['prunable_params']:,}", f"{dense['prunable_params']:,}", ""),
        ("zeros (prunable)", f"{report['prunable_zeros']:,}", f"{dense['prunable_zeros']:,}", ""),
        ("density", f"{report['density']:.5f}", f"{dense['density']:.5f}", ""),
        (
            "file bytes",
            f"{report['file_bytes']:,}",
            f"{dense['file_bytes']:,}",
            f"{report['ratio']['file_bytes']:.3f}",
        ),
        (
            "gzip bytes",
            f"{report['gzip_bytes']:,}",
            f"{dense['gzip_bytes']:,}",
            f"{report['ratio']['gzip_bytes']:.3f}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.append("layer density:")
    lines.extend(
        f"  {path}: {fraction:.5f} of {report['layer_params'][path]:,}"
        for path, fraction in report["layer_density"].items()
    )
    return "\n".join(lines)


def _strip(model: keras.Model, apply_masks: bool) -> keras.Model:
    if not (isinstance(model, keras.Sequential) or is_functional(model)):
        raise ModelError(
            "export accepts functional or Sequential Keras models; rebuild a subclassed model "
            "functionally first"
        )

    def copy(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
        transfer_weights(old, new, apply_masks=apply_masks)

    return clone_and_copy(model, stock_twin, copy)


def _check_format(format: str, path: str, sparsity: bool) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if sparsity and format != "tflite":
        raise ConfigError("the sparsity optimisation applies to the tflite format only")
    if format == "keras" and not str(path).endswith(".keras"):
        raise ConfigError(f"a keras export is a .keras file: {path!r} does not end in .keras")


def _infer_format(path: str) -> str:
    if os.path.isdir(path):
        return "saved_model"
    return "keras" if str(path).endswith(".keras") else "tflite"


def _write(stripped: keras.Model, path: str, format: str, sparsity: bool) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        if format == "saved_model":
            _write_saved_model_atomically(stripped, path)
        elif os.path.isdir(path):
            raise OutputError(f"{path} is a directory; give a file path for the {format} export")
        elif format == "keras":
            with atomic_path(path, suffix=".keras") as tmp:
                stripped.save(tmp)
        else:
            content = _tflite_bytes(stripped, sparsity)
            with atomic_path(path, suffix=".tflite") as tmp, open(tmp, "wb") as f:
                f.write(content)
    except OSError as error:
        raise OutputError(f"cannot write the {format} export to {path}: {error}") from error


def _write_saved_model(stripped: keras.Model, directory: str) -> None:
    """Writes a SavedModel with one signature, `serving_default(inputs=...)["logits"]`, and the
    weights as the loaded object's `variables` (named by their Keras paths)."""
    if len(stripped.inputs) != 1 or len(stripped.outputs) != 1:
        raise ModelError(
            f"SavedModel and TFLite exports take a model with one input and one output; "
            f"{stripped.name!r} has {len(stripped.inputs)} and {len(stripped.outputs)}"
        )
    spec = tf.TensorSpec(
        stripped.inputs[0].shape, tf.as_dtype(stripped.inputs[0].dtype), name=INPUT_NAME
    )
    # keras.export.ExportArchive tracks every variable twice (as a Keras and as a TF variable)
    # and so writes each weight twice; a plain trackable root writes each once.
    root = plain_trackable()
    root.variables = [weight.value for weight in stripped.weights]

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {OUTPUT_NAME: stripped(inputs, training=False)}

    root.serve = serve
    tf.saved_model.save(root, directory, signatures={SIGNATURE: serve})


def _write_saved_model_atomically(stripped: keras.Model, path: str) -> None:
    if os.path.exists(path) and not _replaceable_saved_model(path):
        raise OutputError(
            f"{path} exists and is not a SavedModel directory; choose another output path"
        )
    tmp = make_temp_dir(os.path.dirname(os.path.abspath(path)))
    try:
        _write_saved_model(stripped, tmp)
        if os.path.exists(path):
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = make_temp_dir(os.path.dirname(os.path.abspath(path)))
            os.replace(path, os.path.join(old, "previous"))
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def _replaceable_saved_model(path: str) -> bool:
    return os.path.isdir(path) and (
        not os.listdir(path) or os.path.exists(os.path.join(path, "saved_model.pb"))
    )


def _tflite_bytes(stripped: keras.Model, sparsity: bool) -> bytes:
    # TFLiteConverter.from_keras_model does not take Keras 3 models; the SavedModel route
    # also keeps the signature names.
    with tempfile.TemporaryDirectory() as directory:
        _write_saved_model(stripped, directory)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, [SIGNATURE])
        if sparsity:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        return converter.convert()


def _report(model, stripped, path: str, format: str, sparsity: bool) -> dict:
    content = {
        "format": format,
        "path": os.path.abspath(path),
        "sparsity_optimization": bool(sparsity),
        "model": stripped.name,
        **_weight_stats(stripped),
        **_sizes(path),
    }
    dense = _strip(model, apply_masks=False)
    with tempfile.TemporaryDirectory() as directory:
        dense_path = os.path.join(
            directory,
            {"keras": "dense.keras", "saved_model": "dense", "tflite": "dense.tflite"}[format],
        )
        _write(dense, dense_path, format, sparsity)
        content["dense"] = {**_weight_stats(dense), **_sizes(dense_path)}
    content["ratio"] = {
        key: content[key] / content["dense"][key] if content["dense"][key] else None
        for key in ("file_bytes", "gzip_bytes")
    }
    return content


def _weight_stats(stripped: keras.Model) -> dict:
    layer_density, layer_params = {}, {}
    prunable = prunable_zeros = 0
    for layer in _flat_layers(stripped):
        if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
            continue
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        zeros = int(np.count_nonzero(kernel == 0))
        layer_density[layer.kernel.path] = (kernel.size - zeros) / kernel.size
        layer_params[layer.kernel.path] = int(kernel.size)
        prunable += kernel.size
        prunable_zeros += zeros
    weights = [keras.ops.convert_to_numpy(w) for w in stripped.weights]
    return {
        "params": int(sum(w.size for w in weights)),
        "prunable_params": int(prunable),
        "zeros": int(sum(np.count_nonzero(w == 0) for w in weights)),
        "prunable_zeros": int(prunable_zeros),
        "density": (prunable - prunable_zeros) / prunable if prunable else 1.0,
        "layer_density": layer_density,
        "layer_params": layer_params,
    }


def _flat_layers(model: keras.layers.Layer):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _sizes(path: str) -> dict:
    """File size and gzip -9 size; a directory is measured as a deterministic tar."""
    counter = _ByteCounter()
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=9, mtime=0) as compressed:
        if os.path.isdir(path):
            size = _tar_directory(path, compressed)
        else:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                shutil.copyfileobj(f, compressed)
    return {"file_bytes": int(size), "gzip_bytes": counter.count}


def _tar_directory(path: str, fileobj) -> int:
    size = 0
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                info = tarfile.TarInfo(os.path.relpath(full, path))
                info.size = os.path.getsize(full)
                info.mode = 0o644
                size += info.size
                with open(full, "rb") as f:
                    tar.addfile(info, f)
    return size


class _ByteCounter(io.RawIOBase):
    """A write-only sink that counts the bytes written to it."""

    def __init__(self):
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.count += len(data)
        return len(data)
