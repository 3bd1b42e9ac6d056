"""The scripts in examples/ run, on tiny shapes, and do what they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from _procs import ENV, ROOT

EXAMPLES = os.path.join(ROOT, "examples")


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _density(output: str) -> float:
    return float(re.search(r"density (\d\.\d+)", output).group(1))


def _masks_density(path: str) -> float:
    import tfprune
    from tfprune.pruning import get_masks

    masks = get_masks(tfprune.load_model(path))
    return sum(np.count_nonzero(m) for m in masks.values()) / sum(m.size for m in masks.values())


@pytest.mark.slow
def test_prune_applications(tmp_path):
    out = _run(
        "prune_applications.py",
        "--image_size=32",
        "--steps=1",
        "--batch_size=2",
        f"--output_dir={tmp_path}",
    )
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["mobilenet_v2", "resnet50"]
    for line, name in zip(lines, ("mobilenet_v2", "resnet50"), strict=True):
        assert _density(line) == pytest.approx(0.1, abs=1e-4)
        zeros, total = map(int, re.search(r"zeros (\d+) of (\d+)", line).groups())
        assert zeros >= round(0.9 * total)
        assert _masks_density(str(tmp_path / name / "model.keras")) == pytest.approx(
            0.1, abs=1e-4
        )
        assert os.path.exists(tmp_path / name / "saved_model" / "saved_model.pb")


def test_transformer_text(tmp_path):
    out = _run(
        "transformer_text.py",
        "--vocabulary=50",
        "--length=8",
        "--width=8",
        "--heads=2",
        "--examples=64",
        "--epochs=1",
        f"--output_dir={tmp_path}",
    )
    assert _density(out) == pytest.approx(0.1, abs=2e-3)
    assert "SavedModel takes int32 ids" in out
    difference = float(re.search(r"difference from Keras (\S+)", out).group(1))
    assert difference < 1e-4
    assert _masks_density(str(tmp_path / "model.keras")) == pytest.approx(_density(out), abs=1e-4)


def test_autoencoder_mse(tmp_path):
    out = _run(
        "autoencoder_mse.py",
        "--size=8",
        "--width=4",
        "--examples=32",
        "--epochs=2",
        f"--output_dir={tmp_path}",
    )
    assert _density(out) == pytest.approx(0.2, abs=2e-3)
    before, after = map(float, re.search(r"mse (\S+) -> (\S+)", out).groups())
    assert after < before
    assert os.path.getsize(tmp_path / "model.tflite") > 0
    assert _masks_density(str(tmp_path / "model.keras")) == pytest.approx(_density(out), abs=1e-4)
