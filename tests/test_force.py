"""Tests of `iter_snip` and `force` (de Jorge et al., ICLR 2021) against independent
computations (SPEC §1, §7): finite differences of L with respect to each mask entry, hand
formulas of a small network, exact counts after every round, and weights that FORCE prunes in
one round and brings back in the next."""

from __future__ import annotations

import json
import os

import _procs
import keras
import numpy as np
import pytest

import tfprune
from tfprune import registry
from tfprune.errors import ConfigError, DataError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.pruning import api
from tfprune.pruning.force import ForceScorer, IterSnipScorer

METHODS = ("iter_snip", "force")

# ---------------------------------------------------------------------------------------------
# Small float64 networks, their loss in numpy, and data.


def _mlp(w1, b1, w2, b2) -> keras.Model:
    """x -> ReLU(x (W1 ⊙ c1) + b1) (W2 ⊙ c2) + b2, in float64, with the given parameters."""
    inputs = keras.Input((w1.shape[0],), dtype="float64")
    h = MaskedDense(w1.shape[1], activation="relu", name="hidden", dtype="float64")(inputs)
    outputs = MaskedDense(w2.shape[1], name="logits", dtype="float64")(h)
    model = keras.Model(inputs, outputs, name="mlp")
    for layer, kernel, bias in (
        (model.get_layer("hidden"), w1, b1),
        (model.get_layer("logits"), w2, b2),
    ):
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return model


def _random_mlp(seed: int = 0) -> keras.Model:
    """3 -> 4 (ReLU) -> 2 with weights of both signs."""
    rng = np.random.default_rng(seed)
    return _mlp(
        rng.normal(size=(3, 4)),
        rng.normal(scale=0.3, size=4),
        rng.normal(size=(4, 2)),
        rng.normal(scale=0.3, size=2),
    )


def _mlp_data(n: int, seed: int = 10):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)), rng.integers(0, 2, size=n)


def _parameters(model: keras.Model) -> list[np.ndarray]:
    hidden, logits = model.get_layer("hidden"), model.get_layer("logits")
    return [np.float64(v.numpy()) for v in (hidden.kernel, hidden.bias, logits.kernel, logits.bias)]


def _mlp_loss(parameters, c1, c2, x, y) -> float:
    """The mean softmax cross-entropy of the MLP at masks c1, c2 (any real values), in numpy."""
    w1, b1, w2, b2 = parameters
    z = np.maximum(x @ (w1 * c1) + b1, 0.0) @ (w2 * c2) + b2
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def _finite_difference(parameters, masks, x, y, step: float = 1e-6) -> dict[str, np.ndarray]:
    """∂L/∂c by central differences, one mask entry at a time."""
    gradients = {}
    for path in masks:
        gradient = np.zeros(masks[path].shape)
        for index in np.ndindex(*masks[path].shape):
            values = []
            for sign in (1.0, -1.0):
                moved = {p: np.float64(m).copy() for p, m in masks.items()}
                moved[path][index] += sign * step
                values.append(_mlp_loss(parameters, *moved.values(), x, y))
            gradient[index] = (values[0] - values[1]) / (2 * step)
        gradients[path] = gradient
    return gradients


def _hand_mask_gradient(parameters, c1, c2, x, y) -> dict[str, np.ndarray]:
    """∂L/∂c = θ ⊙ ∂L/∂θ̄ of the MLP by the chain rule, derived by hand (θ̄ = θ ⊙ c)."""
    w1, b1, w2, b2 = parameters
    pre = x @ (w1 * c1) + b1
    h = np.maximum(pre, 0.0)
    z = h @ (w2 * c2) + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(z.shape[1])[y]) / len(y)
    d_bar2 = h.T @ dz
    d_bar1 = x.T @ ((dz @ (w2 * c2).T) * (pre > 0))
    return {"hidden/kernel": w1 * d_bar1, "logits/kernel": w2 * d_bar2}


def _cnn(seed: int = 0, dtype: str = "float32") -> keras.Model:
    """conv 3x3 (3 filters) -> BatchNorm -> ReLU -> Dense 3; moving statistics far from the
    batch's, so scoring in inference mode would differ."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 5, 2), dtype=dtype)
    h = MaskedConv2D(3, 3, name="conv", dtype=dtype)(inputs)
    h = keras.layers.BatchNormalization(name="bn", dtype=dtype)(h)
    h = keras.layers.ReLU(name="relu", dtype=dtype)(h)
    h = keras.layers.Flatten(name="flat", dtype=dtype)(h)
    model = keras.Model(inputs, MaskedDense(3, name="out", dtype=dtype)(h), name="cnn")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
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


def _kept(masks: dict[str, np.ndarray]) -> int:
    return int(sum(m.sum() for m in masks.values()))


def _flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays.values()])


def _state(model: keras.Model) -> list[tuple[str, np.ndarray]]:
    return [(v.path, v.numpy().copy()) for v in model.variables]


def _assert_same_state(model: keras.Model, before) -> None:
    after = _state(model)
    assert [p for p, _ in after] == [p for p, _ in before]
    for (path, value), (_, old) in zip(after, before, strict=True):
        np.testing.assert_array_equal(value, old, err_msg=path)


def _record_rounds(monkeypatch) -> list[dict[str, np.ndarray]]:
    """The masks `prune` assigns, round by round."""
    assigned = []
    real_assign = api.assign_selected

    def recording_assign(weights, masks):
        assigned.append({p: np.array(m, copy=True) for p, m in masks.items()})
        real_assign(weights, masks)

    monkeypatch.setattr(api, "assign_selected", recording_assign)
    return assigned


# ---------------------------------------------------------------------------------------------
# SPEC §7: the keep-scores against central finite differences of L in each mask entry.


def _partial_masks(model: keras.Model) -> dict[str, np.ndarray]:
    masks = {p: np.ones(tuple(w.kernel.shape)) for p, w in prunable_weights(model).items()}
    masks["hidden/kernel"][0, 1] = masks["hidden/kernel"][2, 3] = 0.0
    masks["logits/kernel"][1, 0] = 0.0
    return masks


def test_scores_match_finite_differences_of_the_mask():
    model = _random_mlp()
    masks = _partial_masks(model)
    tfprune.assign_masks(model, masks)
    x, y = _mlp_data(10)
    before = _state(model)
    force = tfprune.score(model, "force", data=(x, y))
    iter_snip = tfprune.score(model, "iter_snip", data=(x, y))
    _assert_same_state(model, before)
    pre = x @ (_parameters(model)[0] * masks["hidden/kernel"]) + _parameters(model)[1]
    assert np.abs(pre).min() > 1e-3  # away from the ReLU kink, so L is smooth in c
    expected = _finite_difference(_parameters(model), masks, x, y)
    hand = _hand_mask_gradient(_parameters(model), *masks.values(), x, y)
    for path, gradient in expected.items():
        scale = np.abs(gradient).max()
        np.testing.assert_allclose(hand[path], gradient, rtol=1e-6, atol=1e-9 * scale)
        # FORCE: |θ ⊙ ∂L/∂θ̄| = |∂L/∂c|; Iterative SNIP: |θ̄ ⊙ ∂L/∂θ̄| = c ⊙ |∂L/∂c|.
        assert force[path].dtype == np.float64 and iter_snip[path].dtype == np.float64
        np.testing.assert_allclose(force[path], np.abs(gradient), rtol=1e-6, atol=1e-9 * scale)
        np.testing.assert_allclose(
            iter_snip[path], masks[path] * np.abs(gradient), rtol=1e-6, atol=1e-9 * scale
        )
    # Pruned weights: FORCE scores them, Iterative SNIP gives them 0.
    for path, mask in masks.items():
        assert np.all(iter_snip[path][mask == 0] == 0.0)
        assert np.all(force[path][mask == 0] > 0.0)
        np.testing.assert_array_equal(iter_snip[path][mask == 1], force[path][mask == 1])


def test_several_batches_take_the_absolute_value_of_the_mean_gradient():
    """L is the loss of all the pruning data; |·| is taken after averaging the batches."""
    model = _random_mlp(seed=1)
    x, y = _mlp_data(10, seed=11)
    # batch_size 4: batches of 4, 4 and 2, weighted by size (the mean loss over the 10).
    scores = tfprune.score(model, "force", data=(x, y), batch_size=4)
    parameters = _parameters(model)
    masks = {"hidden/kernel": np.ones((3, 4)), "logits/kernel": np.ones((4, 2))}
    whole = _finite_difference(parameters, masks, x, y)
    per_batch = [
        (len(yb) / 10, _finite_difference(parameters, masks, x[s], yb))
        for s, yb in ((slice(0, 4), y[:4]), (slice(4, 8), y[4:8]), (slice(8, 10), y[8:]))
    ]
    differs = False
    for path, gradient in whole.items():
        scale = np.abs(gradient).max()
        np.testing.assert_allclose(scores[path], np.abs(gradient), rtol=1e-6, atol=1e-9 * scale)
        mean_of_abs = sum(weight * np.abs(g[path]) for weight, g in per_batch)
        differs |= bool(np.any(mean_of_abs - np.abs(gradient) > 1e-3 * scale))
    assert differs  # SNIP's per-batch absolute value would give other scores here


def test_scores_with_batch_norm_match_finite_differences_and_change_nothing():
    """BatchNorm on batch statistics (SPEC §7, as SNIP); the moving averages stay as they are."""
    model = _cnn(seed=1, dtype="float64")
    x, y = _cnn_data(12)
    weights = prunable_weights(model)
    rng = np.random.default_rng(1)
    masks = {
        p: (rng.random(tuple(w.kernel.shape)) < 0.7).astype(np.float64) for p, w in weights.items()
    }
    tfprune.assign_masks(model, masks)
    before = _state(model)
    force = tfprune.score(model, "force", data=(x, y), batch_size=12)
    iter_snip = tfprune.score(model, "iter_snip", data=(x, y), batch_size=12)
    _assert_same_state(model, before)

    def loss(training: bool = True) -> float:
        logits = model(x.astype(np.float64), training=training).numpy()
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y)), y].mean())

    def finite_difference(path, training: bool = True, step: float = 1e-6) -> np.ndarray:
        gradient = np.zeros(masks[path].shape)
        for index in np.ndindex(*masks[path].shape):
            values = []
            for sign in (1.0, -1.0):
                moved = masks[path].copy()
                moved[index] += sign * step
                weights[path].mask.assign(moved)
                values.append(loss(training))
            gradient[index] = (values[0] - values[1]) / (2 * step)
        weights[path].mask.assign(masks[path])
        return gradient

    for path in weights:
        expected = finite_difference(path)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(force[path], np.abs(expected), rtol=1e-5, atol=1e-8 * scale)
        np.testing.assert_allclose(
            iter_snip[path], masks[path] * np.abs(expected), rtol=1e-5, atol=1e-8 * scale
        )
        assert np.count_nonzero(force[path][masks[path] == 0]) == np.sum(masks[path] == 0)
    for variable, (_, value) in zip(model.variables, before, strict=True):
        variable.assign(value)  # the training-mode calls above moved the BN statistics
    # In inference mode (the moving statistics) the scores would be others.
    inference = finite_difference("out/kernel", training=False)
    assert not np.allclose(force["out/kernel"], np.abs(inference), rtol=0.1)


def test_a_given_loss_is_differentiated():
    model = _random_mlp(seed=2)
    x, _ = _mlp_data(8, seed=12)
    targets = np.random.default_rng(3).normal(size=(8, 2))
    scores = tfprune.score(model, "force", data=(x, targets), loss="mse")
    w1, b1, w2, b2 = _parameters(model)
    step = 1e-6

    def loss(c1, c2) -> float:
        z = np.maximum(x @ (w1 * c1) + b1, 0.0) @ (w2 * c2) + b2
        return float(np.mean((z - targets) ** 2))

    masks = {"hidden/kernel": np.ones((3, 4)), "logits/kernel": np.ones((4, 2))}
    for path, mask in masks.items():
        expected = np.zeros(mask.shape)
        for index in np.ndindex(*mask.shape):
            values = []
            for sign in (1.0, -1.0):
                moved = {p: m.copy() for p, m in masks.items()}
                moved[path][index] += sign * step
                values.append(loss(*moved.values()))
            expected[index] = (values[0] - values[1]) / (2 * step)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(scores[path], np.abs(expected), rtol=1e-6, atol=1e-9 * scale)
    with pytest.raises(ConfigError, match="from_logits"):
        tfprune.score(model, "force", data=(x, targets), loss="mse", from_logits=False)


# ---------------------------------------------------------------------------------------------
# SPEC §7 rounds: FORCE ranks every weight each round, so a pruned weight comes back.


def _dead_unit_mlp() -> keras.Model:
    """3 -> 3 (ReLU) -> 2 whose hidden unit 2 is dead on the data below: W1[0, 2] = -5 and
    x_0 >= 1 keep its input below -3.4 although its bias is 1. At c = 1 its five weights
    (W1[:, 2], flat 2, 5, 8; W2[2, :], flat 13, 14) score exactly 0, so a first round that
    keeps 10 of the 15 weights prunes them. Pruning W1[0, 2] makes the unit live (h_2 = 1), so
    in the next round FORCE gives W2[2, j] the score |6 mean(p_j - y_j)|, the largest of all,
    and keeps them again; Iterative SNIP scores them 0 and leaves them pruned."""
    return _mlp(
        np.array([[1.0, 0.8, -5.0], [0.5, -0.7, 0.3], [-0.4, 0.6, 0.3]]),
        np.array([0.5, 0.8, 1.0]),
        np.array([[0.7, -0.5], [-0.6, 0.9], [6.0, -6.0]]),
        np.array([0.1, -0.1]),
    )


def _dead_unit_data():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(1, 2, 8), rng.uniform(-1, 1, 8), rng.uniform(-1, 1, 8)])
    return x, np.array([0, 1, 0, 0, 1, 0, 0, 0])


def _reference_rounds(model, x, y, density, rounds, revives):
    """The masks after each round, from the hand formulas and numpy selection: keep the top
    round(d^(i/R) N) keep-scores among all weights (FORCE) or among the kept ones (SNIP)."""
    parameters = _parameters(model)
    shapes = {"hidden/kernel": (3, 3), "logits/kernel": (3, 2)}
    masks = {p: np.ones(s) for p, s in shapes.items()}
    total, history = 15, []
    for i in range(1, rounds + 1):
        gradient = _flat(_hand_mask_gradient(parameters, *masks.values(), x, y))
        alive = np.ones(total) if revives else _flat(masks)
        score = np.abs(gradient) * (1.0 if revives else _flat(masks))
        count = round(density ** (i / rounds) * total)
        candidates = np.flatnonzero(alive)
        order = candidates[np.argsort(-score[candidates], kind="stable")]
        ranked = np.sort(score[candidates])[::-1]
        # A gap between the last kept and the first dropped, so last bits cannot swap them.
        assert count == len(candidates) or ranked[count - 1] - ranked[count] > 1e-3
        flat = np.zeros(total)
        flat[order[:count]] = 1.0
        masks = {"hidden/kernel": flat[:9].reshape(3, 3), "logits/kernel": flat[9:].reshape(3, 2)}
        history.append(flat)
    return history


def test_force_revives_a_weight_pruned_in_an_earlier_round(monkeypatch):
    model = _dead_unit_mlp()
    x, y = _dead_unit_data()
    density = 4 / 9  # round 1 keeps round(15 (4/9)^(1/2)) = 10, round 2 round(6.67) = 7
    expected = _reference_rounds(model, x, y, density, 2, revives=True)
    assigned = _record_rounds(monkeypatch)
    masks = tfprune.prune(model, "force", density, data=(x, y), rounds=2)
    rounds = [_flat(m) for m in assigned]
    assert len(rounds) == 2
    for got, want in zip(rounds, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_flat(masks), expected[-1])
    revived = [13, 14]  # W2[2, 0] and W2[2, 1]
    pruned_first = np.flatnonzero(rounds[0] == 0)
    np.testing.assert_array_equal(pruned_first, [2, 5, 8, 13, 14])
    assert np.all(rounds[1][revived] == 1.0)
    assert [int(r.sum()) for r in rounds] == [10, 7]
    # The revival is the point: not nested, unlike every method that does not revive.
    assert np.any(rounds[1] > rounds[0])


def test_iter_snip_never_revives_on_the_same_network(monkeypatch):
    model = _dead_unit_mlp()
    x, y = _dead_unit_data()
    density = 4 / 9
    expected = _reference_rounds(model, x, y, density, 2, revives=False)
    assigned = _record_rounds(monkeypatch)
    masks = tfprune.prune(model, "iter_snip", density, data=(x, y), rounds=2)
    rounds = [_flat(m) for m in assigned]
    for got, want in zip(rounds, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_flat(masks), expected[-1])
    np.testing.assert_array_equal(np.flatnonzero(rounds[0] == 0), [2, 5, 8, 13, 14])
    assert np.all(rounds[1][[13, 14]] == 0.0)
    assert np.all(rounds[1] <= rounds[0])


@pytest.mark.parametrize("method", METHODS)
def test_exact_counts_after_every_round(method, monkeypatch):
    model = _cnn(seed=2)
    total = _total(model)  # 54 + 81 = 135
    assigned = _record_rounds(monkeypatch)
    masks = tfprune.prune(model, method, 0.1, data=_cnn_data(12), rounds=5)
    assert [_kept(m) for m in assigned] == [round(0.1 ** (i / 5) * total) for i in range(1, 6)]
    assert _kept(masks) == round(0.1 * total) == 14  # 13.5, half to even
    assert _flat(masks).tolist() == _flat(assigned[-1]).tolist()
    if method == "iter_snip":
        for earlier, later in zip(assigned, assigned[1:], strict=False):
            assert np.all(_flat(later) <= _flat(earlier))


def test_force_keeps_weights_pruned_before_the_call_pruned(monkeypatch):
    """FORCE may bring back only what it pruned itself in this call (the paper starts dense)."""
    model = _cnn(seed=3)
    rng = np.random.default_rng(3)
    weights = prunable_weights(model)
    previous = {
        p: (rng.random(tuple(w.kernel.shape)) < 0.8).astype(np.float32) for p, w in weights.items()
    }
    tfprune.assign_masks(model, previous)
    data = _cnn_data(12, seed=13)
    scores = tfprune.score(model, "force", data=data)
    # FORCE scores those weights like any other, so selection is what keeps them out.
    assert all(np.count_nonzero(scores[p][m == 0]) == np.sum(m == 0) for p, m in previous.items())
    assigned = _record_rounds(monkeypatch)
    total = _total(model)
    masks = tfprune.prune(model, "force", 0.3, data=data, rounds=4)
    assert [_kept(m) for m in assigned] == [round(0.3 ** (i / 4) * total) for i in range(1, 5)]
    for mask in [*assigned, masks]:
        assert np.all(_flat(mask)[_flat(previous) == 0] == 0.0)


@pytest.mark.parametrize(
    "method",
    [m.name for m in registry.methods((registry.AT_INIT,)) if not m.settings.get("revives")],
)
def test_every_other_method_keeps_pruned_weights_pruned(method, monkeypatch):
    """Without `revives`, each round keeps a subset of the previous one (SPEC §1)."""
    model = _cnn(seed=8)
    rng = np.random.default_rng(8)
    weights = prunable_weights(model)
    previous = {
        p: (rng.random(tuple(w.kernel.shape)) < 0.8).astype(np.float32) for p, w in weights.items()
    }
    tfprune.assign_masks(model, previous)
    assigned = _record_rounds(monkeypatch)
    data = _cnn_data(12, seed=18) if registry.get(method).needs_data else None
    tfprune.prune(model, method, 0.3, data=data, rounds=3)
    assert len(assigned) == 3
    for earlier, later in zip([previous, *assigned], assigned, strict=False):
        assert np.all(_flat(later) <= _flat(earlier))


def test_only_force_revives():
    assert [m.name for m in registry.methods() if m.settings.get("revives")] == ["force"]
    for name in METHODS:
        entry = registry.get(name)
        assert entry.kind == registry.AT_INIT and entry.needs_data and entry.default_rounds == 60
    assert registry.get("iter_snip").scorer_class() is IterSnipScorer
    assert registry.get("force").scorer_class() is ForceScorer


def test_snip_with_rounds_is_unchanged_and_agrees_with_iter_snip_on_one_batch():
    """`snip` with rounds rescoring the pruned network: |w ⊙ ∂L/∂w| = |θ̄ ⊙ ∂L/∂θ̄|, so on one
    batch (where SNIP's per-batch |·| changes nothing) it keeps what Iterative SNIP keeps."""
    x, y = _cnn_data(12, seed=14)
    model = _cnn(seed=4, dtype="float64")
    by_hand = tfprune.get_masks(model)
    for i in range(1, 4):
        scores = tfprune.score(model, "snip", data=(x, y), batch_size=12)
        by_hand = tfprune.select(scores, by_hand, 0.2 ** (i / 3))
        tfprune.assign_masks(model, by_hand)
    snip = tfprune.prune(_cnn(seed=4, dtype="float64"), "snip", 0.2, data=(x, y), rounds=3)
    iter_snip = tfprune.prune(
        _cnn(seed=4, dtype="float64"), "iter_snip", 0.2, data=(x, y), rounds=3
    )
    for path in snip:
        np.testing.assert_array_equal(snip[path], by_hand[path])
        np.testing.assert_array_equal(iter_snip[path], snip[path])


# ---------------------------------------------------------------------------------------------
# tfprune.prune: reproducibility, ablations, allocations, a paper network, errors.


@pytest.mark.parametrize("method", METHODS)
def test_prune_is_reproducible_and_uses_no_random_draw(method):
    data = _cnn_data(12, seed=15)
    first = tfprune.prune(_cnn(seed=5), method, 0.2, data=data, rounds=4, seed=0)
    again = tfprune.prune(_cnn(seed=5), method, 0.2, data=data, rounds=4, seed=0)
    other_seed = tfprune.prune(_cnn(seed=5), method, 0.2, data=data, rounds=4, seed=9)
    for path in first:
        np.testing.assert_array_equal(first[path], again[path])
        np.testing.assert_array_equal(first[path], other_seed[path])


def test_force_invert_and_copied_allocation():
    data = _cnn_data(12, seed=16)
    model = _cnn(seed=6)
    scores = tfprune.score(model, "force", data=data)
    ones = {p: np.ones(s.shape, dtype=np.float32) for p, s in scores.items()}
    inverted = tfprune.prune(model, "force", 0.25, data=data, rounds=1, ablations=("invert",))
    expected = tfprune.select(scores, ones, 0.25, invert=True)
    for path in scores:
        np.testing.assert_array_equal(inverted[path], expected[path])
    # ratio_of:force copies the layer counts of FORCE (its own 60 rounds), random positions.
    force = tfprune.prune(_cnn(seed=6), "force", 0.25, data=data)
    copied = tfprune.prune(
        _cnn(seed=6), "random", 0.25, data=data, allocation="ratio_of:force", seed=1
    )
    assert {p: int(m.sum()) for p, m in copied.items()} == {
        p: int(m.sum()) for p, m in force.items()
    }
    assert any(not np.array_equal(copied[p], force[p]) for p in force)


@pytest.mark.parametrize("method", METHODS)
def test_paper_network_reaches_the_exact_density(method):
    model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    rng = np.random.default_rng(7)
    x = rng.random((100, 28, 28, 1)).astype(np.float32)
    y = np.repeat(np.arange(10), 10)
    total = _total(model)
    report = tfprune.prune_with_report(model, method, 0.0281, data=(x, y))
    assert report.rounds == 60
    assert _kept(report.masks) == round(0.0281 * total) == 7480
    assert _kept(tfprune.get_masks(model)) == 7480


def test_errors_are_one_line():
    model = _cnn()
    for method in METHODS:
        with pytest.raises(DataError, match=f"'{method}' needs data"):
            tfprune.prune(model, method, 0.5)
        with pytest.raises(ConfigError, match="takes no option 'temperature'"):
            tfprune.prune(model, method, 0.5, data=_cnn_data(4), temperature=2.0)


# ---------------------------------------------------------------------------------------------
# The command line: the gin files, and the shuffle and reinit ablations of FORCE.

TINY = [
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.progress = False",
    "--gin_bindings=training.steps = 1",
    "--gin_bindings=experiment.rounds = 5",
]


@pytest.mark.slow  # two training processes, about 20 s
def test_force_runs_from_the_command_line_with_shuffle_and_reinit(tmp_path):
    plain, ablated = str(tmp_path / "plain"), str(tmp_path / "ablated")
    common = ["--gin_file=gin_configs/force.gin", *TINY]
    proc = _procs.run("tfprune.train", *common, f"--output_dir={plain}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _procs.run(
        "tfprune.train",
        *common,
        "--gin_file=gin_configs/ablations/shuffle.gin",
        "--gin_file=gin_configs/ablations/reinit.gin",
        f"--output_dir={ablated}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = _procs.results(plain), _procs.results(ablated)
    assert first["method"] == second["method"] == "force"
    assert second["ablations"] == ["shuffle", "reinit"]
    lenet = 266_200
    for results in (first, second):
        assert results["density_target"] == 0.05
        assert results["density_actual"] == round(0.05 * lenet) / lenet
    # SPEC §3: shuffle keeps each layer's count exactly and moves the positions.
    assert first["layer_density"] == second["layer_density"]
    with (
        np.load(os.path.join(plain, "masks.npz")) as a,
        np.load(os.path.join(ablated, "masks.npz")) as b,
    ):
        assert any(not np.array_equal(a[k], b[k]) for k in a.files)
    with open(os.path.join(plain, "pruning.json")) as f:
        assert json.load(f)["rounds"] == 5
