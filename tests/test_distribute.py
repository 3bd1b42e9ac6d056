"""Distribution: pruning and training on two replicas give the single-device results.

MirroredStrategy runs on two logical CPU devices, which TensorFlow only sets up before its
first op, so those checks run in a process of their own (`tests/_mirrored.py`).
"""

import json
import os
import socket
import subprocess
import sys

import _procs
import numpy as np
import pytest
from _procs import ENV, ROOT
from _tolerance import approx

SCRIPT = os.path.join(ROOT, "tests", "_mirrored.py")


def _script(*args, timeout=600):
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(args[1]) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """LeNet-300-100 on one device and on two (a process of its own)."""
    return _script(
        "checks", str(tmp_path_factory.mktemp("mirrored") / "checks.json"), "lenet_300_100"
    )


@pytest.fixture(scope="module")
def resnet_checks(tmp_path_factory):
    """ResNet-20 on one device and on two: its mirrored steps take a minute to trace."""
    return _script("checks", str(tmp_path_factory.mktemp("mirrored") / "checks.json"), "resnet20")


def _model_checks(request, model):
    return request.getfixturevalue("resnet_checks" if model == "resnet20" else "checks")


RESNET_IS_SLOW = pytest.param("resnet20", marks=pytest.mark.slow)


def _metrics(history):
    """train loss, train accuracy, test loss, test accuracy of every epoch, in one list."""
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    return [h[k] for h in history for k in keys]


def test_two_replicas_give_the_single_device_masks(checks):
    assert checks["replicas_in_sync"] == 2
    assert checks["same_masks"] == {
        "lenet_300_100/magnitude": True,
        "lenet_300_100/random": True,
        "lenet_300_100/snip": True,
    }


@pytest.mark.slow
def test_two_replicas_give_the_single_device_masks_with_batch_norm(resnet_checks):
    assert resnet_checks["replicas_in_sync"] == 2
    assert resnet_checks["same_masks"] == {"resnet20/snip": True}


@pytest.mark.parametrize("model", ["lenet_300_100", RESNET_IS_SLOW])
def test_replicas_stay_identical_and_pruned_weights_stay_zero(request, model):
    mirrored = _model_checks(request, model)[model]["mirrored"]
    for path, replica in mirrored["replicas"].items():
        assert replica["copies"] == 2, path
        assert replica["masks_identical"] and replica["kernels_identical"], path
        assert replica["mask_unchanged"], path
        assert replica["pruned_effective_max"] == 0.0, path
    # BatchNorm moving statistics included: evaluation hands every replica the first one's.
    assert mirrored["differing_variables"] == []


def test_mirrored_training_matches_one_device_with_the_same_global_batch(checks):
    # No BatchNorm in LeNet: the two replicas' summed gradients are the one device's gradient
    # up to rounding, float64 rounding here (tests/_mirrored.py). The trainer takes each
    # example's loss in float32, which weights that close move by one rounding at most, so
    # the metrics, means of those losses, agree to float32's eps.
    one = _metrics(checks["lenet_300_100"]["default"]["history"])
    two = _metrics(checks["lenet_300_100"]["mirrored"]["history"])
    assert len(one) == len(two) == 2 * 4
    assert two == approx(one, np.float32, 1)


@pytest.mark.slow
def test_mirrored_xla_training_keeps_masks_and_zeros_and_matches_the_uncompiled(tmp_path):
    """Two replicas with `jit_compile=True`: XLA compiles each replica's forward and backward
    pass on that replica's device; the gradients' sum and the update run outside. Slow: a
    process on two devices tracing four training functions (1-3 min on a loaded two-core
    machine)."""
    result = _script("xla", str(tmp_path / "xla.json"))
    for path, replica in result["True"]["replicas"].items():
        assert replica["copies"] == 2, path
        assert replica["masks_identical"] and replica["kernels_identical"], path
        assert replica["mask_unchanged"], path
        assert replica["pruned_effective_max"] == 0.0, path
    assert result["True"]["differing_variables"] == []
    # Float64 networks: XLA's reordering moves the weights by float64 rounding, and the
    # metrics, means of float32 losses, by float32's eps (as in the test above).
    plain, compiled = _metrics(result["False"]["history"]), _metrics(result["True"]["history"])
    assert len(plain) == len(compiled) == 2 * 4
    assert compiled == approx(plain, np.float32, 1)


@pytest.mark.slow
def test_mirrored_resnet_differs_only_by_per_replica_batch_statistics(resnet_checks):
    # Each replica normalises its half of the batch with that half's statistics (as
    # PyTorch's DataParallel does), so the losses differ slightly from one device's.
    one = _metrics(resnet_checks["resnet20"]["default"]["history"])
    two = _metrics(resnet_checks["resnet20"]["mirrored"]["history"])
    assert len(one) == len(two) == 4
    assert (two[0], two[2]) == pytest.approx((one[0], one[2]), rel=1e-2)


@pytest.mark.slow
def test_mirrored_checkpoint_resumes_in_a_new_process(checks, tmp_path):
    """Slow: two more processes on two devices (25-45 s on a loaded two-core machine)."""
    run_dir = str(tmp_path / "run")
    stopped = _script("run", str(tmp_path / "first.json"), run_dir, "1")
    assert stopped == {"interrupted_at": 8}  # one epoch of 512 examples in batches of 64
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    results = _script("run", str(tmp_path / "second.json"), run_dir)
    assert [h["step"] for h in results["history"]] == [8, 16]
    # Deterministic: the resumed run is the uninterrupted mirrored run of the checks.
    assert _metrics(results["history"]) == _metrics(checks["lenet_300_100"]["mirrored"]["history"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_worker_processes_train_and_only_the_chief_writes(tmp_path):
    """MultiWorkerMirroredStrategy with two workers on localhost, beside a one-device run of
    the same configuration. Slow: three processes that each start TensorFlow (35-70 s on a
    loaded two-core machine)."""
    # Float64 networks (Keras reads floatx from $KERAS_HOME/keras.json), as in _mirrored.py.
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(
        json.dumps({"floatx": "float64", "backend": "tensorflow"})
    )
    env = dict(ENV, KERAS_HOME=str(keras_home))
    common = [
        "--gin_file=gin_configs/snip.gin",
        "--gin_bindings=experiment.train_limit = 512",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.epochs = 2",
        "--gin_bindings=training.batch_size = 64",
        "--gin_bindings=training.progress = False",
        "--gin_bindings=training.deterministic = True",
    ]
    run_dir, single_dir = str(tmp_path / "run"), str(tmp_path / "single")
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            _procs.start(
                "tfprune.train",
                *common,
                "--gin_bindings=experiment.strategy = 'multi_worker_mirrored'",
                f"--output_dir={run_dir}",
                env=dict(env, TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    single = _procs.start(
        "tfprune.train",
        *common,
        f"--output_dir={single_dir}",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    outputs = []
    for process in [*processes, single]:
        try:
            stdout, stderr = process.communicate(timeout=300)
        finally:
            process.kill()
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout.strip().splitlines()[-1])
    # Both workers report the same final model; only the chief wrote the run's files.
    assert outputs[0] == outputs[1]
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(single_dir, "results.json")) as f:
        reference = json.load(f)
    assert [h["step"] for h in results["history"]] == [8, 16]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        "ckpt-000000008",
        "ckpt-000000016",
    ]
    assert [n for n in os.listdir(run_dir) if n.startswith(".tmp")] == []
    # The global batch of 64 is split between the workers, each batch seen once: the same
    # training up to the order of the gradient sums, float64 rounding, so the metrics (means
    # of float32 losses) agree to float32's eps, as with two devices in one process.
    assert _metrics(results["history"]) == approx(_metrics(reference["history"]), np.float32, 1)
