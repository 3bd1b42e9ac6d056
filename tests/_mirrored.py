"""Runs tfprune on two logical CPU devices and prints what tests/test_distribute.py checks.

TensorFlow fixes its devices when it first runs an op, so the two devices are configured
here, in a process of their own, before anything else:

    python tests/_mirrored.py checks OUT.json MODEL [MODEL ...]
    python tests/_mirrored.py run OUT.json RUN_DIR [STOP_AFTER_POLLS]
    python tests/_mirrored.py xla OUT.json

The networks are float64: one device and two replicas sum each batch's gradients in different
orders, which in float64 moves the weights by float64 rounding only, so
tests/test_distribute.py can compare the two closely.
"""

import json
import os
import sys

import tensorflow as tf

(_CPU,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

keras.config.set_floatx("float64")

import tfprune  # noqa: E402
from tfprune import execute as experiment_lib  # noqa: E402
from tfprune.runner import RunContext  # noqa: E402
from tfprune.training import Interrupted, TrainConfig  # noqa: E402

DEVICES = ["/cpu:0", "/cpu:1"]
LIMITS = {"train_limit": 512, "test_limit": 256}
# The pruning methods compared on one and two devices, and the training of each model.
CHECKS = {
    "lenet_300_100": (("magnitude", "random", "snip"), {}),
    "resnet20": (("snip",), {"steps": "6it"}),
}


def _mirrored():
    return tf.distribute.MirroredStrategy(DEVICES)


def _context(strategy, model="lenet_300_100", **training):
    config = TrainConfig(
        **{"epochs": 2, "batch_size": 64, "momentum": 0.9, "weight_decay": 1e-4, **training},
        progress=False,
        deterministic=True,
    )
    return RunContext("fashion_mnist", model, 0, config, strategy, **LIMITS)


def _pruned(strategy, method, model="lenet_300_100", **training):
    ctx = _context(strategy, model, **training)
    network = ctx.build_model()
    data = ctx.pruning_data(10) if method == "snip" else None
    with strategy.scope():
        masks = tfprune.prune(network, method, 0.05, data, batch_size=64)
    return ctx, network, masks


def _replicas(strategy, variable):
    return [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]


def _train(strategy, model, tmp, **training):
    ctx, network, masks = _pruned(strategy, "snip", model, **training)
    state = ctx.trainer(network, tmp).run()
    replicas = {}
    for path, weight in tfprune.prunable_weights(network).items():
        mask_copies = _replicas(strategy, weight.mask)
        kernel_copies = _replicas(strategy, weight.kernel)
        replicas[path] = {
            "copies": len(mask_copies),
            "masks_identical": all(np.array_equal(mask_copies[0], m) for m in mask_copies),
            "kernels_identical": all(np.array_equal(kernel_copies[0], k) for k in kernel_copies),
            "mask_unchanged": bool(np.array_equal(mask_copies[0], masks[path])),
            "pruned_effective_max": float(
                max(
                    np.abs(k * m)[m == 0].max(initial=0)
                    for k, m in zip(kernel_copies, mask_copies, strict=True)
                )
            ),
        }
    differing = [
        v.path
        for v in network.variables
        if not all(np.array_equal(c, _replicas(strategy, v)[0]) for c in _replicas(strategy, v))
    ]
    return {"history": state.history, "replicas": replicas, "differing_variables": differing}


def checks(out, models):
    mirrored = _mirrored()
    default = tf.distribute.get_strategy()
    result = {"replicas_in_sync": mirrored.num_replicas_in_sync, "same_masks": {}}
    for model in models:
        for method in CHECKS[model][0]:
            one = _pruned(default, method, model)[2]
            two = _pruned(mirrored, method, model)[2]
            result["same_masks"][f"{model}/{method}"] = all(
                np.array_equal(one[p], two[p]) for p in one
            )
    tmp = os.path.dirname(out)
    for model in models:
        training = CHECKS[model][1]
        result[model] = {
            name: _train(strategy, model, os.path.join(tmp, f"{model}-{name}"), **training)
            for name, strategy in (("default", default), ("mirrored", mirrored))
        }
    with open(out, "w") as f:
        json.dump(result, f)


def xla(out):
    """LeNet-300-100 trained on the two devices without and with XLA (`jit_compile`)."""
    mirrored = _mirrored()
    tmp = os.path.dirname(out)
    result = {
        str(jit): _train(
            mirrored, "lenet_300_100", os.path.join(tmp, f"xla-{jit}"), jit_compile=jit
        )
        for jit in (False, True)
    }
    with open(out, "w") as f:
        json.dump(result, f)


def run(out, run_dir, stop_after=None):
    """A whole experiment (snip, LeNet) on the two devices; asks to stop at the
    `stop_after`-th poll (one per compiled call: 8 iterations, an epoch, here)."""
    mirrored = _mirrored()
    experiment_lib.make_strategy = lambda name: mirrored
    experiment = tfprune.Experiment(method="snip", density=0.05, seed=0, **LIMITS)
    training = _context(mirrored).training
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return stop_after is not None and calls["n"] >= stop_after

    try:
        results = tfprune.run(experiment, training, run_dir, should_stop=should_stop)
    except Interrupted as interrupted:
        results = {"interrupted_at": interrupted.step}
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    if sys.argv[1] == "checks":
        checks(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "xla":
        xla(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
