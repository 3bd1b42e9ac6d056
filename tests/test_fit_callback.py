"""Pruning inside `model.fit`: `tfprune.keras.PruneAt` and `reset_optimizer_slots`.

The step is the optimizer's `iterations`; masks are applied in the forward pass (SPEC §1), so
after pruning a weight gets a zero gradient and, with its optimizer slots reset, never moves.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import keras_callbacks
from tfprune.errors import ConfigError, DataError, ModelError

BATCH = 16
STEPS_PER_EPOCH = 4  # 64 examples in batches of 16
SLOT_NAMES = {"sgd": ("momentum",), "adam": ("momentum", "velocity")}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS_PER_EPOCH, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=len(x)).astype(np.int32)
    return x, y


def _optimizer(name):
    if name == "sgd":
        return keras.optimizers.SGD(0.05, momentum=0.9)
    return keras.optimizers.Adam(0.01)


def _model(optimizer="sgd", seed=0, **compile_kwargs):
    """A stock Conv1D + Dense network converted with tfprune.masked, compiled."""
    keras.utils.set_random_seed(seed)
    base = keras.Sequential(
        [
            keras.Input((8, 2)),
            keras.layers.Conv1D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="fc"),
        ],
        name="net",
    )
    model = tfprune.masked(base)
    model.compile(
        optimizer=_optimizer(optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
        **compile_kwargs,
    )
    return model


def _fit(model, callbacks, epochs):
    x, y = _data()
    return model.fit(
        x, y, batch_size=BATCH, epochs=epochs, shuffle=False, callbacks=callbacks, verbose=0
    )


def _numpy(variables):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}


def _kernels(model):
    return {
        p: keras.ops.convert_to_numpy(w.kernel).copy()
        for p, w in tfprune.prunable_weights(model).items()
    }


def _iteration(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class Probe(keras.callbacks.Callback):
    """Records, at the start of every batch, the step, the masks, the kernels and the
    optimizer's variables."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_train_batch_begin(self, batch, logs=None):
        self.seen[_iteration(self.model)] = {
            "masks": tfprune.get_masks(self.model),
            "kernels": _kernels(self.model),
            "optimizer": _numpy(self.model.optimizer.variables),
        }


class Interrupt(keras.callbacks.Callback):
    """Stops the fit with an error at the start of step `at`, as a preemption would."""

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.masks = None

    def on_train_batch_begin(self, batch, logs=None):
        if _iteration(self.model) == self.at:
            self.masks = tfprune.get_masks(self.model)
            raise RuntimeError(f"interrupted at step {self.at}")


@pytest.fixture
def prune_calls(monkeypatch):
    """Counts the calls of prune_with_report made by PruneAt."""
    calls = []
    original = keras_callbacks.prune_with_report

    def counted(*args, **kwargs):
        calls.append(args[1:3])
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_callbacks, "prune_with_report", counted)
    return calls


def _total(masks):
    return sum(m.size for m in masks.values())


def _kept(masks):
    return sum(int(np.count_nonzero(m)) for m in masks.values())


def test_the_public_module_is_the_callbacks_module_and_keras_stays_keras():
    import sys

    assert tfprune.keras is keras_callbacks
    assert tfprune.keras.PruneAt is keras_callbacks.PruneAt
    assert "keras" in tfprune.__all__
    # The package's own `import keras` is Keras itself.
    from tfprune import deploy

    assert deploy.keras is sys.modules["keras"] is keras_callbacks.keras is keras


def test_prunes_once_before_its_global_step_and_counts_across_fits(prune_calls, capsys):
    model = _model("sgd")
    before, after = Probe(), Probe()
    callback = tfprune.keras.PruneAt("magnitude", 0.5, step=5, verbose=1)

    _fit(model, [before, callback, after], epochs=3)

    assert sorted(after.seen) == list(range(3 * STEPS_PER_EPOCH))
    masks = tfprune.get_masks(model)
    total = _total(masks)
    kept = [_kept(after.seen[i]["masks"]) for i in range(12)]
    assert kept == [total] * 5 + [round(0.5 * total)] * 7, "pruned just before step 5"
    # SPEC §2 magnitude: keep the global top |w| of the weights after 5 steps.
    scores = {p: np.abs(k) for p, k in before.seen[5]["kernels"].items()}
    expected = tfprune.select(scores, {p: np.ones_like(m) for p, m in masks.items()}, 0.5)
    for path in masks:
        np.testing.assert_array_equal(masks[path], expected[path], err_msg=path)
        np.testing.assert_array_equal(callback.report.masks[path], expected[path])
    assert callback.pruned_at == 5 and prune_calls == [("magnitude", 0.5)]
    assert "pruned with magnitude to density 0.5 before step 5" in capsys.readouterr().out

    # A second fit continues the count: the same callback does not prune again, a new one
    # prunes at its own global step (the second fit's third batch).
    later = tfprune.keras.PruneAt("random", 0.25, step=14, seed=3)
    probe = Probe()
    _fit(model, [callback, later, probe], epochs=2)

    assert sorted(probe.seen) == list(range(12, 20))
    assert prune_calls == [("magnitude", 0.5), ("random", 0.25)]
    assert callback.pruned_at == 5 and later.pruned_at == 14
    assert [_kept(probe.seen[i]["masks"]) for i in (13, 14)] == [
        round(0.5 * total),
        round(0.25 * total),
    ]
    final = tfprune.get_masks(model)
    for path in final:
        assert not np.any((final[path] == 1) & (masks[path] == 0)), "never revived (SPEC §1)"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_slots_of_pruned_weights_restart_and_pruned_weights_never_move(optimizer):
    model = _model(optimizer)
    before, after = Probe(), Probe()
    callback = tfprune.keras.PruneAt("magnitude", 0.3, step=6)
    x, y = _data()

    _fit(model, [before, callback, after], epochs=3)

    masks = callback.report.masks
    old, new = before.seen[6]["optimizer"], after.seen[6]["optimizer"]
    slots = {
        f"{model.optimizer.name}/{path.replace('/', '_')}_{name}": path
        for path in masks
        for name in SLOT_NAMES[optimizer]
    }
    assert set(slots) <= set(old)
    for slot, path in slots.items():
        pruned = masks[path] == 0
        assert np.count_nonzero(old[slot][pruned]) > 0.9 * pruned.sum(), "6 steps filled it"
        np.testing.assert_array_equal(new[slot][pruned], 0.0, err_msg=slot)
        np.testing.assert_array_equal(new[slot][~pruned], old[slot][~pruned], err_msg=slot)
    for name in set(old) - set(slots):  # biases' slots, iteration, learning rate
        np.testing.assert_array_equal(new[name], old[name], err_msg=name)
    assert sorted(callback.slots_reset) == sorted(masks)
    assert {s for found in callback.slots_reset.values() for s in found} == set(slots)

    # Zero gradient (SPEC §1) and fresh slots: every pruned weight keeps its value to the
    # end, while the kept ones train.
    pruned_at, final = after.seen[6]["kernels"], _kernels(model)
    for path, mask in masks.items():
        np.testing.assert_array_equal(final[path][mask == 0], pruned_at[path][mask == 0])
        assert np.mean(final[path][mask == 1] != pruned_at[path][mask == 1]) > 0.9

    # The masked model evaluates as its stripped copy: the same ops on the same values.
    stripped = tfprune.strip(model)
    stripped.compile(loss=model.loss, jit_compile=False)
    assert stripped.evaluate(x, y, batch_size=BATCH, verbose=0) == model.evaluate(
        x, y, batch_size=BATCH, verbose=0
    )
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), model.predict(x, verbose=0))


def test_pruning_between_two_fits_needs_the_slot_reset():
    # The two-fit recipe (train, prune, fine-tune): without the reset, the momentum gathered
    # before pruning keeps moving the pruned weights; with it, they stay put.
    moved = {}
    for reset in (False, True):
        model = _model("sgd")
        _fit(model, [], epochs=1)
        masks = tfprune.prune(model, "magnitude", 0.4)
        if reset:
            found = tfprune.keras.reset_optimizer_slots(model)
            assert sorted(found) == sorted(masks)
        pruned_values = _kernels(model)
        _fit(model, [], epochs=1)
        final = _kernels(model)
        moved[reset] = sum(
            int(np.count_nonzero(final[p][m == 0] != pruned_values[p][m == 0]))
            for p, m in masks.items()
        )
    pruned = _total(masks) - _kept(masks)
    assert moved[False] > 0.9 * pruned
    assert moved[True] == 0


def test_reset_gives_the_fresh_value_of_each_slot_and_touches_nothing_else():
    # Adagrad's accumulators start at initial_accumulator_value, not at zero.
    model = _model("sgd")
    optimizer = keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.25)
    variables = model.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(4)
    for _ in range(3):
        grads = [rng.normal(size=tuple(v.shape)).astype(np.float32) for v in variables]
        optimizer.apply(grads, variables)
    kernel = tfprune.prunable_weights(model)["net/fc/kernel"].kernel
    where = rng.random(tuple(kernel.shape)) < 0.5
    old = _numpy(optimizer.variables)

    found = tfprune.keras.reset_optimizer_slots(
        model, {"net/fc/kernel": where, "net/conv/bias": None}, optimizer=optimizer
    )

    new = _numpy(optimizer.variables)
    kernel_slot = "adagrad/net_fc_kernel_accumulator"
    bias_slot = "adagrad/net_conv_bias_accumulator"
    assert found == {"net/fc/kernel": [kernel_slot], "net/conv/bias": [bias_slot]}
    assert np.all(old[kernel_slot] > 0.25) and np.all(old[bias_slot] > 0.25)
    np.testing.assert_array_equal(new[kernel_slot], np.where(where, 0.25, old[kernel_slot]))
    np.testing.assert_array_equal(new[bias_slot], np.full_like(old[bias_slot], 0.25))
    for name in set(old) - {kernel_slot, bias_slot}:
        np.testing.assert_array_equal(new[name], old[name], err_msg=name)

    with pytest.raises(ConfigError, match="no trainable variable .* 'net/nope'"):
        tfprune.keras.reset_optimizer_slots(model, {"net/nope": None}, optimizer=optimizer)
    with pytest.raises(ConfigError, match="positions of shape"):
        tfprune.keras.reset_optimizer_slots(
            model, {"net/fc/kernel": np.ones(3, bool)}, optimizer=optimizer
        )
    with pytest.raises(ModelError, match="has no optimizer"):
        tfprune.keras.reset_optimizer_slots(keras.Sequential([keras.Input((2,))]))
    # An optimizer not built yet has no slot to reset: fit will create them fresh.
    assert tfprune.keras.reset_optimizer_slots(model) == {}


def test_slots_whose_names_collide_are_refused():
    class Scale(tfprune.MaskedLayer):
        def build(self, input_shape):
            self.w = self.add_weight(name="q_kernel", shape=(3, 3))
            self.add_mask(self.w)

        def call(self, x):
            return x @ self.masked(self.w)

    # Keras names a slot after its variable's path with '/' replaced by '_': the slots of
    # "net/p/q_kernel" and "net/p_q/kernel" would both be "net_p_q_kernel_momentum".
    model = keras.Sequential(
        [keras.Input((3,)), Scale(name="p"), tfprune.MaskedDense(3, name="p_q")], name="net"
    )
    tfprune.prune(model, "random", 0.5)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    assert sorted(tfprune.get_masks(model)) == ["net/p/q_kernel", "net/p_q/kernel"]
    with pytest.raises(ModelError, match="cannot tell which optimizer variable .*net_p_q_kernel"):
        tfprune.keras.reset_optimizer_slots(model, optimizer=optimizer)


def test_a_fit_resumed_after_the_pruning_keeps_the_masks_and_does_not_prune_again(
    tmp_path, prune_calls
):
    backup = str(tmp_path / "backup")

    def callbacks():
        # shuffle: pruning again would move the masks, so equal masks prove it did not.
        prune = tfprune.keras.PruneAt("magnitude", 0.5, step=5, ablations=("shuffle",), seed=1)
        return prune, keras.callbacks.BackupAndRestore(backup, save_freq="epoch")

    first = _model("sgd")
    prune, restore = callbacks()
    interrupt = Interrupt(at=9)
    with pytest.raises(RuntimeError, match="interrupted at step 9"):
        _fit(first, [prune, restore, interrupt], epochs=3)
    assert prune.pruned_at == 5 and len(prune_calls) == 1

    # A new process: the same network, compiled again; the backup of step 8 comes back.
    resumed = _model("sgd")
    prune_again, restore_again = callbacks()
    probe = Probe()
    _fit(resumed, [restore_again, prune_again, probe], epochs=3)

    assert min(probe.seen) == 2 * STEPS_PER_EPOCH and _iteration(resumed) == 12
    assert len(prune_calls) == 1 and prune_again.report is None
    masks = tfprune.get_masks(resumed)
    for path, mask in interrupt.masks.items():
        np.testing.assert_array_equal(masks[path], mask, err_msg=path)
        np.testing.assert_array_equal(mask, prune.report.masks[path])
        np.testing.assert_array_equal(probe.seen[8]["masks"][path], mask)


def test_a_fit_resumed_from_before_the_step_prunes_when_it_gets_there(tmp_path, prune_calls):
    backup = str(tmp_path / "backup")
    data = _data()
    first = _model("sgd")
    prune = tfprune.keras.PruneAt("snip", 0.5, step=6, data=data)
    with pytest.raises(RuntimeError):
        _fit(first, [prune, keras.callbacks.BackupAndRestore(backup), Interrupt(at=5)], 3)
    assert prune.report is None and prune_calls == []

    resumed = _model("sgd")
    prune_again = tfprune.keras.PruneAt("snip", 0.5, step=6, data=data)
    probe = Probe()
    _fit(resumed, [keras.callbacks.BackupAndRestore(backup), prune_again, probe], epochs=3)

    assert min(probe.seen) == STEPS_PER_EPOCH
    assert prune_again.pruned_at == 6 and len(prune_calls) == 1
    masks = tfprune.get_masks(resumed)
    assert [_kept(probe.seen[i]["masks"]) for i in (5, 6)] == [
        _total(masks),
        round(0.5 * _total(masks)),
    ]


def test_the_same_callback_prunes_again_when_a_restore_rewinds_its_masks(tmp_path):
    # Pruned at step 5, interrupted at 6: the last backup (step 4) predates the pruning.
    backup = str(tmp_path / "backup")
    prune = tfprune.keras.PruneAt("random", 0.5, step=5, seed=2)
    with pytest.raises(RuntimeError):
        _fit(_model("sgd"), [keras.callbacks.BackupAndRestore(backup), prune, Interrupt(6)], 3)
    first_masks = prune.report.masks

    resumed = _model("sgd")
    probe = Probe()
    _fit(resumed, [keras.callbacks.BackupAndRestore(backup), prune, probe], epochs=3)

    assert min(probe.seen) == STEPS_PER_EPOCH and prune.pruned_at == 5
    total = _total(first_masks)
    assert _kept(probe.seen[4]["masks"]) == total, "the backup of step 4 has no pruned weight"
    masks = tfprune.get_masks(resumed)
    assert _kept(masks) == round(0.5 * total)
    for path, mask in first_masks.items():  # random with the same seed: the same masks
        np.testing.assert_array_equal(masks[path], mask)


def test_a_fit_that_starts_past_the_step_on_an_unpruned_model_fails():
    model = _model("sgd")
    _fit(model, [], epochs=1)
    with pytest.raises(ConfigError, match=r"step=2\) is in a fit that starts at step 4"):
        _fit(model, [tfprune.keras.PruneAt("magnitude", 0.5, step=2)], epochs=1)


def test_data_driven_pruning_at_initialization_matches_prune():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    twin = _model("sgd")
    expected = tfprune.prune(twin, "snip", 0.3, dataset)
    model = _model("sgd")
    callback = tfprune.keras.PruneAt("snip", 0.3, step=0, data=dataset)

    _fit(model, [callback], epochs=1)

    assert callback.pruned_at == 0
    for path, mask in expected.items():
        np.testing.assert_array_equal(callback.report.masks[path], mask, err_msg=path)


def test_with_several_steps_per_execution_it_prunes_at_the_first_hook_past_the_step():
    model = _model("sgd", steps_per_execution=4)
    callback = tfprune.keras.PruneAt("magnitude", 0.5, step=5)
    _fit(model, [callback], epochs=3)
    assert callback.pruned_at == 8


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("nope", 0.5), {}, ConfigError, "unknown pruning method 'nope'"),
        (("magnitude", 0.0), {}, ConfigError, "density"),
        (("magnitude", 1.5), {}, ConfigError, "density"),
        (("magnitude", 0.5, -1), {}, ConfigError, "step must be a non-negative integer"),
        (("magnitude", 0.5, 2.5), {}, ConfigError, "step must be a non-negative integer"),
        (("magnitude", 0.5, True), {}, ConfigError, "step must be a non-negative integer"),
        (("magnitude", 0.5), {"ablations": ("bogus",)}, ConfigError, "bogus"),
        (("magnitude", 0.5), {"temperature": 2.0}, ConfigError, "temperature"),
        (("snip", 0.5), {}, DataError, "method 'snip' needs data"),
        (("magnitude", 0.5), {"verbose": 2}, ConfigError, "verbose must be 0 or 1"),
    ],
)
def test_bad_arguments_fail_when_the_callback_is_made(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        tfprune.keras.PruneAt(*args, **kwargs)
