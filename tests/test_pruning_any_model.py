"""The scorers on any Keras model built from masked layers, with any loss (SPEC §2).

SPEC §2 states L as the mean cross-entropy; `loss=` (or the model's compiled loss) puts any loss
in its place, reduced to the batch mean. The checks here are float64 hand computations of
|w ⊙ ∂L/∂w| and w ⊙ H g, exact equalities where the same operations run, and exact kept counts.
"""

from __future__ import annotations

import logging
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance
from keras import ops

import tfprune
from tfprune.errors import ConfigError, DataError, ModelError
from tfprune.layers import MaskedConv1D, MaskedConv2D, MaskedDense, MaskedLayer, prunable_weights
from tfprune.pruning import synflow
from tfprune.pruning.scorers import kernel_gradients

# ---------------------------------------------------------------------------------------------
# Small models and data.

_SEEN_ID_DTYPES: list = []  # the dtype of every id tensor a `_Lookup` layer was called on


class _Lookup(MaskedLayer):
    """An embedding: integer ids -> rows of a masked (vocabulary, dim) table."""

    def __init__(self, vocabulary: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary, self.dim = vocabulary, dim

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table", shape=(self.vocabulary, self.dim), initializer="random_normal"
        )
        self.table_mask = self.add_mask(self.table)

    def call(self, ids):
        _SEEN_ID_DTYPES.append(ids.dtype)
        return ops.take(self.masked(self.table), ids, axis=0)

    def ones_response(self, ids):
        """The output for an all-ones one-hot input: the sum of the table's rows, everywhere."""
        row = ops.sum(self.masked(self.table), axis=0)
        return ops.expand_dims(ops.ones_like(ids, dtype=row.dtype), -1) * row

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "dim": self.dim}


def _is_int(dtype) -> bool:
    return keras.backend.standardize_dtype(dtype) in ("int32", "int64")


class _LookupWithoutOnes(_Lookup):
    ones_response = None


class Unrebuildable(keras.layers.Layer):
    """A layer that its configuration cannot rebuild: it takes a function."""

    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        self.function = function

    def call(self, x):
        return self.function(x)


def _assign(model: keras.Model, seed: int) -> keras.Model:
    """Every kernel and bias drawn from N(0, 0.5²)·(1 + |N|), weights of both signs."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        value = rng.normal(scale=0.5, size=tuple(variable.shape))
        variable.assign(value * (1 + np.abs(rng.normal(size=value.shape))))
    return model


def _regressor(dtype: str = "float64", seed: int = 0) -> keras.Model:
    """4 -> 5 (tanh) -> 2 outputs, no activation: a regression network."""
    x = keras.Input((4,), dtype=dtype)
    h = MaskedDense(5, activation="tanh", name="hidden", dtype=dtype)(x)
    model = keras.Model(x, MaskedDense(2, name="out", dtype=dtype)(h), name="regressor")
    return _assign(model, seed)


def _regression_data(n: int = 8, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.normal(size=(n, 2))


def _mlp_arrays(model: keras.Model):
    """(W1, m1, b1, W2, m2, b2) of `_regressor` in float64."""
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    return [
        np.float64(v.numpy())
        for v in (hidden.kernel, hidden.mask, hidden.bias, out.kernel, out.mask, out.bias)
    ]


def _mlp_gradients(arrays, x, y, output_gradient):
    """[∂L/∂W1, ∂L/∂W2] by hand in float64, for ∂L/∂f = output_gradient(f, y)."""
    w1, m1, b1, w2, m2, b2 = arrays
    h = np.tanh(x @ (w1 * m1) + b1)
    d = output_gradient(h @ (w2 * m2) + b2, y)
    dh = (d @ (w2 * m2).T) * (1 - h**2)
    return [(x.T @ dh) * m1, (h.T @ d) * m2]


def _mlp_snip(arrays, batches, output_gradient):
    """SNIP of `_regressor` by hand, and the float64 tolerance of a computed one.

    An entry |w ⊙ ∂L/∂w| is a sum over the batch of products along the network; rounding
    errs by about eps times Σ|term| (the same sum of absolute values, with |1 - h²| <= 1 in
    place of tanh's derivative, whose cancellation near saturation is absolute, not relative).
    Along the longest chain: dot products of 4 and 5, tanh, the loss, the batch sum, and back.
    """
    w1, m1, _, w2, m2, _ = arrays
    total = sum(len(x) for x, _ in batches)
    scores, scales = [np.zeros_like(w1), np.zeros_like(w2)], [0.0, 0.0]
    for x, y in batches:
        grads = _mlp_gradients(arrays, x, y, output_gradient)
        h = np.tanh(x @ (w1 * m1) + arrays[2])
        d = np.abs(output_gradient(h @ (w2 * m2) + arrays[5], y))
        bounds = [np.abs(x).T @ (d @ np.abs(w2 * m2).T), np.abs(h).T @ d]
        for i, (w, g, bound) in enumerate(zip((w1, w2), grads, bounds, strict=True)):
            scores[i] += (len(x) / total) * np.abs(w * g)
            scales[i] = max(scales[i], float(np.max(np.abs(w) * bound)))
    terms = 2 * (4 + 5 + 8 + 2 + max(len(x) for x, _ in batches)) + 10
    return scores, tolerance(np.float64, terms, scale=max(scales))


def _mse_gradient(f, y):
    return 2 * (f - y) / f.size  # L = mean over examples and outputs of (f - y)²


def _quartic_loss(y_true, y_pred):
    """A callable loss per example: Σ_k (f - y)⁴ / 4."""
    return ops.sum((y_pred - y_true) ** 4, axis=-1) / 4


def _quartic_gradient(f, y):
    return (f - y) ** 3 / len(f)


def _cnn(seed: int = 0) -> keras.Model:
    """conv 3x3 -> BatchNorm -> ReLU -> Dense 3 (functional)."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((5, 5, 2))
    h = MaskedConv2D(3, 3, name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(x, MaskedDense(3, name="out")(h), name="cnn")


class _SubclassedCnn(keras.Model):
    """`_cnn` as a subclassed model whose `call` takes no `training` argument."""

    def __init__(self, fail: bool = False):
        super().__init__(name="subclassed_cnn")
        self.conv = MaskedConv2D(3, 3, name="conv")
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.out = MaskedDense(3, name="out")
        self.fail = fail

    def call(self, x):
        if self.fail:
            raise RuntimeError("the forward pass failed")
        h = keras.ops.relu(self.bn(self.conv(x)))
        return self.out(keras.ops.reshape(h, (-1, 27)))


def _subclassed_twin(model: keras.Model) -> keras.Model:
    """A `_SubclassedCnn` holding the values of a `_cnn`'s variables."""
    twin = _SubclassedCnn()
    twin(np.zeros((1, 5, 5, 2), dtype=np.float32))
    for layer in ("conv", "bn", "out"):
        for a, b in zip(
            getattr(twin, layer).variables, model.get_layer(layer).variables, strict=True
        ):
            a.assign(b)
    return twin


def _cnn_data(n: int = 10, seed: int = 11):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5, 5, 2)).astype(np.float32), rng.integers(0, 3, size=n)


def _state(model: keras.Model) -> list[tuple[str, np.ndarray]]:
    return [(v.path, v.numpy().copy()) for v in model.variables]


def _assert_same_state(model: keras.Model, before) -> None:
    after = _state(model)
    assert [p for p, _ in after] == [p for p, _ in before]
    for (path, value), (_, old) in zip(after, before, strict=True):
        assert value.dtype == old.dtype and np.array_equal(value, old), path


def _total(model: keras.Model) -> int:
    return sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())


def _kept(masks) -> int:
    return int(sum(m.sum() for m in masks.values()))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# SNIP |w ⊙ ∂L/∂w| with any loss, against float64 hand gradients.


def test_snip_with_mse_matches_hand_gradient():
    model = _regressor()
    mask = np.ones((4, 5))
    mask[1, 3] = mask[2, 0] = 0.0
    model.get_layer("hidden").mask.assign(mask)
    x, y = _regression_data(8)
    # Two batches of 4: |w ⊙ ∂L_b/∂w| per batch, averaged by size (SPEC §2).
    scores = tfprune.score(model, "snip", data=(x, y), loss="mse", batch_size=4)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    expected, bounds = _mlp_snip(_mlp_arrays(model), batches, _mse_gradient)
    for (path, score), value in zip(scores.items(), expected, strict=True):
        np.testing.assert_allclose(score, value, **bounds, err_msg=path)
    assert np.all(scores["hidden/kernel"][mask == 0] == 0.0)
    assert np.count_nonzero(scores["out/kernel"]) == 10


def test_snip_with_a_callable_loss_matches_hand_gradient():
    model = _regressor(seed=2)
    x, y = _regression_data(6, seed=3)
    scores = tfprune.score(model, "snip", data=(x, y), loss=_quartic_loss)
    expected, bounds = _mlp_snip(_mlp_arrays(model), [(x, y)], _quartic_gradient)
    for (path, score), value in zip(scores.items(), expected, strict=True):
        np.testing.assert_allclose(score, value, **bounds, err_msg=path)
    # A Keras Loss object with its default batch-mean reduction is the same loss as its name.
    by_name = tfprune.score(model, "snip", data=(x, y), loss="mean_squared_error")
    by_object = tfprune.score(model, "snip", data=(x, y), loss=keras.losses.MeanSquaredError())
    for path in by_name:
        np.testing.assert_allclose(by_object[path], by_name[path], **tolerance(np.float32, 40))


# ---------------------------------------------------------------------------------------------
# GraSP w ⊙ (H g) with MSE, against a float64 Hessian-vector product by finite differences.


def test_grasp_with_mse_matches_finite_difference_hessian():
    model = _regressor(seed=4)
    mask = np.ones((5, 2))
    mask[3, 1] = 0.0
    model.get_layer("out").mask.assign(mask)
    x, y = _regression_data(8, seed=5)
    scores = tfprune.score(model, "grasp", data=(x, y), loss="mse")
    arrays = _mlp_arrays(model)

    def gradient(step: float, direction):
        moved = list(arrays)
        moved[0], moved[3] = arrays[0] + step * direction[0], arrays[3] + step * direction[1]
        return _mlp_gradients(moved, x, y, _mse_gradient)

    g = gradient(0.0, [0, 0])  # no temperature: a given loss sees the outputs as they are
    norm = np.sqrt(sum(np.sum(a**2) for a in g))
    u = [a / norm for a in g]

    def difference(eps: float):
        plus, minus = gradient(eps, u), gradient(-eps, u)
        return [norm * (p - m) / (2 * eps) for p, m in zip(plus, minus, strict=True)]

    # Richardson extrapolation of central differences: error O(eps⁴) = 1e-12 for eps = 1e-3,
    # rounding about 1e-16 / 1e-3; both far below the rtol of 1e-8.
    eps = 1e-3
    coarse, fine = difference(eps), difference(eps / 2)
    hg = [(4 * f - c) / 3 for f, c in zip(fine, coarse, strict=True)]
    for (path, score), w, product in zip(scores.items(), (arrays[0], arrays[3]), hg, strict=True):
        expected = w * product
        scale = np.abs(expected).max()
        np.testing.assert_allclose(score, expected, rtol=1e-8, atol=1e-10 * scale, err_msg=path)
        assert (expected > 0).any() and (expected < 0).any()
    assert np.all(scores["out/kernel"][mask == 0] == 0.0)
    # temperature=1 changes nothing, so it is accepted with a given loss.
    same = tfprune.score(model, "grasp", data=(x, y), loss="mse", temperature=1)
    for path in scores:
        np.testing.assert_array_equal(same[path], scores[path])


# ---------------------------------------------------------------------------------------------
# The compiled loss: used without loss=, overridden by loss=, the default only if not compiled.


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_compiled_loss_takes_precedence_over_the_default(method):
    x, labels = _cnn_data(8)
    y = np.eye(3, dtype=np.float32)[labels]  # one-hot rows: the default takes them too
    compiled = _cnn(seed=1)
    compiled.compile(loss="mse")
    from_compiled = tfprune.score(compiled, method, data=(x, y))
    explicit = tfprune.score(_cnn(seed=1), method, data=(x, y), loss="mse")
    default = tfprune.score(_cnn(seed=1), method, data=(x, y))
    for path in explicit:
        np.testing.assert_array_equal(from_compiled[path], explicit[path])
        assert not np.allclose(from_compiled[path], default[path], rtol=1e-2)
    # loss= wins over the compiled loss.
    overridden = tfprune.score(compiled, method, data=(x, y), loss="mae")
    mae = tfprune.score(_cnn(seed=1), method, data=(x, y), loss="mae")
    for path in mae:
        np.testing.assert_array_equal(overridden[path], mae[path])


def test_compiled_loss_weights_per_output():
    model = _two_outputs()
    data = _two_output_data()
    model.compile(loss={"a": "mse", "b": "mae"}, loss_weights={"a": 1.0, "b": 2.0})
    compiled = tfprune.score(model, "snip", data=data)
    twice_mae = lambda y, p: 2 * keras.losses.mean_absolute_error(y, p)  # noqa: E731
    explicit = tfprune.score(_two_outputs(), "snip", data=data, loss=["mse", twice_mae])
    for path in explicit:
        # Doubling is exact in binary floating point, so the two sums are the same numbers.
        np.testing.assert_array_equal(compiled[path], explicit[path])


# ---------------------------------------------------------------------------------------------
# Several outputs and inputs; integer ids stay integers.


def _two_outputs(seed: int = 6) -> keras.Model:
    x = keras.Input((4,), dtype="float64")
    h = MaskedDense(5, activation="tanh", name="hidden", dtype="float64")(x)
    a = MaskedDense(2, name="a", dtype="float64")(h)
    b = MaskedDense(1, name="b", dtype="float64")(h)
    return _assign(keras.Model(x, [a, b], name="two_outputs"), seed)


def _two_output_data(n: int = 6, seed: int = 7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), (rng.normal(size=(n, 2)), rng.normal(size=(n, 1)))


def test_two_outputs_add_their_losses():
    model = _two_outputs()
    x, (ya, yb) = _two_output_data()
    scores = tfprune.score(model, "snip", data=(x, (ya, yb)), loss="mse")
    hidden, a, b = (model.get_layer(n) for n in ("hidden", "a", "b"))
    w1, b1, wa, ba, wb, bb = (
        np.float64(v.numpy())
        for v in (hidden.kernel, hidden.bias, a.kernel, a.bias, b.kernel, b.bias)
    )
    h = np.tanh(x @ w1 + b1)
    da, db = _mse_gradient(h @ wa + ba, ya), _mse_gradient(h @ wb + bb, yb)
    dh = (da @ wa.T + db @ wb.T) * (1 - h**2)
    expected = {"hidden/kernel": w1 * (x.T @ dh), "a/kernel": wa * (h.T @ da)}
    expected["b/kernel"] = wb * (h.T @ db)
    # As in `_mlp_snip`: rounding errs by eps times the sums of absolute values.
    through = np.abs(da) @ np.abs(wa).T + np.abs(db) @ np.abs(wb).T
    scale = np.max(np.abs(w1) * (np.abs(x).T @ through))
    bounds = tolerance(np.float64, 2 * (4 + 5 + 8 + 2 + 6) + 10, scale=scale)
    for path, value in expected.items():
        np.testing.assert_allclose(scores[path], np.abs(value), **bounds, err_msg=path)
    # The same targets by output name, and one loss per output, are the same loss.
    by_name = tfprune.score(model, "snip", data=(x, {"a": ya, "b": yb}), loss=["mse", "mse"])
    dataset = tf.data.Dataset.from_tensor_slices((x, (ya, yb))).batch(6)
    from_dataset = tfprune.score(model, "snip", data=dataset, loss={"a": "mse", "b": "mse"})
    for path in scores:
        np.testing.assert_array_equal(by_name[path], scores[path])
        np.testing.assert_array_equal(from_dataset[path], scores[path])
    # GraSP and SynFlow take every output too.
    grasp = tfprune.score(model, "grasp", data=(x, (ya, yb)), loss="mse")
    assert all(np.count_nonzero(grasp[path]) == np.size(grasp[path]) for path in grasp)
    flow = tfprune.score(model, "synflow")
    # R = Σ outputs of |network| on ones: ∂R/∂Wa_ij = h_i, ∂R/∂Wb_i = h_i, h = tanh(1ᵀ|W1| + |b1|).
    h1 = np.tanh(np.abs(w1).sum(axis=0) + np.abs(b1))
    np.testing.assert_allclose(flow["a/kernel"], np.abs(wa) * h1[:, None], rtol=1e-12)
    np.testing.assert_allclose(flow["b/kernel"], np.abs(wb) * h1[:, None], rtol=1e-12)


def _id_model(dtype: str = "float64", lookup=_Lookup) -> keras.Model:
    """int32 ids (5 positions) -> lookup (7 x 3) -> flatten -> Dense 2."""
    ids = keras.Input((5,), dtype="int32", name="ids")
    h = lookup(7, 3, name="lookup", dtype=dtype)(ids)
    h = keras.layers.Flatten(dtype=dtype)(h)
    return _assign(keras.Model(ids, MaskedDense(2, name="out", dtype=dtype)(h), name="ids"), 8)


def test_integer_ids_stay_integers():
    model = _id_model()
    rng = np.random.default_rng(9)
    ids, labels = rng.integers(0, 7, size=(6, 5)).astype(np.int64), rng.integers(0, 2, size=6)
    _SEEN_ID_DTYPES.clear()
    scores = tfprune.score(model, "snip", data=(ids, labels))  # the default cross-entropy
    assert _SEEN_ID_DTYPES and all(_is_int(d) for d in _SEEN_ID_DTYPES)
    table = np.float64(model.get_layer("lookup").table.numpy())
    out = model.get_layer("out")
    w, b = np.float64(out.kernel.numpy()), np.float64(out.bias.numpy())
    h = table[ids].reshape(6, 15)
    z = h @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(2)[labels]) / 6
    dtable, through = np.zeros_like(table), np.zeros_like(table)
    np.add.at(dtable, ids, (dz @ w.T).reshape(6, 5, 3))
    np.add.at(through, ids, (np.abs(dz) @ np.abs(w).T).reshape(6, 5, 3))
    # The default cross-entropy runs in float32 (as SNIP always did): its logits are rounded
    # to float32, which moves p - onehot by about eps (1 + |z|); the sums over the batch and
    # the ids then cancel, so the error is held to their sums of absolute values.
    scale = (1 + np.abs(z).max()) * max(
        np.max(np.abs(table) * through), np.max(np.abs(w) * (np.abs(h).T @ np.abs(dz)))
    )
    bounds = tolerance(np.float32, 2 * (15 + 8 + 6) + 2, scale=scale)
    np.testing.assert_allclose(scores["lookup/table"], np.abs(table * dtable), **bounds)
    np.testing.assert_allclose(scores["out/kernel"], np.abs(w * (h.T @ dz)), **bounds)


def test_several_inputs_as_a_tuple_or_a_dict():
    features = keras.Input((4,), name="features")
    ids = keras.Input((5,), dtype="int32", name="ids")
    h = keras.layers.Flatten()(_Lookup(7, 3, name="lookup")(ids))
    h = keras.layers.Concatenate()([MaskedDense(3, name="dense")(features), h])
    model = _assign(keras.Model([features, ids], MaskedDense(2, name="out")(h)), 10)
    rng = np.random.default_rng(10)
    f, i, y = rng.normal(size=(6, 4)), rng.integers(0, 7, size=(6, 5)), rng.normal(size=(6, 2))
    _SEEN_ID_DTYPES.clear()
    as_tuple = tfprune.score(model, "snip", data=((f, i), y), loss="mse")
    assert _SEEN_ID_DTYPES and all(_is_int(d) for d in _SEEN_ID_DTYPES)
    as_dict = tfprune.score(model, "snip", data=({"features": f, "ids": i}, y), loss="mse")
    for path in as_tuple:
        np.testing.assert_array_equal(as_dict[path], as_tuple[path])
        assert np.count_nonzero(as_tuple[path])
    with pytest.raises(DataError, match="takes 2 inputs, got 1") as error:
        tfprune.score(model, "snip", data=(f, y), loss="mse")
    _one_line(error)


def test_synflow_through_ones_response_matches_hand_derivation():
    model = _id_model()
    lookup, out = model.get_layer("lookup"), model.get_layer("out")
    mask = np.ones((7, 3))
    mask[2, 1] = mask[5, 0] = 0.0
    lookup.table_mask.assign(mask)
    scores = tfprune.score(model, "synflow")
    table, w = np.abs(np.float64(lookup.table.numpy())), np.abs(np.float64(out.kernel.numpy()))
    # The all-ones one-hot input gives every position s = Σ_v |E_v| ⊙ m_v; h = (s, ..., s);
    # R = Σ_j (h |W| + |b|)_j, so ∂R/∂W_i = h_i and ∂R/∂E_vd = m_vd Σ_p Σ_j |W|_(3p+d, j).
    s = (table * mask).sum(axis=0)
    np.testing.assert_allclose(scores["out/kernel"], w * np.tile(s, 5)[:, None], rtol=1e-12)
    per_dim = w.sum(axis=1).reshape(5, 3).sum(axis=0)
    np.testing.assert_allclose(scores["lookup/table"], table * mask * per_dim, rtol=1e-12)
    assert np.all(scores["lookup/table"][mask == 0] == 0.0)
    masks = tfprune.prune(model, "synflow", 0.3, rounds=3)
    assert _kept(masks) == round(0.3 * _total(model))


def test_synflow_in_place_answers_integer_inputs_with_ones_response(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    copied = tfprune.score(_id_model(dtype="float32"), "synflow")
    model = _id_model(dtype="float32")
    before = _state(model)

    def refuse(model):
        raise ModelError("no copy")

    monkeypatch.setattr(synflow, "_float64_copy", refuse)
    in_place = tfprune.score(model, "synflow")
    assert _fallbacks(caplog)
    _assert_same_state(model, before)
    assert "call" not in vars(model.get_layer("lookup"))  # its own call again
    # All terms positive: relative float32 rounding along a row sum of 7, a dot of 15, R of 2.
    for path, value in copied.items():
        np.testing.assert_allclose(in_place[path], value, **tolerance(np.float32, 2 * 24 + 2))


def test_synflow_refuses_integer_inputs_read_without_ones_response():
    with pytest.raises(ModelError, match="'lookup'.*ones_response") as error:
        tfprune.score(_id_model(lookup=_LookupWithoutOnes), "synflow")
    _one_line(error)
    ids = keras.Input((5,), dtype="int32")
    h = MaskedDense(2, name="dense")(keras.ops.cast(ids, "float32"))
    with pytest.raises(ModelError, match="ones_response"):
        tfprune.score(keras.Model(ids, h), "synflow")


# ---------------------------------------------------------------------------------------------
# Subclassed models: every scorer, exact kept counts, BatchNorm in training mode.


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude", "random"])
def test_every_scorer_reaches_the_exact_count_on_a_subclassed_model(method):
    model = _subclassed_twin(_cnn(seed=12))
    data = _cnn_data(10) if method in ("snip", "grasp") else None
    before = {v.path: v.numpy().copy() for v in model.variables}
    masks = tfprune.prune(model, method, 0.3, data=data, rounds=2)
    assert _kept(masks) == round(0.3 * _total(model)) == 40  # 0.3 * (54 + 81) = 40.5
    for variable in model.variables:
        if "mask" not in variable.path:
            np.testing.assert_array_equal(variable.numpy(), before[variable.path])


def test_subclassed_snip_runs_batch_norm_in_training_mode():
    functional = _cnn(seed=13)
    subclassed = _subclassed_twin(functional)
    x, y = _cnn_data(10)
    expected = tfprune.score(functional, "snip", data=(x, y))
    scores = tfprune.score(subclassed, "snip", data=(x, y))
    # conv (18 terms), BN over the batch (250), dense (27), the batch mean, and back.
    bounds = tolerance(np.float32, 2 * (18 + 250 + 27 + 10), scale=0)
    # The subclassed model's paths start with its name; the kernels come in the same order.
    for score, (path, value) in zip(scores.values(), expected.items(), strict=True):
        np.testing.assert_allclose(score, value, **bounds, err_msg=path)
    # In inference mode (BatchNorm on its moving statistics) the gradients are far from these.
    weights = prunable_weights(functional)
    ((_, inference),) = kernel_gradients(functional, weights, [(x, y)], training=False)
    kernel = functional.get_layer("out").kernel.numpy()
    assert not np.allclose(np.abs(kernel * inference["out/kernel"]), expected["out/kernel"], 0.1)
    with pytest.raises(DataError, match=r"\[0, 3\)") as error:
        tfprune.score(subclassed, "snip", data=(x, np.full(10, 3)))
    _one_line(error)


# ---------------------------------------------------------------------------------------------
# SynFlow on the model itself when no float64 copy can be built.


def _fallbacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "synflow computes on model" in r.getMessage()]


def test_synflow_in_place_matches_the_float64_copy(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    copied = tfprune.score(_cnn(seed=14), "synflow")
    assert not _fallbacks(caplog)
    model = _cnn(seed=14)
    before = _state(model)

    def refuse(model):
        raise ModelError("no copy")

    monkeypatch.setattr(synflow, "_float64_copy", refuse)
    in_place = tfprune.score(model, "synflow")
    assert _fallbacks(caplog) and "float32" in _fallbacks(caplog)[0]
    _assert_same_state(model, before)
    # Everything in |network| is positive (BN's moving mean is 0), so nothing cancels: each
    # score is within float32 rounding of the float64 one, relatively. The longest chain:
    # conv (18 terms), BN, dense (27), R (3), the same back, the product with w.
    for path, value in copied.items():
        np.testing.assert_allclose(
            in_place[path], value, **tolerance(np.float32, 2 * (18 + 4 + 27 + 3) + 2)
        )
    assert np.count_nonzero(copied["conv/kernel"]) == 54


def test_synflow_subclassed_model_matches_the_functional_copy(caplog):
    caplog.set_level(logging.WARNING)
    functional = _cnn(seed=15)
    mask = np.ones((3, 3, 2, 3), dtype=np.float32)
    mask[1, 1, 0, 2] = 0.0
    functional.get_layer("conv").mask.assign(mask)
    subclassed = _subclassed_twin(functional)
    before = _state(subclassed)
    expected = tfprune.score(functional, "synflow")
    scores = tfprune.score(subclassed, "synflow")  # its input shape from its first call
    assert "subclassed" in _fallbacks(caplog)[0]
    _assert_same_state(subclassed, before)
    bounds = tolerance(np.float32, 2 * (18 + 4 + 27 + 3) + 2)
    for score, (path, value) in zip(scores.values(), expected.items(), strict=True):
        np.testing.assert_allclose(score, value, **bounds, err_msg=path)
    assert scores["subclassed_cnn/conv/kernel"][1, 1, 0, 2] == 0.0


def test_synflow_in_place_leaves_every_variable_when_it_fails():
    model = _subclassed_twin(_cnn(seed=16))
    before = _state(model)
    model.fail = True
    with pytest.raises(RuntimeError, match="forward pass failed"):
        tfprune.score(model, "synflow")
    _assert_same_state(model, before)
    model.fail = False
    overflow = _subclassed_twin(_cnn(seed=16))
    overflow.out.kernel.assign(np.full((27, 3), 1e38, dtype=np.float32))
    before = _state(overflow)
    with pytest.raises(ModelError, match="overflows float32") as error:
        tfprune.score(overflow, "synflow")
    _one_line(error)
    _assert_same_state(overflow, before)


def test_synflow_falls_back_for_a_layer_that_does_not_rebuild(caplog):
    caplog.set_level(logging.WARNING)
    x = keras.Input((3,))
    h = Unrebuildable(lambda t: 2.0 * t)(MaskedDense(4, name="dense", activation="relu")(x))
    model = _assign(keras.Model(x, MaskedDense(2, name="out")(h)), 17)
    before = _state(model)
    scores = tfprune.score(model, "synflow")
    assert _fallbacks(caplog)
    _assert_same_state(model, before)
    dense, out = model.get_layer("dense"), model.get_layer("out")
    w1, b1, w2 = (np.abs(np.float64(v.numpy())) for v in (dense.kernel, dense.bias, out.kernel))
    h = 2.0 * (w1.sum(axis=0) + b1)  # positive, so the ReLU passes it
    bounds = tolerance(np.float32, 2 * (3 + 4 + 2) + 2)
    np.testing.assert_allclose(scores["out/kernel"], w2 * h[:, None], **bounds)
    np.testing.assert_allclose(scores["dense/kernel"], w1 * 2.0 * w2.sum(axis=1), **bounds)


def test_synflow_copies_a_functional_model_that_adds_tensors(caplog):
    caplog.set_level(logging.WARNING)
    x = keras.Input((3,))
    a = MaskedDense(4, name="a")(x)
    b = MaskedDense(4, name="b")(x)
    model = _assign(keras.Model(x, MaskedDense(2, name="out")(a + b)), 18)
    scores = tfprune.score(model, "synflow")
    assert not _fallbacks(caplog)  # the float64 copy, as SPEC §2 asks
    wa, ba, wb, bb, wo = (
        np.abs(np.float64(model.get_layer(n).variables[i].numpy()))
        for n, i in (("a", 0), ("a", 1), ("b", 0), ("b", 1), ("out", 0))
    )
    h = wa.sum(axis=0) + ba + wb.sum(axis=0) + bb
    np.testing.assert_allclose(scores["out/kernel"], wo * h[:, None], rtol=1e-12)
    np.testing.assert_allclose(scores["a/kernel"], wa * wo.sum(axis=1), rtol=1e-12)


def test_synflow_input_shape():
    model = _SubclassedCnn()
    for layer, shape in ((model.conv, (None, 5, 5, 2)), (model.bn, (None, 3, 3, 3))):
        layer.build(shape)
    model.out.build((None, 27))
    with pytest.raises(ModelError, match="input_shape=") as error:
        tfprune.score(model, "synflow")  # never called: no input shape known
    _one_line(error)
    masks = tfprune.prune(model, "synflow", 0.5, input_shape=(5, 5, 2), rounds=2)
    assert _kept(masks) == round(0.5 * 135)
    # A functional model with free axes takes a shape for them, and only one that fits.
    x = keras.Input((None, 2))
    h = keras.layers.GlobalAveragePooling1D()(MaskedConv1D(3, 2, name="conv")(x))
    free = keras.Model(x, MaskedDense(2, name="out")(h))
    with pytest.raises(ModelError, match=r"\(None, 2\)"):
        tfprune.score(free, "synflow")
    assert tfprune.score(free, "synflow", input_shape=(6, 2))["conv/kernel"].shape == (2, 2, 3)
    with pytest.raises(ConfigError, match="does not fit"):
        tfprune.score(free, "synflow", input_shape=(6, 3))
    for bad in [(0, 2), "abc", (5.5, 2), ()]:
        with pytest.raises(ConfigError, match="input_shape must be") as error:
            tfprune.score(free, "synflow", input_shape=bad)
        _one_line(error)
    with pytest.raises(ConfigError, match="takes no input_shape"):
        tfprune.score(free, "magnitude", input_shape=(6, 2))


def test_copied_allocations_take_the_loss_and_the_input_shape():
    x, y = _regression_data(8)
    model = _regressor(dtype="float32")
    masks = tfprune.prune(model, "random", 0.5, data=(x, y), allocation="ratio_of:snip", loss="mse")
    snip = tfprune.prune(_regressor(dtype="float32"), "snip", 0.5, data=(x, y), loss="mse")
    assert [int(m.sum()) for m in masks.values()] == [int(m.sum()) for m in snip.values()]
    subclassed = _SubclassedCnn()
    for layer, shape in ((subclassed.conv, (None, 5, 5, 2)), (subclassed.bn, (None, 3, 3, 3))):
        layer.build(shape)
    subclassed.out.build((None, 27))
    masks = tfprune.prune(
        subclassed, "magnitude", 0.2, allocation="ratio_of:synflow", input_shape=(5, 5, 2)
    )
    assert _kept(masks) == round(0.2 * 135)


def test_synflow_on_efficientnet_b0(caplog):
    caplog.set_level(logging.WARNING)
    started = time.time()
    base = keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfprune.UnprunedLayerWarning)
        model = tfprune.masked(base)
    masks = tfprune.prune(model, "synflow", 0.1, rounds=2)
    assert _kept(masks) == round(0.1 * _total(model))
    assert not _fallbacks(caplog)  # the float64 copy: its seed generators are numbered anew
    assert time.time() - started < 60


# ---------------------------------------------------------------------------------------------
# Clear one-line errors for what a user can get wrong.


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda m, d: tfprune.score(m, "snip", data=d, loss=42), ConfigError, "got int"),
        (lambda m, d: tfprune.score(m, "snip", data=d, loss="msee"), ConfigError, "'msee'"),
        (
            lambda m, d: tfprune.score(m, "grasp", data=d, loss="mse", temperature=200),
            ConfigError,
            "temperature=200 applies to the default cross-entropy only",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=d, loss="mse", from_logits=False),
            ConfigError,
            "from_logits=False",
        ),
        (lambda m, d: tfprune.score(m, "magnitude", loss="mse"), ConfigError, "takes no loss"),
        (
            lambda m, d: tfprune.prune(m, "synflow", 0.5, loss="mse"),
            ConfigError,
            "takes no loss",
        ),
        (
            lambda m, d: tfprune.score(
                m, "snip", data=d, loss=keras.losses.MeanSquaredError(reduction="sum")
            ),
            ConfigError,
            "reduction='sum'",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=(d[0], d[1][:5]), loss="mse"),
            DataError,
            "equal length",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=(d[0], np.full((8, 2), np.nan)), loss="mse"),
            DataError,
            "16 NaN or infinite",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=(d[0], np.full((8, 2), "a")), loss="mse"),
            DataError,
            "dtype <U1",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=(d[0], (d[1], d[1])), loss="mse"),
            DataError,
            "2 target arrays for a model with 1 output:",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=(d[0], np.zeros((8, 3))), loss="mse"),
            DataError,
            "the loss cannot be computed",
        ),
        (
            lambda m, d: tfprune.score(m, "snip", data=d, loss={"other": "mse"}),
            ConfigError,
            "'other'",
        ),
        (lambda m, d: tfprune.score(m, "snip", data=d), DataError, "not one-hot rows"),
        (
            lambda m, d: tfprune.score(
                m, "snip", data=(d[0], np.full(8, 5)), loss="sparse_categorical_crossentropy"
            ),
            DataError,
            "label value of 5 which is outside the valid range of [0, 2)",
        ),
    ],
)
def test_bad_loss_and_targets_raise_one_line_errors(call, error, fragment):
    x, y = _regression_data(8)
    model = _regressor(dtype="float32")
    with pytest.raises(error) as raised:
        call(model, (x, y))
    assert fragment in _one_line(raised)


def test_models_the_default_loss_cannot_score():
    data = _two_output_data()
    with pytest.raises(ModelError, match="2 outputs") as error:
        tfprune.score(_two_outputs(), "snip", data=(data[0], data[1][0]))
    _one_line(error)
    compiled = _regressor()
    compiled.compile(optimizer="sgd", metrics=["mae"])
    with pytest.raises(ModelError, match="compiled without a loss") as error:
        tfprune.score(compiled, "snip", data=_regression_data())
    _one_line(error)
