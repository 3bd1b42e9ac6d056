"""Tests of selection, the scorers, `tfprune.prune` and the mask utilities (SPEC §1, §2)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune import streams
from tfprune.errors import ConfigError, DataError, ModelError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.pruning import api, collapsed_layers
from tfprune.pruning.selection import select_counts

# ---------------------------------------------------------------------------------------------
# SPEC §1 Selection: exactly round(d * N) kept, stable ties, no revival, invert = bottom-k.

SHAPES = {"a/kernel": (3, 4), "b/kernel": (2, 2, 3), "c/kernel": (5,)}  # N = 12 + 12 + 5 = 29


def _scores(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {path: rng.normal(size=shape) for path, shape in SHAPES.items()}


def _ones() -> dict[str, np.ndarray]:
    return {path: np.ones(shape, dtype=np.float32) for path, shape in SHAPES.items()}


def _flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays.values()])


def _kept(masks: dict[str, np.ndarray]) -> int:
    return int(sum(m.sum() for m in masks.values()))


@pytest.mark.parametrize(
    "density, expected",
    # round(d * 29), by hand: 29, 28.971 -> 29, 14.5 -> 14 (half to even), 2.9 -> 3,
    # 0.58 -> 1, 0.29 -> 0, ~0 -> 0.
    [(1.0, 29), (0.999, 29), (0.5, 14), (0.1, 3), (0.02, 1), (0.01, 0), (1e-9, 0)],
)
def test_global_count_and_top_scores(density, expected):
    scores = _scores()
    masks = tfprune.select(scores, _ones(), density)
    assert list(masks) == list(SHAPES)
    assert all(masks[p].shape == SHAPES[p] and masks[p].dtype == np.float32 for p in SHAPES)
    assert set(np.unique(_flat(masks))) <= {0.0, 1.0}
    assert _kept(masks) == expected
    flat_scores, flat_masks = _flat(scores), _flat(masks)
    expected_kept = np.argsort(-flat_scores, kind="stable")[:expected]
    np.testing.assert_array_equal(np.flatnonzero(flat_masks), np.sort(expected_kept))


@pytest.mark.parametrize(
    "density, expected",
    # per layer round(d * n) for n = 12, 12, 5
    [(1.0, [12, 12, 5]), (0.75, [9, 9, 4]), (0.25, [3, 3, 1]), (0.05, [1, 1, 0])],
)
def test_layer_scope_counts(density, expected):
    scores = _scores(1)
    masks = tfprune.select(scores, _ones(), density, scope="layer")
    assert [int(m.sum()) for m in masks.values()] == expected
    for path, mask in masks.items():
        kept, dropped = scores[path][mask == 1], scores[path][mask == 0]
        if kept.size and dropped.size:
            assert kept.min() > dropped.max()


def test_ties_keep_lowest_flat_index():
    ones = {p: np.ones(s) for p, s in SHAPES.items()}
    # 10 of 29: all 12 of "a" are lower flat indices than anything in "b"
    masks = tfprune.select(ones, _ones(), 10 / 29)
    np.testing.assert_array_equal(np.flatnonzero(_flat(masks)), np.arange(10))
    # 15 of 29: "a" fully kept, then the first three entries of "b" in C order
    masks = tfprune.select(ones, _ones(), 15 / 29)
    np.testing.assert_array_equal(masks["a/kernel"], np.ones((3, 4)))
    np.testing.assert_array_equal(masks["b/kernel"].ravel(), [1, 1, 1] + [0] * 9)
    np.testing.assert_array_equal(masks["c/kernel"], np.zeros(5))
    # per layer, 1/3 of each: the first 4, 4 and round(5/3) = 2 entries
    masks = tfprune.select(ones, _ones(), 1 / 3, scope="layer")
    np.testing.assert_array_equal(masks["a/kernel"].ravel(), [1] * 4 + [0] * 8)
    np.testing.assert_array_equal(masks["b/kernel"].ravel(), [1] * 4 + [0] * 8)
    np.testing.assert_array_equal(masks["c/kernel"], [1, 1, 0, 0, 0])


def test_partial_ties():
    scores = {"k": np.array([1.0, 2.0, 2.0, 2.0, 0.0, 3.0])}
    mask = tfprune.select(scores, {"k": np.ones(6)}, 3 / 6)["k"]
    np.testing.assert_array_equal(mask, [0, 1, 1, 0, 0, 1])
    mask = tfprune.select(scores, {"k": np.ones(6)}, 3 / 6, invert=True)["k"]
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 1, 0])


def test_tie_order_follows_mask_order():
    scores = {"x": np.ones(2), "y": np.ones(2)}
    masks = {"y": np.ones(2), "x": np.ones(2)}
    result = tfprune.select(scores, masks, 0.5)
    assert list(result) == ["y", "x"]
    np.testing.assert_array_equal(result["y"], [1, 1])
    np.testing.assert_array_equal(result["x"], [0, 0])


@pytest.mark.parametrize("invert", [False, True])
def test_selection_equals_a_stable_sort_with_many_ties(invert):
    # Scores from five values (signed zeros among them) over 2,000 weights, a third of them
    # pruned: every count keeps what a stable sort of the alive scores keeps, first `count`.
    rng = np.random.default_rng(5)
    values = np.array([-1.5, -0.0, 0.0, 2.0, 7.25])
    scores = {"k": values[rng.integers(0, 5, 2000)]}
    alive = (rng.random(2000) > 1 / 3).astype(np.float32)
    alive_index = np.flatnonzero(alive)
    order = np.argsort(scores["k"][alive_index] * (1 if invert else -1), kind="stable")
    for count in (0, 1, 37, 400, 401, 999, alive_index.size - 1, alive_index.size):
        mask = select_counts(scores, {"k": alive}, {"k": count}, invert)["k"]
        np.testing.assert_array_equal(np.flatnonzero(mask), np.sort(alive_index[order[:count]]))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("invert", [False, True])
def test_pruned_weights_are_never_revived(scope, invert):
    scores = _scores(2)
    rng = np.random.default_rng(3)
    previous = {p: (rng.random(s) < 0.6).astype(np.float32) for p, s in SHAPES.items()}
    # Give the pruned weights the best scores there are, on either end of the ranking.
    for path in SHAPES:
        scores[path][previous[path] == 0] = -1e6 if invert else 1e6
    masks = tfprune.select(scores, previous, 0.3, scope=scope, invert=invert)
    for path in SHAPES:
        assert np.all(masks[path][previous[path] == 0] == 0)
    if scope == "global":
        assert _kept(masks) == round(0.3 * 29)
    else:
        for path, mask in masks.items():
            alive = int(previous[path].sum())
            assert mask.sum() == min(alive, round(0.3 * mask.size))


def test_fewer_alive_than_target_keeps_exactly_the_alive():
    previous = {p: np.zeros(s, dtype=np.float32) for p, s in SHAPES.items()}
    previous["b/kernel"].flat[[0, 5, 7]] = 1.0
    masks = tfprune.select(_scores(), previous, 0.9)
    for path in SHAPES:
        np.testing.assert_array_equal(masks[path], previous[path])


def test_invert_keeps_bottom_k():
    rng = np.random.default_rng(4)
    flat = rng.permutation(29).astype(np.float64) - 10.0  # negative, zero and positive scores
    scores, start = {}, 0
    for path, shape in SHAPES.items():
        size = int(np.prod(shape))
        scores[path] = flat[start : start + size].reshape(shape)
        start += size
    masks = tfprune.select(scores, _ones(), 7 / 29, invert=True)
    np.testing.assert_array_equal(np.flatnonzero(_flat(masks)), np.flatnonzero(flat < -3.0))
    top = tfprune.select(scores, _ones(), 7 / 29)
    np.testing.assert_array_equal(np.flatnonzero(_flat(top)), np.flatnonzero(flat >= 12.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_score_is_rejected(bad):
    scores = _scores()
    scores["b/kernel"][1, 0, 2] = bad
    with pytest.raises(ConfigError, match="b/kernel"):
        tfprune.select(scores, _ones(), 0.5)


@pytest.mark.parametrize("density", [0, 0.0, 1.5, -0.1, "a", True, None, float("nan")])
def test_bad_density(density):
    with pytest.raises(ConfigError, match="density") as error:
        tfprune.select(_scores(), _ones(), density)
    assert repr(density) in str(error.value)


def test_bad_scope_and_mismatched_inputs():
    with pytest.raises(ConfigError, match="'local'"):
        tfprune.select(_scores(), _ones(), 0.5, scope="local")
    masks = _ones()
    del masks["c/kernel"]
    with pytest.raises(ConfigError, match="c/kernel"):
        tfprune.select(_scores(), masks, 0.5)
    masks = _ones()
    masks["a/kernel"] = np.ones((4, 3))
    with pytest.raises(ConfigError, match="shape"):
        tfprune.select(_scores(), masks, 0.5)


# ---------------------------------------------------------------------------------------------
# Small models shared by the scorer and `prune` tests.


def _mlp(seed: int = 0, relu: bool = True) -> keras.Model:
    """3 -> 4 (ReLU) -> 2 logits, weights drawn from a fixed numpy generator."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((3,))
    h = MaskedDense(4, activation="relu" if relu else None, name="hidden")(inputs)
    outputs = MaskedDense(2, name="logits")(h)
    model = keras.Model(inputs, outputs, name="mlp")
    for layer in (model.get_layer("hidden"), model.get_layer("logits")):
        layer.kernel.assign(rng.normal(size=tuple(layer.kernel.shape)))
        layer.bias.assign(rng.normal(scale=0.1, size=tuple(layer.bias.shape)))
    return model


def _mlp_data(n: int, seed: int = 10):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, size=n)


def _mlp_kernel_grads(model: keras.Model, x: np.ndarray, y: np.ndarray):
    """∂L/∂W of both kernels, L the mean softmax cross-entropy, derived by hand in float64."""
    hidden, logits = model.get_layer("hidden"), model.get_layer("logits")
    w1, m1, b1 = (np.float64(v.numpy()) for v in (hidden.kernel, hidden.mask, hidden.bias))
    w2, m2, b2 = (np.float64(v.numpy()) for v in (logits.kernel, logits.mask, logits.bias))
    x = x.astype(np.float64)
    pre = x @ (w1 * m1) + b1
    assert np.abs(pre).min() > 1e-3  # away from the ReLU kink, so the derivative is defined
    h = np.maximum(pre, 0.0)
    z = h @ (w2 * m2) + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(2)[y]) / len(y)  # ∂ mean(-log p_y) / ∂z
    dw2 = h.T @ dz
    dpre = (dz @ (w2 * m2).T) * (pre > 0)
    dw1 = x.T @ dpre
    return {"hidden/kernel": dw1 * m1, "logits/kernel": dw2 * m2}


def _mlp_snip_tolerance(expected: np.ndarray, batch: int) -> dict[str, float]:
    """Tolerance of a float32 SNIP score of `_mlp` against its float64 derivation.

    A score goes through 20 + batch rounded operations: the forward pass (3 + 1, 4 + 1), the
    softmax and its gradient (7), the backward pass (2, then the sum over the batch) and the
    product with w (1). The batch sum cancels, so the error is held to the layer's largest
    score.
    """
    return tolerance(np.float32, 20 + batch, scale=np.abs(expected).max())


def _cnn(seed: int = 0, dtype: str = "float32") -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 5, 2), dtype=dtype)
    h = MaskedConv2D(3, 3, name="conv", dtype=dtype)(inputs)
    h = keras.layers.BatchNormalization(name="bn", dtype=dtype)(h)
    h = keras.layers.ReLU(name="relu", dtype=dtype)(h)
    h = keras.layers.Flatten(name="flat", dtype=dtype)(h)
    outputs = MaskedDense(3, name="out", dtype=dtype)(h)
    model = keras.Model(inputs, outputs, name="cnn")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    # Moving statistics far from the batch's, so inference mode would give other scores.
    bn.moving_mean.assign(rng.normal(size=3))
    bn.moving_variance.assign(rng.uniform(2.0, 4.0, size=3))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=3))
    bn.beta.assign(rng.normal(scale=0.1, size=3))
    return model


def _cnn_data(n: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5, 5, 2)).astype(np.float32), rng.integers(0, 3, size=n)


def _total(model: keras.Model) -> int:
    return sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())


# ---------------------------------------------------------------------------------------------
# SPEC §2 Scorers, against independent computations.


def test_magnitude_is_abs_weight():
    model = _cnn()
    scores = tfprune.score(model, "magnitude")
    weights = prunable_weights(model)
    assert list(scores) == list(weights) == ["conv/kernel", "out/kernel"]
    for path, weight in weights.items():
        assert scores[path].dtype == np.float64
        np.testing.assert_array_equal(scores[path], np.abs(weight.kernel.numpy()))


def test_random_scores_are_seeded_uniform():
    model = _cnn()
    first = tfprune.score(model, "random", seed=7)
    again = tfprune.score(model, "random", seed=7)
    other = tfprune.score(model, "random", seed=8)
    rng = streams.generator(7, "scores")
    for path, weight in prunable_weights(model).items():
        np.testing.assert_array_equal(first[path], again[path])
        assert not np.allclose(first[path], other[path])
        # drawn layer by layer, in prunable_weights order, from one generator
        np.testing.assert_array_equal(first[path], rng.random(tuple(weight.kernel.shape)))
        assert 0.0 <= first[path].min() and first[path].max() < 1.0


def test_snip_single_batch_matches_hand_gradient():
    model = _mlp()
    x, y = _mlp_data(10)
    scores = tfprune.score(model, "snip", data=(x, y), batch_size=32)
    grads = _mlp_kernel_grads(model, x, y)
    for path, weight in prunable_weights(model).items():
        expected = np.abs(np.float64(weight.kernel.numpy()) * grads[path])
        np.testing.assert_allclose(scores[path], expected, **_mlp_snip_tolerance(expected, 10))
        assert np.count_nonzero(expected) == expected.size  # nothing trivially zero


def test_snip_several_batches_average_per_batch_abs():
    model = _mlp(seed=1)
    x, y = _mlp_data(10, seed=12)
    # batch_size 4 splits the 10 examples into batches of 4, 4 and 2
    scores = tfprune.score(model, "snip", data=(x, y), batch_size=4)
    whole = tfprune.score(model, "snip", data=(x, y), batch_size=10)
    for path, weight in prunable_weights(model).items():
        w = np.float64(weight.kernel.numpy())
        expected = sum(
            (len(yb) / 10) * np.abs(w * _mlp_kernel_grads(model, xb, yb)[path])
            for xb, yb in ((x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:]))
        )
        # The per-batch scores are averaged in float64: each is as accurate as one batch of 4.
        np.testing.assert_allclose(scores[path], expected, **_mlp_snip_tolerance(expected, 4))
        # the absolute value is taken per batch, so this is not |w ⊙ mean gradient|
        assert not np.allclose(scores[path], whole[path], rtol=1e-3)


def test_snip_of_pruned_weights_is_zero():
    model = _mlp(seed=2)
    hidden = model.get_layer("hidden")
    mask = np.ones((3, 4), dtype=np.float32)
    mask[0, 1] = mask[2, 3] = mask[1, 0] = 0.0
    hidden.mask.assign(mask)
    x, y = _mlp_data(8, seed=13)
    scores = tfprune.score(model, "snip", data=(x, y))
    grads = _mlp_kernel_grads(model, x, y)
    assert np.all(scores["hidden/kernel"][mask == 0] == 0.0)
    for path, weight in prunable_weights(model).items():
        expected = np.abs(np.float64(weight.kernel.numpy()) * grads[path])
        np.testing.assert_allclose(scores[path], expected, **_mlp_snip_tolerance(expected, 8))


def test_snip_with_batch_norm_uses_batch_stats_and_changes_nothing():
    model = _cnn()
    x, y = _cnn_data(12)
    before = [v.numpy().copy() for v in model.weights]
    scores = tfprune.score(model, "snip", data=(x, y), batch_size=12)
    for value, variable in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)

    # The reference: the same network in float64, differentiated with a tape.
    twin = _cnn(dtype="float64")
    for target, source in zip(twin.variables, model.variables, strict=True):
        target.assign(np.float64(source.numpy()))
    kernels = [w.kernel for w in prunable_weights(twin).values()]

    def tape_scores(training: bool):
        with tf.GradientTape() as tape:
            logits = twin(x, training=training)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        grads = tape.gradient(loss, [k.value for k in kernels])
        return [np.abs(k.numpy() * g.numpy()) for k, g in zip(kernels, grads, strict=True)]

    inference = tape_scores(training=False)
    expected = tape_scores(training=True)
    # Five sums run over the 12 * 3 * 3 output positions (BatchNorm's mean and variance, their
    # gradients, the kernel gradient); the dot products (18, 27), the softmax and the
    # elementwise steps add under 100. The sums cancel: held to the largest score, as above.
    terms = 5 * 12 * 3 * 3 + 100
    for (path, score), exp, inf in zip(scores.items(), expected, inference, strict=True):
        bounds = tolerance(np.float32, terms, scale=np.abs(exp).max())
        np.testing.assert_allclose(score, exp, err_msg=path, **bounds)
        assert not np.allclose(score, inf, rtol=1e-2)


# ---------------------------------------------------------------------------------------------
# SPEC §1 Selection + §2 through `tfprune.prune`.


def test_prune_assigns_and_returns_exact_masks():
    model = _cnn()
    total = _total(model)
    assert total == 3 * 3 * 2 * 3 + 27 * 3
    magnitudes = tfprune.score(model, "magnitude")
    masks = tfprune.prune(model, "magnitude", 0.3)
    assert _kept(masks) == round(0.3 * total) == 40  # 40.5, rounded half to even
    held = tfprune.get_masks(model)
    assert list(held) == list(masks)
    for path in masks:
        assert masks[path].dtype == np.float32
        np.testing.assert_array_equal(held[path], masks[path])
    flat_scores, flat_masks = _flat(magnitudes), _flat(masks)
    assert flat_scores[flat_masks == 1].min() > flat_scores[flat_masks == 0].max()


def test_prune_layer_scope():
    model = _cnn()
    masks = tfprune.prune(model, "random", 0.2, scope="layer", seed=3)
    # conv: round(0.2 * 54) = 11; out: round(0.2 * 81) = 16
    assert [int(m.sum()) for m in masks.values()] == [11, 16]
    assert tfprune.layer_densities(masks) == {"conv/kernel": 11 / 54, "out/kernel": 16 / 81}


def test_prune_rounds_are_nested_and_exact(monkeypatch):
    model = _cnn()
    total = _total(model)
    assigned = []
    real_assign = api.assign_selected

    def recording_assign(weights, masks):
        assigned.append({p: m.copy() for p, m in masks.items()})
        real_assign(weights, masks)

    monkeypatch.setattr(api, "assign_selected", recording_assign)
    masks = tfprune.prune(model, "random", 0.05, rounds=5, seed=1)
    assert len(assigned) == 5
    counts = [_kept(m) for m in assigned]
    assert counts == [round(0.05 ** (i / 5) * total) for i in range(1, 6)]
    assert counts[-1] == round(0.05 * total) == 7
    for earlier, later in zip(assigned, assigned[1:], strict=False):
        for path in later:
            assert np.all(later[path] <= earlier[path])
    for path in masks:
        np.testing.assert_array_equal(masks[path], assigned[-1][path])
    # Rescoring every round makes the result differ from one-shot random pruning.
    one_shot = tfprune.prune(_cnn(), "random", 0.05, seed=1)
    assert not all(np.array_equal(one_shot[p], masks[p]) for p in masks)


def test_prune_seed_reproducibility():
    first = tfprune.prune(_cnn(), "random", 0.4, seed=5)
    again = tfprune.prune(_cnn(), "random", 0.4, seed=5)
    other = tfprune.prune(_cnn(), "random", 0.4, seed=6)
    for path in first:
        np.testing.assert_array_equal(first[path], again[path])
    assert not all(np.array_equal(first[p], other[p]) for p in first)


def test_prune_never_revives():
    model = _cnn()
    first = tfprune.prune(model, "magnitude", 0.5)
    # Make every pruned weight the largest there is.
    for path, weight in prunable_weights(model).items():
        kernel = weight.kernel.numpy()
        kernel[first[path] == 0] *= 1000.0
        weight.kernel.assign(kernel)
    second = tfprune.prune(model, "magnitude", 0.2)
    assert _kept(second) == round(0.2 * _total(model))
    for path in first:
        assert np.all(second[path] <= first[path])
    # Asking for more than is alive keeps exactly what is alive.
    third = tfprune.prune(model, "snip", 0.9, data=_cnn_data(6))
    for path in first:
        np.testing.assert_array_equal(third[path], second[path])


def test_dataset_equals_tuple_data():
    x, y = _cnn_data(10)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    from_dataset = tfprune.score(_cnn(), "snip", data=dataset)
    from_tuple = tfprune.score(_cnn(), "snip", data=(x, y), batch_size=4)
    for path in from_tuple:
        np.testing.assert_allclose(from_dataset[path], from_tuple[path], rtol=1e-12, atol=0)
    masks_dataset = tfprune.prune(_cnn(), "snip", 0.3, data=dataset)
    masks_tuple = tfprune.prune(_cnn(), "snip", 0.3, data=(x, y), batch_size=4)
    for path in masks_tuple:
        np.testing.assert_array_equal(masks_dataset[path], masks_tuple[path])
    # one-hot labels are the same labels
    one_hot = tfprune.score(_cnn(), "snip", data=(x, np.eye(3)[y]), batch_size=4)
    for path in from_tuple:
        np.testing.assert_allclose(one_hot[path], from_tuple[path], rtol=1e-12, atol=0)


def test_prune_errors():
    model = _cnn()
    x, y = _cnn_data(6)
    with pytest.raises(ConfigError, match="'snap'") as error:
        tfprune.prune(model, "snap", 0.5)
    for name in ("magnitude", "random", "snip"):
        assert name in str(error.value)
    with pytest.raises(ConfigError, match="'temperature'"):
        tfprune.prune(model, "snip", 0.5, data=(x, y), temperature=3)
    with pytest.raises(ConfigError, match="'seed_of_choice'"):
        tfprune.prune(model, "magnitude", 0.5, seed_of_choice=1)
    with pytest.raises(DataError, match="'snip'"):
        tfprune.prune(model, "snip", 0.5)
    with pytest.raises(DataError, match="empty"):
        tfprune.prune(model, "snip", 0.5, data=(x[:0], y[:0]))
    empty = tf.data.Dataset.from_tensor_slices((x, y)).batch(2).take(0)
    with pytest.raises(DataError, match="empty"):
        tfprune.prune(model, "snip", 0.5, data=empty)
    with pytest.raises(DataError, match="7"):
        tfprune.prune(model, "snip", 0.5, data=(x, np.array([0, 1, 2, 7, 0, 1])))
    with pytest.raises(DataError, match="-1"):
        tfprune.prune(model, "snip", 0.5, data=(x, np.array([0, 1, 2, -1, 0, 1])))
    with pytest.raises(DataError, match=r"\(6, 2\)"):
        tfprune.prune(model, "snip", 0.5, data=(x, np.zeros((6, 2), dtype=int)))
    with pytest.raises(DataError, match=r"\(6, 5, 5, 2\) and \(5,\)"):
        tfprune.prune(model, "snip", 0.5, data=(x, y[:5]))
    with pytest.raises(DataError, match="ndarray"):
        tfprune.prune(model, "snip", 0.5, data=x)
    with pytest.raises(ConfigError, match="'layers'"):
        tfprune.prune(model, "magnitude", 0.5, scope="layers")
    with pytest.raises(ConfigError, match="1.5"):
        tfprune.prune(model, "magnitude", 1.5)
    with pytest.raises(ConfigError, match="rounds"):
        tfprune.prune(model, "magnitude", 0.5, rounds=0)
    with pytest.raises(ConfigError, match="-3"):
        tfprune.prune(model, "random", 0.5, seed=-3)
    stock = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ModelError, match="tfprune.masked"):
        tfprune.prune(stock, "magnitude", 0.5)
    # A rejected call prunes nothing.
    for mask in tfprune.get_masks(model).values():
        assert np.all(mask == 1)
    for error_type in (ConfigError, DataError, ModelError):
        assert issubclass(error_type, tfprune.errors.TfpruneError)


# ---------------------------------------------------------------------------------------------
# SPEC §1 "mask": masks are plain artefacts addressed by kernel path.


def test_save_and_load_masks(tmp_path):
    masks = tfprune.prune(_cnn(), "random", 0.3, seed=2)
    path = str(tmp_path / "masks.npz")
    tfprune.save_masks(path, masks)
    loaded = tfprune.load_masks(path)
    assert list(loaded) == list(masks) == ["conv/kernel", "out/kernel"]
    for key, mask in masks.items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], mask)
    assert [p.name for p in tmp_path.iterdir()] == ["masks.npz"]  # no temporary left over
    model = _cnn()
    tfprune.assign_masks(model, loaded)
    for key, mask in tfprune.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])
    with pytest.raises(DataError, match="missing.npz"):
        tfprune.load_masks(str(tmp_path / "missing.npz"))


def test_assign_masks_rejects_what_does_not_fit():
    model = _cnn()
    good = {"conv/kernel": np.zeros((3, 3, 2, 3)), "out/kernel": np.ones((27, 3))}
    with pytest.raises(ConfigError, match="shape"):
        tfprune.assign_masks(model, {**good, "out/kernel": np.ones((3, 27))})
    with pytest.raises(ConfigError, match="'other/kernel'"):
        tfprune.assign_masks(model, {**good, "other/kernel": np.ones(2)})
    with pytest.raises(ConfigError, match="'out/kernel'"):
        tfprune.assign_masks(model, {"conv/kernel": good["conv/kernel"]})
    halves = np.full((27, 3), 0.5)
    with pytest.raises(ConfigError, match="other than 0 and 1"):
        tfprune.assign_masks(model, {**good, "out/kernel": halves})
    # Every rejected call above left the model's masks untouched.
    for mask in tfprune.get_masks(model).values():
        assert np.all(mask == 1)
    tfprune.assign_masks(model, {**good, "out/kernel": np.eye(27, 3, dtype=bool)})
    held = tfprune.get_masks(model)
    np.testing.assert_array_equal(held["conv/kernel"], np.zeros((3, 3, 2, 3)))
    np.testing.assert_array_equal(held["out/kernel"], np.eye(27, 3))


def test_densities_and_collapse():
    masks = {
        "a": np.array([[1.0, 0.0], [0.0, 0.0]]),
        "b": np.ones(6),
        "c": np.zeros((2, 3)),
        "d": np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=np.uint8),
    }
    assert tfprune.layer_densities(masks) == {"a": 0.25, "b": 1.0, "c": 0.0, "d": 0.3}
    assert tfprune.overall_density(masks) == pytest.approx((1 + 6 + 0 + 3) / (4 + 6 + 6 + 10))
    assert collapsed_layers(masks) == ["c"]
    assert collapsed_layers({"x": np.zeros(3), "y": np.ones(1), "z": np.zeros((1, 1))}) == [
        "x", "z"
    ]
    assert collapsed_layers({"y": np.ones(1)}) == []


def test_prune_warns_on_layer_collapse(monkeypatch):
    warnings = []
    monkeypatch.setattr(api.logging, "warning", lambda *args: warnings.append(args))
    model = _cnn()
    for path, weight in prunable_weights(model).items():
        # the conv kernel is tiny, so global magnitude pruning empties it
        scale = 1e-6 if path == "conv/kernel" else 1.0
        weight.kernel.assign(weight.kernel.numpy() * scale)
    masks = tfprune.prune(model, "magnitude", 0.2)
    assert collapsed_layers(masks) == ["conv/kernel"]
    assert len(warnings) == 1 and warnings[0][1] == "conv/kernel"
