"""Tests of the ablations, the layerwise baselines and the pruning report (SPEC §1, §3)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from _tolerance import approx

import tfprune
from tfprune.errors import ConfigError
from tfprune.layers import MaskedConv2D, MaskedDense
from tfprune.pruning import (
    check_ablations,
    erk_counts,
    method_names,
    needs_data,
    prune_with_report,
    reinitialize,
    shuffle_masks,
    uniform_counts,
)

WIDE, HEAD = "wide/kernel", "head/kernel"


def _mlp(seed: int = 0, wide_scale: float = 1.0) -> keras.Model:
    """40 -> 25 (ReLU) -> 2 logits: kernels of 1,000 and 50 weights, drawn from numpy."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((40,))
    h = MaskedDense(25, activation="relu", name="wide")(inputs)
    outputs = MaskedDense(2, name="head")(h)
    model = keras.Model(inputs, outputs, name="mlp")
    for layer, scale in ((model.get_layer("wide"), wide_scale), (model.get_layer("head"), 1.0)):
        layer.kernel.assign(scale * rng.normal(size=tuple(layer.kernel.shape)))
        layer.bias.assign(rng.normal(scale=0.1, size=tuple(layer.bias.shape)))
    return model


def _mlp_data(n: int = 16, seed: int = 20):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 40)).astype(np.float32), rng.integers(0, 2, size=n)


def _counts(masks: dict[str, np.ndarray]) -> dict[str, int]:
    return {path: int(np.count_nonzero(mask)) for path, mask in masks.items()}


def _flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a).ravel() for a in arrays.values()])


def _same_masks(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[p], b[p]) for p in a)


# ---------------------------------------------------------------------------------------------
# SPEC §3 `shuffle`: per-layer counts preserved exactly, positions change, seeded.


def test_shuffle_keeps_each_layer_count_and_moves_positions():
    plain = tfprune.prune(_mlp(), "magnitude", 0.1)
    shuffled = tfprune.prune(_mlp(), "magnitude", 0.1, ablations=("shuffle",))
    assert sum(_counts(plain).values()) == round(0.1 * 1050) == 105
    assert _counts(shuffled) == _counts(plain)
    assert all(shuffled[p].shape == plain[p].shape for p in plain)
    # A random permutation of k kept out of 1,000 overlaps the original in about k²/1000 places.
    kept = int(plain[WIDE].sum())
    stayed = int(np.sum((plain[WIDE] == 1) & (shuffled[WIDE] == 1)))
    assert kept > 20 and stayed <= kept / 2


def test_shuffle_masks_are_held_by_the_model():
    model = _mlp()
    masks = tfprune.prune(model, "magnitude", 0.1, ablations=("shuffle",))
    for path, held in tfprune.get_masks(model).items():
        np.testing.assert_array_equal(held, masks[path])


def test_shuffle_is_seeded():
    first = tfprune.prune(_mlp(), "magnitude", 0.2, seed=3, ablations=("shuffle",))
    again = tfprune.prune(_mlp(), "magnitude", 0.2, seed=3, ablations=("shuffle",))
    other = tfprune.prune(_mlp(), "magnitude", 0.2, seed=4, ablations=("shuffle",))
    assert _same_masks(first, again)
    assert not np.array_equal(first[WIDE], other[WIDE])
    assert _counts(first) == _counts(other)


def test_shuffle_masks_on_hand_made_masks():
    twin = np.zeros(100, dtype=np.float32)
    twin[:50] = 1.0
    masks = {
        "a": np.eye(3, 4),  # 3 kept of 12
        "b": np.zeros((2, 2, 3)),
        "c": np.ones(5),
        "d": twin.copy(),
        "e": twin.copy(),
    }
    before = {p: m.copy() for p, m in masks.items()}
    shuffled = shuffle_masks(masks, seed=11)
    assert list(shuffled) == list(masks)
    for path, mask in masks.items():
        assert shuffled[path].shape == mask.shape
        assert shuffled[path].dtype == np.float32
        assert set(np.unique(shuffled[path])) <= {0.0, 1.0}
        assert shuffled[path].sum() == mask.sum()
        np.testing.assert_array_equal(mask, before[path])  # inputs untouched
    assert _counts(shuffled) == {"a": 3, "b": 0, "c": 5, "d": 50, "e": 50}
    # Independent permutations: two identical layers are shuffled differently.
    assert not np.array_equal(shuffled["d"], shuffled["e"])
    assert not np.array_equal(shuffled["d"], twin)
    assert _same_masks(shuffled, shuffle_masks(masks, seed=11))
    assert not _same_masks(shuffled, shuffle_masks(masks, seed=12))


# ---------------------------------------------------------------------------------------------
# SPEC §3 `reinit`: same mask, fresh draws from the same initializers with another seed.


def _init_model(seed: int, kernel_seed: int | None = None) -> keras.Model:
    """A conv + BN + dense model built with Keras initializers after seeding Keras."""
    keras.utils.set_random_seed(seed)
    he = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=kernel_seed)
    inputs = keras.Input((6, 6, 2))
    h = MaskedConv2D(
        4,
        3,
        kernel_initializer=he,
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1),
        name="conv",
    )(inputs)
    h = keras.layers.BatchNormalization(
        gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5), name="bn"
    )(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Flatten(name="flat")(h)
    outputs = MaskedDense(3, name="out")(h)  # glorot_uniform kernel, zeros bias
    return keras.Model(inputs, outputs, name="init")


def _values(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy().copy() for v in model.variables}


def test_reinit_keeps_masks_and_redraws_the_random_weights():
    model = _init_model(seed=5)
    bn = model.get_layer("bn")
    # Statistics as after training; reinit resets them to their initializers.
    bn.moving_mean.assign(np.full(4, 0.7))
    bn.moving_variance.assign(np.full(4, 3.0))
    before = _values(model)
    plain = tfprune.prune(_init_model(seed=5), "magnitude", 0.3, seed=5)
    masks = tfprune.prune(model, "magnitude", 0.3, seed=5, ablations=("reinit",))
    assert _same_masks(masks, plain)
    assert _same_masks(tfprune.get_masks(model), plain)
    after = _values(model)
    assert set(after) == set(before)
    # Random initializers: every value changes, pruned or not.
    for path in ("conv/kernel", "conv/bias", "bn/gamma", "out/kernel"):
        assert np.all(after[path] != before[path]), path
    assert np.all((after["bn/gamma"] >= 0.5) & (after["bn/gamma"] <= 1.5))
    # Zeros/ones initializers redraw the same constants: the biases of `out` and BN's beta
    # stay zeros, and the moving statistics are back to zeros and ones.
    np.testing.assert_array_equal(after["out/bias"], np.zeros(3))
    np.testing.assert_array_equal(after["bn/beta"], np.zeros(4))
    np.testing.assert_array_equal(after["bn/moving_mean"], np.zeros(4))
    np.testing.assert_array_equal(after["bn/moving_variance"], np.ones(4))


def test_reinitialize_reports_what_it_redrew_and_leaves_masks():
    model = _init_model(seed=1)
    tfprune.assign_masks(model, {p: np.zeros(m.shape) for p, m in tfprune.get_masks(model).items()})
    redrawn = reinitialize(model, seed=1)
    assert sorted(redrawn) == sorted(
        [
            "conv/kernel",
            "conv/bias",
            "bn/gamma",
            "bn/beta",
            "bn/moving_mean",
            "bn/moving_variance",
            "out/kernel",
            "out/bias",
        ]
    )
    for mask in tfprune.get_masks(model).values():
        assert not np.any(mask)


def test_reinit_is_seeded():
    def redrawn(seed: int) -> dict[str, np.ndarray]:
        model = _init_model(seed=0)
        tfprune.prune(model, "magnitude", 0.5, seed=seed, ablations=("reinit",))
        return _values(model)

    first, again, other = redrawn(7), redrawn(7), redrawn(8)
    for path in first:
        np.testing.assert_array_equal(first[path], again[path], err_msg=path)
    for path in ("conv/kernel", "conv/bias", "bn/gamma", "out/kernel"):
        assert np.all(first[path] != other[path]), path


@pytest.mark.parametrize("kernel_seed", [None, 9])
def test_reinit_differs_from_the_original_initialization(kernel_seed):
    seed = 9
    original = _values(_init_model(seed, kernel_seed))
    # Building again after the same seeding reproduces the original draws exactly ...
    rebuilt = _init_model(seed, kernel_seed)
    for path, value in _values(rebuilt).items():
        np.testing.assert_array_equal(value, original[path], err_msg=path)
    # ... while reinit with the run's seed draws other values, also where the initializer
    # carries its own seed.
    tfprune.prune(rebuilt, "magnitude", 0.5, seed=seed, ablations=("reinit",))
    after = _values(rebuilt)
    for path in ("conv/kernel", "conv/bias", "bn/gamma", "out/kernel"):
        assert np.all(after[path] != original[path]), path


def test_reinit_follows_the_layer_initializers():
    he = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
    inputs = keras.Input((400,))
    h = MaskedDense(250, kernel_initializer=he, name="big")(inputs)
    outputs = MaskedDense(10, name="small")(h)  # glorot_uniform
    model = keras.Model(inputs, outputs)
    big, small = model.get_layer("big"), model.get_layer("small")
    big.kernel.assign(np.full((400, 250), 5.0))
    small.kernel.assign(np.full((250, 10), 5.0))
    tfprune.prune(model, "magnitude", 0.5, seed=2, ablations=("reinit",))

    w = big.kernel.numpy().astype(np.float64)
    std = math.sqrt(2.0 / 400)  # 0.0707
    assert w.std() == pytest.approx(std, rel=0.03)
    assert abs(w.mean()) < 0.02 * std
    # Untruncated: about 0.27 % of 100,000 draws lie beyond 3 std; a truncated normal
    # (HeNormal) never goes beyond 2 / 0.8796 = 2.27 std.
    assert np.abs(w).max() > 3.0 * std
    assert np.mean(np.abs(w) > 2.0 * std) == pytest.approx(0.0455, abs=0.005)

    v = small.kernel.numpy().astype(np.float64)
    limit = math.sqrt(6.0 / (250 + 10))  # glorot_uniform bound, 0.152
    assert np.abs(v).max() <= limit
    assert np.abs(v).max() > 0.95 * limit
    assert v.std() == pytest.approx(limit / math.sqrt(3.0), rel=0.1)


# ---------------------------------------------------------------------------------------------
# SPEC §1 Selection + §3 `invert`: keep the lowest keep-scores, globally, in every round.


def test_invert_snip_keeps_the_global_bottom_k():
    data = _mlp_data()
    density = 0.1
    scores = tfprune.score(_mlp(), "snip", data)
    masks = tfprune.prune(_mlp(), "snip", density, data, ablations=("invert",))
    count = round(density * 1050)
    assert count == 105 and sum(_counts(masks).values()) == count
    expected = np.sort(np.argsort(_flat(scores), kind="stable")[:count])
    np.testing.assert_array_equal(np.flatnonzero(_flat(masks)), expected)
    # Global, not per layer: the counts follow the scores, not round(d * N_l) = 100, 5.
    bottom = np.zeros(1050)
    bottom[expected] = 1
    assert _counts(masks) == {WIDE: int(bottom[:1000].sum()), HEAD: int(bottom[1000:].sum())}
    assert _counts(masks) != {WIDE: 100, HEAD: 5}
    # Inverted is the complement end of the ranking: no weight is in both selections.
    top = tfprune.prune(_mlp(), "snip", density, data)
    assert not np.any(_flat(top) * _flat(masks))


def test_invert_applies_in_every_round():
    data = _mlp_data()
    density = 0.1

    def manual(invert_in: set[int]) -> dict[str, np.ndarray]:
        model = _mlp()
        masks = tfprune.get_masks(model)
        for i in range(1, 4):
            scores = tfprune.score(model, "snip", data)
            masks = tfprune.select(scores, masks, density ** (i / 3), invert=i in invert_in)
            tfprune.assign_masks(model, masks)
        return masks

    report = prune_with_report(_mlp(), "snip", density, data, rounds=3, ablations=("invert",))
    assert report.rounds == 3 and report.ablations == ("invert",)
    assert sum(_counts(report.masks).values()) == 105
    assert _same_masks(report.masks, manual({1, 2, 3}))
    # Inverting only the last round, or only the first, is a different method.
    assert not _same_masks(report.masks, manual({3}))
    assert not _same_masks(report.masks, manual({1}))


# ---------------------------------------------------------------------------------------------
# SPEC §3 "each a pure, seeded function, composable".


def test_ablations_combine_in_any_order():
    data = _mlp_data()
    inverted = tfprune.prune(_mlp(), "snip", 0.1, data, seed=2, ablations=("invert",))
    model = _mlp()
    before = _values(model)
    report = prune_with_report(
        model, "snip", 0.1, data, seed=2, ablations=("shuffle", "reinit", "invert")
    )
    assert report.ablations == ("shuffle", "reinit", "invert")
    assert _counts(report.masks) == _counts(inverted)
    assert not _same_masks(report.masks, inverted)
    assert np.all(model.get_layer("wide").kernel.numpy() != before["wide/kernel"])

    reordered = _mlp()
    masks = tfprune.prune(
        reordered, "snip", 0.1, data, seed=2, ablations=["invert", "reinit", "shuffle"]
    )
    assert _same_masks(masks, report.masks)
    for path, value in _values(reordered).items():
        np.testing.assert_array_equal(value, _values(model)[path], err_msg=path)


def test_check_ablations():
    assert check_ablations(("invert", "shuffle")) == ("shuffle", "invert")
    assert check_ablations(["reinit", "invert", "shuffle"]) == ("shuffle", "reinit", "invert")
    assert check_ablations("invert,shuffle") == ("shuffle", "invert")
    assert check_ablations("reinit+shuffle") == ("shuffle", "reinit")
    assert check_ablations("invert") == ("invert",)
    assert check_ablations(None) == ()
    assert check_ablations("none") == ()
    assert check_ablations(("none",)) == ()
    assert check_ablations(()) == ()
    with pytest.raises(ConfigError, match="'shufle'"):
        check_ablations(("shuffle", "shufle"))
    with pytest.raises(ConfigError, match="repeated"):
        check_ablations(("invert", "shuffle", "invert"))
    with pytest.raises(ConfigError, match="repeated"):
        check_ablations("reinit,reinit")


def test_prune_rejects_bad_ablations_before_pruning():
    model = _mlp()
    with pytest.raises(ConfigError, match="'flip'"):
        tfprune.prune(model, "magnitude", 0.1, ablations=("flip",))
    with pytest.raises(ConfigError, match="repeated"):
        tfprune.prune(model, "magnitude", 0.1, ablations=("shuffle", "shuffle"))
    for mask in tfprune.get_masks(model).values():
        assert np.all(mask == 1)
    assert prune_with_report(model, "magnitude", 0.1, ablations=None).ablations == ()
    assert prune_with_report(_mlp(), "magnitude", 0.1, ablations="none").ablations == ()


# ---------------------------------------------------------------------------------------------
# SPEC §3 layerwise baselines: `uniform`, `erk`, `ratio_of:<method>`.


def test_method_names_and_needs_data():
    names = method_names()
    for name in ("uniform", "erk", "ratio_of:snip", "ratio_of:magnitude", "snip", "magnitude"):
        assert name in names
    assert needs_data("ratio_of:snip") is True
    assert needs_data("snip") is True
    assert needs_data("erk") is False
    assert needs_data("uniform") is False
    assert needs_data("ratio_of:magnitude") is False
    with pytest.raises(ConfigError, match="'ratio_of:bogus'"):
        needs_data("ratio_of:bogus")


def test_uniform_counts_every_layer():
    # round(0.13 * 1000) = 130; 0.13 * 50 = 6.5 rounds half to even, to 6.
    assert uniform_counts({WIDE: (40, 25), HEAD: (25, 2)}, 0.13) == {WIDE: 130, HEAD: 6}
    masks = tfprune.prune(_mlp(), "uniform", 0.13, seed=1)
    assert _counts(masks) == {WIDE: 130, HEAD: 6}
    masks = tfprune.prune(_mlp(), "uniform", 0.3)
    assert _counts(masks) == {WIDE: 300, HEAD: 15}


@pytest.mark.parametrize(
    "density, expected",
    [
        # sizes 1000, 50, 72 (N = 1122); sum of dims 65, 27, 12 (total 104).
        # d = 0.2: target round(224.4) = 224, scale 224/104: b at 0.54 * 2.15 > 1 is dense;
        # re-solved over a and c with 174 left: 65 * 174/77 = 146.88, 12 * 174/77 = 27.12;
        # floors 146 + 27 = 173, the last weight to a (larger remainder).
        (0.2, {"a": 147, "b": 50, "c": 27}),
        # d = 0.5: target 561; b dense, then c (12/72 * 511/77 = 1.106 > 1) dense too,
        # leaving 561 - 50 - 72 = 439 for a.
        (0.5, {"a": 439, "b": 50, "c": 72}),
        # d = 0.05: target round(56.1) = 56, scale 56/104, nobody over 1:
        # 65 * 56/104 = 35.0, 27 * 56/104 = 14.54, 12 * 56/104 = 6.46 -> 35 + 14 + 6 = 55,
        # the last weight to b (remainder .54 > .46).
        (0.05, {"a": 35, "b": 15, "c": 6}),
    ],
)
def test_erk_counts_by_hand(density, expected):
    shapes = {"a": (40, 25), "b": (25, 2), "c": (3, 3, 2, 4)}
    counts = erk_counts(shapes, density)
    assert counts == expected
    assert sum(counts.values()) == round(density * 1122)


def test_erk_through_prune():
    # 1,000 + 50 weights, sums of dims 65 and 27.
    # d = 0.1: target 105, nobody dense: 65 * 105/92 = 74.18, 27 * 105/92 = 30.82 -> 74, 31.
    masks = tfprune.prune(_mlp(), "erk", 0.1)
    assert _counts(masks) == {WIDE: 74, HEAD: 31}
    # d = 0.3: target 315, head (0.54 * 315/92 = 1.85) dense, wide keeps 315 - 50 = 265.
    masks = tfprune.prune(_mlp(), "erk", 0.3)
    assert _counts(masks) == {WIDE: 265, HEAD: 50}


def test_ratio_of_copies_the_layer_counts_with_random_positions():
    data = _mlp_data()
    snip = tfprune.prune(_mlp(), "snip", 0.1, data, seed=4)
    ratio = tfprune.prune(_mlp(), "ratio_of:snip", 0.1, data, seed=4)
    assert _counts(ratio) == _counts(snip)
    assert sum(_counts(ratio).values()) == 105
    kept = _counts(snip)[WIDE]
    assert kept > 20
    assert np.sum(ratio[WIDE] * snip[WIDE]) <= kept / 2
    again = tfprune.prune(_mlp(), "ratio_of:snip", 0.1, data, seed=4)
    other = tfprune.prune(_mlp(), "ratio_of:snip", 0.1, data, seed=5)
    assert _same_masks(ratio, again)
    assert _counts(other) == _counts(snip)
    assert not np.array_equal(other[WIDE], ratio[WIDE])
    # The model holds the random-position masks, not the inner method's.
    model = _mlp()
    masks = tfprune.prune(model, "ratio_of:snip", 0.1, data, seed=4)
    assert _same_masks(tfprune.get_masks(model), masks)


@pytest.mark.parametrize("method", ["uniform", "erk", "ratio_of:snip"])
def test_layerwise_methods_ignore_scope(method):
    data = _mlp_data()
    global_masks = tfprune.prune(_mlp(), method, 0.2, data, seed=1)
    layer_masks = tfprune.prune(_mlp(), method, 0.2, data, scope="layer", seed=1)
    assert _same_masks(global_masks, layer_masks)
    with pytest.raises(ConfigError, match="'bogus'"):
        tfprune.prune(_mlp(), method, 0.2, data, scope="bogus")


def test_layerwise_errors():
    with pytest.raises(ConfigError, match="'ratio_of:bogus'"):
        tfprune.prune(_mlp(), "ratio_of:bogus", 0.1)
    with pytest.raises(ConfigError, match="'ratio_of:erk'"):
        tfprune.prune(_mlp(), "ratio_of:erk", 0.1)
    with pytest.raises(ConfigError, match="temperature"):
        tfprune.prune(_mlp(), "erk", 0.1, temperature=2)


# ---------------------------------------------------------------------------------------------
# Layer collapse and `min_layer_density` (SPEC §1 Selection: the total stays round(d * N)).


def test_global_magnitude_collapses_a_tiny_layer():
    # wide's 1,000 weights are ~1e-6, so the 42 = round(0.04 * 1050) kept all go to head.
    report = prune_with_report(_mlp(wide_scale=1e-6), "magnitude", 0.04)
    assert report.collapsed_layers == [WIDE]
    assert _counts(report.masks) == {WIDE: 0, HEAD: 42}
    assert report.layer_density == {WIDE: 0.0, HEAD: 42 / 50}


def test_min_layer_density_prevents_collapse():
    model = _mlp(wide_scale=1e-6)
    magnitudes = tfprune.score(model, "magnitude")
    report = prune_with_report(model, "magnitude", 0.04, min_layer_density=0.01)
    assert report.collapsed_layers == []
    # Floors ceil(0.01 * 1000) = 10 and ceil(0.01 * 50) = 1; the other 31 of the 42 go to head.
    assert _counts(report.masks) == {WIDE: 10, HEAD: 32}
    assert sum(_counts(report.masks).values()) == round(0.04 * 1050)
    for path, floor in ((WIDE, 10), (HEAD, 1)):
        assert report.masks[path].sum() >= floor == math.ceil(0.01 * report.masks[path].size)
        kept = magnitudes[path][report.masks[path] == 1]
        dropped = magnitudes[path][report.masks[path] == 0]
        assert kept.min() > dropped.max()  # each layer keeps its own top magnitudes


@pytest.mark.parametrize("bad", [-0.1, 2, 1.5, "x", None, True])
def test_invalid_min_layer_density(bad):
    model = _mlp()
    with pytest.raises(ConfigError, match="min_layer_density"):
        tfprune.prune(model, "magnitude", 0.1, min_layer_density=bad)
    for mask in tfprune.get_masks(model).values():
        assert np.all(mask == 1)


def test_min_layer_density_above_the_budget():
    model = _mlp()
    # Floors 500 + 25 = 525 weights, but density 0.04 keeps only 42.
    with pytest.raises(ConfigError, match="min_layer_density"):
        tfprune.prune(model, "magnitude", 0.04, min_layer_density=0.5)
    for mask in tfprune.get_masks(model).values():
        assert np.all(mask == 1)
    # With rounds, round 1 (density 0.04 ** (1/3) = 0.342, 359 kept) fits floors of
    # 300 + 15 = 315, round 2 (0.117, 123 kept) does not: the call is rejected as a whole.
    with pytest.raises(ConfigError, match="min_layer_density"):
        tfprune.prune(model, "magnitude", 0.04, rounds=3, min_layer_density=0.3)
    for mask in tfprune.get_masks(model).values():
        assert np.all(mask == 1)
    # Exactly at the budget is fine: floors 40 + 2 = 42 of 42.
    masks = tfprune.prune(model, "magnitude", 0.04, min_layer_density=0.04)
    assert _counts(masks) == {WIDE: 40, HEAD: 2}


# ---------------------------------------------------------------------------------------------
# `prune_with_report` (SPEC §1 Selection, §2 rounds).


def _tiny() -> keras.Model:
    inputs = keras.Input((3,))
    h = MaskedDense(2, name="one")(inputs)
    outputs = MaskedDense(2, name="two")(h)
    model = keras.Model(inputs, outputs)
    model.get_layer("one").kernel.assign([[0.1, -0.5], [0.3, 0.05], [-0.2, 0.4]])
    model.get_layer("two").kernel.assign([[-0.15, 0.6], [0.25, -0.35]])
    return model


def test_report_of_a_global_magnitude_run():
    report = prune_with_report(_tiny(), "magnitude", 0.5)
    # |w| of one: .1 .5 .3 .05 .2 .4, of two: .15 .6 .25 .35; the top 5 of 10 are
    # .6 .5 .4 .35 .3, so one keeps .5 .4 .3 and two keeps .6 .35.
    np.testing.assert_array_equal(report.masks["one/kernel"], [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(report.masks["two/kernel"], [[0, 1], [0, 1]])
    assert report.rounds == 1
    assert report.ablations == ()
    assert report.density == 0.5
    assert report.layer_density == {"one/kernel": 0.5, "two/kernel": 0.5}
    assert report.collapsed_layers == []
    assert report.seconds >= 0
    expected = {
        "one/kernel": {"min": 0.05, "max": 0.5, "median": 0.25, "mean": 1.55 / 6, "kept_min": 0.3},
        "two/kernel": {"min": 0.15, "max": 0.6, "median": 0.3, "mean": 1.35 / 4, "kept_min": 0.35},
    }
    assert list(report.score_stats) == ["one/kernel", "two/kernel"]
    for path, stats in report.score_stats.items():
        # The weights are float32 roundings of the decimals (relative error u each); min, max,
        # median and mean of positive values keep that relative error: one rounding.
        for key, value in expected[path].items():
            assert stats[key] == approx(value, np.float32, 1), (path, key)
        assert stats["min"] <= stats["median"] <= stats["max"]
        assert stats["std"] > 0
        # The largest pruned score anywhere is .25 (exact in float32), below every layer's
        # lowest kept score.
        assert stats["kept_min"] > 0.25


def test_report_rounds_and_empty_layers():
    data = (np.ones((4, 3), dtype=np.float32), np.array([0, 1, 0, 1]))
    assert prune_with_report(_tiny(), "snip", 0.5, data).rounds == 1
    assert prune_with_report(_tiny(), "magnitude", 0.5, rounds=4).rounds == 4
    # 0.05 * 10 rounds to 0: nothing kept, kept_min is None and every layer collapsed.
    report = prune_with_report(_tiny(), "magnitude", 0.05)
    assert report.collapsed_layers == ["one/kernel", "two/kernel"]
    assert all(stats["kept_min"] is None for stats in report.score_stats.values())
