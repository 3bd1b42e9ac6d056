"""The training command: shipped configs, results on disk, bad input, resume after SIGKILL."""

import glob
import json
import os
import signal
import subprocess
import time

import _procs
import numpy as np
import pytest
from _procs import ROOT

METHOD_FILES = sorted(glob.glob(os.path.join(ROOT, "gin_configs", "*.gin")))
TINY = [
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.progress = False",
]
LENET_PRUNABLE = 266_200


def _train(*args, timeout=300):
    return _procs.run("tfprune.train", *args, timeout=timeout)


def test_every_shipped_method_file_is_found():
    names = {os.path.basename(p) for p in METHOD_FILES}
    assert {"dense.gin", "random.gin", "magnitude.gin", "snip.gin", "default.gin"} <= names


@pytest.mark.parametrize("gin_file", METHOD_FILES, ids=os.path.basename)
def test_each_shipped_gin_file_runs_one_step(gin_file, tmp_path):
    run_dir = str(tmp_path / "run")
    proc = _train(
        f"--gin_file={gin_file}",
        "--gin_bindings=training.steps = 1",
        *TINY,
        f"--output_dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = _procs.results(run_dir)
    assert results["steps"] == 1 and len(results["history"]) == 1
    assert results["dataset"] == "fashion_mnist" and results["model"] == "lenet_300_100"
    with np.load(os.path.join(run_dir, "masks.npz")) as data:
        masks = {k: data[k] for k in data.files}
    kept = sum(int(m.sum()) for m in masks.values())
    assert sum(m.size for m in masks.values()) == LENET_PRUNABLE
    # SPEC §1: exactly round(d * N) weights kept.
    assert kept == round(results["density_target"] * LENET_PRUNABLE)
    assert results["density_actual"] == pytest.approx(kept / LENET_PRUNABLE)
    assert set(results["layer_density"]) == set(masks)
    for path, fraction in results["layer_density"].items():
        assert fraction == np.count_nonzero(masks[path]) / masks[path].size
    for name in ("operative_config.gin", "config.json"):
        assert os.path.exists(os.path.join(run_dir, name))
    with open(os.path.join(run_dir, "operative_config.gin")) as f:
        assert f"experiment.method = '{results['method']}'" in f.read()
    for key in (
        "method",
        "ablations",
        "density_target",
        "density_actual",
        "layer_density",
        "seed",
        "dataset",
        "model",
        "test_accuracy",
        "test_loss",
        "history",
        "wall_seconds",
        "tfprune_version",
    ):
        assert key in results
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"):
        assert key in results["history"][0]


def test_output_dir_with_another_config_is_refused_unless_overwrite(tmp_path):
    run_dir = str(tmp_path / "run")
    base = [
        "--gin_file=gin_configs/magnitude.gin",
        "--gin_bindings=training.steps = 1",
        *TINY,
        f"--output_dir={run_dir}",
    ]
    assert _train(*base).returncode == 0
    finished = os.path.getmtime(os.path.join(run_dir, "results.json"))
    again = _train(*base)  # the same configuration: the finished result is reused
    assert again.returncode == 0
    assert os.path.getmtime(os.path.join(run_dir, "results.json")) == finished
    other = _train(*base, "--gin_bindings=experiment.density = 0.2")
    assert other.returncode == 2
    assert "different configuration (experiment.density: 0.05 there, 0.2 here)" in (
        other.stderr.strip().splitlines()[-1]
    )
    assert _procs.results(run_dir)["density_target"] == 0.05
    replaced = _train(*base, "--gin_bindings=experiment.density = 0.2", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert _procs.results(run_dir)["density_target"] == 0.2


def test_sigkill_during_training_then_rerun_resumes_and_completes(tmp_path):
    run_dir = str(tmp_path / "run")
    args = [
        "--gin_file=gin_configs/snip.gin",
        "--gin_bindings=experiment.train_limit = 4096",
        "--gin_bindings=experiment.test_limit = 512",
        "--gin_bindings=training.epochs = 30",
        "--gin_bindings=training.progress = False",
        f"--output_dir={run_dir}",
    ]
    proc = _procs.start("tfprune.train", *args)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(checkpoint_dir) and any(
            n.startswith("ckpt-") for n in os.listdir(checkpoint_dir)
        ):
            break
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    resumed = _train(*args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at iteration" in resumed.stderr
    results = _procs.results(run_dir)
    assert [h["epoch"] for h in results["history"]] == list(range(1, 31))
    assert results["steps"] == 30 * 32
    assert results["density_actual"] == pytest.approx(round(0.05 * LENET_PRUNABLE) / LENET_PRUNABLE)


def test_sigterm_writes_a_checkpoint_and_exits(tmp_path):
    run_dir = str(tmp_path / "run")
    args = [
        "--gin_file=gin_configs/random.gin",
        "--gin_bindings=experiment.train_limit = 4096",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.epochs = 200",
        "--gin_bindings=training.progress = False",
        f"--output_dir={run_dir}",
    ]
    proc = _procs.start("tfprune.train", *args, stderr=subprocess.PIPE)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and not (
        os.path.isdir(checkpoint_dir) and os.listdir(checkpoint_dir)
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr
    steps = sorted(
        int(n.split("-")[1]) for n in os.listdir(checkpoint_dir) if n.startswith("ckpt-")
    )
    # The first epoch's checkpoint is at iteration 32; the signal's checkpoint is written where
    # the loop noticed it, at that epoch's end or later.
    assert steps[-1] >= 32
    with open(os.path.join(checkpoint_dir, f"ckpt-{steps[-1]:09d}", "state.json")) as f:
        assert json.load(f)["step"] == steps[-1]
    assert not os.path.exists(os.path.join(run_dir, "results.json"))


ABLATION_FILES = sorted(glob.glob(os.path.join(ROOT, "gin_configs", "ablations", "*.gin")))


def test_ablation_files_combine_with_a_method_file_and_with_each_other(tmp_path):
    run_dir = str(tmp_path / "run")
    files = [f"--gin_file={f}" for f in ABLATION_FILES]
    proc = _train(
        "--gin_file=gin_configs/snip.gin",
        *files,
        "--gin_bindings=training.steps = 1",
        *TINY,
        f"--output_dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {os.path.basename(f)[:-4] for f in ABLATION_FILES} == {"shuffle", "reinit", "invert"}
    assert _procs.results(run_dir)["ablations"] == ["shuffle", "reinit", "invert"]
    with open(os.path.join(run_dir, "pruning.json")) as f:
        assert json.load(f)["ablations"] == ["shuffle", "reinit", "invert"]


def test_synflow_shuffled_keeps_the_layer_densities_of_synflow(tmp_path):
    # SPEC §3: shuffle preserves per-layer counts exactly; positions change.
    common = ["--gin_file=gin_configs/synflow.gin", "--gin_bindings=training.steps = 1", *TINY]
    plain, shuffled = str(tmp_path / "plain"), str(tmp_path / "shuffled")
    assert _train(*common, f"--output_dir={plain}").returncode == 0
    proc = _train(
        *common, "--gin_file=gin_configs/ablations/shuffle.gin", f"--output_dir={shuffled}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _procs.results(plain)["layer_density"] == _procs.results(shuffled)["layer_density"]
    with (
        np.load(os.path.join(plain, "masks.npz")) as a,
        np.load(os.path.join(shuffled, "masks.npz")) as b,
    ):
        assert any(not np.array_equal(a[k], b[k]) for k in a.files)


ALL_GIN_FILES = sorted(glob.glob(os.path.join(ROOT, "gin_configs", "**", "*.gin"), recursive=True))


@pytest.mark.parametrize("gin_file", ALL_GIN_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_gin_file_parses_into_valid_settings(gin_file):
    import gin

    from tfprune import train
    from tfprune.cli import parse_gin

    gin.clear_config()
    try:
        parse_gin([gin_file], [])
        train.experiment_configurable().validate()
        train.training_configurable().validate()
    finally:
        gin.clear_config()


def test_short_resnet20_experiment_runs_one_step(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = _train(
        "--gin_file=gin_configs/snip.gin",
        "--gin_file=gin_configs/experiments/fashion_mnist_resnet20_short.gin",
        "--gin_bindings=training.steps = 1",
        *TINY,
        f"--output_dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = _procs.results(run_dir)
    assert results["model"] == "resnet20" and results["method"] == "snip"
    assert results["config"]["training"]["momentum"] == 0.9
    # One input channel: the first conv has 3*3*1*16 weights instead of CIFAR's 3*3*3*16.
    total = 270_896 - 3 * 3 * 2 * 16
    assert results["density_actual"] == pytest.approx(round(0.05 * total) / total, rel=1e-12)


# --- start-up: quiet TensorFlow, --help, the package's lazy imports ----------------------------

# What TensorFlow 2.21 prints at start-up on a CPU-only machine unless it is held back.
NOISE = ("cuda", "onednn", "cpu_feature_guard", "absl::initializelog")
# The user's environment, without the log level tests/_procs.py sets for every other test.
UNSET_LEVEL = {k: v for k, v in _procs.ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
SHARED_FLAGS = {
    "--gin_file": "Gin config file(s), applied in order.",
    "--gin_bindings": "Gin bindings, applied after the files.",
    "--output_dir": "tfprune.train: the run directory",
}


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(w in line.lower() for w in NOISE)]


@pytest.mark.parametrize(
    "module, own_flags",
    [("tfprune.train", ["--[no]overwrite"]), ("tfprune.sweep", ["--methods", "--densities"])],
)
def test_help_lists_the_shared_flags_and_starts_quietly(module, own_flags):
    proc = _procs.run(module, "--help", env=UNSET_LEVEL, timeout=120)
    assert _noise(proc.stderr) == [], proc.stderr
    for flag in own_flags:
        assert f"  {flag}: " in proc.stdout, proc.stdout
    for flag, text in SHARED_FLAGS.items():
        assert f"  {flag}: {text}" in proc.stdout, proc.stdout


def test_bad_input_run_starts_quietly():
    proc = _procs.run(
        "tfprune.train", "--gin_bindings=experiment.method = 'snip'",
        "--gin_bindings=experiment.density = 2.0", env=UNSET_LEVEL, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert _noise(proc.stderr) == [], proc.stderr
    assert proc.stderr.splitlines() == [
        "tfprune.train: error: density must be in (0, 1], got 2.0"
    ]


def test_kept_lines_drops_tensorflow_start_up_lines_below_the_level():
    from tfprune._startup import kept_lines

    text = (
        "output before any message\n"
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796166267.742333    4002 port.cc:153] oneDNN custom operations are on.\n"
        "W0000 00:00:1796166267.800000    4002 foo.cc:1] a warning\n"
        "E0000 00:00:1796166270.151365    4002 cuda_platform.cc:52] failed call to cuInit\n"
        "F0000 00:00:1796166270.151365    4002 main.cc:9] fatal\n"
        "W1201 23:06:40.707046 140274911546240 file_utils.py:394] absl's Python log, dated\n"
        "/x/y.py:3: UserWarning: from Python\n"
    )
    lines = text.splitlines(keepends=True)
    python = lines[6:]
    assert kept_lines(text, 0) == text
    assert kept_lines(text, 1) == "".join([lines[0], *lines[3:6], *python])
    assert kept_lines(text, 2) == "".join([lines[0], *lines[4:6], *python])
    assert kept_lines(text, 3) == "".join([lines[0], lines[5], *python])
    assert kept_lines(text, 4) == "".join([lines[0], *python])


def test_quiet_tensorflow_keeps_the_users_level(monkeypatch):
    from tfprune._startup import quiet_tensorflow

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


_PACKAGE_IMPORTS = """
import os, sys
if sys.argv[1] == "-m":
    # What `python -m tfprune.<command>` does: the package is imported while argv[0] is "-m".
    sys.argv[0] = "-m"
    import tfprune
    assert "tensorflow" not in sys.modules, "the package imported TensorFlow"
    sys.argv[0] = "x.py"
    from tfprune import MaskedDense, prune, load_model
    assert prune is tfprune.prune and load_model is tfprune.deploy.load_model
    assert [n for n in tfprune.__all__ if getattr(tfprune, n) is None] == []
else:
    import tfprune
    # `import tfprune` alone is light (the report and a sweep's planning rely on it) ...
    assert "tensorflow" not in sys.modules, "the package imported TensorFlow"
    import keras
    import tfprune.layers
    # ... and tfprune's layers register themselves for keras.models.load_model.
    found = keras.saving.get_registered_object("tfprune>MaskedDense")
    assert found is sys.modules["tfprune.layers"].MaskedDense, found
    assert "tfprune.pruning" not in sys.modules
assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ, "a library import set the log level"
assert sorted(tfprune.__all__) == sorted(set(tfprune.__all__)) and "load_model" in dir(tfprune)
print("ok")
"""


@pytest.mark.parametrize("how", ["-m", "import"])
def test_package_import_leaves_the_environment_and_tensorflow_alone(how):
    proc = subprocess.run(
        [_procs.sys.executable, "-c", _PACKAGE_IMPORTS, how],
        cwd=ROOT, env=UNSET_LEVEL, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# What a console script (`tfprune-train`, ...) does before it runs its command: `sys.argv[0]`
# is the script's path while the package is imported.
_CONSOLE_IMPORT = """
import os, sys
sys.argv[0] = os.path.join("somewhere", "bin", "tfprune-train")
import tfprune._startup
assert "tensorflow" not in sys.modules, "the package imported TensorFlow"
assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ, "a library import set the log level"
print("ok")
"""


def test_a_console_script_imports_the_package_without_tensorflow():
    proc = subprocess.run(
        [_procs.sys.executable, "-c", _CONSOLE_IMPORT],
        cwd=ROOT, env=UNSET_LEVEL, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# --- gin files: a name that is not a file here is looked up among the shipped configs ----------

# The shipped configs of a source checkout: the top-level gin_configs/.
SHIPPED = os.path.join(ROOT, "gin_configs")


def test_the_shipped_configs_of_a_source_checkout_are_the_top_level_ones():
    from tfprune.cli import packaged_configs

    assert packaged_configs() == SHIPPED


@pytest.mark.parametrize(
    "given, shipped",
    [
        ("snip.gin", "snip.gin"),
        ("experiments/cifar10_resnet20.gin", "experiments/cifar10_resnet20.gin"),
        ("gin_configs/snip.gin", "snip.gin"),
        ("./gin_configs/ablations/../data/cifar10.gin", "data/cifar10.gin"),
    ],
)
def test_a_gin_file_not_found_here_is_the_shipped_one(given, shipped, tmp_path, monkeypatch):
    from tfprune.cli import check_gin_files, resolve_gin_file

    monkeypatch.chdir(tmp_path)
    assert resolve_gin_file(given) == os.path.join(SHIPPED, shipped)
    assert check_gin_files([given, given]) == [os.path.join(SHIPPED, shipped)] * 2


def test_a_gin_file_found_here_is_used_as_given(tmp_path, monkeypatch):
    from tfprune.cli import resolve_gin_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "snip.gin").write_text("experiment.density = 0.5\n")
    assert resolve_gin_file("snip.gin") == "snip.gin"
    monkeypatch.chdir(ROOT)
    assert resolve_gin_file("gin_configs/snip.gin") == "gin_configs/snip.gin"


@pytest.mark.parametrize(
    "given", ["nope.gin", "../snip.gin", "gin_configs", ".", "/no/such/dir/snip.gin"]
)
def test_a_gin_file_found_nowhere_stays_as_given(given, tmp_path, monkeypatch):
    from tfprune.cli import resolve_gin_file

    (tmp_path / "inner").mkdir()
    monkeypatch.chdir(tmp_path / "inner")
    assert resolve_gin_file(given) == given


def test_a_missing_gin_file_names_where_it_was_looked_for(tmp_path, monkeypatch):
    from tfprune.cli import check_gin_files
    from tfprune.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    for given, message in [
        (
            "gin_configs/nope.gin",
            f"gin file 'gin_configs/nope.gin' does not exist (looked for "
            f"{here}/gin_configs/nope.gin and {SHIPPED}/nope.gin)",
        ),
        (
            "experiments/nope.gin",
            f"gin file 'experiments/nope.gin' does not exist (looked for "
            f"{here}/experiments/nope.gin and {SHIPPED}/experiments/nope.gin)",
        ),
        ("/no/nope.gin", "gin file '/no/nope.gin' does not exist (looked for /no/nope.gin)"),
        (
            "../nope.gin",
            f"gin file '../nope.gin' does not exist (looked for {os.path.dirname(here)}/nope.gin)",
        ),
    ]:
        with pytest.raises(ConfigError) as error:
            check_gin_files(["snip.gin", given])
        assert str(error.value) == message


def test_shipped_configs_and_their_includes_parse_from_any_directory(tmp_path, monkeypatch):
    import gin

    from tfprune.cli import parse_gin

    monkeypatch.chdir(tmp_path)
    gin.clear_config()
    try:
        parse_gin(["snip.gin", "gin_configs/experiments/cifar10_resnet20.gin"], [])
        # snip.gin, then the experiment's includes (data/, models/, training/) over default.gin.
        settings = {
            name: gin.query_parameter(name)
            for name in (
                "experiment.method",
                "experiment.density",
                "experiment.dataset",
                "experiment.model",
                "experiment.examples_per_class",
                "training.epochs",
                "training.milestones",
            )
        }
    finally:
        gin.clear_config()
    assert settings == {
        "experiment.method": "snip",
        "experiment.density": 0.05,
        "experiment.dataset": "cifar10",
        "experiment.model": "resnet20",
        "experiment.examples_per_class": 10,
        "training.epochs": 160,
        "training.milestones": [80, 120],
    }


def test_the_gin_file_flag_holds_the_resolved_files(tmp_path, monkeypatch):
    # The sweep starts its cells with the flag's values (made absolute): they must name the
    # shipped files, not files of those names in the sweep's directory.
    import copy

    from absl import flags

    from tfprune.cli import GIN_FILES

    monkeypatch.chdir(tmp_path)
    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(
        ["prog", "--gin_file=default.gin", "--gin_file=ablations/shuffle.gin", "--gin_file=x.gin"]
    )
    assert values[GIN_FILES.name].value == [
        os.path.join(SHIPPED, "default.gin"),
        os.path.join(SHIPPED, "ablations", "shuffle.gin"),
        "x.gin",
    ]
