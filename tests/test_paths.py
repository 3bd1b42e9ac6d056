"""Tests of the path methods `synflow_l2` and `phew` (SPEC §7) against independent computations:
SynFlow-L2 against R and its gradient by hand and by finite differences; PHEW's walks against
their transition probabilities (chi-square), their exact expectation and the budget."""

from __future__ import annotations

import logging
import math
import os

import _procs
import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune import registry, streams
from tfprune.errors import ConfigError, ModelError
from tfprune.experiment import Experiment
from tfprune.layers import MaskedConv2D, MaskedDense, MaskedEmbedding, prunable_weights
from tfprune.pruning import phew
from tfprune.pruning.api import Budget
from tfprune.pruning.layerwise import erk_counts
from tfprune.pruning.phew import PhewScorer
from tfprune.pruning.synflow import SynflowL2Scorer, SynflowScorer

# ---------------------------------------------------------------------------------------------
# Small models.


def _mlp(seed: int = 0, sizes=(3, 4, 2)) -> keras.Model:
    """An MLP with ReLU, biases and weights of both signs; layers `dense0`, `dense1`, ..."""
    rng = np.random.default_rng(seed)
    x = inputs = keras.Input((sizes[0],))
    for index, units in enumerate(sizes[1:]):
        last = index == len(sizes) - 2
        x = MaskedDense(units, activation=None if last else "relu", name=f"dense{index}")(x)
    model = keras.Model(inputs, x, name="mlp")
    for layer in model.layers[1:]:
        layer.kernel.assign(rng.normal(size=tuple(layer.kernel.shape)))
        layer.bias.assign(rng.normal(scale=0.5, size=tuple(layer.bias.shape)))
    return model


def _cnn(seed: int = 0) -> keras.Model:
    """conv 3x3 (3 filters, bias) -> BatchNorm -> ReLU -> Flatten -> Dense 3."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((5, 5, 2))
    h = MaskedConv2D(3, 3, name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Flatten(name="flat")(h)
    model = keras.Model(x, MaskedDense(3, name="out")(h), name="cnn")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(scale=0.3, size=3))
    bn.moving_variance.assign(rng.uniform(2.0, 4.0, size=3))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=3) * np.array([1.0, -1.0, 1.0]))
    bn.beta.assign(rng.normal(scale=0.1, size=3) * np.array([1.0, 1.0, -1.0]))
    model.get_layer("conv").bias.assign(rng.normal(scale=0.1, size=3))
    return model


def _residual(seed: int = 0) -> keras.Model:
    """A stem conv, an identity block, a downsampling block with a 1x1 shortcut conv, then
    Flatten and Dense: every junction PHEW walks through."""
    keras.utils.set_random_seed(seed)

    def conv(x, filters, size, name, strides=1):
        x = MaskedConv2D(filters, size, strides=strides, padding="same", name=name)(x)
        return keras.layers.BatchNormalization(name=f"{name}_bn")(x)

    x = inputs = keras.Input((6, 6, 2))
    x = keras.layers.ReLU()(conv(x, 4, 3, "stem"))
    h = keras.layers.ReLU()(conv(x, 4, 3, "a1"))
    x = keras.layers.ReLU()(keras.layers.Add()([conv(h, 4, 3, "a2"), x]))
    h = keras.layers.ReLU()(conv(x, 6, 3, "b1", strides=2))
    x = keras.layers.Add()([conv(h, 6, 3, "b2"), conv(x, 6, 1, "b_short", strides=2)])
    x = keras.layers.Flatten()(keras.layers.ReLU()(x))
    return keras.Model(inputs, MaskedDense(3, name="out")(x), name="residual")


def _total(model: keras.Model) -> int:
    return sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())


def _kept(masks: dict) -> int:
    return int(sum(m.sum() for m in masks.values()))


def _state(model: keras.Model) -> list:
    return [(v.path, v.dtype, v.numpy().copy()) for v in model.variables]


def _assert_same_state(model: keras.Model, before) -> None:
    after = _state(model)
    assert [(p, d) for p, d, _ in after] == [(p, d) for p, d, _ in before]
    for (path, _, value), (_, _, old) in zip(after, before, strict=True):
        np.testing.assert_array_equal(value, old, err_msg=path)


# ---------------------------------------------------------------------------------------------
# SPEC §7 synflow_l2: |θ ⊙ ∂R/∂θ|, R the output sum of the float64 copy with θ ⊙ θ for θ.


def _l2_flow(w1, b1, w2, b2, m1, m2) -> float:
    """R of `_mlp` by hand in float64: parameters squared, masks applied, one all-ones input."""
    h = np.maximum(np.ones(len(w1)) @ (w1**2 * m1) + b1**2, 0.0)
    return float(np.sum(h @ (w2**2 * m2) + b2**2))


def test_synflow_l2_matches_hand_derivation_on_mlp():
    model = _mlp()
    hidden, logits = model.get_layer("dense0"), model.get_layer("dense1")
    m1 = np.ones((3, 4), dtype=np.float32)
    m1[1, 2] = m1[0, 0] = 0.0
    hidden.mask.assign(m1)
    scores = tfprune.score(model, "synflow_l2")
    w1, b1, w2, b2 = (
        np.float64(v.numpy()) for v in (hidden.kernel, hidden.bias, logits.kernel, logits.bias)
    )
    # Squares are positive, so every ReLU passes: h = 1ᵀ(W1² ⊙ m1) + b1², R = h W2² 1 + Σ b2²,
    # ∂R/∂W1_ai = 2 W1_ai m1_ai (W2² 1)_i and ∂R/∂W2_ij = 2 W2_ij h_i.
    h = (w1**2 * m1).sum(axis=0) + b1**2
    expected = {
        "dense0/kernel": 2 * w1**2 * m1 * (w2**2).sum(axis=1)[None, :],
        "dense1/kernel": 2 * w2**2 * h[:, None],
    }
    assert list(scores) == list(expected)
    for path, value in expected.items():
        assert scores[path].dtype == np.float64
        # Each entry: a sum of 3 squares, a bias, 2 products (float64 all the way).
        np.testing.assert_allclose(scores[path], value, **tolerance(np.float64, 8), err_msg=path)
    assert scores["dense0/kernel"][1, 2] == scores["dense0/kernel"][0, 0] == 0.0
    assert np.count_nonzero(scores["dense0/kernel"]) == 10
    # Not SynFlow: the absolute values give other scores and another order.
    synflow = tfprune.score(model, "synflow")["dense0/kernel"]
    assert not np.allclose(synflow, scores["dense0/kernel"], rtol=1e-3)


def test_synflow_l2_is_theta_times_finite_differences_of_r():
    """|θ ⊙ ∂R/∂θ| with ∂R/∂θ by central differences of R (exact up to rounding: R is
    quadratic in each θ)."""
    model = _mlp(seed=3)
    hidden, logits = model.get_layer("dense0"), model.get_layer("dense1")
    m2 = np.ones((4, 2), dtype=np.float32)
    m2[3, 1] = 0.0
    logits.mask.assign(m2)
    scores = tfprune.score(model, "synflow_l2")
    params = [
        np.float64(v.numpy()) for v in (hidden.kernel, hidden.bias, logits.kernel, logits.bias)
    ]
    masks = (np.ones((3, 4)), np.float64(m2))
    eps = 1e-3
    for slot, path in ((0, "dense0/kernel"), (2, "dense1/kernel")):
        fd = np.zeros_like(params[slot])
        for index in np.ndindex(fd.shape):
            plus = [p.copy() for p in params]
            minus = [p.copy() for p in params]
            plus[slot][index] += eps
            minus[slot][index] -= eps
            fd[index] = (_l2_flow(*plus, *masks) - _l2_flow(*minus, *masks)) / (2 * eps)
        expected = np.abs(params[slot] * fd)
        # Rounding of R (about 12 terms) divided by 2 eps.
        scale = _l2_flow(*params, *masks) * np.abs(params[slot]).max() / eps
        np.testing.assert_allclose(scores[path], expected, **tolerance(np.float64, 12, scale))
        assert np.count_nonzero(expected) == expected.size - (path == "dense1/kernel")


def test_synflow_l2_with_batch_norm_squares_parameters_and_keeps_statistics():
    """Kernels, conv bias, gamma and beta squared; moving mean and variance as they are; BN in
    inference mode; float64 (SPEC §7 and §2)."""
    model = _cnn(seed=4)
    conv, bn, out = model.get_layer("conv"), model.get_layer("bn"), model.get_layer("out")
    mask = np.ones((3, 3, 2, 3), dtype=np.float32)
    mask[0, 0, 0, 0] = mask[2, 1, 1, 2] = 0.0
    conv.mask.assign(mask)
    bn.moving_mean.assign([0.1, 50.0, -0.2])  # channel 1 is cut by the ReLU
    before = _state(model)
    scores = tfprune.score(model, "synflow_l2")
    _assert_same_state(model, before)

    def f64(variable):
        return tf.constant(np.float64(variable.numpy()))

    k1, k2 = f64(conv.kernel), f64(out.kernel)
    with tf.GradientTape() as tape:
        tape.watch([k1, k2])
        h = tf.nn.conv2d(tf.ones((1, 5, 5, 2), tf.float64), k1**2 * mask, 1, "VALID")
        h = h + f64(conv.bias) ** 2
        h = (h - f64(bn.moving_mean)) / tf.sqrt(f64(bn.moving_variance) + bn.epsilon)
        h = tf.nn.relu(h * f64(bn.gamma) ** 2 + f64(bn.beta) ** 2)
        total = tf.reduce_sum(tf.reshape(h, (1, -1)) @ k2**2 + f64(out.bias) ** 2)
    grads = tape.gradient(total, [k1, k2])
    expected = [np.abs(k.numpy() * g.numpy()) for k, g in zip([k1, k2], grads, strict=True)]
    for (path, score), value in zip(scores.items(), expected, strict=True):
        # A conv of 18 terms, BN (4 operations), ReLU, a dot product of 27 and the backward.
        bounds = tolerance(np.float64, 2 * (18 + 5 + 27))
        np.testing.assert_allclose(score, value, **bounds, err_msg=path)
    assert np.all(scores["conv/kernel"][mask == 0] == 0.0)
    cut = scores["out/kernel"].reshape(3, 3, 3, 3)[:, :, 1, :]
    assert np.all(cut == 0.0) and np.count_nonzero(scores["out/kernel"]) == 81 - cut.size


def test_synflow_l2_is_iterative_with_exact_counts_every_round(monkeypatch):
    entry = registry.get("synflow_l2")
    assert entry.default_rounds == registry.get("synflow").default_rounds == 100
    assert not entry.needs_data and entry.option_defaults() == {}
    assert issubclass(entry.scorer_class(), SynflowScorer)
    seen = []
    real = SynflowL2Scorer.__call__

    def counting(self, model, *args):
        seen.append(_kept(tfprune.get_masks(model)))
        return real(self, model, *args)

    monkeypatch.setattr(SynflowL2Scorer, "__call__", counting)
    model = _cnn(seed=6)
    total = _total(model)
    masks = tfprune.prune(model, "synflow_l2", 0.1)
    assert len(seen) == 100
    # Before round i the mask of round i - 1 holds round(0.1^((i-1)/100) N) weights.
    assert seen == [round(0.1 ** (i / 100) * total) for i in range(100)]
    assert _kept(masks) == round(0.1 * total)


def test_synflow_l2_never_revives_and_leaves_the_model_unchanged():
    model = _cnn(seed=8)
    rng = np.random.default_rng(8)
    previous = {
        path: (rng.random(tuple(w.kernel.shape)) < 0.6).astype(np.float32)
        for path, w in prunable_weights(model).items()
    }
    tfprune.assign_masks(model, previous)
    before = _state(model)
    masks = tfprune.prune(model, "synflow_l2", 0.3, rounds=4)
    for path, mask in previous.items():
        assert np.all(masks[path][mask == 0] == 0.0)
    assert _kept(masks) == round(0.3 * _total(model))
    mask_paths = {w.mask.path: path for path, w in prunable_weights(model).items()}
    after = [(p, d, masks[mask_paths[p]] if p in mask_paths else v) for p, d, v in before]
    _assert_same_state(model, after)


def test_synflow_l2_on_lenet_keeps_exactly_round_d_n():
    keras.utils.set_random_seed(0)
    model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    report = tfprune.prune_with_report(model, "synflow_l2", 0.0281)
    assert report.rounds == 100
    assert _kept(report.masks) == round(0.0281 * 266_200) == 7480
    assert not report.collapsed_layers


# ---------------------------------------------------------------------------------------------
# SPEC §7 phew: walks biased by |θ|, until the budget is met; keep-scores are visit counts.


def _phew_scores(model, budget: Budget, seed: int = 0) -> dict:
    """The scorer as `prune` calls it: the budget set, the run's "scores" stream."""
    scorer = PhewScorer()
    scorer.budget = budget
    weights = prunable_weights(model)
    return scorer(model, weights, None, streams.generator(seed, "scores"))


def _wilson_hilferty(df: int, z: float = 4.75) -> float:
    """The chi-square(df) quantile exceeded with probability about 1e-6 (z = 4.75)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    """Σ (observed - expected)² / expected over the cells of positive probability of a table
    of multinomial counts (one row per draw's distribution)."""
    expected = counts.sum(axis=1, keepdims=True) * probabilities
    live = probabilities > 0
    return float(np.sum((counts[live] - expected[live]) ** 2 / expected[live]))


def _single_layer_walks(model, pairs: int, seed: int = 5):
    weights = prunable_weights(model)
    graph = phew._Graph(model, weights)
    tables = phew._Tables(graph, weights)
    crossed = phew.walk_pairs(graph, tables, 0, pairs, np.random.default_rng(seed))
    # One layer: each walk crosses one connection, forward and backward walks alternating.
    assert len(crossed) == 2 * pairs
    return crossed[0::2], crossed[1::2]


def test_phew_steps_are_proportional_to_the_weight_magnitudes_dense():
    model = _mlp(seed=1, sizes=(3, 4))
    mask = np.ones((3, 4), dtype=np.float32)
    mask[2, 1] = 0.0  # never walked
    model.get_layer("dense0").mask.assign(mask)
    w = np.abs(np.float64(model.get_layer("dense0").kernel.numpy())) * mask
    forward, backward = _single_layer_walks(model, 12_000)
    # Round-robin seeds: every input unit starts 4000 forward walks, every output unit 3000
    # backward ones; each is a multinomial draw with probabilities |w| / Σ|w| over the unit's
    # connections (flat id = i * 4 + o).
    table_f = np.bincount(forward, minlength=12).reshape(3, 4)
    table_b = np.bincount(backward, minlength=12).reshape(3, 4).T
    assert table_f.sum(axis=1).tolist() == [4000] * 3
    assert table_b.sum(axis=1).tolist() == [3000] * 4
    assert table_f[2, 1] == table_b[1, 2] == 0
    p_f = w / w.sum(axis=1, keepdims=True)
    p_b = (w / w.sum(axis=0, keepdims=True)).T
    # Degrees of freedom: the cells of positive probability, less one per row.
    stat_f, stat_b = _chi_square(table_f, p_f), _chi_square(table_b, p_b)
    assert stat_f < _wilson_hilferty(11 - 3) and stat_b < _wilson_hilferty(11 - 4)
    # The test can fail: uniform steps, or steps proportional to w², are far off.
    assert _chi_square(table_f, np.full((3, 4), 1 / 4)) > 10 * _wilson_hilferty(8)
    squares = (w**2 / (w**2).sum(axis=0, keepdims=True)).T
    assert _chi_square(table_b, squares) > 10 * _wilson_hilferty(7)


def test_phew_steps_are_proportional_to_the_weight_magnitudes_conv():
    """A convolution's step picks channel and kernel position together ∝ |θ| (the reference
    code's channel by kernel L1 norm, then position by |θ|)."""
    keras.utils.set_random_seed(2)
    x = keras.Input((5, 5, 2))
    model = keras.Model(x, MaskedConv2D(3, 3, name="conv")(x))
    w = np.abs(np.float64(model.get_layer("conv").kernel.numpy()))  # (3, 3, 2, 3)
    forward, backward = _single_layer_walks(model, 6_000)
    counts = np.bincount(np.concatenate([forward, backward]), minlength=w.size).reshape(w.shape)
    # Separate the two directions: forward rows are input channels, backward rows outputs.
    table_f = np.bincount(forward, minlength=w.size).reshape(9, 2, 3).transpose(1, 0, 2)
    table_b = np.bincount(backward, minlength=w.size).reshape(9, 2, 3).transpose(2, 0, 1)
    cube = w.reshape(9, 2, 3)
    p_f = cube.transpose(1, 0, 2).reshape(2, 27)
    p_b = cube.transpose(2, 0, 1).reshape(3, 18)
    stat_f = _chi_square(table_f.reshape(2, 27), p_f / p_f.sum(axis=1, keepdims=True))
    stat_b = _chi_square(table_b.reshape(3, 18), p_b / p_b.sum(axis=1, keepdims=True))
    assert stat_f < _wilson_hilferty(2 * 26) and stat_b < _wilson_hilferty(3 * 17)
    assert counts.sum() == 12_000
    # Channels by kernel L1 norm, then a uniform position, would be far off.
    channel = p_b.reshape(3, 9, 2).sum(axis=1)
    uniform_position = np.repeat(channel / channel.sum(axis=1, keepdims=True) / 9, 9, axis=0)
    uniform_position = uniform_position.reshape(3, 9, 2).reshape(3, 18)
    assert _chi_square(table_b.reshape(3, 18), uniform_position) > 5 * _wilson_hilferty(51)


def test_phew_expected_visits_by_hand_are_what_score_returns():
    """Without a budget (`tfprune.score`) the keep-score is the expected number of crossings
    by one forward and one backward walk."""
    model = _mlp(seed=7, sizes=(3, 4, 2))
    m1 = np.ones((3, 4), dtype=np.float32)
    m1[0, 1] = 0.0
    model.get_layer("dense0").mask.assign(m1)
    w1 = np.abs(np.float64(model.get_layer("dense0").kernel.numpy())) * m1
    w2 = np.abs(np.float64(model.get_layer("dense1").kernel.numpy()))
    forward1 = (1 / 3) * w1 / w1.sum(axis=1, keepdims=True)
    forward2 = forward1.sum(axis=0)[:, None] * w2 / w2.sum(axis=1, keepdims=True)
    backward2 = (1 / 2) * w2 / w2.sum(axis=0, keepdims=True)
    backward1 = backward2.sum(axis=1)[None, :] * w1 / w1.sum(axis=0, keepdims=True)
    scores = tfprune.score(model, "phew", seed=123)
    np.testing.assert_allclose(scores["dense0/kernel"], forward1 + backward1, rtol=1e-12)
    np.testing.assert_allclose(scores["dense1/kernel"], forward2 + backward2, rtol=1e-12)
    assert sum(s.sum() for s in scores.values()) == pytest.approx(4.0)  # 2 walks x 2 layers


def test_phew_walks_the_residual_graph_as_expected():
    """Branches and flattening: the walk frequencies match the exact expectation, connection
    by connection; a downsampling block's convs and its shortcut each take half the walks."""
    model = _residual()
    weights = prunable_weights(model)
    graph = phew._Graph(model, weights)
    names = [p.split("/")[0] for p in graph.paths]
    following = {
        names[i]: sorted(names[k.target] for k in links) for i, links in enumerate(graph.following)
    }
    preceding = {
        names[i]: sorted(names[k.source] for k in links) for i, links in enumerate(graph.preceding)
    }
    assert following == {
        "stem": ["a1"],
        "a1": ["a2"],
        "a2": ["b1", "b_short"],
        "b1": ["b2"],
        "b2": ["out"],
        "b_short": ["out"],
        "out": [],
    }
    assert preceding == {
        "stem": [],
        "a1": ["stem"],
        "a2": ["a1"],
        "b1": ["a2"],
        "b2": ["b1"],
        "b_short": ["a2"],
        "out": ["b2", "b_short"],
    }
    assert names[graph.entry] == "stem" and names[graph.exit] == "out"
    # Flatten of (3, 3, 6) channels-last: feature f belongs to channel f % 6.
    link = graph.preceding[graph.exit][0]
    assert link.features.shape == (6, 9)
    np.testing.assert_array_equal(link.channel_of, np.arange(54) % 6)
    tables = phew._Tables(graph, weights)
    expected = tables.expected_visits()
    per_layer = dict(zip(names, np.add.reduceat(expected, graph.offsets[:-1]), strict=True))
    assert per_layer == pytest.approx(
        {"stem": 2, "a1": 2, "a2": 2, "b1": 1, "b2": 1, "b_short": 1, "out": 2}
    )
    pairs = 20_000
    crossed = phew.walk_pairs(graph, tables, 0, pairs, np.random.default_rng(11))
    counts = np.bincount(crossed, minlength=expected.size)
    mean = pairs * expected
    # Each count is a sum of independent 0/1 crossings (variance <= mean); Bernstein's
    # inequality puts |count - mean| >= 7 sqrt(mean) + 10 below 1e-6 for every connection.
    assert np.all(np.abs(counts - mean) < 7 * np.sqrt(mean) + 10)
    assert np.all(counts[expected == 0] == 0)
    # ...and the test can fail: always taking the main branch would move 1/2 of the walks.
    short = slice(graph.offsets[names.index("b_short")], graph.offsets[names.index("b_short") + 1])
    assert abs(counts[short].sum() - pairs) < 7 * math.sqrt(pairs) + 10


def test_phew_flattening_channels_first_follows_keras():
    """A channels-first conv flattened by Flatten(channels_last) gives feature f to channel
    f // positions; Flatten(channels_first) moves channels last first: channel f % channels."""
    for data_format, expected in (
        ("channels_last", np.arange(27) // 9),
        ("channels_first", np.arange(27) % 3),
    ):
        x = keras.Input((2, 5, 5))
        h = MaskedConv2D(3, 3, data_format="channels_first", name="conv")(x)
        h = keras.layers.Flatten(data_format=data_format)(h)
        model = keras.Model(x, MaskedDense(2, name="out")(h))
        graph = phew._Graph(model, prunable_weights(model))
        (link,) = graph.following[0]
        np.testing.assert_array_equal(link.channel_of, expected)


def test_phew_keeps_exactly_the_walked_connections_on_lenet():
    keras.utils.set_random_seed(0)
    model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    before = _state(model)
    report = tfprune.prune_with_report(model, "phew", 0.0281, seed=3)
    kept = round(0.0281 * 266_200)
    assert _kept(report.masks) == kept == 7480
    scores = _phew_scores(twin, Budget(total=kept), seed=3)
    # The keep-scores are visit counts: positive exactly on the kept connections.
    assert sum(int(np.count_nonzero(s)) for s in scores.values()) == kept
    for path, mask in report.masks.items():
        np.testing.assert_array_equal(mask, (scores[path] > 0).astype(np.float32), err_msg=path)
        assert np.all(scores[path] == np.round(scores[path]))
    assert max(s.max() for s in scores.values()) > 1  # revisits are counted, not kept twice
    mask_paths = {w.mask.path: path for path, w in prunable_weights(model).items()}
    after = [(p, d, report.masks[mask_paths[p]] if p in mask_paths else v) for p, d, v in before]
    _assert_same_state(model, after)  # only the masks changed
    _assert_same_state(twin, [(p, d, v) for p, d, v in before])  # scoring changes nothing


def test_phew_is_seeded():
    masks = [
        tfprune.prune(_mlp(seed=1, sizes=(20, 15, 10, 5)), "phew", 0.2, seed=s) for s in (4, 4, 5)
    ]
    for path in masks[0]:
        np.testing.assert_array_equal(masks[0][path], masks[1][path])
    assert any(not np.array_equal(masks[0][p], masks[2][p]) for p in masks[0])
    assert _kept(masks[0]) == _kept(masks[2]) == round(0.2 * 500)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("density", [0.05, 0.2])
def test_phew_kept_connections_form_paths(seed, density):
    """Every kept connection lies on a walk from the inputs or the outputs: a hidden unit with
    a kept incoming connection has a kept outgoing one and the other way round, except at most
    the one unit where the walk that met the budget stopped."""
    masks = tfprune.prune(_mlp(seed=seed, sizes=(20, 15, 10, 5)), "phew", density, seed=seed)
    layers = list(masks.values())
    dangling = 0
    for incoming, outgoing in zip(layers[:-1], layers[1:], strict=True):
        fed = incoming.sum(axis=0) > 0
        feeding = outgoing.sum(axis=1) > 0
        dangling += int(np.sum(fed != feeding))
    assert dangling <= 1
    assert _kept(masks) == round(density * 500)


def test_phew_on_resnet20_walks_the_blocks():
    keras.utils.set_random_seed(0)
    model = tfprune.models.build("resnet20", (32, 32, 3), 10)
    report = tfprune.prune_with_report(model, "phew", 0.0281, seed=0)
    assert _kept(report.masks) == round(0.0281 * 270_896)
    assert not report.collapsed_layers
    density = {p.split("/")[0]: d for p, d in report.layer_density.items()}
    # The shortcut convs take half the walks through their block, on 9x fewer weights.
    assert density["stage2_block1_shortcut_conv"] > density["stage2_block1_conv2"]


@pytest.mark.parametrize("allocation, density", [("layer", 0.3), ("erk", 0.55)])
def test_phew_with_fixed_layer_counts_keeps_each_layers_walked_connections(allocation, density):
    model = _mlp(seed=2, sizes=(20, 15, 10, 5))
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    shapes = {p: tuple(w.kernel.shape) for p, w in prunable_weights(model).items()}
    if allocation == "erk":
        counts = erk_counts(shapes, density)
    else:
        counts = {p: round(density * math.prod(s)) for p, s in shapes.items()}
    masks = tfprune.prune(model, "phew", density, allocation=allocation, seed=9)
    assert {p: int(m.sum()) for p, m in masks.items()} == counts
    scores = _phew_scores(twin, Budget(total=None, layers=counts), seed=9)
    for path, mask in masks.items():
        if counts[path] < mask.size:
            np.testing.assert_array_equal(mask, (scores[path] > 0).astype(np.float32))
    if allocation == "erk":
        assert any(counts[p] == masks[p].size for p in masks)  # a dense layer needs no walk


def test_phew_rounds_have_exact_counts_and_never_revive(monkeypatch):
    seen = []
    real = PhewScorer.__call__

    def recording(self, model, *args):
        seen.append((self.budget, tfprune.get_masks(model)))
        return real(self, model, *args)

    monkeypatch.setattr(PhewScorer, "__call__", recording)
    model = _mlp(seed=3, sizes=(20, 15, 10, 5))
    masks = tfprune.prune(model, "phew", 0.1, rounds=3, seed=1)
    assert [budget.total for budget, _ in seen] == [round(0.1 ** (i / 3) * 500) for i in (1, 2, 3)]
    for i, (_, previous) in enumerate(seen):
        assert _kept(previous) == round(0.1 ** (i / 3) * 500)
        later = seen[i + 1][1] if i + 1 < len(seen) else masks
        for path in previous:
            assert np.all(later[path][previous[path] == 0] == 0)
    assert _kept(masks) == round(0.1 * 500)


def test_phew_min_layer_density_keeps_the_floors_and_the_count():
    plain = tfprune.prune(_mlp(seed=4, sizes=(20, 15, 10, 5)), "phew", 0.16, seed=2)
    floors = [math.ceil(0.12 * m.size) for m in plain.values()]  # 36, 18, 6
    assert int(plain["dense0/kernel"].sum()) < floors[0]  # the walks alone leave it short
    model = _mlp(seed=4, sizes=(20, 15, 10, 5))
    masks = tfprune.prune(model, "phew", 0.16, min_layer_density=0.12, seed=2)
    assert _kept(masks) == round(0.16 * 500)
    assert [int(m.sum()) >= f for m, f in zip(masks.values(), floors, strict=True)] == [True] * 3


def test_phew_walks_from_the_first_prunable_layer_whatever_comes_before():
    """Seeds are the first prunable layer's input units: a reshape (which phew could not
    walk through between prunable layers) before it does not matter."""
    x = keras.Input((2, 4))
    h = keras.layers.Reshape((8,))(keras.layers.Rescaling(0.5)(x))
    model = keras.Model(x, MaskedDense(3, name="out")(MaskedDense(5, name="hidden")(h)))
    masks = tfprune.prune(model, "phew", 0.4, seed=1)
    assert _kept(masks) == round(0.4 * 55)
    # A forward walk leaves each of the 8 input units once every 8 pairs: all are used.
    assert np.all(masks["hidden/kernel"].sum(axis=1) > 0)
    inside = keras.Model(x, MaskedDense(3)(keras.layers.Reshape((3, 2))(MaskedDense(6)(h))))
    with pytest.raises(ModelError, match="cannot walk through Reshape"):
        tfprune.prune(inside, "phew", 0.4)


def test_phew_budget_beyond_the_walks_keeps_every_walkable_connection(monkeypatch, caplog):
    """Zero weights are never walked: a budget larger than what the walks can reach keeps all
    they reach, and the rest by expected visits, with a warning; so does a walk limit hit."""
    caplog.set_level(logging.WARNING)
    model = _mlp(seed=6, sizes=(6, 5, 4))
    kernel = model.get_layer("dense0").kernel
    zeroed = kernel.numpy()
    zeroed[:2] = 0.0  # input units 0 and 1: 10 connections no walk can take
    kernel.assign(zeroed)
    masks = tfprune.prune(model, "phew", 0.9, seed=1)  # 45 of 50, 40 walkable
    assert _kept(masks) == 45
    assert np.all(masks["dense0/kernel"][2:] == 1) and np.all(masks["dense1/kernel"] == 1)
    assert any("short of the budget" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(phew, "MAX_WALKS_PER_WEIGHT", 0.1)  # one batch of 64 pairs at most
    model = _mlp(seed=6, sizes=(20, 15, 10, 5))
    scores = _phew_scores(model, Budget(total=400), seed=2)
    flat = np.concatenate([s.ravel() for s in scores.values()])
    visits, fill = flat[flat >= 1], flat[(flat > 0) & (flat < 1)]
    assert 0 < visits.size < 400 and np.all(visits == np.round(visits))
    # The rest ranks below every walked connection, by expected visits.
    assert fill.size and fill.max() <= 0.5
    masks = tfprune.prune(model, "phew", 0.8, seed=2)
    assert _kept(masks) == 400
    assert any("short of the budget" in r.getMessage() for r in caplog.records)


def test_phew_on_a_sequential_model_walks_as_on_the_functional_one():
    functional = _mlp(seed=5, sizes=(8, 6, 4))
    sequential = keras.Sequential(
        [keras.Input((8,)), MaskedDense(6, activation="relu"), MaskedDense(4)]
    )
    sequential.set_weights(functional.get_weights())
    a = tfprune.prune(functional, "phew", 0.3, seed=6)
    b = tfprune.prune(sequential, "phew", 0.3, seed=6)
    for mask_a, mask_b in zip(a.values(), b.values(), strict=True):
        np.testing.assert_array_equal(mask_a, mask_b)


def test_phew_registry_entry_and_ablations():
    entry = registry.get("phew")
    assert entry.kind == registry.AT_INIT and not entry.needs_data and entry.default_rounds == 1
    assert entry.option_defaults() == registry.scorer_options(PhewScorer) == {}
    # Visit counts are 0 on every connection not kept: their reverse order means nothing.
    assert entry.ablations == ("shuffle", "reinit")
    with pytest.raises(ConfigError, match="'invert' does not apply to phew"):
        tfprune.prune(_mlp(), "phew", 0.5, ablations=("invert",))
    with pytest.raises(ConfigError, match="'invert' does not apply to phew"):
        Experiment(method="phew", density=0.1, ablations=("invert",)).validate()
    plain = tfprune.prune(_mlp(seed=8, sizes=(20, 15, 5)), "phew", 0.2, seed=1)
    shuffled = tfprune.prune(
        _mlp(seed=8, sizes=(20, 15, 5)), "phew", 0.2, seed=1, ablations=("shuffle", "reinit")
    )
    assert [int(m.sum()) for m in plain.values()] == [int(m.sum()) for m in shuffled.values()]
    assert any(not np.array_equal(plain[p], shuffled[p]) for p in plain)


def test_phew_refuses_what_it_cannot_walk():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = MaskedDense(2)

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ModelError, match="subclassed"):
        tfprune.prune(subclassed, "phew", 0.5)

    x = keras.Input((4,))
    concatenated = keras.Model(
        x, MaskedDense(2)(keras.layers.Concatenate()([MaskedDense(3)(x), MaskedDense(3)(x)]))
    )
    with pytest.raises(ModelError, match="Concatenate"):
        tfprune.prune(concatenated, "phew", 0.5)

    tokens = keras.Input((5,), dtype="int32")
    embedded = keras.Model(tokens, MaskedDense(2)(MaskedEmbedding(10, 4)(tokens)))
    with pytest.raises(ModelError, match="Dense and Conv kernels only"):
        tfprune.prune(embedded, "phew", 0.5)

    shared = MaskedDense(4)
    x = keras.Input((4,))
    with pytest.raises(ModelError, match="shared layer"):
        tfprune.prune(keras.Model(x, shared(shared(x))), "phew", 0.5)

    x = keras.Input((4,))
    inner = keras.Sequential([keras.Input((3,)), MaskedDense(3)], name="inner")
    nested = keras.Model(x, MaskedDense(2)(inner(MaskedDense(3)(x))))
    with pytest.raises(ModelError, match="nested"):
        tfprune.prune(nested, "phew", 0.5)

    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model(
        [a, b], MaskedDense(2)(keras.layers.Add()([MaskedDense(3)(a), MaskedDense(3)(b)]))
    )
    with pytest.raises(ModelError, match="one input layer"):
        tfprune.prune(two, "phew", 0.5)


# test_cli runs every shipped gin file (synflow_l2.gin's 100 rounds included) for one step.
@pytest.mark.parametrize("method", ["phew", pytest.param("synflow_l2", marks=pytest.mark.slow)])
def test_command_line_run_with_shuffle_and_reinit(method, tmp_path):
    run_dir = str(tmp_path / "run")
    fewer_rounds = ["--gin_bindings=experiment.rounds = 5"] if method == "synflow_l2" else []
    proc = _procs.run(
        "tfprune.train",
        f"--gin_file=gin_configs/{method}.gin",
        "--gin_file=gin_configs/ablations/shuffle.gin",
        "--gin_file=gin_configs/ablations/reinit.gin",
        *fewer_rounds,
        "--gin_bindings=training.steps = 1",
        "--gin_bindings=experiment.train_limit = 256",
        "--gin_bindings=experiment.test_limit = 256",
        "--gin_bindings=training.progress = False",
        f"--output_dir={run_dir}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = _procs.results(run_dir)
    assert results["method"] == method and results["ablations"] == ["shuffle", "reinit"]
    with np.load(os.path.join(run_dir, "masks.npz")) as data:
        kept = sum(int(data[k].sum()) for k in data.files)
    assert kept == round(results["density_target"] * 266_200) == round(0.05 * 266_200)
    assert results["density_actual"] == pytest.approx(kept / 266_200)
