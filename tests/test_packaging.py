"""The wheel: built from the repository, installed (not editable) into a fresh virtual
environment, its console scripts run from an empty directory with the shipped gin configs.

The fresh environment gets its dependencies from the one running the tests (a `.pth` file adds
that environment's site-packages after its own), so nothing is downloaded but the build backend
(setuptools, from the package index, as `pip wheel` fetches it). The tests check that the
installed copy is what runs, not this checkout. The two `tfprune-train` commands run at the
same time. The sweep's test, which starts two more processes, is marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest
from _procs import ROOT

from tfprune._startup import COMMANDS

# What TensorFlow 2.21 prints at start-up on a CPU-only machine unless it is held back.
NOISE = ("cuda", "onednn", "cpu_feature_guard", "absl::initializelog")
LENET_PRUNABLE = 266_200
TINY = [
    "--gin_bindings=training.steps = 2",
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.progress = False",
]


# The user's environment, without this checkout on the path or a TensorFlow log level.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}


class Installed:
    """A virtual environment holding the wheel, and an empty directory to run commands in."""

    def __init__(self, root, wheel: str):
        self.wheel = wheel
        self.venv = str(root / "venv")
        self.python = os.path.join(self.venv, "bin", "python")
        self.work = str(root / "work")
        os.makedirs(self.work)

    @property
    def site_packages(self) -> str:
        return sysconfig.get_path("purelib", vars={"base": self.venv, "platbase": self.venv})

    def start(self, program: str, *args: str) -> subprocess.Popen:
        """Starts `program` (a console script or `python`) of the environment in `self.work`."""
        return subprocess.Popen(
            [os.path.join(self.venv, "bin", program), *args],
            cwd=self.work,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    # Built from a copy: pip builds in the source tree, which it would leave a build/ in.
    source = root / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    wheels = root / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(wheels)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    built = os.listdir(wheels)
    assert len(built) == 1 and built[0].endswith("-py3-none-any.whl"), built
    installed = Installed(root, str(wheels / built[0]))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", installed.venv], check=True)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", installed.python, "install", installed.wheel]
        + ["--no-deps", "--no-index"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    # Only now the dependencies: pip saw no other tfprune while it installed this one.
    with open(os.path.join(installed.site_packages, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_path("purelib") + "\n")
    return installed


def test_the_wheel_ships_every_gin_config_and_the_console_scripts(installed):
    shipped = {
        os.path.relpath(os.path.join(directory, name), os.path.join(ROOT, "gin_configs"))
        for directory, _, names in os.walk(os.path.join(ROOT, "gin_configs"))
        for name in names
        if name.endswith(".gin")
    }
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode().split()
        packaged = {
            n.removeprefix("tfprune/gin_configs/")
            for n in names
            if n.startswith("tfprune/gin_configs/")
        }
        for name in packaged:
            with open(os.path.join(ROOT, "gin_configs", name), "rb") as f:
                assert wheel.read(f"tfprune/gin_configs/{name}") == f.read(), name
    # Not empty: the walk found the configs the README names.
    assert {"default.gin", "snip.gin", os.path.join("experiments", "cifar10_resnet20.gin")} <= (
        shipped
    )
    assert packaged == shipped
    assert scripts == [
        "[console_scripts]",
        *(
            part
            for name in sorted(COMMANDS)
            for part in (name, "=", f"tfprune._startup:{name.removeprefix('tfprune-')}")
        ),
    ]
    for name in COMMANDS:
        assert os.access(os.path.join(installed.venv, "bin", name), os.X_OK), name


@pytest.fixture(scope="module")
def commands(installed) -> dict[str, subprocess.CompletedProcess]:
    """`tfprune-train` twice at once from the empty directory (a short run and a missing
    config), then a program that imports the installed tfprune and reads the trained model."""
    done = _finish(
        {
            "train": installed.start(
                "tfprune-train", "--gin_file=snip.gin", *TINY, "--output_dir=run"
            ),
            "missing": installed.start("tfprune-train", "--gin_file=gin_configs/nope.gin"),
        }
    )
    model = os.path.join(installed.work, "run", "model.keras")
    return {**done, **_finish({"load": installed.start("python", "-c", _LOAD, model)})}


def _finish(started: dict[str, subprocess.Popen]) -> dict[str, subprocess.CompletedProcess]:
    done = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return done


_LOAD = """
import json, sys
import numpy as np
import tfprune, keras
import tfprune.layers  # registers the masked layers with Keras (import tfprune alone is light)
from tfprune.cli import packaged_configs
model = keras.models.load_model(sys.argv[1])
masked = [layer for layer in model.layers if hasattr(layer, "mask")]
registered = keras.saving.get_registered_object("tfprune>MaskedDense")
print(json.dumps({
    "file": tfprune.__file__,
    "configs": packaged_configs(),
    "registered": registered is sys.modules["tfprune.layers"].MaskedDense,
    "kept": sum(int(np.sum(layer.mask.numpy())) for layer in masked),
}))
"""


def test_tfprune_train_runs_a_shipped_config_from_an_empty_directory(installed, commands):
    proc = commands["train"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines() if any(w in line.lower() for w in NOISE)]
    assert noise == []
    run_dir = os.path.join(installed.work, "run")
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert (results["method"], results["dataset"], results["model"]) == (
        "snip",
        "fashion_mnist",
        "lenet_300_100",
    )
    assert results["steps"] == 2 and results["density_target"] == 0.05
    with np.load(os.path.join(run_dir, "masks.npz")) as masks:
        kept = sum(int(masks[k].sum()) for k in masks.files)
        assert sum(masks[k].size for k in masks.files) == LENET_PRUNABLE
    assert kept == round(0.05 * LENET_PRUNABLE)
    assert proc.stdout.splitlines()[-1] == (
        f"test_accuracy={results['test_accuracy']:.4f} "
        f"density={results['density_actual']:.5f} run_dir=run"
    )
    with open(os.path.join(run_dir, "operative_config.gin")) as f:
        assert "experiment.method = 'snip'" in f.read()


def test_a_program_imports_the_installed_package_and_reads_the_model(installed, commands):
    proc = commands["load"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(os.path.join(installed.work, "run", "masks.npz")) as masks:
        kept = sum(int(masks[k].sum()) for k in masks.files)
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "file": os.path.join(installed.site_packages, "tfprune", "__init__.py"),
        "configs": os.path.join(installed.site_packages, "tfprune", "gin_configs"),
        "registered": True,
        "kept": kept,
    }


def test_tfprune_train_names_where_it_looked_for_a_missing_config(installed, commands):
    proc = commands["missing"]
    assert proc.returncode == 2
    configs = os.path.join(installed.site_packages, "tfprune", "gin_configs")
    assert proc.stderr.splitlines() == [
        "tfprune.train: error: gin file 'gin_configs/nope.gin' does not exist (looked for "
        f"{installed.work}/gin_configs/nope.gin and {configs}/nope.gin)"
    ]


@pytest.mark.slow
def test_tfprune_sweep_passes_the_shipped_configs_to_its_cells(installed):
    # The cells run in the same empty directory: given `default.gin` as the sweep was, they
    # would find it; given `<empty directory>/default.gin`, they would fail.
    grid = ["--methods=snip", "--densities=0.05"]
    sweep = installed.start(
        "tfprune-sweep", "--gin_file=default.gin", *grid, *TINY, "--output_dir=sweep"
    )
    proc = _finish({"sweep": sweep})["sweep"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith("1/1 cells done, 0 failed, ")
    cell = os.path.join(installed.work, "sweep", "runs", "snip-none-d0.05-s0")
    with open(os.path.join(cell, "results.json")) as f:
        results = json.load(f)
    assert (results["method"], results["steps"], results["density_target"]) == ("snip", 2, 0.05)
