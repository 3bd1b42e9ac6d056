"""Baselines after training (SPEC §4): magnitude after training, lottery tickets with
rewinding, their ablations, pruning at a later step, and the snapshots they rely on."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import approx
from _toy import toy_problem, toy_trainer

from tfprune import execute as experiment_lib
from tfprune.errors import ConfigError
from tfprune.experiment import Experiment, run
from tfprune.layers import MaskedDense
from tfprune.pruning import load_masks, prune
from tfprune.runner import RunContext, snapshot_path
from tfprune.training import TrainConfig, Trainer, load_snapshot

N = 266_200  # prunable weights of LeNet-300-100
LIMITS = {"train_limit": 512, "test_limit": 256}
# 512 examples in batches of 128: 4 iterations an epoch, 8 in all. The learning rate halves
# after the first iteration, so a schedule restarted at 0 instead of resumed at k shows.
TRAIN = TrainConfig(epochs=2, progress=False, milestones=["1it"], gamma=0.5)
TOTAL, K = 8, 2
LR_AT_0, LR_AFTER = 0.1, 0.05  # in float32 both are 0.1 rounded once (halving is exact)
LAYERS = ("fc1", "fc2", "fc")


@pytest.fixture(scope="module")
def starts():
    """Records, for every `Trainer` the module runs, what its first iteration starts from."""
    records = []
    original = Trainer._before_step

    def before_step(self, state):
        if not getattr(self, "_start_recorded", False):
            self._start_recorded = True
            records.append(
                {
                    "dir": os.path.abspath(self.output_dir),
                    "step": state.step,
                    "iterations": int(self.optimizer.iterations.numpy()),
                    "lr": float(self.optimizer.learning_rate.numpy()),
                    "weights": {v.path: np.array(v.numpy()) for v in self.model.variables},
                }
            )
        original(self, state)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_before_step", before_step)
        yield records


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("after_training")


def _run(root, name, **fields):
    experiment = Experiment(**{**LIMITS, "shared_dir": str(root / "shared"), **fields})
    return run(experiment, TRAIN, str(root / name))


def _start(starts, run_dir):
    found = [r for r in starts if r["dir"] == os.path.abspath(run_dir)]
    assert len(found) == 1, f"{run_dir} was trained {len(found)} times"
    return found[0]


def _snapshot(path):
    with np.load(path) as data:
        return {str(p): data[f"v{i}"] for i, p in enumerate(data["paths"])}


def _results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def _trunk(root):
    (name,) = os.listdir(root / "shared")
    return root / "shared" / name


def _level_dir(root, level):
    return _trunk(root) / f"lottery-k{K}-r0.2" / f"level-{level:02d}"


def _dense_dir(root, rewind=K):
    # One shared dense run per rewind step k > 0 (`dense-k<k>`); `dense` for k = 0 or none.
    return _trunk(root) / ("dense" if not rewind else f"dense-k{rewind}")


def _kernels(variables):
    return {f"{layer}/kernel": variables[f"{layer}/kernel"] for layer in LAYERS}


def _top_magnitude(kernels, alive, count):
    """The global top-`count` |w| among the `alive` weights, computed here independently."""
    paths = list(alive)
    scores = np.concatenate(
        [np.where(alive[p] > 0, np.abs(kernels[p]), -np.inf).ravel() for p in paths]
    )
    order = np.argsort(-scores, kind="stable")
    # No tie at the threshold, so the expected mask does not hinge on a tie-breaking rule.
    assert scores[order[count - 1]] > scores[order[count]]
    flat = np.zeros(scores.size, np.float32)
    flat[order[:count]] = 1
    masks, start = {}, 0
    for p in paths:
        masks[p] = flat[start : start + alive[p].size].reshape(alive[p].shape)
        start += alive[p].size
    return masks


def _count(masks):
    return sum(int(m.sum()) for m in masks.values())


def _assert_starts_from(start, variables, masks, step, lr):
    """The run's first iteration was `step`, with the optimizer and schedule there, and the
    kernels and biases of `variables` bit for bit under `masks`."""
    assert start["step"] == step and start["iterations"] == step
    assert start["lr"] == approx(lr, np.float32, 1)
    for layer in LAYERS:
        for name in ("kernel", "bias"):
            path = f"{layer}/{name}"
            assert np.array_equal(start["weights"][path], variables[path]), path
        assert np.array_equal(start["weights"][f"{layer}/mask"], masks[f"{layer}/kernel"])


def _optimizer_iterations(run_dir, step):
    checkpoint = os.path.join(run_dir, "checkpoints", f"ckpt-{step:09d}")
    with open(os.path.join(checkpoint, "state.json")) as f:
        paths = json.load(f)["paths"]
    with np.load(os.path.join(checkpoint, "variables.npz")) as data:
        (index,) = [i for i, p in enumerate(paths) if p == "sgd/iteration"]
        return int(data[f"v{index}"])


@pytest.fixture(scope="module")
def lottery3(root, starts):
    return _run(root, "lottery3", method="lottery", density=0.8**3, rewind_step=f"{K}it")


# --- lottery ---------------------------------------------------------------------------------


def test_lottery_levels_have_exact_counts_and_nested_masks(root, lottery3):
    previous = {f"{layer}/kernel": None for layer in LAYERS}
    for level in (1, 2, 3):
        level_dir = _level_dir(root, level)
        masks = load_masks(str(level_dir / "masks.npz"))
        kept = round(0.8**level * N)
        assert _count(masks) == kept
        assert sum(m.size for m in masks.values()) == N
        results = _results(level_dir)
        assert results["level"] == level and results["kept"] == kept
        assert results["density_actual"] == kept / N
        assert results["rewind_step"] == K
        for path, mask in masks.items():
            if previous[path] is not None:
                assert np.all(mask <= previous[path]), f"level {level} revives weights in {path}"
        previous = masks
    # The run itself is level 3, adopted.
    assert lottery3["density_actual"] == round(0.8**3 * N) / N
    assert lottery3["shared_run"] == os.path.abspath(_level_dir(root, 3))
    adopted = load_masks(str(root / "lottery3" / "masks.npz"))
    for path, mask in load_masks(str(_level_dir(root, 3) / "masks.npz")).items():
        assert np.array_equal(adopted[path], mask)


def test_each_level_removes_the_lowest_final_magnitudes_of_the_previous_level(root, lottery3):
    parent_dir, alive = _dense_dir(root), None
    for level in (1, 2, 3):
        kernels = _kernels(_snapshot(snapshot_path(str(parent_dir), TOTAL)))
        if alive is None:  # the dense run keeps every weight
            alive = {p: np.ones(k.shape, np.float32) for p, k in kernels.items()}
        expected = _top_magnitude(kernels, alive, round(0.8**level * N))
        level_dir = _level_dir(root, level)
        masks = load_masks(str(level_dir / "masks.npz"))
        for path in expected:
            assert np.array_equal(masks[path], expected[path]), (level, path)
        parent_dir, alive = level_dir, masks


def test_level_snapshot_is_the_saved_final_model(root, lottery3):
    level_dir = _level_dir(root, 2)
    model = keras.models.load_model(str(level_dir / "model.keras"), safe_mode=True)
    final = _snapshot(snapshot_path(str(level_dir), TOTAL))
    for variable in model.variables:
        assert np.array_equal(variable.numpy(), final[variable.path]), variable.path


def test_each_level_restarts_from_the_dense_weights_at_k_and_resumes_at_k(root, lottery3, starts):
    rewound = _snapshot(snapshot_path(str(_dense_dir(root)), K))
    final = _snapshot(snapshot_path(str(_dense_dir(root)), TOTAL))
    for level in (1, 2, 3):
        level_dir = _level_dir(root, level)
        masks = load_masks(str(level_dir / "masks.npz"))
        start = _start(starts, level_dir)
        _assert_starts_from(start, rewound, masks, step=K, lr=LR_AFTER)
        # ... which are not the trained weights.
        assert not np.array_equal(start["weights"]["fc1/kernel"], final["fc1/kernel"])
        results = _results(level_dir)
        assert results["steps"] == TOTAL
        # Iterations 2..4 finish the first epoch, 4..8 are the second.
        assert [(h["epoch"], h["step"]) for h in results["history"]] == [(1, 4), (2, 8)]
        assert [h["lr"] for h in results["history"]] == approx([LR_AFTER] * 2, np.float32, 1)
        checkpoints = sorted(os.listdir(level_dir / "checkpoints"))
        assert checkpoints == ["ckpt-000000004", "ckpt-000000008"]
        assert _optimizer_iterations(str(level_dir), TOTAL) == TOTAL
    dense = _start(starts, _dense_dir(root))
    assert dense["step"] == 0 and dense["iterations"] == 0
    assert dense["lr"] == approx(LR_AT_0, np.float32, 1)


def test_load_snapshot_restores_the_dense_run_at_k_bit_for_bit(root, lottery3):
    ctx = RunContext(
        "fashion_mnist", "lenet_300_100", 0, TRAIN, tf.distribute.get_strategy(), **LIMITS
    )
    model = ctx.build_model()
    path = snapshot_path(str(_dense_dir(root)), K)
    load_snapshot(model, path)
    saved = _snapshot(path)
    assert [v.path for v in model.variables] == list(saved)
    for variable in model.variables:
        assert np.array_equal(variable.numpy(), saved[variable.path])
    other = keras.Sequential([keras.Input((4,)), MaskedDense(3)])
    with pytest.raises(ConfigError, match=r"its variable 0 is 'fc1/kernel' of shape \(784, 300\)"):
        load_snapshot(other, path)


def test_lottery_levels_are_shared_and_not_recomputed(root, lottery3, starts):
    files = [
        _level_dir(root, level) / name
        for level in (1, 2, 3)
        for name in ("results.json", "masks.npz", "model.keras")
    ]
    mtimes = [os.path.getmtime(f) for f in files]
    trained = len(starts)
    results = _run(root, "lottery2", method="lottery", density=0.8**2, rewind_step=f"{K}it")
    assert len(starts) == trained, "a shared level was trained again"
    assert [os.path.getmtime(f) for f in files] == mtimes
    level = _results(_level_dir(root, 2))
    for key in ("density_actual", "layer_density", "test_accuracy", "test_loss", "history"):
        assert results[key] == level[key], key
    assert results["density_target"] == 0.8**2 and results["method"] == "lottery"
    adopted = load_masks(str(root / "lottery2" / "masks.npz"))
    for path, mask in load_masks(str(_level_dir(root, 2) / "masks.npz")).items():
        assert np.array_equal(adopted[path], mask)
    with open(root / "lottery2" / "model.keras", "rb") as a:
        with open(_level_dir(root, 2) / "model.keras", "rb") as b:
            assert a.read() == b.read()


# --- magnitude after training and one-shot lottery --------------------------------------------


@pytest.fixture(scope="module")
def magnitude(root, lottery3, starts):
    return _run(root, "magnitude", method="magnitude_after_training", density=0.1)


def test_magnitude_after_training_keeps_top_final_weights_and_fine_tunes(root, magnitude, starts):
    final = _snapshot(snapshot_path(str(_dense_dir(root)), TOTAL))
    kernels = _kernels(final)
    expected = _top_magnitude(kernels, {p: np.ones(k.shape) for p, k in kernels.items()}, 26_620)
    masks = load_masks(str(root / "magnitude" / "masks.npz"))
    for path in expected:
        assert np.array_equal(masks[path], expected[path]), path
    assert _count(masks) == round(0.1 * N)
    # Fine-tuning: from w_T, with the whole schedule replayed from iteration 0.
    _assert_starts_from(_start(starts, root / "magnitude"), final, masks, step=0, lr=LR_AT_0)
    assert magnitude["rewind_step"] is None and magnitude["prune_step"] == TOTAL
    assert magnitude["steps"] == TOTAL
    assert [h["step"] for h in magnitude["history"]] == [4, 8]
    assert _optimizer_iterations(str(root / "magnitude"), TOTAL) == TOTAL


def test_magnitude_after_training_with_rewinding_starts_from_w_k(root, magnitude, starts):
    results = _run(
        root, "magnitude_k", method="magnitude_after_training", density=0.1, rewind_step=f"{K}it"
    )
    masks = load_masks(str(root / "magnitude_k" / "masks.npz"))
    for path, mask in load_masks(str(root / "magnitude" / "masks.npz")).items():
        assert np.array_equal(masks[path], mask)
    rewound = _snapshot(snapshot_path(str(_dense_dir(root)), K))
    _assert_starts_from(_start(starts, root / "magnitude_k"), rewound, masks, step=K, lr=LR_AFTER)
    assert results["rewind_step"] == K and results["steps"] == TOTAL


def test_lottery_oneshot_prunes_at_once_and_rewinds(root, magnitude, starts):
    results = _run(root, "oneshot", method="lottery_oneshot", density=0.1, rewind_step=f"{K}it")
    masks = load_masks(str(root / "oneshot" / "masks.npz"))
    # One shot by |w_T|: the mask of magnitude after training at the same density.
    for path, mask in load_masks(str(root / "magnitude" / "masks.npz")).items():
        assert np.array_equal(masks[path], mask)
    rewound = _snapshot(snapshot_path(str(_dense_dir(root)), K))
    _assert_starts_from(_start(starts, root / "oneshot"), rewound, masks, step=K, lr=LR_AFTER)
    assert results["rewind_step"] == K and results["density_actual"] == round(0.1 * N) / N


def test_lottery_rewinds_to_initialization_by_default(tmp_path, starts):
    shared = tmp_path / "shared"
    experiment = Experiment(**LIMITS, method="lottery_oneshot", density=0.2, shared_dir=str(shared))
    results = run(experiment, TRAIN, str(tmp_path / "run"))
    assert results["rewind_step"] == 0
    ctx = RunContext(
        "fashion_mnist", "lenet_300_100", 0, TRAIN, tf.distribute.get_strategy(), **LIMITS
    )
    initial = {v.path: v.numpy() for v in ctx.build_model().variables}
    masks = load_masks(str(tmp_path / "run" / "masks.npz"))
    assert _count(masks) == round(0.2 * N)
    _assert_starts_from(_start(starts, tmp_path / "run"), initial, masks, step=0, lr=LR_AT_0)
    (trunk,) = os.listdir(shared)
    kept = _snapshot(snapshot_path(str(shared / trunk / "dense"), 0))
    for path, value in initial.items():
        assert np.array_equal(kept[path], value)


def test_a_new_rewind_step_gets_its_own_identical_dense_run(tmp_path):
    # Shared dense runs are never replaced (another process may be reading them): a rewind
    # step k > 0 gets a dense run of its own, identical to the first one.
    shared = tmp_path / "shared"
    common = {**LIMITS, "density": 0.2, "shared_dir": str(shared)}
    run(Experiment(method="magnitude_after_training", **common), TRAIN, str(tmp_path / "a"))
    (trunk,) = os.listdir(shared)
    dense = shared / trunk / "dense"
    assert sorted(os.listdir(dense / "snapshots")) == ["step-000000000.npz", "step-000000008.npz"]
    before = _snapshot(snapshot_path(str(dense), TOTAL))
    run(Experiment(method="lottery_oneshot", **common), TRAIN, str(tmp_path / "b"))
    assert _snapshot(snapshot_path(str(dense), TOTAL)).keys() == before.keys()
    run(
        Experiment(method="lottery_oneshot", rewind_step="2it", **common),
        TRAIN,
        str(tmp_path / "c"),
    )
    rewound = shared / trunk / "dense-k2"
    assert sorted(os.listdir(rewound / "snapshots")) == [
        "step-000000000.npz",
        "step-000000002.npz",
        "step-000000008.npz",
    ]
    after = _snapshot(snapshot_path(str(rewound), TOTAL))
    for path, value in before.items():
        assert np.array_equal(after[path], value), path


# --- ablations --------------------------------------------------------------------------------


def test_shuffle_keeps_layer_counts_and_moves_positions(root, magnitude, starts):
    results = _run(
        root,
        "magnitude_shuffle",
        method="magnitude_after_training",
        density=0.1,
        ablations=("shuffle",),
    )
    plain = load_masks(str(root / "magnitude" / "masks.npz"))
    shuffled = load_masks(str(root / "magnitude_shuffle" / "masks.npz"))
    for path in plain:
        assert int(shuffled[path].sum()) == int(plain[path].sum())
        assert not np.array_equal(shuffled[path], plain[path]), path
    assert results["layer_density"] == magnitude["layer_density"]
    assert results["ablations"] == ["shuffle"]
    final = _snapshot(snapshot_path(str(_dense_dir(root)), TOTAL))
    _assert_starts_from(
        _start(starts, root / "magnitude_shuffle"), final, shuffled, step=0, lr=LR_AT_0
    )


def test_shuffled_lottery_level_is_not_the_shared_level(root, lottery3, starts):
    trained = len(starts)
    results = _run(
        root,
        "lottery2_shuffle",
        method="lottery",
        density=0.8**2,
        rewind_step=f"{K}it",
        ablations=("shuffle",),
    )
    assert len(starts) == trained + 1  # this run only; the levels are reused
    level = load_masks(str(_level_dir(root, 2) / "masks.npz"))
    masks = load_masks(str(root / "lottery2_shuffle" / "masks.npz"))
    for path in level:
        assert int(masks[path].sum()) == int(level[path].sum())
        assert not np.array_equal(masks[path], level[path]), path
    assert "shared_run" not in results
    rewound = _snapshot(snapshot_path(str(_dense_dir(root)), K))
    _assert_starts_from(
        _start(starts, root / "lottery2_shuffle"), rewound, masks, step=K, lr=LR_AFTER
    )


def test_reinit_keeps_the_mask_and_redraws_every_kept_weight(root, magnitude, starts):
    _run(
        root,
        "oneshot_reinit",
        method="lottery_oneshot",
        density=0.1,
        rewind_step=f"{K}it",
        ablations=("reinit",),
    )
    masks = load_masks(str(root / "oneshot_reinit" / "masks.npz"))
    for path, mask in load_masks(str(root / "magnitude" / "masks.npz")).items():
        assert np.array_equal(masks[path], mask)
    start = _start(starts, root / "oneshot_reinit")
    assert start["step"] == K and start["iterations"] == K
    rewound = _snapshot(snapshot_path(str(_dense_dir(root)), K))
    final = _snapshot(snapshot_path(str(_dense_dir(root)), TOTAL))
    for path, mask in masks.items():
        kept = mask > 0
        assert np.all(start["weights"][path][kept] != rewound[path][kept]), path
        assert np.all(start["weights"][path][kept] != final[path][kept]), path
        assert np.array_equal(start["weights"][path.replace("kernel", "mask")], mask)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (
            {"method": "magnitude_after_training", "density": 0.1, "ablations": ("invert",)},
            "ablation 'invert' does not apply to magnitude_after_training",
        ),
        (
            {"method": "lottery", "density": 0.8**2, "ablations": ("invert",)},
            "ablation 'invert' does not apply to lottery",
        ),
        ({"method": "lottery", "density": 0.3}, "use lottery_oneshot for any density"),
        (
            {"method": "lottery_oneshot", "density": 0.1, "prune_step": "2it"},
            "prunes after training: leave prune_step at 0",
        ),
        (
            {"method": "snip", "density": 0.1, "rewind_step": "2it"},
            "rewind_step applies to magnitude_after_training",
        ),
        (
            {"method": "lottery", "density": 0.8, "rewind_step": "8it"},
            "rewind_step '8it' is at or after the end of training (8 iterations",
        ),
        (
            {"method": "magnitude_after_training", "density": 0.1, "rewind_step": "3ep"},
            "rewind_step '3ep' is at or after the end of training (8 iterations",
        ),
    ],
)
def test_invalid_after_training_settings_are_refused(fields, fragment, tmp_path):
    shared = tmp_path / "shared"
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        run(Experiment(**LIMITS, shared_dir=str(shared), **fields), TRAIN, str(tmp_path / "r"))
    assert not shared.exists(), "nothing is trained for a refused configuration"


# --- pruning at a later step (methods at initialization) ---------------------------------------


def test_snip_at_a_later_step_prunes_the_trained_weights_and_resets_momentum(tmp_path, monkeypatch):
    training = TrainConfig(epochs=2, momentum=0.9, progress=False)
    ctx = RunContext(
        "fashion_mnist", "lenet_300_100", 0, training, tf.distribute.get_strategy(), **LIMITS
    )
    seen = {"weights": [], "resets": []}
    prune_original = experiment_lib._prune
    reset_original = Trainer.reset_optimizer_slots

    def recording_prune(model, experiment, ctx, output_dir, step):
        seen["weights"].append({v.path: np.array(v.numpy()) for v in model.variables})
        return prune_original(model, experiment, ctx, output_dir, step)

    def recording_reset(self):
        assert any(np.any(b.numpy() != 0) for b in self.optimizer.momentums)
        reset_original(self)
        seen["resets"].append(
            (
                int(self.optimizer.iterations.numpy()),
                all(not np.any(b.numpy()) for b in self.optimizer.momentums),
            )
        )

    monkeypatch.setattr(experiment_lib, "_prune", recording_prune)
    monkeypatch.setattr(Trainer, "reset_optimizer_slots", recording_reset)
    run_dir = tmp_path / "run"
    experiment = Experiment(**LIMITS, method="snip", density=0.1, prune_step="2it")
    results = run(experiment, training, str(run_dir))
    with open(run_dir / "pruning.json") as f:
        assert json.load(f)["step"] == 2
    assert results["prune_step"] == 2 and results["steps"] == TOTAL
    assert seen["resets"] == [(2, True)]
    masks = load_masks(str(run_dir / "masks.npz"))
    assert _count(masks) == round(0.1 * N)
    # The masks are SNIP's on the weights after two iterations, not on the initial ones.
    (weights,) = seen["weights"]
    initial = {v.path: v.numpy() for v in ctx.build_model().variables}
    assert not np.array_equal(weights["fc1/kernel"], initial["fc1/kernel"])
    model = ctx.build_model()
    for variable in model.variables:
        variable.assign(weights[variable.path])
    expected = prune(model, "snip", 0.1, ctx.pruning_data(10), seed=0, batch_size=128)
    for path, mask in expected.items():
        assert np.array_equal(masks[path], mask), path


# --- Trainer: snapshots, start step, optimizer slots ------------------------------------------


def _toy_trainer(output_dir, config, **kwargs):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), MaskedDense(8, activation="relu"), MaskedDense(2)])
    return toy_trainer(output_dir, config, model, *toy_problem(), **kwargs)


def test_trainer_keeps_snapshots_at_the_requested_steps(tmp_path):
    config = TrainConfig(epochs=2, learning_rate=0.5, progress=False)
    trainer = _toy_trainer(tmp_path, config, keep_steps={0, 3})
    initial = [np.array(v.numpy()) for v in trainer.model.variables]
    trainer.run()
    assert sorted(os.listdir(tmp_path / "snapshots")) == [
        "step-000000000.npz",
        "step-000000003.npz",
    ]
    at_0 = _snapshot(snapshot_path(str(tmp_path), 0))
    assert list(at_0) == [v.path for v in trainer.model.variables]
    for value, saved in zip(initial, at_0.values(), strict=True):
        assert np.array_equal(value, saved)
    # Step 3 holds the weights after three iterations: those of the first epoch's checkpoint.
    at_3 = _snapshot(snapshot_path(str(tmp_path), 3))
    with np.load(tmp_path / "checkpoints" / "ckpt-000000003" / "variables.npz") as data:
        for i, saved in enumerate(at_3.values()):
            assert np.array_equal(data[f"v{i}"], saved)
    first_kernel = trainer.model.variables[0].path
    assert not np.array_equal(at_3[first_kernel], at_0[first_kernel])
    model = _toy_trainer(tmp_path / "other", config).model
    load_snapshot(model, snapshot_path(str(tmp_path), 3))
    for variable, saved in zip(model.variables, at_3.values(), strict=True):
        assert np.array_equal(variable.numpy(), saved)


def test_trainer_start_step_resumes_schedule_and_counts_steps_from_k(tmp_path):
    config = TrainConfig(epochs=2, learning_rate=0.4, milestones=["2it"], gamma=0.1, progress=False)
    first = []
    trainer = None

    def on_step(step, state):
        if not first:
            first.append((step, int(trainer.optimizer.iterations.numpy())))

    trainer = _toy_trainer(tmp_path, config, start_step=2, on_step=on_step)
    state = trainer.run()
    assert first == [(2, 2)]
    assert state.step == 6 and int(trainer.optimizer.iterations.numpy()) == 6
    assert [(h["epoch"], h["step"]) for h in state.history] == [(1, 3), (2, 6)]
    assert state.history[0]["lr"] == approx(0.04, np.float32, 3)  # 0.4, 0.1, their product
    with pytest.raises(ConfigError, match="cannot start at iteration 6"):
        _toy_trainer(tmp_path / "late", config, start_step=6)


def test_reset_optimizer_slots_zeroes_momentum_and_keeps_the_rest(tmp_path):
    trainer = _toy_trainer(tmp_path, TrainConfig(epochs=1, momentum=0.9, progress=False))
    trainer.run()
    assert trainer.optimizer.momentums
    assert all(np.any(b.numpy() != 0) for b in trainer.optimizer.momentums)
    weights = [np.array(v.numpy()) for v in trainer.model.variables]
    trainer.reset_optimizer_slots()
    assert all(not np.any(b.numpy()) for b in trainer.optimizer.momentums)
    assert int(trainer.optimizer.iterations.numpy()) == 3
    for variable, value in zip(trainer.model.variables, weights, strict=True):
        assert np.array_equal(variable.numpy(), value)


def test_adopting_a_shared_level_writes_each_file_whole_or_not_at_all(tmp_path, monkeypatch):
    """A copy that fails half-way (a full disk, a kill) leaves no half-written file behind."""
    from tfprune import after_training

    level = tmp_path / "level"
    level.mkdir()
    (level / "masks.npz").write_bytes(b"m" * 1000)
    (level / "model.keras").write_bytes(b"k" * 1000)
    finished = {"test_loss": 1.0, "density_actual": 0.8, "epochs": 1, "wall_seconds": 1.0}
    (level / "results.json").write_text(
        json.dumps({"test_accuracy": 0.5, **finished, "history": []})
    )
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(b"old model")

    def copy_half_then_fail(src, dst):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read()[:500])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(after_training.shutil, "copyfile", copy_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        after_training._adopt(str(level), str(out), {"method": "lottery"})
    assert sorted(os.listdir(out)) == ["model.keras"]
    assert (out / "model.keras").read_bytes() == b"old model"

    monkeypatch.undo()
    results = after_training._adopt(str(level), str(out), {"method": "lottery"})
    assert (out / "masks.npz").read_bytes() == b"m" * 1000
    assert (out / "model.keras").read_bytes() == b"k" * 1000
    assert results["test_accuracy"] == 0.5 and results["shared_run"] == str(level)
