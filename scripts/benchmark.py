"""Benchmarks of tfprune, printed as tables of ratios against a baseline measured in the same run.

    python scripts/benchmark.py [--models=lenet_300_100,resnet20] [--repeats=5]

Scorers: each scorer's time on the pruning batch (10 examples per class, as SPEC §2 draws it)
as a multiple of one training step of the same network on the same batch, both measured warm
(after a first call that traces the TensorFlow functions; the first call's time is printed too),
and SynFlow's 100 rounds in seconds, end to end on a fresh network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfprune  # noqa: E402
from tfprune.training import TrainConfig, Trainer  # noqa: E402

SHAPES = {"lenet_300_100": (28, 28, 1), "resnet20": (32, 32, 3)}
NUM_CLASSES = 10
EXAMPLES_PER_CLASS = 10


def _pruning_batch(input_shape, seed=0):
    rng = np.random.default_rng(seed)
    n = NUM_CLASSES * EXAMPLES_PER_CLASS
    x = rng.random((n, *input_shape), dtype=np.float32)
    y = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), EXAMPLES_PER_CLASS)
    return x, rng.permutation(y)


def _timed(fn, repeats):
    start = time.perf_counter()
    fn()
    cold = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    return cold, statistics.median(warm)


def _train_step_seconds(model, x, y, repeats):
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    with tempfile.TemporaryDirectory() as directory:
        trainer = Trainer(
            model, TrainConfig(epochs=1, batch_size=len(x), momentum=0.9, progress=False),
            lambda epoch, skip: dataset, lambda: dataset, 1, directory,
        )
        xt, yt = tf.constant(x), tf.constant(y)

        def step():
            trainer._train_step(xt, yt)
            trainer._sums["count"].numpy()  # wait for the step to finish

        return _timed(step, repeats)[1]


def bench_scorers(model_names, repeats):
    print("\n## Scorers (warm time as a multiple of one training step on the same batch)\n")
    print("| network | train step (s) | method | first call (s) | warm (s) | × step |")
    print("|---|---|---|---|---|---|")
    synflow_rows = []
    for name in model_names:
        shape = SHAPES[name]
        x, y = _pruning_batch(shape)
        keras.utils.set_random_seed(0)
        model = tfprune.models.build(name, shape, NUM_CLASSES)
        step = _train_step_seconds(model, x, y, repeats)
        for method in tfprune.scorer_names():
            keras.utils.set_random_seed(0)
            scored = tfprune.models.build(name, shape, NUM_CLASSES)
            data = (x, y)
            cold, warm = _timed(
                lambda m=method, s=scored, d=data: tfprune.score(s, m, d), repeats
            )
            print(f"| {name} | {step:.4f} | {method} | {cold:.3f} | {warm:.4f} | "
                  f"{warm / step:.2f} |")
        if "synflow" in tfprune.scorer_names():
            keras.utils.set_random_seed(0)
            fresh = tfprune.models.build(name, shape, NUM_CLASSES)
            start = time.perf_counter()
            tfprune.prune(fresh, "synflow", 0.8**20, rounds=100)
            synflow_rows.append((name, time.perf_counter() - start))
    if synflow_rows:
        print("\n## SynFlow, 100 rounds to density 0.8^20, end to end on a fresh network\n")
        print("| network | seconds |")
        print("|---|---|")
        for name, seconds in synflow_rows:
            print(f"| {name} | {seconds:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet_300_100,resnet20")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    print(f"tfprune {tfprune.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores")
    bench_scorers(names, args.repeats)


if __name__ == "__main__":
    main()
