"""Benchmarks of tfprune, printed as tables of ratios against a baseline measured in the same run.

    python scripts/benchmark.py [--models=lenet_300_100,resnet20] [--repeats=5]
        [--sections=scorers,export] [--threads=1]

Scorers: each scorer's time on the pruning batch (10 examples per class, as SPEC §2 draws it)
as a multiple of one training step of the same network on the same batch, both measured warm
(after a first call that traces the TensorFlow functions; the first call's time is printed too),
and SynFlow's 100 rounds in seconds, end to end on a fresh network.

Export: inference latency of each network at density 0.05 (global magnitude pruning) against
the same network unpruned, on CPU, at batch 1 and 32: TFLite (float32) with the XNNPACK delegate
(`tf.lite.Interpreter`'s default op resolver) and with the built-in kernels only
(`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), each without and with
`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, and the SavedModel run by TensorFlow. The median
time of one call over `--repeats` measurements (each averaging enough calls to last ~50 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

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


EXPORT_DENSITY = 0.05
EXPORT_BATCHES = (1, 32)


def _interleaved_seconds(runners, repeats, budget=0.05):
    """Median seconds of one call of each runner; measurements alternate between the runners
    (so that a change of machine load hits all of them alike), each averaging ~`budget` s."""
    calls = {}
    for key, run in runners.items():
        run()
        start = time.perf_counter()
        run()
        calls[key] = max(1, int(budget / max(time.perf_counter() - start, 1e-6)))
    times = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            for _ in range(calls[key]):
                run()
            times[key].append((time.perf_counter() - start) / calls[key])
    return {key: statistics.median(values) for key, values in times.items()}


def _tflite_runner(path, batch, shape, resolver, threads):
    resolvers = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(
            model_path=path, num_threads=threads,
            experimental_op_resolver_type=getattr(resolvers, resolver),
        )
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, (batch, *shape))
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    output = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def _saved_model_runner(path, batch, shape):
    serve = tf.saved_model.load(path).signatures["serving_default"]
    x = tf.constant(np.random.default_rng(0).random((batch, *shape), dtype=np.float32))
    return lambda: serve(inputs=x)["logits"].numpy()


def bench_export(model_names, repeats, threads):
    print(f"\n## Export: inference latency at density {EXPORT_DENSITY} against the dense network "
          f"(CPU, {threads} thread(s))\n")
    print("| network | batch | runtime | dense (ms) | sparse (ms) | sparse / dense |")
    print("|---|---|---|---|---|---|")
    builtin = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    tflite_rows = [
        ("TFLite + XNNPACK", "AUTO", False),
        ("TFLite + XNNPACK, EXPERIMENTAL_SPARSITY", "AUTO", True),
        ("TFLite built-in kernels", builtin, False),
        ("TFLite built-in kernels, EXPERIMENTAL_SPARSITY", builtin, True),
    ]
    sizes = []
    with tempfile.TemporaryDirectory() as directory:
        for name in model_names:
            shape = SHAPES[name]
            keras.utils.set_random_seed(0)
            dense = tfprune.models.build(name, shape, NUM_CLASSES)
            keras.utils.set_random_seed(0)
            sparse = tfprune.models.build(name, shape, NUM_CLASSES)
            tfprune.prune(sparse, "magnitude", EXPORT_DENSITY)
            paths = {}
            for label, model in (("dense", dense), ("sparse", sparse)):
                for fmt, opt, suffix in (
                    ("tflite", False, ".tflite"),
                    ("tflite", True, "-sparsity.tflite"),
                    ("saved_model", False, "-saved_model"),
                ):
                    if label == "dense" and opt:
                        continue
                    path = os.path.join(directory, f"{name}-{label}{suffix}")
                    report = tfprune.export(model, path, fmt, sparsity=opt)
                    paths[label, fmt, opt] = path
                    if label == "sparse":
                        sizes.append((name, fmt + (" + sparsity" if opt else ""), report))
            for batch in EXPORT_BATCHES:
                runners = {}
                for _, resolver, opt in tflite_rows:
                    for label in ("dense",) * (not opt) + ("sparse",):
                        runners[label, resolver, opt] = _tflite_runner(
                            paths[label, "tflite", opt], batch, shape, resolver, threads
                        )
                for label in ("dense", "sparse"):
                    runners[label, "saved_model", False] = _saved_model_runner(
                        paths[label, "saved_model", False], batch, shape
                    )
                seconds = _interleaved_seconds(runners, repeats)
                rows = tflite_rows + [("SavedModel (TensorFlow)", "saved_model", False)]
                for runtime, resolver, opt in rows:
                    # The dense network converted without the sparsity option is the baseline.
                    base = seconds["dense", resolver, False]
                    timed = seconds["sparse", resolver, opt]
                    print(f"| {name} | {batch} | {runtime} | {base * 1e3:.3f} | "
                          f"{timed * 1e3:.3f} | {timed / base:.2f} |")
    print(f"\n## Export: sizes at density {EXPORT_DENSITY} against the dense network\n")
    print("| network | format | bytes | gzip bytes | bytes / dense | gzip / dense |")
    print("|---|---|---|---|---|---|")
    for name, fmt, report in sizes:
        print(f"| {name} | {fmt} | {report['file_bytes']:,} | {report['gzip_bytes']:,} | "
              f"{report['ratio']['file_bytes']:.3f} | {report['ratio']['gzip_bytes']:.3f} |")


SECTIONS = ("scorers", "export")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet_300_100,resnet20")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=1, help="TFLite interpreter threads")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    print(f"tfprune {tfprune.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores")
    if "scorers" in sections:
        bench_scorers(names, args.repeats)
    if "export" in sections:
        bench_export(names, args.repeats, args.threads)


if __name__ == "__main__":
    main()
