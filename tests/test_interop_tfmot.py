"""tfprune masks handed to a tf_keras model pruned with tfmot (the optional `tfmot` extra).

Importing tensorflow_model_optimization switches the whole process to legacy Keras
(`TF_USE_LEGACY_KERAS=1`), so this module never imports it: the checks run in a subprocess,
and the module skips when the extra is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

if importlib.util.find_spec("tensorflow_model_optimization") is None:
    pytest.skip("the tfprune[tfmot] extra is not installed", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = textwrap.dedent(
    """
    import json

    import keras
    import numpy as np

    import tfprune

    keras.utils.set_random_seed(0)
    source = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    masks = tfprune.prune(source, "magnitude", 0.1)

    from tfprune.errors import ModelError
    from tfprune.interop import tfmot as bridge
    import tensorflow_model_optimization as tfmot
    import tf_keras

    inputs = tf_keras.Input((28, 28, 1), name="input")
    x = tf_keras.layers.Flatten(name="flatten")(inputs)
    x = tf_keras.layers.Dense(300, activation="relu", name="fc1")(x)
    x = tf_keras.layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = tf_keras.layers.Dense(10, name="fc")(x)
    model = tf_keras.Model(inputs, outputs)

    pruned = bridge.prune_with_masks(model, masks)
    wrappers = bridge.pruning_wrappers(pruned)
    out = {"wrapped": sorted(wrappers)}

    def check(stage):
        for key, mask in masks.items():
            wrapper = wrappers[bridge.layer_name(key)]
            weight, mask_var, _ = wrapper.pruning_vars[0]
            assert np.array_equal(mask_var.numpy(), mask), (stage, key)
            assert np.all(weight.numpy()[mask == 0] == 0), (stage, key)

    check("assigned")
    before = {k: w.layer.kernel.numpy().copy() for k, w in wrappers.items()}
    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    pruned.compile(
        tf_keras.optimizers.SGD(0.1),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pruned.fit(x, y, epochs=2, batch_size=64, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    check("trained")
    out["changed"] = all(
        not np.array_equal(before[k], w.layer.kernel.numpy()) for k, w in wrappers.items()
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    out["zeros"] = {
        layer.name: int(np.sum(layer.kernel.numpy() == 0))
        for layer in stripped.layers if layer.name in wrappers
    }
    out["mask_zeros"] = {
        bridge.layer_name(k): int(np.sum(m == 0)) for k, m in masks.items()
    }
    out["layer_name"] = [bridge.layer_name("block/fc1/kernel"), bridge.layer_name("fc2")]
    errors = []
    for bad in ({"nope/kernel": masks["fc1/kernel"]}, {"fc1/kernel": masks["fc2/kernel"]},
                {"fc1/kernel": masks["fc1/kernel"] * 2}):
        try:
            bridge.apply_masks(pruned, bad)
        except ModelError as error:
            errors.append(str(error))
    out["errors"] = errors
    print("RESULT " + json.dumps(out))
    """
)


def test_tfprune_masks_drive_tfmot_pruning_and_survive_training(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["wrapped"] == ["fc", "fc1", "fc2"]
    assert out["changed"], "training should have changed the kept weights"
    # tfmot's strip_pruning leaves exactly tfprune's pruned weights at zero.
    assert out["zeros"] == out["mask_zeros"]
    assert out["layer_name"] == ["fc1", "fc2"]
    assert len(out["errors"]) == 3
    assert "not a pruned layer" in out["errors"][0]
    assert "shape" in out["errors"][1]
    assert "0 and 1" in out["errors"][2]
