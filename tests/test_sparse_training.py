"""Pruning during training (SPEC §7): gradual magnitude pruning (`gmp`), SET (`set`) and RigL
(`rigl`), their schedules, their ablations and their runs, resumed or not."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import _procs
import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune import registry, streams
from tfprune.errors import ConfigError
from tfprune.experiment import Experiment, check, run
from tfprune.layers import MaskedDense, prunable_weights
from tfprune.pruning import erk_counts, reinitialize, select, shuffle_masks
from tfprune.sweep import cells
from tfprune.training import Callback, TrainConfig, Trainer, sparse
from tfprune.training.schedules import CubicSchedule, DropSchedule

SEED = 3
BATCH, STEPS_PER_EPOCH, EPOCHS = 16, 10, 3
WIDTHS = (12, 32, 16, 3)  # input, two hidden ReLU layers, logits
N = sum(a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:], strict=False))  # 944 weights
LENET_PRUNABLE = 266_200
TINY = [
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.progress = False",
]


def _model() -> keras.Model:
    keras.utils.set_random_seed(1)
    layers = [keras.Input((WIDTHS[0],))]
    for i, width in enumerate(WIDTHS[1:]):
        last = i == len(WIDTHS) - 2
        layers.append(MaskedDense(width, activation=None if last else "relu", name=f"fc{i + 1}"))
    return keras.Sequential(layers, name="mlp")


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS_PER_EPOCH, WIDTHS[0])).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(WIDTHS[0], WIDTHS[-1])), axis=1).astype(np.int32)
    return x, y


def _batch(step: int):
    """The batch of iteration `step`, as `_train_data` orders them (read independently of
    the trainer)."""
    x, y = _data()
    epoch, index = divmod(step, STEPS_PER_EPOCH)
    order = np.random.default_rng(epoch).permutation(len(x))[index * BATCH : (index + 1) * BATCH]
    return x[order].astype(np.float64), y[order]


def _trainer(output_dir, callbacks, model=None) -> Trainer:
    x, y = _data()

    def train_data(epoch, skip):
        order = np.random.default_rng(epoch).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(BATCH).skip(skip)

    def eval_data():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)

    config = TrainConfig(
        epochs=EPOCHS, learning_rate=0.1, momentum=0.9, progress=False, steps_per_execution=3
    )
    return Trainer(
        model or _model(),
        config,
        train_data,
        eval_data,
        STEPS_PER_EPOCH,
        str(output_dir),
        hook_steps=(),
        callbacks=callbacks,
    )


class _Seen(Callback):
    """Keeps, before the iterations `steps` (after the callbacks before it), each prunable
    kernel, its mask and its momentum buffer, and the biases."""

    def __init__(self, steps):
        self.steps, self.seen, self.biases = list(steps), {}, {}

    def hook_steps(self, trainer):
        return self.steps

    def on_step_begin(self, trainer, state):
        paths = [v.path for v in trainer.model.trainable_variables]
        buffers = dict(zip(paths, trainer.optimizer.momentums, strict=True))
        self.seen[state.step] = {
            path: (
                np.array(w.kernel.numpy()),
                np.array(w.mask.numpy()),
                np.array(buffers[w.kernel.path].numpy()),
            )
            for path, w in prunable_weights(trainer.model).items()
        }
        self.biases[state.step] = [np.array(layer.bias.numpy()) for layer in trainer.model.layers]


def _run_with(update, tmp_path):
    """Trains with `update` between two `_Seen` at its steps; returns what they saw."""
    steps = sorted(update.hook_steps(None))
    before, after = _Seen(steps), _Seen(steps)
    _trainer(tmp_path, [before, update, after]).run()
    return before, after


def _lowest_kept(magnitude: np.ndarray, mask: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` active weights of largest |θ| (boolean, the kernel's shape)."""
    active = np.flatnonzero(mask)
    order = np.argsort(-magnitude.ravel()[active], kind="stable")
    kept = np.zeros(mask.size, bool)
    kept[active[order[:keep]]] = True
    return kept.reshape(mask.shape)


def _float64_gradients(kernels: list, biases: list, x: np.ndarray, y: np.ndarray):
    """The MLP's mean cross-entropy gradients with respect to its (masked) kernels, in
    float64, and for each entry the sum of the magnitudes of the terms it is computed from
    (the same backward pass on magnitudes)."""
    activations, pre = [x], []
    for i, (w, b) in enumerate(zip(kernels, biases, strict=True)):
        z = activations[-1] @ w + b
        pre.append(z)
        activations.append(z if i == len(kernels) - 1 else np.maximum(z, 0.0))
    logits = activations[-1]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(logits.shape[1])[y]
    delta, size = (p - onehot) / len(x), (p + onehot) / len(x)
    grads, sizes = [None] * len(kernels), [None] * len(kernels)
    for i in reversed(range(len(kernels))):
        grads[i] = activations[i].T @ delta
        sizes[i] = np.abs(activations[i]).T @ size
        if i:
            relu = pre[i - 1] > 0
            delta = (delta @ kernels[i].T) * relu
            size = (size @ np.abs(kernels[i]).T) * relu
    return grads, sizes


# ---------------------------------------------------------------------------------------------
# SET and RigL (SPEC §7): counts kept, lowest |θ| dropped, growth at zero with fresh slots.


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_drop_and_grow_keeps_counts_drops_the_weakest_and_grows_at_zero(method, tmp_path):
    density = 0.25
    schedule = DropSchedule(drop_fraction=0.5, every=4, end=24, distribution="erk")
    update = sparse.for_method(method, schedule, density=density, seed=SEED)
    seen, after = _run_with(update, tmp_path)
    before, after = seen.seen, after.seen
    assert sorted(after) == [0, 4, 8, 12, 16, 20]
    # The start: random pruning with ERK counts and the run's seed, before the first update.
    start = tfprune.prune(_model(), "erk", density, seed=SEED)
    shapes = {path: m.shape for path, m in start.items()}
    counts = erk_counts(shapes, density)
    assert sum(counts.values()) == round(density * N)
    assert {p: int(m.sum()) for p, m in start.items()} == counts
    replaced = 0
    for step in sorted(after):
        fraction = 0.5 / 2 * (1 + math.cos(math.pi * step / 24))
        rng = streams.generator(SEED, "growth", step)
        kernels, masks = [], []
        grown_sets = {}
        for path, (kernel, mask, momentum) in before[step].items():
            mask = start[path] if step == 0 else mask
            new_kernel, new_mask, new_momentum = after[step][path]
            active = int(mask.sum())
            n = math.floor(fraction * active)
            # Each layer keeps its count exactly.
            assert int(new_mask.sum()) == active == counts[path]
            # The n active weights of lowest |θ| are dropped: the others all stay.
            kept = _lowest_kept(np.abs(kernel), mask, active - n)
            assert np.all(new_mask[kept] == 1)
            grown = (new_mask == 1) & ~kept
            assert int(grown.sum()) == n
            # Weights that were inactive start at zero with zeroed momentum; nothing else moved.
            new = (new_mask == 1) & (mask == 0)
            assert np.all(new_kernel[new] == 0) and np.all(new_momentum[new] == 0)
            assert np.array_equal(new_kernel[~new], kernel[~new])
            assert np.array_equal(new_momentum[~new], momentum[~new])
            replaced += int(new.sum())
            if method == "set":
                # Random growth from the `growth` stream of this iteration, layer by layer.
                draws = rng.random(mask.shape)
                expected = _lowest_kept(draws, ~kept, n)
                assert np.array_equal(grown, expected)
            kernels.append(kernel * mask)
            masks.append(mask)
            grown_sets[path] = (grown, ~kept)
        if method == "rigl":
            x, y = _batch(step)
            grads, sizes = _float64_gradients(
                [k.astype(np.float64) for k in kernels],
                [b.astype(np.float64) for b in seen.biases[step]],
                x,
                y,
            )
            for (grown, candidates), grad, size in zip(
                grown_sets.values(), grads, sizes, strict=True
            ):
                magnitude = np.abs(grad)
                # The gradient is the masked weights' (dense): inactive weights have one too.
                assert np.count_nonzero(magnitude[candidates]) > grown.sum()
                # The grown are the candidates of highest |∂L/∂θ| on this iteration's batch,
                # up to the float32 rounding of the gradient the update used.
                slack = tolerance(np.float32, 4 * sum(WIDTHS) + BATCH, float(size.max()))["atol"]
                others = candidates & ~grown
                assert magnitude[grown].min() >= magnitude[others].max() - 2 * slack
    assert replaced > 0
    # The overall density never changes: exactly that of the start.
    for step in after:
        assert sum(int(m.sum()) for _, m, _ in after[step].values()) == round(density * N)


def test_set_growth_is_seeded(tmp_path):
    schedule = DropSchedule(drop_fraction=0.5, every=4, end=24, distribution="uniform")
    finals = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        update = sparse.for_method("set", schedule, density=0.3, seed=seed)
        finals[name] = _run_with(update, tmp_path / name)[1].seen[20]
    assert all(np.array_equal(finals["a"][p][1], finals["b"][p][1]) for p in finals["a"])
    assert not all(np.array_equal(finals["a"][p][1], finals["c"][p][1]) for p in finals["a"])
    # Uniform: every layer at the density.
    assert [int(m.sum()) for _, m, _ in finals["a"].values()] == [
        round(0.3 * a * b) for a, b in zip(WIDTHS[:-1], WIDTHS[1:], strict=False)
    ]


def test_loss_gradients_of_a_batch_change_nothing_and_take_other_values(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((WIDTHS[0],)),
            MaskedDense(8, name="a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            MaskedDense(3, name="b"),
        ],
        name="bn_mlp",
    )
    trainer = _trainer(tmp_path, [], model)
    x, y = trainer.batch(13)
    np.testing.assert_array_equal(x.numpy(), _batch(13)[0].astype(np.float32))
    kernel, mask = model.get_layer("a").kernel, model.get_layer("a").mask
    half = np.zeros(tuple(mask.shape), np.float32)
    half[:6] = 1
    mask.assign(half)
    before = [np.array(v.numpy()) for v in model.variables]
    plain = trainer.loss_gradients(x, y)
    values = {kernel.path: kernel.numpy() * half, mask.path: np.ones_like(half)}
    dense = trainer.loss_gradients(x, y, values=values)
    # Nothing moved, BatchNorm's moving statistics included.
    for variable, value in zip(model.variables, before, strict=True):
        assert np.array_equal(variable.numpy(), value), variable.path
    # The masked weights get no gradient through the mask; with the mask at ones and the
    # kernel masked instead (the same network), every weight has its own.
    assert not np.any(plain[kernel.path][6:]) and np.all(dense[kernel.path][6:] != 0)
    np.testing.assert_array_equal(plain[kernel.path][:6], dense[kernel.path][:6])
    # The loss is the batch mean of the training cross-entropy, BatchNorm on batch statistics.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), True)
        )
    direct = tape.gradient(loss, model.get_layer("b").kernel)
    bound = tolerance(np.float32, 4 * (WIDTHS[0] + 8 + BATCH), float(np.abs(direct).max()))
    np.testing.assert_allclose(plain[model.get_layer("b").kernel.path], direct, **bound)
    for bad, message in (
        ({"nowhere": 0.0}, "no variable of the model has the path 'nowhere'"),
        ({mask.path: np.ones(3)}, f"a value of shape (3,) for {mask.path}, whose shape is"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            trainer.loss_gradients(x, y, values=bad)
    with pytest.raises(ConfigError, match="iteration 30 is outside training"):
        trainer.batch(30)


def test_drop_schedule_steps_and_fraction():
    schedule = DropSchedule.from_options(
        {"drop_fraction": 0.3, "every": 100, "end": 0.75, "distribution": "erk"}, 1000, 100
    )
    assert schedule.end == 750 and schedule.steps() == list(range(0, 750, 100))
    assert schedule.fraction(0) == 0.3 and schedule.fraction(375) == pytest.approx(0.15)
    assert DropSchedule.count(0.3, 99) == 29  # ⌊29.7⌋, as RigL's code rounds
    assert schedule.last_step == 700


# ---------------------------------------------------------------------------------------------
# gmp (SPEC §7): d_t = d_f + (1 − d_f)(1 − (t − t_0)/(nΔt))³, exact counts, magnitude kept.


def _cubic(step: int, final: float, begin: int, span: int) -> Fraction:
    final = Fraction(final)
    return final + (1 - final) * (1 - Fraction(step - begin, span)) ** 3


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_gmp_follows_the_cubic_schedule_with_exact_counts(scope, tmp_path):
    schedule = CubicSchedule(0.1, begin=3, end=20, every=4, scope=scope)
    assert schedule.steps() == [3, 7, 11, 15, 19] and schedule.last_step == 19
    before, after = (
        s.seen for s in _run_with(sparse.for_method("gmp", schedule, density=0.1), tmp_path)
    )
    for step in schedule.steps():
        density = _cubic(step, 0.1, 3, 16)
        sizes = {path: m.size for path, (_, m, _) in after[step].items()}
        kept = {path: int(m.sum()) for path, (_, m, _) in after[step].items()}
        if scope == "global":
            assert sum(kept.values()) == round(density * N)
        else:
            assert kept == {path: round(density * size) for path, size in sizes.items()}
        alive, dropped = [], []
        for path, (kernel, mask, _) in before[step].items():
            new_mask = after[step][path][1]
            # Pruned weights are never revived, and keep their values under the mask.
            assert np.all(new_mask <= mask)
            assert np.array_equal(after[step][path][0], kernel)
            magnitude = np.abs(kernel)
            if scope == "layer" and (mask > new_mask).any():
                assert magnitude[new_mask == 1].min() >= magnitude[mask > new_mask].max()
            alive.append(magnitude[new_mask == 1])
            dropped.append(magnitude[mask > new_mask])
        if scope == "global" and step > 3:
            assert np.concatenate(alive).min() >= np.concatenate(dropped).max()
    assert sum(int(m.sum()) for _, m, _ in after[19].values()) == round(0.1 * N)
    assert np.all([m.all() for _, m, _ in before[3].values()])  # dense until t_0


def test_gmp_invert_keeps_the_smallest_magnitudes(tmp_path):
    schedule = CubicSchedule(0.2, begin=0, end=20, every=10)
    update = sparse.for_method("gmp", schedule, density=0.2, ablations=("invert",))
    before, after = (s.seen for s in _run_with(update, tmp_path))
    for step in (10, 20):
        alive = [np.abs(k)[after[step][p][1] == 1] for p, (k, _, _) in before[step].items()]
        gone = [
            np.abs(k)[(m == 1) & (after[step][p][1] == 0)] for p, (k, m, _) in before[step].items()
        ]
        assert np.concatenate(alive).max() <= np.concatenate(gone).min()
    assert sum(int(m.sum()) for _, m, _ in after[20].values()) == round(0.2 * N)


@pytest.mark.parametrize("ablation", ["shuffle", "reinit"])
def test_gmp_ablations_act_on_the_final_mask_with_fresh_slots(ablation, tmp_path):
    schedule = CubicSchedule(0.2, begin=0, end=20, every=10)
    update = sparse.for_method("gmp", schedule, density=0.2, seed=SEED, ablations=(ablation,))
    before, after = (s.seen for s in _run_with(update, tmp_path))
    # Before the last update the mask is gmp's own.
    assert sum(int(m.sum()) for _, m, _ in before[20].values()) == round(_cubic(10, 0.2, 0, 20) * N)
    kernels = {path: k for path, (k, _, _) in before[20].items()}
    masks = {path: m for path, (_, m, _) in before[20].items()}
    final = select({p: np.abs(k).astype(np.float64) for p, k in kernels.items()}, masks, 0.2)
    if ablation == "shuffle":
        expected = shuffle_masks(final, SEED)
        assert not all(np.array_equal(expected[p], final[p]) for p in final)
        fresh = kernels  # revived positions keep the values they hold
    else:
        expected, reference = final, _model()
        reinitialize(reference, SEED)
        fresh = {path: w.kernel.numpy() for path, w in prunable_weights(reference).items()}
        assert not any(np.array_equal(fresh[p], kernels[p]) for p in kernels)
    for path, (kernel, mask, momentum) in after[20].items():
        assert np.array_equal(mask, expected[path])
        assert int(mask.sum()) == int(final[path].sum())
        assert np.array_equal(kernel, fresh[path])
        assert not np.any(momentum)
        assert np.any(before[20][path][2])
    # No ablation before the last update.
    for path, (kernel, _, _) in after[10].items():
        assert np.array_equal(kernel, before[10][path][0])


def test_cubic_schedule_positions_and_a_single_update():
    options = {"begin": 0.25, "end": "9it", "every": 2, "scope": "layer"}
    schedule = CubicSchedule.from_options(0.5, options, total_steps=12, steps_per_epoch=4)
    assert (schedule.begin, schedule.end, schedule.steps()) == (3, 9, [3, 5, 7, 9])
    assert schedule.density(5) == float(_cubic(5, 0.5, 3, 6))
    # Fewer than `every` iterations between begin and end: one update to the final density.
    once = CubicSchedule.from_options(0.5, {**options, "every": 100}, 12, 4)
    assert once.steps() == [3] and once.density(3) == 0.5 and once.last_step == 3


# ---------------------------------------------------------------------------------------------
# Refusals, before anything runs: one line each.


@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize("ablation", ["shuffle", "reinit", "invert"])
def test_ablations_of_set_and_rigl_are_refused_in_one_line(method, ablation):
    with pytest.raises(ConfigError) as refused:
        Experiment(method=method, density=0.1, ablations=(ablation,)).validate()
    message = str(refused.value)
    assert message.startswith(f"ablation {ablation!r} does not apply to {method}: its mask is ")
    assert "\n" not in message
    with pytest.raises(ConfigError):
        sparse.for_method(method, DropSchedule(0.3, 100, 750), density=0.1, ablations=[ablation])


def test_gmp_takes_every_ablation_and_the_registry_says_so():
    for ablation in registry.ABLATIONS:
        Experiment(method="gmp", density=0.1, ablations=(ablation,)).validate()
    assert registry.get("gmp").ablations == registry.ABLATIONS
    assert registry.get("set").ablations == registry.get("rigl").ablations == ()
    for name in ("gmp", "set", "rigl"):
        assert registry.get(name).kind == registry.DURING_TRAINING
        assert not registry.get(name).needs_data


def test_the_sweep_plans_only_the_cells_that_can_run():
    grid, skipped = cells(["gmp", "set", "rigl"], [0.1], [(), ("shuffle",)], [0])
    assert [(c["method"], c["ablations"]) for c in grid] == [
        ("gmp", ()),
        ("gmp", ("shuffle",)),
        ("set", ()),
        ("rigl", ()),
    ]
    assert skipped == ["set takes no shuffle ablation", "rigl takes no shuffle ablation"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prune_step": "5it"}, "rigl changes its masks during training on its own schedule"),
        ({"rounds": 3}, "experiment.rounds does not apply to rigl"),
        (
            {"allocation": "erk"},
            "rigl changes its masks during training: choose how it treats the layers in "
            "experiment.method_options (drop_fraction, every, end, distribution), not with "
            "scope or allocation 'erk'",
        ),
        ({"scope": "layer"}, "not with scope or allocation 'layer'"),
        (
            {"method_options": {"distribution": "ratio_of:snip"}},
            "rigl option distribution must be erk or uniform (also spelled layer), got "
            "'ratio_of:snip'",
        ),
        ({"method_options": {"drop_fraction": 1.5}}, "rigl option drop_fraction must be in"),
        ({"method_options": {"every": 0}}, "rigl option every must be a positive integer"),
        ({"method_options": {"end": 1.5}}, "rigl option end must be a fraction of training"),
        ({"method_options": {"end": "500it"}}, "rigl option end='500it' is iteration 500, after"),
        ({"method_options": {"temperature": 2.0}}, "method 'rigl' takes no option 'temperature'"),
    ],
)
def test_bad_settings_of_a_method_during_training_are_refused(changes, message):
    experiment = Experiment(method="rigl", density=0.1, train_limit=256, **changes)
    with pytest.raises(ConfigError) as refused:
        check(experiment, TrainConfig(steps="10it", progress=False))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_sweep_checks_these_methods_without_tensorflow():
    script = textwrap.dedent(
        """
        import sys
        from tfprune import sweep
        base, switched, training = sweep.base_configuration(
            ["gin_configs/default.gin"], ["training.steps = 8"]
        )
        grid, _ = sweep.cells(["gmp", "set", "rigl"], [0.1], [()], [0])
        sweep.check_cells(base, switched, training, grid)
        bad = [{**grid[0], "method": "rigl", "ablations": ("shuffle",)}]
        try:
            sweep.check_cells(base, switched, training, bad)
        except Exception as error:
            print(error)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print("heavy:", heavy[:3])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=_procs.ROOT,
        env=_procs.ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    refused, heavy = done.stdout.strip().splitlines()[-2:]
    assert refused.startswith("cell rigl-shuffle-d0.1-s0: ablation 'shuffle' does not apply to ")
    assert heavy == "heavy: []"


def test_gmp_end_before_begin_is_refused():
    experiment = Experiment(
        method="gmp", density=0.1, train_limit=256, method_options={"begin": 0.5, "end": 0.2}
    )
    with pytest.raises(ConfigError, match="gmp option end=0.2 .iteration 2. is before begin"):
        check(experiment, TrainConfig(steps="10it", progress=False))


def test_rigl_with_invert_is_refused_on_the_command_line(tmp_path):
    proc = _procs.run(
        "tfprune.train",
        "--gin_file=gin_configs/rigl.gin",
        "--gin_bindings=experiment.ablations = ['invert']",
        *TINY,
        f"--output_dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfprune.train: error: ablation 'invert' does not apply to rigl: ")
    assert "its mask is never fixed at one step" in last
    assert not os.path.exists(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# Runs: the command line end to end, and a resumed run equal to an uninterrupted one.


@pytest.mark.parametrize(
    "gin_file, extra",
    [
        ("gmp.gin", ["--gin_file=gin_configs/ablations/shuffle.gin"]),
        ("set.gin", []),
        ("rigl.gin", []),
    ],
)
def test_each_method_runs_from_the_command_line(gin_file, extra, tmp_path):
    run_dir = str(tmp_path / "run")
    proc = _procs.run(
        "tfprune.train",
        f"--gin_file=gin_configs/{gin_file}",
        *extra,
        "--gin_bindings=training.steps = '6it'",
        "--gin_bindings=experiment.method_options = {'every': 2}",
        *TINY,
        f"--output_dir={run_dir}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = _procs.results(run_dir)
    method = gin_file[:-4]
    assert results["method"] == method and results["steps"] == 6
    assert results["density_target"] == 0.05
    # The final density is the target, exactly round(d * N) weights.
    with np.load(os.path.join(run_dir, "masks.npz")) as data:
        masks = {k: data[k] for k in data.files}
    assert sum(int(m.sum()) for m in masks.values()) == round(0.05 * LENET_PRUNABLE)
    assert results["density_actual"] == round(0.05 * LENET_PRUNABLE) / LENET_PRUNABLE
    if method == "gmp":
        # begin 1 (⌊0.25 · 6⌋), end 4: updates at 1 and 3; shuffled at 3.
        assert results["ablations"] == ["shuffle"]
        assert (results["prune_step"], results["rounds"]) == (3, 2)
    else:
        # ERK counts from the start, kept through the updates at 0 and 2 (end ⌊0.75 · 6⌋).
        counts = erk_counts({p: m.shape for p, m in masks.items()}, 0.05)
        assert {p: int(m.sum()) for p, m in masks.items()} == counts
        assert (results["prune_step"], results["rounds"]) == (2, 2)
    assert results["mask_schedule"]["every"] == 2


@pytest.mark.parametrize("method", ["rigl", pytest.param("gmp", marks=pytest.mark.slow)])
def test_a_resumed_run_ends_with_the_masks_of_an_uninterrupted_one(method, tmp_path):
    from tfprune.training import Interrupted

    experiment = Experiment(
        method=method,
        density=0.1,
        train_limit=512,
        test_limit=128,
        method_options={"every": 2, **({"begin": 0.0} if method == "gmp" else {})},
    )
    training = TrainConfig(steps="24it", batch_size=64, progress=False, deterministic=True)
    whole = run(experiment, training, str(tmp_path / "whole"))
    polls = {"n": 0}

    def stop_at_poll_5():
        polls["n"] += 1
        return polls["n"] == 5

    with pytest.raises(Interrupted) as interrupted:
        run(experiment, training, str(tmp_path / "resumed"), should_stop=stop_at_poll_5)
    # Stopped in the middle of the mask updates (every 2 iterations until 18).
    assert 0 < interrupted.value.step < 18
    resumed = run(experiment, training, str(tmp_path / "resumed"))
    masks = {}
    for name in ("whole", "resumed"):
        with np.load(tmp_path / name / "masks.npz") as data:
            masks[name] = {k: data[k] for k in data.files}
    assert list(masks["whole"]) == list(masks["resumed"])
    for path in masks["whole"]:
        assert np.array_equal(masks["whole"][path], masks["resumed"][path]), path
    assert resumed["test_loss"] == whole["test_loss"]
    assert resumed["density_actual"] == whole["density_actual"] == round(0.1 * 266_200) / 266_200
