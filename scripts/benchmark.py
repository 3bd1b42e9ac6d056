"""Benchmarks of tfprune, printed as tables of ratios against a baseline measured in the same run.

    python scripts/benchmark.py [--models=lenet_300_100,resnet20] [--repeats=5]
        [--sections=scorers,export,train] [--threads=1] [--scorers=snip,grasp,synflow]

Scorers: each scorer's whole `tfprune.prune` call as a user makes it (its default rounds: 100
for SynFlow, in float64; the pruning batch of 10 examples per class, as SPEC §2 draws it), each
network and method in a fresh process: the first call (tracing included) and warm calls on the
same model, as multiples of one `model.fit` step of the same network at batch 128, measured
alternately with the calls in the same process; wall-clock and CPU time (on a busy machine the
CPU-time ratio is the steadier one), with the targets and the PyTorch reference.
`--models=resnet50` (scorers section only) adds SynFlow on keras.applications ResNet50 at
64×64×3, converted with `tfprune.masked`.

Export: inference latency of each network at density 0.05 (global magnitude pruning) against
the same network unpruned, on CPU, at batch 1 and 32: TFLite (float32) with the XNNPACK delegate
(`tf.lite.Interpreter`'s default op resolver) and with the built-in kernels only
(`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), each without and with
`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, and the SavedModel run by TensorFlow. The median
time of one call over `--repeats` measurements (each averaging enough calls to last ~50 ms).

Train: images/s of the compiled training step (the `Trainer`'s, batch 128, SGD with momentum
0.9 and weight decay 1e-4, one fixed batch) for the masked network at density 0.05 and for its
stock-Keras twin (`tfprune.strip`: `Dense`/`Conv2D` holding `kernel * mask`), each without and
with XLA (`training.jit_compile`) and built in float32 and under mixed bfloat16
(`training.precision`), the fastest of short measurements (~50 ms) alternating between the
eight, at least `--repeats` of each and at least 2 s of each in all (on a shared machine other
processes only ever add time); the input
pipeline alone (`tfprune.data.train_dataset` iterated without training: Fashion-MNIST, and for
ResNet-20 the CIFAR-10 augmentation on synthetic in-memory images); the fastest of three
epochs of `Trainer.run` end to end; and memory, each variant in a fresh process: resident memory
added by building the network, and the peak added by 30 training steps (Linux
`VmRSS`/`VmHWM`, which count TensorFlow's allocations too).

Fit: examples/s of `model.fit` (SGD with momentum 0.9, one fixed batch repeated) for the masked
network at density 0.05 against its stock twin (`tfprune.strip`), for the paper's networks
without and with XLA (`compile(jit_compile=...)`) in float32 and mixed bfloat16 (short
measurements, as for Train); then, without XLA, what the masks cost: the masked network, the
same network traced with the multiply by its masks left out (a diagnostic, whose pruned
weights are not masked) and the stock network, for the paper's networks in float32 and
bfloat16 and for keras.applications MobileNetV2 (32×32×3, batch 32) and a Transformer block
(Embedding, 4-head attention, 64 tokens, batch 32), both converted with `tfprune.masked`.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
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
from tfprune import registry  # noqa: E402
from tfprune.layers.precision import dtype_policy  # noqa: E402
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


def _step_runner(model, x, y, steps=1, weight_decay=0.0, jit_compile=False,
                 precision="float32"):
    """A function running `steps` iterations of the `Trainer`'s compiled step on (x, y)
    (without XLA unless `jit_compile`; `precision` must be the policy `model` was built under)."""
    dataset = tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(y)))
    trainer = Trainer(
        model,
        TrainConfig(epochs=1, batch_size=len(x), momentum=0.9, weight_decay=weight_decay,
                    progress=False, jit_compile=jit_compile, precision=precision),
        lambda epoch, skip: dataset, lambda: dataset, 1, tempfile.mkdtemp(),
    )
    batches = dataset.repeat(steps)

    def run():
        trainer.train_steps(batches, steps)  # returns once the steps are done

    return run


def _train_step_seconds(model, x, y, repeats):
    return _timed(_step_runner(model, x, y), repeats)[1]


#: Targets and the PyTorch reference (Synaptic-Flow's code, measured the same way), in training
#: steps of the same network, for a whole scoring call.
SCORER_TARGETS = {"snip": 2.0, "grasp": 6.0, "synflow": 10.0}
SCORER_PYTORCH = {"snip": 0.6, "grasp": 5.4, "synflow": 7.6}
RESNET50_SYNFLOW_TARGET = 30.0
SCORER_DENSITY = 0.1
FIT_BATCH = 128


def _stock_resnet20(shape, classes):
    """ResNet-20 from stock Keras layers (shortcuts added with `+`), for `tfprune.masked`."""
    inputs = keras.Input(shape)

    def conv(x, filters, kernel, strides=1):
        return keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)

    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(inputs, 16, 3)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage and not block else 1
            h = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(x, filters, 3, strides)))
            h = keras.layers.BatchNormalization()(conv(h, filters, 3))
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = keras.layers.BatchNormalization()(conv(x, filters, 1, strides))
            x = keras.layers.ReLU()(h + shortcut)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name="stock_resnet20")


SCORER_NETWORKS = {
    "resnet20": ((32, 32, 3), lambda s: tfprune.models.build("resnet20", s, NUM_CLASSES)),
    "stock_resnet20": ((32, 32, 3), lambda s: tfprune.masked(_stock_resnet20(s, NUM_CLASSES))),
    "lenet_300_100": ((28, 28, 1), lambda s: tfprune.models.build("lenet_300_100", s, NUM_CLASSES)),
    "resnet50": (
        (64, 64, 3),
        lambda s: tfprune.masked(
            keras.applications.ResNet50(
                weights=None, input_shape=s, classes=NUM_CLASSES, classifier_activation=None
            )
        ),
    ),
}


def _fit_step_runner(model, shape, steps):
    """Runs `steps` `model.fit` steps of a copy of `model` at batch FIT_BATCH."""
    x = np.random.default_rng(1).random((FIT_BATCH, *shape), dtype=np.float32)
    y = np.random.default_rng(2).integers(0, NUM_CLASSES, FIT_BATCH).astype(np.int32)
    copy = keras.models.clone_model(model)
    copy.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    copy.fit(dataset, epochs=1, verbose=0)  # traces the step
    return lambda: copy.fit(dataset, epochs=1, verbose=0)


def _clock():
    return time.perf_counter(), time.process_time()


def _since(start):
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _scorer_child(network, method, repeats, queue):
    """In a fresh process: the whole `tfprune.prune` call of `method` (its default rounds) on
    `network`, first (tracing included) and warm (the same model again, masks reset), and one
    `model.fit` step, measured alternately; seconds of wall and of CPU time (this process's
    threads), the medians of the warm calls and of the steps."""
    shape, build = SCORER_NETWORKS[network]
    keras.utils.set_random_seed(0)
    model = build(shape)
    data = _pruning_batch(shape) if registry.get(method).needs_data else None
    steps = 2 if network == "resnet50" else 4
    fit = _fit_step_runner(model, shape, steps)
    ones = {path: np.ones_like(mask) for path, mask in tfprune.get_masks(model).items()}
    step, calls = [], []
    for _ in range(repeats + 1):
        start = _clock()
        fit()
        step.append(tuple(t / steps for t in _since(start)))
        tfprune.assign_masks(model, ones)
        start = _clock()
        tfprune.prune(model, method, SCORER_DENSITY, data)
        calls.append(_since(start))
    queue.put(
        {
            "step": tuple(statistics.median(t[k] for t in step) for k in (0, 1)),
            "first": calls[0],
            "warm": tuple(
                statistics.median(t[k] for t in calls[1:]) if calls[1:] else float("nan")
                for k in (0, 1)
            ),
        }
    )


def _scorer_times(network, method, repeats):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_scorer_child, args=(network, method, repeats, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"scoring {network} with {method} failed (exit {process.exitcode})")
    return queue.get()


def bench_scorers(model_names, repeats, methods=None):
    """Each scorer's whole `prune` call (default rounds: 100 for SynFlow, in float64) against
    one `model.fit` step of the same network at batch 128, each in a fresh process."""
    networks = [n for n in ("resnet20", "stock_resnet20", "lenet_300_100") if n in model_names or
                (n == "stock_resnet20" and "resnet20" in model_names)]
    methods = methods or tfprune.scorer_names()
    print(f"\n## Scorers: one whole prune call (fresh process, tracing included; and warm) in "
          f"model.fit steps of the same network (batch {FIT_BATCH}), pruning batch "
          f"{NUM_CLASSES * EXAMPLES_PER_CLASS} examples, density {SCORER_DENSITY}, default "
          f"rounds; median of {repeats} warm calls and of the steps, measured alternately\n")
    print("Wall-clock ratios suffer most from other processes on a shared machine; the CPU-time "
          "ratios (this process's threads) suffer least.\n")
    print("| network | method | rounds | step wall (s) | first wall (s) | first × step | "
          "warm × step | step CPU (s) | first CPU × step | warm CPU × step | target | "
          "PyTorch | pass |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    cells = [(n, m) for n in networks for m in methods]
    if "synflow" in methods and "resnet50" in model_names:
        cells.append(("resnet50", "synflow"))
    for network, method in cells:
        # ResNet50's SynFlow takes minutes: its first call only.
        t = _scorer_times(network, method, 0 if network == "resnet50" else repeats)
        (step, step_cpu), (first, first_cpu), (warm, warm_cpu) = t["step"], t["first"], t["warm"]
        target = (RESNET50_SYNFLOW_TARGET if network == "resnet50"
                  else SCORER_TARGETS.get(method) if network != "lenet_300_100" else None)
        reference = SCORER_PYTORCH.get(method) if network.endswith("resnet20") else None
        verdict = "" if target is None else (
            "pass" if first / step <= target else
            "pass (CPU)" if first_cpu / step_cpu <= target else "fail"
        )
        print(f"| {network} | {method} | {registry.get(method).default_rounds} | "
              f"{step:.3f} | {first:.2f} | {first / step:.1f} | {warm / step:.1f} | "
              f"{step_cpu:.3f} | {first_cpu / step_cpu:.1f} | {warm_cpu / step_cpu:.1f} | "
              f"{'' if target is None else f'≤ {target:g}'} | "
              f"{'' if reference is None else reference} | {verdict} |", flush=True)


EXPORT_DENSITY = 0.05
EXPORT_BATCHES = (1, 32)


def _interleaved_seconds(runners, repeats, budget=0.05, summary=statistics.median, least=0.0):
    """Median (or `summary`) seconds of one call of each runner; measurements alternate between
    the runners (so that a change of machine load hits all of them alike), each averaging
    ~`budget` s; at least `repeats` measurements of each, and more until each runner has been
    measured for about `least` s (short measurements of a small network vary the most)."""
    calls, single = {}, {}
    for key, run in runners.items():
        run()
        start = time.perf_counter()
        run()
        single[key] = max(time.perf_counter() - start, 1e-6)
        calls[key] = max(1, int(budget / single[key]))
    measurement = max(max(budget, single[key] * calls[key]) for key in runners)
    times = {key: [] for key in runners}
    for _ in range(max(repeats, math.ceil(least / measurement))):
        for key, run in runners.items():
            start = time.perf_counter()
            for _ in range(calls[key]):
                run()
            times[key].append((time.perf_counter() - start) / calls[key])
    return {key: summary(values) for key, values in times.items()}


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


TRAIN_BATCH = 128
TRAIN_DENSITY = 0.05
MEMORY_STEPS = 30


# Each measurement of the training variants lasts about this long (seconds): on a busy machine
# a short measurement is more likely to find the processor free, and the fastest one counts.
VARIANT_BUDGET = 0.05
# ... and each variant is measured for at least this long in all (LeNet: ~40 measurements).
VARIANT_SECONDS = 2.0
# The training variants compared: (XLA, dtype policy).
TRAIN_VARIANTS = [(xla, precision) for xla in (False, True)
                  for precision in ("float32", "mixed_bfloat16")]
PRECISION_LABELS = {"float32": "fp32", "mixed_bfloat16": "bf16"}


def _train_networks(name, precision="float32"):
    """The masked network at TRAIN_DENSITY and its stock-Keras twin, same weights, built under
    the dtype policy `precision`."""
    shape = SHAPES[name]
    keras.utils.set_random_seed(0)
    with dtype_policy(precision):
        masked = tfprune.models.build(name, shape, NUM_CLASSES)
    tfprune.prune(masked, "magnitude", TRAIN_DENSITY)
    return {"masked": masked, "stock": tfprune.strip(masked)}


def _variant_rows(name, rate):
    """Table rows of `rate[variant, xla, precision]`: masked / stock for each (XLA, precision),
    with the masked network's XLA on / off and bf16 / fp32 speedups."""
    rows = []
    for xla, precision in TRAIN_VARIANTS:
        masked, stock = rate["masked", xla, precision], rate["stock", xla, precision]
        rows.append(
            f"| {name} | {'on' if xla else 'off'} | {PRECISION_LABELS[precision]} | "
            f"{masked:,.0f} | {stock:,.0f} | {masked / stock:.3f} | "
            f"{masked / rate['masked', False, precision]:.2f} | "
            f"{masked / rate['masked', xla, 'float32']:.2f} |"
        )
    return rows


def _train_batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((TRAIN_BATCH, *shape), dtype=np.float32)
    return x, rng.integers(0, NUM_CLASSES, TRAIN_BATCH).astype(np.int32)


def _status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(key)


def _memory_child(name, variant, queue):
    """In a fresh process: resident memory added by building `variant`, and the peak resident
    memory during training above the level after building (Linux: VmRSS, and VmHWM reset
    through /proc/self/clear_refs; the import of TensorFlow peaks above both otherwise)."""
    x, y = _train_batch(SHAPES[name])
    start = _status_mib("VmRSS")
    model = _train_networks(name)[variant]
    built = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    _step_runner(model, x, y, steps=MEMORY_STEPS, weight_decay=1e-4)()
    queue.put((built - start, _status_mib("VmHWM") - built))


def _memory(name, variant):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(name, variant, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _pipeline_images_per_second(name, batches):
    """Images/s of the training input pipeline iterated alone (no training)."""
    if name == "lenet_300_100":
        dataset = tfprune.data.train_dataset("fashion_mnist", TRAIN_BATCH, seed=0, epoch=0)
        label = "fashion_mnist"
    else:
        # CIFAR-10's preprocessing (normalisation, pad-4 crop, flip per example) on synthetic
        # in-memory images, so that the benchmark needs no download.
        rng = np.random.default_rng(0)
        n = TRAIN_BATCH * batches
        dataset = tfprune.data.arrays_dataset(
            rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, NUM_CLASSES, n),
            TRAIN_BATCH,
            like="cifar10",
            seed=0,
        )
        label = "cifar10 recipe, synthetic"
    dataset = dataset.take(batches)
    for _ in dataset.take(2):
        pass
    start = time.perf_counter()
    seen = sum(int(y.shape[0]) for _, y in dataset)
    return label, seen / (time.perf_counter() - start)


def _trainer_epoch_images_per_second(name, steps):
    """One epoch of `Trainer.run` on Fashion-MNIST (LeNet) end to end: data, compiled steps,
    metric reads, a 128-example evaluation and a checkpoint (without XLA, as the step it is
    compared with)."""
    from tfprune.runner import RunContext

    config = TrainConfig(epochs=1, batch_size=TRAIN_BATCH, progress=False, jit_compile=False)
    ctx = RunContext("fashion_mnist", name, 0, config, tf.distribute.get_strategy(),
                     train_limit=TRAIN_BATCH * steps, test_limit=TRAIN_BATCH)
    model = ctx.build_model()
    tfprune.prune(model, "magnitude", TRAIN_DENSITY)
    times = []
    with tempfile.TemporaryDirectory() as directory:
        ctx.trainer(model, os.path.join(directory, "warm")).run()  # traces the functions
        for i in range(3):
            trainer = ctx.trainer(model, os.path.join(directory, f"timed{i}"))
            start = time.perf_counter()
            trainer.run()
            times.append(time.perf_counter() - start)
    return TRAIN_BATCH * steps / min(times)


def bench_train(model_names, repeats):
    print(f"\n## Training step: masked layers against stock Keras layers (batch {TRAIN_BATCH}, "
          f"density {TRAIN_DENSITY}, CPU, fastest of at least {repeats} alternating measurements "
          f"and at least {VARIANT_SECONDS:g} s of each), "
          "without and with XLA (`training.jit_compile`), in float32 and mixed bfloat16 "
          "(`training.precision`)\n")
    print("| network | XLA | precision | masked (img/s) | stock (img/s) | masked / stock | "
          "masked: XLA / no XLA | masked: bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    loops, pipelines = [], []
    for name in model_names:
        x, y = _train_batch(SHAPES[name])
        steps = 10 if name == "lenet_300_100" else 2
        runners = {}
        for xla, precision in TRAIN_VARIANTS:
            for variant, model in _train_networks(name, precision).items():
                runners[variant, xla, precision] = _step_runner(
                    model, x, y, steps=steps, weight_decay=1e-4, jit_compile=xla,
                    precision=precision,
                )
        # The fastest of the alternating measurements: other processes only ever add time.
        seconds = _interleaved_seconds(
            runners, repeats, budget=VARIANT_BUDGET, summary=min, least=VARIANT_SECONDS
        )
        rate = {k: TRAIN_BATCH * steps / v for k, v in seconds.items()}
        print("\n".join(_variant_rows(name, rate)))
        label, pipeline = _pipeline_images_per_second(name, 200)
        pipelines.append((name, label, pipeline, rate["masked", False, "float32"]))
        if name == "lenet_300_100":
            loops.append((name, rate["masked", False, "float32"],
                          _trainer_epoch_images_per_second(name, 200)))
    print("\n## The input pipeline alone against the training step (masked, fp32, no XLA)\n")
    print("| network | input pipeline alone (img/s) | pipeline / step |")
    print("|---|---|---|")
    for name, label, pipeline, step in pipelines:
        print(f"| {name} | {pipeline:,.0f} ({label}) | {pipeline / step:.1f} |")
    if loops:
        print("\n## One epoch of Trainer.run against the compiled step alone\n")
        print("| network | compiled step (img/s) | Trainer.run epoch (img/s) | run / step |")
        print("|---|---|---|---|")
        for name, step, loop in loops:
            print(f"| {name} | {step:,.0f} | {loop:,.0f} | {loop / step:.2f} |")
    print(f"\n## Training memory (MiB of resident memory, each variant in a fresh process, "
          f"{MEMORY_STEPS} steps)\n")
    print("| network | variant | building the network | peak added by training |")
    print("|---|---|---|---|")
    for name in model_names:
        for variant in ("masked", "stock"):
            built, trained = _memory(name, variant)
            print(f"| {name} | {variant} | {built:.1f} | {trained:.1f} |")


def _fit_mobilenet_v2():
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=NUM_CLASSES, classifier_activation=None
    )


def _fit_transformer_block():
    ids = keras.Input((64,), dtype="int32")
    h = keras.layers.Embedding(5000, 128)(ids)
    attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=32)(h, h)
    h = keras.layers.LayerNormalization()(h + attended)
    ffn = keras.layers.Dense(512, activation="relu")(h)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dense(128)(ffn))
    logits = keras.layers.Dense(NUM_CLASSES)(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(ids, logits, name="transformer_block")


def _fit_networks(name, precision="float32"):
    """`(masked, stock, x, y, batch)`: the masked network at TRAIN_DENSITY and the stock network
    of the same weights (`strip`), for the paper's networks (built under the dtype policy
    `precision`) and for two Keras models that `tfprune.masked` converts."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if name in SHAPES:
        with dtype_policy(precision):
            masked = tfprune.models.build(name, SHAPES[name], NUM_CLASSES)
        x, y = _train_batch(SHAPES[name])
        batch = TRAIN_BATCH
    else:
        masked = tfprune.masked(FIT_NETWORKS[name]())
        batch = 32
        if name == "transformer_block":
            x = rng.integers(0, 5000, size=(batch, 64)).astype(np.int32)
        else:
            x = rng.random((batch, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, NUM_CLASSES, batch).astype(np.int32)
    tfprune.prune(masked, "magnitude", TRAIN_DENSITY)
    return masked, tfprune.strip(masked), x, y, batch


def _fit_runner(model, x, y, steps, jit_compile=False):
    """A function running one `model.fit` epoch of `steps` batches of (x, y)."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    return lambda: model.fit(dataset, epochs=1, verbose=0)


def bench_fit(model_names, repeats):
    print(f"\n## model.fit: masked layers against stock Keras layers (density {TRAIN_DENSITY}, "
          f"SGD with momentum 0.9, CPU, fastest of at least {repeats} alternating measurements "
          f"and at least {VARIANT_SECONDS:g} s of each), the "
          "paper's networks without and with XLA (`compile(jit_compile=...)`), in float32 and "
          "mixed bfloat16\n")
    print("| network | XLA | precision | masked (examples/s) | stock (examples/s) | "
          "masked / stock | masked: XLA / no XLA | masked: bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in model_names:
        steps = 20 if name == "lenet_300_100" else 4
        runners = {}
        for xla, precision in TRAIN_VARIANTS:
            masked, stock, x, y, batch = _fit_networks(name, precision)
            runners["masked", xla, precision] = _fit_runner(masked, x, y, steps, xla)
            runners["stock", xla, precision] = _fit_runner(stock, x, y, steps, xla)
        seconds = _interleaved_seconds(
            runners, repeats, budget=VARIANT_BUDGET, summary=min, least=VARIANT_SECONDS
        )
        print("\n".join(_variant_rows(name, {k: batch * steps / v for k, v in seconds.items()})))
    print(f"\n## What the masks cost under model.fit (no XLA): the masked network, and the same "
          f"network traced with the multiply by its masks left out (a diagnostic only: its "
          f"pruned weights are not masked), against the stock network; fastest of at least "
          f"{repeats} alternating measurements and at least {2 * VARIANT_SECONDS:g} s of each\n")
    print("| network | precision | batch | masked (examples/s) | stock (examples/s) | "
          "masked / stock | without the multiply / stock |")
    print("|---|---|---|---|---|---|---|")
    costs = [(name, precision) for name in model_names for precision in PRECISION_LABELS]
    costs += [(name, "float32") for name in FIT_NETWORKS]
    for name, precision in costs:
        masked, stock, x, y, batch = _fit_networks(name, precision)
        steps = 20 if name == "lenet_300_100" else 4
        runners = {
            "masked": _fit_runner(masked, x, y, steps),
            "stock": _fit_runner(stock, x, y, steps),
            "unmultiplied": _unmultiplied_fit_runner(name, precision, steps),
        }
        seconds = _interleaved_seconds(
            runners, repeats, budget=VARIANT_BUDGET, summary=min, least=2 * VARIANT_SECONDS
        )
        rate = {k: batch * steps / v for k, v in seconds.items()}
        print(f"| {name} | {PRECISION_LABELS[precision]} | {batch} | {rate['masked']:,.0f} | "
              f"{rate['stock']:,.0f} | {rate['masked'] / rate['stock']:.3f} | "
              f"{rate['unmultiplied'] / rate['stock']:.3f} |", flush=True)


def _unmultiplied_fit_runner(name, precision, steps):
    """`_fit_runner` of the masked network traced with `MaskedLayer.masked` returning the
    weight as it is: the masked layers without their multiply, everything else the same."""
    from tfprune.layers import MaskedLayer

    masked, _, x, y, _ = _fit_networks(name, precision)
    run = _fit_runner(masked, x, y, steps)
    real = MaskedLayer.masked
    MaskedLayer.masked = lambda self, weight: weight
    try:
        run()  # traces the step
    finally:
        MaskedLayer.masked = real
    return run


FIT_NETWORKS = {"mobilenet_v2": _fit_mobilenet_v2, "transformer_block": _fit_transformer_block}
SECTIONS = ("scorers", "export", "train", "fit")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet_300_100,resnet20")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=1, help="TFLite interpreter threads")
    parser.add_argument("--scorers", default="",
                        help="comma-separated methods of the scorers section (default: all); "
                        "--models=...,resnet50 adds SynFlow on ResNet50 at 64x64")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in SHAPES and n != "resnet50"]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    print(f"tfprune {tfprune.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores")
    if "scorers" in sections:
        bench_scorers(names, args.repeats, [m for m in args.scorers.split(",") if m])
    # ResNet50 is measured by the scorers section only.
    paper = [n for n in names if n in SHAPES]
    if "export" in sections:
        bench_export(paper, args.repeats, args.threads)
    if "train" in sections:
        bench_train(paper, args.repeats)
    if "fit" in sections:
        bench_fit(paper, args.repeats)


if __name__ == "__main__":
    main()
