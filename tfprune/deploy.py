"""Export of pruned models: stock-Keras strip, `.keras`, SavedModel and TFLite, with a size report.

The stage after training. `strip(model)` gives the same network with the masks multiplied into
the kernels, so that the pruned weights are real zeros in the weights: a functional or
Sequential model is rebuilt from stock Keras layers (nothing of tfprune is needed to load it),
a subclassed model is copied with its own class. `export(model, path, format=...)` writes a
stripped model atomically and, beside it, `<path>.report.json`: parameters, zeros, density per
layer, file size and gzip-compressed size, against the dense model of the same architecture
(`size_report`).

The command line, `python -m tfprune.export`, exports a finished run's final model.
"""

from __future__ import annotations

import gzip
import inspect
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
from tfprune.layers import (
    MaskedLayer,
    clone_and_copy,
    layers_in_order,
    mask_map,
    masked_twins,
    prunable_weights,
    stock_twin,
    transfer_weights,
)
from tfprune.layers.precision import computed_in_float32

FORMATS = ("keras", "saved_model", "tflite")
#: Name of the SavedModel signature, and of its input and output for a model with one of each.
SIGNATURE = "serving_default"
INPUT_NAME = "inputs"
OUTPUT_NAME = "logits"
REPORT_SUFFIX = ".report.json"
# What `model.save("x.keras")` always writes into the archive.
_KERAS_MEMBERS = ("metadata.json", "config.json")


def strip(model: keras.Model) -> keras.Model:
    """Returns the same network with the masks multiplied into the kernels.

    The pruned weights become exact zeros in the weights (`0.0`, never `-0.0`), the others
    keep their values, and the outputs equal the masked model's bit for bit (the same ops on
    the same values). The original is left unchanged.

    - A functional or Sequential model (nested ones included) is rebuilt from stock Keras
      layers: every masked layer with a stock twin (`MaskedDense`, `MaskedConv1D/2D/3D`, ...)
      becomes that stock layer with the same configuration, name and bias, and every other
      layer is copied with its weights. Loading the result needs nothing from tfprune.
    - A subclassed model cannot be rebuilt layer by layer: its `__init__` creates its layers,
      masked ones included. It is copied with its own class, as Keras clones it
      (`keras.models.clone_model`: `from_config(get_config())`, then built from
      `get_build_config()`), and each masked kernel of the copy holds `kernel * mask`; the
      copy keeps its masks, equal to the original's, so it is still a masked model (prunable,
      and `strip` of it changes nothing). Its layers stay tfprune's: loading its `.keras` file
      needs tfprune imported and the class registered
      (`keras.saving.register_keras_serializable`), while its SavedModel and TFLite exports
      need neither. Its layer names are the ones its `__init__` gives, so auto-generated
      names (`masked_dense_1`, ...) differ from the original's.

    Args:
        model: A built `keras.Model` (masked or not): functional, Sequential or subclassed.

    Returns:
        A new `keras.Model` with the same name and architecture.

    Raises:
        ModelError: for an unbuilt model, or a subclassed model that Keras cannot copy from
            its configuration (its `get_config()` must return every constructor argument).

    Example:

    >>> net = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    >>> type(strip(net).get_layer("fc1")).__name__
    'Dense'
    """
    return _strip(model, apply_masks=True)[0]


def export(
    model: keras.Model,
    path: str,
    format: str = "saved_model",
    *,
    sparsity: bool = False,
    report: bool = True,
    input_signature=None,
) -> dict | None:
    """Writes the stripped model to `path` and its size report to `<path>.report.json`.

    Formats:

    - `"keras"`: a `.keras` file of `strip(model)` (stock layers only, except for a
      subclassed model: see `strip`).
    - `"saved_model"`: a SavedModel directory whose signature `serving_default` serves the
      model's call; load it with `tf.saved_model.load`. A model with one input and one output
      takes one tensor named `inputs` and returns `{"logits": ...}`. With several inputs, the
      signature takes one tensor per input, named after the model's inputs (the names of a
      functional model's `keras.Input`s, or the keys of a dict of inputs); with several
      outputs it returns them under the model's output names (a functional model's
      `output_names`, the keys of a dict, else `output_0`, `output_1`, ...).
    - `"tflite"`: a float32 TFLite flatbuffer with the same signature. `sparsity=True`
      converts with `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` (sparse weight encoding).

    Every input keeps its dtype: a functional model whose `keras.Input` is `int32` (token ids)
    is served with `int32` inputs. A subclassed model records only its input shapes, so its
    inputs are taken to be of its `input_dtype` (float32) unless `input_signature` says
    otherwise; its call must take one argument (a tensor, or a list or dict of tensors).
    The weights written hold exact zeros where the masks are 0, for every kind of model.

    The write is atomic: a file is written beside the target and renamed over it, a SavedModel
    is written to a temporary directory beside the target and renamed.

    Args:
        model: A built `keras.Model` (masked or not): functional, Sequential or subclassed.
        path: The file (`.keras` for `"keras"`) or SavedModel directory to write.
        format: One of `FORMATS`.
        sparsity: For `"tflite"` only: convert with the experimental sparsity optimisation.
        report: Also compute the size report and write it beside the export.
        input_signature: For `"saved_model"` and `"tflite"`: the inputs to serve, as a
            `tf.TensorSpec` or `keras.InputSpec` (shape with the batch axis, and dtype), or a
            list or dict of them in the structure the model's call takes. None: the model's
            own inputs.

    Returns:
        The size report (see `size_report`), or None when `report=False`.

    Raises:
        ConfigError: for an unknown format, `sparsity` outside TFLite, a `.keras` path that
            does not end in `.keras`, an `input_signature` that is not made of tensor specs.
        ModelError: for a model that cannot be exported (unbuilt, a subclassed model Keras
            cannot copy, inputs that cannot be told).
        OutputError: if `path` cannot be written.

    Example:

    >>> net = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    >>> _ = tfprune.prune(net, "magnitude", 0.05)
    >>> report = tfprune.export(net, "/tmp/lenet.keras", format="keras")
    >>> report["density"]
    0.05
    """
    _check_format(format, path, sparsity)
    if format != "keras":
        _serving_inputs(model, input_signature)  # before anything is copied or written
    stripped, pairs = _strip(model, apply_masks=True)
    _write(stripped, path, format, sparsity, input_signature)
    if not report:
        return None
    content = _report(model, stripped, pairs, path, format, sparsity, input_signature)
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
        raise ModelError(f"{path} is not a .keras model: the archive has no {' or '.join(missing)}")


def report_path(path: str) -> str:
    """Where `export` writes the report of the export at `path`: `<path>.report.json`.

    For a SavedModel directory `d/saved_model`, that is the file `d/saved_model.report.json`
    beside the directory (nothing is added inside the SavedModel).
    """
    return os.path.normpath(path) + REPORT_SUFFIX


def size_report(
    model: keras.Model,
    path: str,
    format: str | None = None,
    *,
    sparsity: bool = False,
    input_signature=None,
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
        input_signature: The `input_signature` the export was given, if any.

    Returns:
        A JSON-able dict: `format`, `path`, `sparsity_optimization`, `model`, `params` (every
        exported weight, the masks a subclassed model keeps included), `prunable_params` (the
        kernels that carry a mask in `model`, and the kernels of stock layers that have a
        masked twin), `zeros` (exactly zero weights, all of them), `prunable_zeros` (in those
        kernels), `density` (nonzero fraction of those kernels), `layer_density` (`{kernel
        path in model: nonzero fraction}`), `layer_params`, `file_bytes` (a directory: the
        sum of its files), `gzip_bytes` (gzip -9 of the file, or of a deterministic tar of the
        directory), `dense` (the same keys for the dense model) and `ratio` (`file_bytes` and
        `gzip_bytes` of the export over the dense model's).

    Raises:
        ConfigError: for an unknown format.
        OutputError: if `path` does not exist.
    """
    if format is None:
        format = _infer_format(path)
    _check_format(format, path, sparsity)
    if not os.path.exists(path):
        raise OutputError(f"no export at {path}: export the model first")
    stripped, pairs = _strip(model, apply_masks=True)
    return _report(model, stripped, pairs, path, format, sparsity, input_signature)


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


def _strip(model: keras.Model, apply_masks: bool) -> tuple[keras.Model, dict]:
    """The stripped copy (with `apply_masks=False`, the dense reference: raw kernels and masks
    of ones) and `{id(weight of model): the copy's weight}` for every weight but the masks."""
    pairs = {}

    def copy(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
        transfer_weights(old, new, apply_masks=apply_masks)
        pairs.update(zip(map(id, _unmasked_weights(old)), _unmasked_weights(new), strict=True))
        if not apply_masks:
            for _, mask in mask_map(new).values():
                mask.assign(np.ones(tuple(mask.shape), dtype=mask.dtype))

    if isinstance(model, keras.Sequential) or is_functional(model):
        return clone_and_copy(model, stock_twin, copy), pairs
    clone = _copy_subclassed(model)
    copy(model, clone)
    return clone, pairs


def _copy_subclassed(model: keras.Model) -> keras.Model:
    """A new, built instance of a subclassed model's class, as Keras clones one (not its
    weights: `transfer_weights` copies them)."""
    if not model.built:
        raise ModelError(
            f"the model {model.name!r} is not built: call it on a batch of inputs first"
        )
    how = (
        "give its class a get_config() that returns every constructor argument (and a "
        "from_config() if needed), or build the model functionally"
    )
    try:
        clone = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ModelError(
            f"cannot copy the subclassed model {model.name!r} ({type(model).__name__}) from "
            f"its configuration: {how} ({_keras_reason(error)})"
        ) from error
    if not clone.built or len(clone.weights) != len(model.weights):
        raise ModelError(
            f"the copy of the subclassed model {model.name!r} ({type(model).__name__}) made "
            f"from its configuration has {len(clone.weights)} weights, the model "
            f"{len(model.weights)}: its build() (or build_from_config()) must create every "
            "weight from get_build_config()"
        )
    return clone


def _keras_reason(error: Exception) -> str:
    """The cause in one of Keras' long deserialization messages, on one line."""
    text = str(error)
    marker = "Error encountered during deserialization:"
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    else:
        text = next((part for part in text.split("\n\n") if part.strip()), text)
    return " ".join(text.split())[:200]


def _unmasked_weights(layer: keras.layers.Layer) -> list:
    """`layer`'s weights other than masks, in the order `transfer_weights` pairs them."""
    masks = {id(mask) for _, mask in mask_map(layer).values()}
    return [weight for weight in layer.weights if id(weight) not in masks]


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


def _write(
    stripped: keras.Model, path: str, format: str, sparsity: bool, input_signature=None
) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        if format == "saved_model":
            _write_saved_model_atomically(stripped, path, input_signature)
        elif os.path.isdir(path):
            raise OutputError(f"{path} is a directory; give a file path for the {format} export")
        elif format == "keras":
            with atomic_path(path, suffix=".keras") as tmp:
                stripped.save(tmp)
        else:
            content = _tflite_bytes(stripped, sparsity, input_signature)
            with atomic_path(path, suffix=".tflite") as tmp, open(tmp, "wb") as f:
                f.write(content)
    except OSError as error:
        raise OutputError(f"cannot write the {format} export to {path}: {error}") from error


def _write_saved_model(stripped: keras.Model, directory: str, input_signature=None) -> None:
    """Writes a SavedModel with one signature, `serving_default` (see `export` for its input and
    output names), and the weights as the loaded object's `variables` (named by their Keras
    paths)."""
    structure, specs = _serving_inputs(stripped, input_signature)
    # keras.export.ExportArchive tracks every variable twice (as a Keras and as a TF variable)
    # and so writes each weight twice; a plain trackable root writes each once.
    root = plain_trackable()
    root.variables = [weight.value for weight in stripped.weights]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = stripped(keras.tree.pack_sequence_as(structure, inputs), training=False)
        return _named_outputs(stripped, outputs)

    root.serve = serve
    tf.saved_model.save(root, directory, signatures={SIGNATURE: serve})


def _serving_inputs(model: keras.Model, input_signature) -> tuple:
    """The structure of `tf.TensorSpec`s the model's call takes, and its leaves in order, named
    as the signature names them: `inputs` alone, else after the model's inputs."""
    if not model.built:
        raise ModelError("the model is not built: give it an Input or call it once first")
    sequential = isinstance(model, keras.Sequential)
    if not (sequential or is_functional(model)):
        _check_one_argument(model)
    if input_signature is not None:
        structure = keras.tree.map_structure(_tensor_spec, input_signature)
    elif sequential or is_functional(model):
        # A Sequential model takes one tensor; a functional one the structure of its Inputs.
        structure = keras.tree.map_structure(
            lambda x: tf.TensorSpec(x.shape, tf.as_dtype(x.dtype), name=x.name),
            model.inputs[0] if sequential else model.input,
        )
    else:
        structure = _recorded_inputs(model)
    leaves = keras.tree.flatten_with_path(structure)
    if len(leaves) == 1:
        names = [INPUT_NAME]
    else:
        names = [
            str(path[-1]) if isinstance(path[-1], str) else spec.name or f"input_{i}"
            for i, (path, spec) in enumerate(leaves)
        ]
    if len(set(names)) != len(names):
        raise ModelError(
            f"the inputs of {model.name!r} share names ({', '.join(names)}): give each "
            "keras.Input (or each spec of input_signature) a name of its own"
        )
    specs = [
        tf.TensorSpec(spec.shape, spec.dtype, name=name)
        for (_, spec), name in zip(leaves, names, strict=True)
    ]
    return structure, specs


def _check_one_argument(model: keras.Model) -> None:
    """A subclassed model's call must take its inputs as one argument, as the signature
    passes them."""
    inputs = [
        parameter.name
        for parameter in inspect.signature(model.call).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        and parameter.default is parameter.empty
    ]
    if len(inputs) != 1:
        raise ModelError(
            f"the call of {model.name!r} takes {len(inputs)} arguments ({', '.join(inputs)}); "
            "SavedModel and TFLite exports serve a call of one argument (a tensor, or a list "
            "or dict of tensors)"
        )


def _tensor_spec(spec) -> tf.TensorSpec:
    if isinstance(spec, tf.TensorSpec):
        return spec
    if isinstance(spec, keras.InputSpec) and spec.shape is not None and spec.dtype is not None:
        return tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name)
    raise ConfigError(
        "input_signature must be a tf.TensorSpec or a keras.InputSpec with shape and dtype, or "
        f"a list or dict of them; got {spec!r}"
    )


def _recorded_inputs(model: keras.Model):
    """A subclassed model's inputs: the shapes it was built with (any batch size), of its
    `input_dtype`; Keras records no input dtype for such a model."""
    shapes = (model.get_build_config() or {}).get("input_shape")
    if shapes is None:
        raise ModelError(
            f"cannot tell the inputs of the subclassed model {model.name!r} (its call takes "
            "several arguments, or it was built without a call): pass input_signature="
            "tf.TensorSpec(shape, dtype), or a list or dict of them"
        )

    def specs(shape):
        if isinstance(shape, dict):
            return {key: specs(value) for key, value in shape.items()}
        if all(d is None or isinstance(d, int) for d in shape):
            return tf.TensorSpec((None, *shape[1:]), tf.as_dtype(model.input_dtype))
        return [specs(value) for value in shape]

    return specs(shapes)


def _named_outputs(model: keras.Model, outputs) -> dict:
    """The signature's outputs: `{"logits": y}` for one tensor, else named after the model's
    outputs (dict keys, a functional model's `output_names`, or `output_<i>`)."""
    leaves = keras.tree.flatten_with_path(outputs)
    if len(leaves) == 1:
        return {OUTPUT_NAME: leaves[0][1]}
    if isinstance(outputs, dict):
        names = ["_".join(map(str, path)) for path, _ in leaves]
    elif is_functional(model) and len(model.output_names) == len(leaves):
        names = list(model.output_names)
    else:
        names = [f"output_{i}" for i in range(len(leaves))]
    if len(set(names)) != len(names):
        raise ModelError(f"the outputs of {model.name!r} share names ({', '.join(names)})")
    return {name: tensor for name, (_, tensor) in zip(names, leaves, strict=True)}


def _write_saved_model_atomically(stripped: keras.Model, path: str, input_signature=None) -> None:
    if os.path.exists(path) and not _replaceable_saved_model(path):
        raise OutputError(
            f"{path} exists and is not a SavedModel directory; choose another output path"
        )
    tmp = make_temp_dir(os.path.dirname(os.path.abspath(path)))
    try:
        _write_saved_model(stripped, tmp, input_signature)
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


def _tflite_bytes(stripped: keras.Model, sparsity: bool, input_signature=None) -> bytes:
    # TFLiteConverter.from_keras_model does not take Keras 3 models; the SavedModel route
    # also keeps the signature names.
    # A float32 flatbuffer also for a network under a mixed policy: TFLite has no bfloat16
    # MatMul, so the network is traced computing in float32, as it is scored.
    with tempfile.TemporaryDirectory() as directory, computed_in_float32(stripped):
        _write_saved_model(stripped, directory, input_signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, [SIGNATURE])
        if sparsity:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        return converter.convert()


def _report(
    model, stripped, pairs, path: str, format: str, sparsity: bool, input_signature
) -> dict:
    kernels = _prunable_kernels(model)
    content = {
        "format": format,
        "path": os.path.abspath(path),
        "sparsity_optimization": bool(sparsity),
        "model": stripped.name,
        **_weight_stats(stripped, kernels, pairs),
        **_sizes(path),
    }
    dense, dense_pairs = _strip(model, apply_masks=False)
    with tempfile.TemporaryDirectory() as directory:
        dense_path = os.path.join(
            directory,
            {"keras": "dense.keras", "saved_model": "dense", "tflite": "dense.tflite"}[format],
        )
        _write(dense, dense_path, format, sparsity, input_signature)
        content["dense"] = {
            **_weight_stats(dense, kernels, dense_pairs),
            **_sizes(dense_path),
        }
    content["ratio"] = {
        key: content[key] / content["dense"][key] if content["dense"][key] else None
        for key in ("file_bytes", "gzip_bytes")
    }
    return content


def _prunable_kernels(model: keras.Model) -> dict:
    """`{path: kernel}` of `model`: the kernels its masks cover, and the `kernel` of each
    stock layer that has a masked twin (what pruning would cover), in layer order."""
    covered = {weight.kernel.path: weight.kernel for weight in prunable_weights(model).values()}
    stock = tuple(masked_twins())
    kernels = {}
    for layer in layers_in_order(model):
        if isinstance(layer, MaskedLayer):
            kernels.update(
                (kernel.path, covered[kernel.path]) for kernel, _ in layer.prunable_pairs()
            )
        elif type(layer) in stock and isinstance(getattr(layer, "kernel", None), keras.Variable):
            kernels[layer.kernel.path] = layer.kernel
    return kernels


def _weight_stats(stripped: keras.Model, kernels: dict, pairs: dict) -> dict:
    """Counts of the stripped model's weights; `kernels` are the original's prunable kernels,
    read in the stripped model through `pairs`."""
    layer_density, layer_params = {}, {}
    prunable = prunable_zeros = 0
    for path, kernel in kernels.items():
        value = keras.ops.convert_to_numpy(pairs[id(kernel)])
        zeros = int(np.count_nonzero(value == 0))
        layer_density[path] = (value.size - zeros) / value.size
        layer_params[path] = int(value.size)
        prunable += value.size
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
