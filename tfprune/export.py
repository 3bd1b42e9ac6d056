"""Command line: export a finished training run's final model.

    python -m tfprune.export --run_dir=D --format=saved_model|keras|tflite [--sparsity]
        [--output=PATH]

Reads `D/model.keras` (the final masked model of a finished run), writes the stripped model
(stock Keras layers, masks multiplied into the kernels) and its size report
`<output>.report.json`, and prints the report. The default output is `D/export/model.keras`,
`D/export/saved_model` (a directory), `D/export/model.tflite`, or `D/export/model_sparse.tflite`
with `--sparsity` (TFLite's `EXPERIMENTAL_SPARSITY` optimisation). Errors a user can cause end
with one line, `tfprune.export: error: ...`, and exit status 2.

Run this module with `python -m tfprune.export` only, never `import tfprune.export`: the package
attribute `tfprune.export` is the library function `tfprune.deploy.export`, and importing this
module would rebind it to the module.
"""

from __future__ import annotations

if __name__ == "__main__":
    # First: TensorFlow reads its log level when it is imported.
    from tfprune._startup import quiet_tensorflow

    quiet_tensorflow()

import os

from absl import app, flags

from tfprune import deploy
from tfprune.cli import fail, flags_parser
from tfprune.errors import TfpruneError

PROGRAM = "tfprune.export"
DEFAULT_NAMES = {
    ("keras", False): "model.keras",
    ("saved_model", False): "saved_model",
    ("tflite", False): "model.tflite",
    ("tflite", True): "model_sparse.tflite",
}

RUN_DIR = flags.DEFINE_string("run_dir", None, "A finished run directory (holds model.keras).")
FORMAT = flags.DEFINE_string("format", "saved_model", f"One of {', '.join(deploy.FORMATS)}.")
SPARSITY = flags.DEFINE_bool(
    "sparsity", False, "TFLite only: convert with tf.lite.Optimize.EXPERIMENTAL_SPARSITY."
)
OUTPUT = flags.DEFINE_string(
    "output", None, "Where to write the export (default: <run_dir>/export/<name>)."
)


def main(argv):
    if len(argv) > 1:
        fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    run_dir, format, sparsity = RUN_DIR.value, FORMAT.value, SPARSITY.value
    if not run_dir:
        fail(PROGRAM, "give the run directory to export with --run_dir")
    if format not in deploy.FORMATS:
        fail(PROGRAM, f"unknown format {format!r}; choose one of {', '.join(deploy.FORMATS)}")
    if sparsity and format != "tflite":
        fail(PROGRAM, f"--sparsity applies to --format=tflite only, not {format}")
    if not os.path.isdir(run_dir):
        fail(PROGRAM, f"run directory {run_dir} does not exist")
    model_path = os.path.join(run_dir, "model.keras")
    missing = [
        name
        for name in ("model.keras", "results.json")
        if not os.path.isfile(os.path.join(run_dir, name))
    ]
    if missing:
        fail(
            PROGRAM,
            f"{run_dir} is not a finished run (no {' or '.join(missing)}): finish it with "
            "python -m tfprune.train first",
        )
    output = OUTPUT.value or os.path.join(run_dir, "export", DEFAULT_NAMES[format, sparsity])
    try:
        model = deploy.load_model(model_path)
        report = deploy.export(model, output, format, sparsity=sparsity)
    except TfpruneError as error:
        fail(PROGRAM, str(error))
    print(deploy.report_table(report))
    print(f"export={os.path.abspath(output)} report={deploy.report_path(os.path.abspath(output))}")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser(PROGRAM))
