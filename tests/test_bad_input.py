"""Bad input at every entry point: one line naming the bad value, the right error, status 2.

The command-line cases run as subprocesses, all at once (one fixture), so that the whole set
costs about as much as the slowest few; the Python API cases run in this process.
"""

import concurrent.futures
import os
import struct

import _procs
import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import data, models
from tfprune.cli import parse_gin
from tfprune.errors import ConfigError, DataError, ModelError, OutputError
from tfprune.experiment import Experiment, check, run
from tfprune.training import TrainConfig

SNIP = "--gin_file=gin_configs/snip.gin"
TINY = ["--gin_bindings=experiment.train_limit = 256", "--gin_bindings=training.progress = False"]
TINY_SWEEP = [
    "--gin_file=gin_configs/default.gin",
    "--gin_bindings=training.steps = 2",
    "--output_dir={tmp}/sweep",
]


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_small_mnist(folder) -> str:
    """An MNIST look-alike of 8x8 images (smaller than VGG-16 takes), 2 per class."""
    folder = os.path.join(folder, "mnist")
    os.makedirs(folder, exist_ok=True)
    labels = np.arange(20) % 10
    for prefix, n in (("train", 20), ("t10k", 10)):
        with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(_idx_bytes(np.zeros((n, 8, 8))))
        with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(_idx_bytes(labels[:n]))
    return os.path.dirname(folder)


# (id, program, arguments, fragments the last stderr line must hold). `{tmp}` is a scratch
# directory holding `a_file` (a regular file), `small_data` (8x8 MNIST), `bad_syntax.gin`,
# `bad_include.gin` and `unfinished/` (a run directory without results).
CLI_CASES = [
    (
        "unknown-method",
        "train",
        [SNIP, "--gin_bindings=experiment.method = 'snipp'"],
        ["unknown pruning method 'snipp'"],
    ),
    (
        "density-0",
        "train",
        [SNIP, "--gin_bindings=experiment.density = 0.0"],
        ["density must be in (0, 1], got 0.0"],
    ),
    (
        "density-above-1",
        "train",
        [SNIP, "--gin_bindings=experiment.density = 1.5"],
        ["density must be in (0, 1], got 1.5"],
    ),
    (
        "missing-gin-file",
        "train",
        ["--gin_file=gin_configs/missing.gin"],
        ["gin file 'gin_configs/missing.gin' does not exist"],
    ),
    ("misspelt-parameter", "train", [SNIP, "--gin_bindings=experiment.densty = 0.1"], ["'densty'"]),
    (
        "unknown-dataset",
        "train",
        [SNIP, "--gin_bindings=experiment.dataset = 'nodata'"],
        ["unknown dataset 'nodata'"],
    ),
    (
        "unknown-model",
        "train",
        [SNIP, "--gin_bindings=experiment.model = 'resnet99'"],
        ["unknown model 'resnet99'"],
    ),
    (
        "prune-step-not-a-step",
        "train",
        [SNIP, "--gin_bindings=experiment.prune_step = 'soon'"],
        ["prune_step must look like"],
    ),
    ("stray-argument", "train", [SNIP, "stray"], ["unexpected arguments: stray"]),
    ("sweep-without-methods", "sweep", [*TINY_SWEEP, "--densities=0.1"], ["--methods is required"]),
    (
        "sweep-unknown-method",
        "sweep",
        [*TINY_SWEEP, "--methods=snip,snipp"],
        ["unknown pruning method 'snipp'"],
    ),
    (
        "sweep-bad-density-power",
        "sweep",
        [*TINY_SWEEP, "--methods=snip", "--densities=0.8^"],
        ["'0.8^' in '0.8^' must look like 0.8^5"],
    ),
    (
        "sweep-shard-equal-to-n",
        "sweep",
        [*TINY_SWEEP, "--methods=snip", "--shard=2/2"],
        ["--shard must look like i/N"],
    ),
    (
        "sweep-missing-gin-file",
        "sweep",
        ["--gin_file=gin_configs/missing.gin", "--methods=snip", "--output_dir={tmp}/sweep"],
        ["gin file 'gin_configs/missing.gin' does not exist"],
    ),
    (
        "unquoted-string",
        "train",
        [SNIP, "--gin_bindings=experiment.method = snipp"],
        ["cannot read the value snipp", "'snipp'"],
    ),
    (
        "density-not-a-number",
        "train",
        [SNIP, "--gin_bindings=experiment.density = 'abc'"],
        ["density must be a number in (0, 1], got 'abc'"],
    ),
    (
        "unknown-ablation",
        "train",
        [SNIP, "--gin_bindings=experiment.ablations = ['shufle']"],
        ["unknown ablation 'shufle'", "shuffle, reinit, invert"],
    ),
    (
        "step-without-unit",
        "train",
        [SNIP, "--gin_bindings=experiment.prune_step = '2epochs'"],
        ["experiment.prune_step must look like '500it' or '2ep', got '2epochs'"],
    ),
    (
        "prune-step-after-end",
        "train",
        [SNIP, "--gin_bindings=experiment.prune_step = '100ep'", *TINY],
        ["experiment.prune_step '100ep' is at or after the end of training (20 iterations"],
    ),
    (
        "model-too-big-for-images",
        "train",
        [
            SNIP,
            "--gin_bindings=experiment.dataset = 'mnist'",
            "--gin_bindings=experiment.data_dir = '{tmp}/small_data'",
            "--gin_bindings=experiment.model = 'vgg16'",
        ],
        ["model 'vgg16' does not fit dataset 'mnist' (8x8x1 images", "at least 16x16"],
    ),
    (
        "output-dir-is-a-file",
        "train",
        [SNIP, "--output_dir={tmp}/a_file"],
        ["output directory {tmp}/a_file exists and is not a directory"],
    ),
    (
        "output-dir-under-a-file",
        "train",
        [SNIP, "--output_dir={tmp}/a_file/run"],
        ["cannot write to output directory {tmp}/a_file/run"],
    ),
    (
        "gin-syntax-error",
        "train",
        [SNIP, "--gin_bindings=experiment.density = ("],
        ["invalid gin binding 'experiment.density = ('", "bracket"],
    ),
    (
        "gin-missing-include",
        "train",
        ["--gin_file={tmp}/bad_include.gin"],
        ["invalid gin file '{tmp}/bad_include.gin'", "nothere.gin"],
    ),
    (
        "unknown-method-option",
        "train",
        [SNIP, "--gin_bindings=experiment.method_options = {{'bogus': 1}}"],
        ["method 'snip' takes no option 'bogus' (its options: from_logits)"],
    ),
    (
        "milestone-not-a-step",
        "train",
        [SNIP, "--gin_bindings=training.milestones = ['x']"],
        ["training.milestones must look like '500it' or '2ep', got 'x'"],
    ),
    (
        "too-many-examples-per-class",
        "train",
        [SNIP, "--gin_bindings=experiment.examples_per_class = 100000"],
        ["examples_per_class=100000", "only 60000 training examples"],
    ),
    (
        "bad-flag-value",
        "train",
        [SNIP, "--overwrite=maybe"],
        ["--overwrite=maybe"],
    ),
    (
        "jobs-0",
        "sweep",
        [SNIP, "--methods=snip", "--output_dir={tmp}/sweep", "--jobs=0"],
        ["--jobs must be a positive integer, got 0"],
    ),
    (
        "shard-past-end",
        "sweep",
        [SNIP, "--methods=snip", "--output_dir={tmp}/sweep", "--shard=3/2"],
        ["--shard must look like i/N with 0 <= i < N or auto, got '3/2'"],
    ),
    (
        "sweep-bad-binding",
        "sweep",
        [
            SNIP,
            "--methods=snip",
            "--output_dir={tmp}/sweep",
            "--gin_bindings=training.batch_size = 0",
        ],
        ["training.batch_size must be a positive integer, got 0"],
    ),
    (
        "sweep-output-is-a-file",
        "sweep",
        [SNIP, "--methods=snip", "--output_dir={tmp}/a_file"],
        ["--output_dir {tmp}/a_file exists and is not a directory"],
    ),
    (
        "sweep-after-training-multi-worker",
        "sweep",
        [
            *TINY_SWEEP,
            "--methods=snip,magnitude_after_training",
            "--densities=0.1",
            "--gin_bindings=experiment.strategy = 'multi_worker_mirrored'",
        ],
        [
            "cell magnitude_after_training-none-d0.1-s0: magnitude_after_training shares runs "
            "between experiments, which multi_worker_mirrored does not support"
        ],
    ),
    ("report-empty-dir", "report", ["{tmp}/unfinished"], ["results.csv' does not exist"]),
    (
        "export-unfinished-run",
        "export",
        ["--run_dir={tmp}/unfinished"],
        ["{tmp}/unfinished is not a finished run (no model.keras or results.json)"],
    ),
    (
        "export-unknown-format",
        "export",
        ["--run_dir={tmp}/unfinished", "--format=onnx"],
        ["unknown format 'onnx'; choose one of keras, saved_model, tflite"],
    ),
    (
        "density-nan",
        "train",
        [SNIP, "--gin_bindings=experiment.density = nan"],
        [
            "invalid gin binding 'experiment.density = nan': cannot read the value nan "
            "(line 1: experiment.density = nan): gin has no nan or inf; a density must be a "
            "number in (0, 1]"
        ],
    ),
    (
        "gin-file-is-a-directory",
        "train",
        ["--gin_file={tmp}/unfinished"],
        ["gin file '{tmp}/unfinished' is a directory: give a gin file (.gin)"],
    ),
    (
        "sweep-gin-file-is-a-directory",
        "sweep",
        ["--gin_file={tmp}/unfinished", "--methods=snip", "--output_dir={tmp}/sweep"],
        ["gin file '{tmp}/unfinished' is a directory: give a gin file (.gin)"],
    ),
    (
        "gin-file-binds-nothing",
        "train",
        ["--gin_file={tmp}/comments.gin"],
        ["gin file '{tmp}/comments.gin' binds nothing (it is empty or holds only comments)"],
    ),
    # Refused after the gin files are read: the log says that no method was bound.
    ("no-method-bound", "train", ["--gin_bindings=training.batch_size = 0"], ["batch_size"]),
]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Runs every CLI case at once; returns {id: (completed process, scratch directory)}."""
    tmp = str(tmp_path_factory.mktemp("bad_input"))
    with open(os.path.join(tmp, "a_file"), "w") as f:
        f.write("not a directory\n")
    with open(os.path.join(tmp, "bad_include.gin"), "w") as f:
        f.write("include 'nothere.gin'\n")
    with open(os.path.join(tmp, "comments.gin"), "w") as f:
        f.write("# experiment.method = 'snip'\n\n    # indented comment\n")
    os.makedirs(os.path.join(tmp, "unfinished"))
    with open(os.path.join(tmp, "unfinished", "config.json"), "w") as f:
        f.write("{}\n")
    _write_small_mnist(os.path.join(tmp, "small_data"))

    def launch(case):
        name, program, args, _ = case
        args = [a.format(tmp=tmp) for a in args]
        if program == "train" and not any(a.startswith("--output_dir") for a in args):
            args.append(f"--output_dir={tmp}/runs/{name}")
        return _procs.run(f"tfprune.{program}", *args)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        done = dict(zip([c[0] for c in CLI_CASES], pool.map(launch, CLI_CASES), strict=True))
    return done, tmp


@pytest.mark.parametrize("name, program, args, fragments", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_ends_with_one_line_naming_it_and_status_2(
    cli_runs, name, program, args, fragments
):
    runs, tmp = cli_runs
    proc = runs[name]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith(f"tfprune.{program}: error: "), last
    assert sum(line.startswith(f"tfprune.{program}: error: ") for line in lines) == 1
    for fragment in fragments:
        assert fragment.format(tmp=tmp) in last, last
    if name == "output-dir-under-a-file":
        assert not os.path.exists(os.path.join(tmp, "runs"))


def test_train_says_when_no_method_was_bound(cli_runs):
    runs, _ = cli_runs
    notice = "no experiment.method bound: training the dense network"
    assert sum(notice in line for line in runs["no-method-bound"].stderr.splitlines()) == 1
    for bound in ("unknown-model", "output-dir-is-a-file"):
        assert notice not in runs[bound].stderr, bound


def test_cli_bad_step_leaves_no_run_directory_behind(cli_runs):
    runs, tmp = cli_runs
    for name in ("step-without-unit", "prune-step-after-end", "too-many-examples-per-class"):
        assert runs[name].returncode == 2
        assert not os.path.exists(os.path.join(tmp, "runs", name)), name


# --- gin parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, bindings, fragments",
    [
        ([], ["nothing.x = 1"], ["No configurable matching 'nothing'", "experiment, training"]),
        ([], ["experiment.densty = 0.1"], ["'densty'", "did you mean 'density'?", "seed"]),
        ([], ["experiment.density = ("], ["'experiment.density = ('", "bracket"]),
        ([], ["experiment.data_dir = /data"], ["Unable to parse value", "/data"]),
        ([], ["experiment.method = snip"], ["cannot read the value snip", "'snip'"]),
        (["missing.gin"], [], ["gin file 'missing.gin' does not exist"]),
        ([], ["experiment.density = inf"], ["value inf", "no nan or inf; a density must be"]),
        ([], ["experiment.density = -Infinity"], ["value -Infinity", "no nan or inf; a density"]),
        (
            [],
            ["experiment.density = float('nan')"],
            ["value float", "gin calls no function such as float(...); a density must be"],
        ),
        ([], ["training.learning_rate = nan"], ["value nan", "no nan or inf; give a number"]),
        ([], ["experiment.dataset = cifar10"], ["write a string in quotes: 'cifar10'"]),
        ([os.path.dirname(__file__)], [], ["is a directory: give a gin file (.gin)"]),
    ],
)
def test_parse_gin_errors_name_the_binding_and_the_choices(files, bindings, fragments):
    gin.clear_config()
    try:
        with pytest.raises(ConfigError) as error:
            parse_gin(files, bindings)
    finally:
        gin.clear_config()
    message = str(error.value)
    assert "\n" not in message and "object at 0x" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("text", ["", "\n\n", "# experiment.method = 'snip'\n  # more\n"])
def test_parse_gin_refuses_a_file_that_binds_nothing(tmp_path, text):
    path = tmp_path / "nothing.gin"
    path.write_text(text)
    gin.clear_config()
    try:
        with pytest.raises(ConfigError) as error:
            parse_gin([str(path)], [])
        path.write_text(text + "experiment.seed = 3  # one binding\n")
        parse_gin([str(path)], [])
        assert gin.query_parameter("experiment.seed") == 3
    finally:
        gin.clear_config()
    assert str(error.value) == (
        f"gin file '{path}' binds nothing (it is empty or holds only comments): give the file "
        "with your settings, such as gin_configs/snip.gin"
    )


def test_parse_gin_file_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "bad.gin"
    path.write_text("experiment.density = (\n")
    gin.clear_config()
    try:
        with pytest.raises(ConfigError, match="invalid gin file '.*bad.gin'"):
            parse_gin([str(path)], [])
    finally:
        gin.clear_config()


# --- the Python API ----------------------------------------------------------------------------


def _model():
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(20, name="fc1"),
            keras.layers.Dense(10, name="fc"),
        ]
    )
    return tfprune.masked(model)


X = np.random.default_rng(0).random((20, 28, 28, 1)).astype(np.float32)
Y = np.arange(20) % 10


@pytest.mark.parametrize(
    "call, error, fragments",
    [
        (
            lambda m: tfprune.prune(m, "snipp", 0.1),
            ConfigError,
            ["'snipp'", "magnitude, ntk_sap", "erk, ratio_of:<method>"],
        ),
        (lambda m: tfprune.prune(m, "magnitude", 0), ConfigError, ["(0, 1]", "got 0.0"]),
        (lambda m: tfprune.prune(m, "magnitude", 1.5), ConfigError, ["got 1.5"]),
        (lambda m: tfprune.prune(m, "magnitude", -0.5), ConfigError, ["got -0.5"]),
        (lambda m: tfprune.prune(m, "magnitude", "abc"), ConfigError, ["got 'abc'"]),
        (
            lambda m: tfprune.prune(m, "magnitude", 0.1, ablations=["shufle"]),
            ConfigError,
            ["'shufle'", "shuffle, reinit, invert"],
        ),
        (
            lambda m: tfprune.prune(m, "grasp", 0.1, data=(X, Y), temp=1),
            ConfigError,
            ["'temp'", "temperature, from_logits"],
        ),
        (lambda m: tfprune.prune(m, "snip", 0.1), DataError, ["'snip' needs data"]),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X[:0], Y[:0])),
            DataError,
            ["empty"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(np.full(X.shape, "a"), Y)),
            DataError,
            ["dtype <U1"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X.astype(object), Y)),
            DataError,
            ["dtype object"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X.astype(complex), Y)),
            DataError,
            ["dtype complex128"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(np.where(X > 0.5, np.nan, X), Y)),
            DataError,
            ["NaN or infinite"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X, Y[:10])),
            DataError,
            ["(20, 28, 28, 1) and (10,)"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X, np.full(20, 12))),
            DataError,
            ["[0, 10)", "10 outputs", "from 12 to 12"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X, np.full(20, 2.5))),
            DataError,
            ["integer class indices, got 2.5"],
        ),
        (
            lambda m: tfprune.prune(m, "snip", 0.1, data=(X, np.full(20, "a"))),
            DataError,
            ["integer class indices, got dtype <U1"],
        ),
        (
            lambda m: tfprune.score(m, "snip", data=(X.reshape(20, -1)[:, :10], Y)),
            DataError,
            ["(20, 10)", "(None, 28, 28, 1)"],
        ),
        (
            lambda m: tfprune.prune(
                m, "snip", 0.1, data=tf.data.Dataset.from_tensor_slices((X[:, :10, :10], Y))
            ),
            DataError,
            ["(10, 10, 1)", "(None, 28, 28, 1)"],
        ),
        (
            lambda m: tfprune.export(m, "/nonexistent/m", format="onnx"),
            ConfigError,
            ["'onnx'", "tflite"],
        ),
        (
            lambda m: tfprune.export(m, f"{__file__}/m.keras", format="keras"),
            OutputError,
            [f"{__file__}/m.keras"],
        ),
        (lambda m: tfprune.masked("model"), ModelError, ["functional or Sequential"]),
        (
            lambda m: tfprune.prune(m, "magnitude", float("nan")),
            ConfigError,
            ["density must be in (0, 1], got nan"],
        ),
        (
            lambda m: tfprune.prune(m, "uniform", np.float32("nan")),
            ConfigError,
            ["density must be in (0, 1], got nan"],
        ),
        (
            lambda m: tfprune.prune(m, "magnitude", float("inf")),
            ConfigError,
            ["density must be in (0, 1], got inf"],
        ),
        (
            lambda m: Experiment(method="snip", density=float("nan")).validate(),
            ConfigError,
            ["density must be in (0, 1], got nan"],
        ),
    ],
)
def test_python_api_bad_input_raises_a_one_line_tfprune_error(call, error, fragments):
    with pytest.raises(error) as raised:
        call(_model())
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_integer_valued_float_labels_and_a_missing_channel_axis_are_accepted():
    masks = tfprune.prune(_model(), "snip", 0.5, data=(X[..., 0], Y.astype(np.float32)))
    assert tfprune.overall_density(masks) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize(
    "call, error, fragments",
    [
        (lambda: models.build("resnet99", (32, 32, 3), 10), ConfigError, ["'resnet99'", "vgg16"]),
        (lambda: models.build("vgg16", (8, 8, 3), 10), ConfigError, ["16x16", "(8, 8, 3)"]),
        (lambda: models.build("lenet_300_100", (28, 28), 10), ConfigError, ["(28, 28)"]),
        (lambda: models.build("lenet_300_100", (28, 28, 1), 1), ConfigError, ["got 1"]),
        (lambda: data.dataset_info("nodata"), DataError, ["'nodata'", "fashion_mnist"]),
        (lambda: data.eval_dataset("fashion_mnist", 8, split="val"), ConfigError, ["'val'"]),
        (lambda: data.train_dataset("fashion_mnist", 0, seed=0), ConfigError, ["got 0"]),
        (lambda: data.pruning_data("fashion_mnist", 0, seed=0), ConfigError, ["got 0"]),
        (
            lambda: data.pruning_data("fashion_mnist", 100_000, seed=0),
            DataError,
            ["only 6000", "examples_per_class=100000"],
        ),
        (
            lambda: data.dataset_info("fashion_mnist", data_dir="/nonexistent"),
            DataError,
            ["data_dir '/nonexistent' is not a directory"],
        ),
        (lambda: tfprune.load_masks(__file__), DataError, [f"{__file__} is not a mask file"]),
    ],
)
def test_models_and_data_bad_input(call, error, fragments):
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


TRAIN = TrainConfig(steps="1it", progress=False)


@pytest.mark.parametrize(
    "experiment, training, error, fragments",
    [
        (Experiment(method="snipp", density=0.1), TRAIN, ConfigError, ["'snipp'", "lottery"]),
        (Experiment(method="snip", density="abc"), TRAIN, ConfigError, ["got 'abc'"]),
        (Experiment(method="snip", density=0.1, prune_step="5"), TRAIN, ConfigError, ["'5'"]),
        (Experiment(method="snip", density=0.1, prune_step=-1), TRAIN, ConfigError, ["got -1"]),
        (
            Experiment(method="snip", density=0.1, prune_step="2ep", train_limit=256),
            TrainConfig(epochs=1),
            ConfigError,
            ["'2ep' is at or after the end of training (2 iterations"],
        ),
        (
            Experiment(method="lottery", density=0.8, rewind_step="1ep", train_limit=256),
            TrainConfig(epochs=1),
            ConfigError,
            ["rewind_step '1ep' is at or after the end"],
        ),
        (Experiment(model="resnet99"), TRAIN, ConfigError, ["'resnet99'"]),
        (Experiment(dataset="nodata"), TRAIN, DataError, ["'nodata'"]),
        (
            Experiment(method="magnitude", density=0.1, method_options={"bogus": 1}),
            TRAIN,
            ConfigError,
            ["'bogus'"],
        ),
        (
            Experiment(method="lottery", density=0.8, method_options={"bogus": 1}),
            TRAIN,
            ConfigError,
            ["takes no options, got ['bogus']"],
        ),
        (
            Experiment(method="snip", density=0.1, examples_per_class=10_000),
            TRAIN,
            DataError,
            ["100000 pruning examples", "60000"],
        ),
        (
            Experiment(method="lottery", density=0.8, strategy="multi_worker_mirrored"),
            TRAIN,
            ConfigError,
            ["lottery shares runs between experiments, which multi_worker_mirrored"],
        ),
        (Experiment(), TrainConfig(batch_size=0), ConfigError, ["batch_size", "got 0"]),
        (Experiment(), TrainConfig(epochs=-1), ConfigError, ["training.epochs", "got -1"]),
        (Experiment(), TrainConfig(milestones=["x"]), ConfigError, ["milestones", "'x'"]),
        (Experiment(), TrainConfig(milestones="30"), ConfigError, ["milestones", "'30'"]),
        (Experiment(), TrainConfig(steps="abc"), ConfigError, ["training.steps", "'abc'"]),
    ],
)
def test_experiment_check_rejects_bad_settings_before_writing(
    experiment, training, error, fragments, tmp_path
):
    with pytest.raises(error) as raised:
        check(experiment, training)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    with pytest.raises(error):
        run(experiment, training, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_experiment_model_that_does_not_fit_the_dataset(tmp_path):
    experiment = Experiment(
        dataset="mnist", data_dir=_write_small_mnist(str(tmp_path)), model="vgg16"
    )
    with pytest.raises(ConfigError, match=r"'vgg16' does not fit dataset 'mnist' \(8x8x1"):
        check(experiment, TRAIN)


def test_unusable_output_directory(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    experiment = Experiment(method="magnitude", density=0.5, train_limit=256)
    with pytest.raises(OutputError, match="exists and is not a directory"):
        run(experiment, TRAIN, str(a_file))
    if os.geteuid() == 0:
        # root writes anywhere: a path under a regular file cannot be created by anyone.
        unwritable = str(a_file / "run")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unwritable = str(locked / "run")
    with pytest.raises(OutputError, match="cannot write to output directory"):
        run(experiment, TRAIN, unwritable)
