"""Tests of the `grasp` and `synflow` scorers against independent computations (SPEC §1, §2)."""

from __future__ import annotations

import copy
import gc
import random
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune import registry
from tfprune.errors import ConfigError, ModelError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.pruning import synflow
from tfprune.pruning.grasp import GraspScorer
from tfprune.pruning.synflow import SynflowScorer

T = 200.0  # the GraSP temperature of SPEC §2

# ---------------------------------------------------------------------------------------------
# Small models and data.


def _softmax_regression(seed: int = 0, inputs: int = 4, classes: int = 3) -> keras.Model:
    """One masked Dense layer, logits = x W + b: its Hessian is known in closed form."""
    rng = np.random.default_rng(seed)
    x = keras.Input((inputs,))
    model = keras.Model(x, MaskedDense(classes, name="linear")(x), name="softmax_regression")
    layer = model.get_layer("linear")
    layer.kernel.assign(rng.normal(size=(inputs, classes)))
    layer.bias.assign(rng.normal(scale=0.5, size=classes))
    return model


def _regression_data(n: int, seed: int = 20, inputs: int = 4, classes: int = 3):
    rng = np.random.default_rng(seed)
    # Large inputs, so that logits / T still move the softmax away from uniform.
    x = rng.normal(scale=30.0, size=(n, inputs)).astype(np.float32)
    return x, rng.integers(0, classes, size=n)


def _mlp(seed: int = 0) -> keras.Model:
    """3 -> 4 (ReLU) -> 2, with biases and weights of both signs."""
    rng = np.random.default_rng(seed)
    x = keras.Input((3,))
    h = MaskedDense(4, activation="relu", name="hidden")(x)
    model = keras.Model(x, MaskedDense(2, name="logits")(h), name="mlp")
    for layer in (model.get_layer("hidden"), model.get_layer("logits")):
        layer.kernel.assign(rng.normal(size=tuple(layer.kernel.shape)))
        layer.bias.assign(rng.normal(scale=0.5, size=tuple(layer.bias.shape)))
    return model


def _cnn(seed: int = 0, dtype: str = "float32") -> keras.Model:
    """conv 3x3 (3 filters) -> BatchNorm -> ReLU -> Dense 3, with non-trivial BN statistics."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((5, 5, 2), dtype=dtype)
    h = MaskedConv2D(3, 3, name="conv", dtype=dtype)(x)
    h = keras.layers.BatchNormalization(name="bn", dtype=dtype)(h)
    h = keras.layers.ReLU(name="relu", dtype=dtype)(h)
    h = keras.layers.Flatten(name="flat", dtype=dtype)(h)
    model = keras.Model(x, MaskedDense(3, name="out", dtype=dtype)(h), name="cnn")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(scale=0.3, size=3))
    bn.moving_variance.assign(rng.uniform(2.0, 4.0, size=3))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=3) * np.array([1.0, -1.0, 1.0]))
    bn.beta.assign(rng.normal(scale=0.1, size=3))
    model.get_layer("conv").bias.assign(rng.normal(scale=0.1, size=3))
    return model


def _cnn_data(n: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5, 5, 2)).astype(np.float32), rng.integers(0, 3, size=n)


def _total(model: keras.Model) -> int:
    return sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())


def _kept(masks: dict[str, np.ndarray]) -> int:
    return int(sum(m.sum() for m in masks.values()))


def _flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays.values()])


def _state(model: keras.Model) -> list[tuple[str, str, np.ndarray]]:
    return [(v.path, v.dtype, v.numpy().copy()) for v in model.variables]


def _assert_same_state(model: keras.Model, before) -> None:
    after = _state(model)
    assert [(p, d) for p, d, _ in after] == [(p, d) for p, d, _ in before]
    for (path, _, value), (_, _, old) in zip(after, before, strict=True):
        np.testing.assert_array_equal(value, old, err_msg=path)


# ---------------------------------------------------------------------------------------------
# SPEC §2 grasp: keep-score w ⊙ (H g), logits / T, g a constant, BN in training mode.


def _regression_grasp(model: keras.Model, batches, temperature: float = T):
    """Hg and w of softmax regression in float64 numpy, with H built as an explicit matrix.

    For z = (x (W ⊙ m) + b) / T and L the mean cross-entropy of softmax(z):
    ∂L/∂W_ij = m_ij mean_n x_ni (p_nj - [j = y_n]) / T and
    ∂²L/∂W_ij∂W_lk = m_ij m_lk mean_n x_ni x_nl (δ_jk p_nj - p_nj p_nk) / T².
    """
    layer = model.get_layer("linear")
    w, m, b = (np.float64(v.numpy()) for v in (layer.kernel, layer.mask, layer.bias))
    d, k = w.shape
    total = sum(len(y) for _, y in batches)
    g, hessians = np.zeros(d * k), []
    for x, y in batches:
        x = x.astype(np.float64)
        z = (x @ (w * m) + b) / temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = x.T @ (p - np.eye(k)[y]) / (len(y) * temperature) * m
        a = np.einsum("jk,nj->njk", np.eye(k), p) - np.einsum("nj,nk->njk", p, p)
        h = np.einsum("ni,nl,njk->ijlk", x, x, a).reshape(d * k, d * k)
        h *= np.outer(m.ravel(), m.ravel()) / (len(y) * temperature**2)
        g += (len(y) / total) * grad.ravel()
        hessians.append((len(y) / total, h))
    hg = sum(weight * (h @ g) for weight, h in hessians)
    return w, hg.reshape(d, k)


def _regression_grasp_tolerance(expected: np.ndarray, batch: int, extra: int = 0) -> dict:
    """Tolerance of a float32 GraSP score of `_softmax_regression` against `_regression_grasp`.

    H g differentiates the batch gradient once more, so a score goes through twice the forward
    pass (a dot product of 4 or 10, then the bias and 1/T: 12 at most), the softmax and its
    gradient (7) and the sum over the batch, plus <g, ∇L> (one term per weight), the float32 g
    and the product with w (2), and `extra` for what the model adds. The batch sums cancel, so
    the error is held to the largest score.
    """
    terms = 2 * (12 + 7 + batch) + expected.size + 2 + extra
    return tolerance(np.float32, terms, scale=np.abs(expected).max())


def test_grasp_matches_closed_form_hessian_one_batch():
    model = _softmax_regression()
    x, y = _regression_data(10)
    scores = tfprune.score(model, "grasp", data=(x, y))
    w, hg = _regression_grasp(model, [(x, y)])
    expected = w * hg
    assert list(scores) == ["linear/kernel"] and scores["linear/kernel"].dtype == np.float64
    bounds = _regression_grasp_tolerance(expected, len(y))
    np.testing.assert_allclose(scores["linear/kernel"], expected, **bounds)
    assert (expected > 0).any() and (expected < 0).any()  # a signed score, not a magnitude


@pytest.mark.parametrize("temperature", [1.0, 7.5])
def test_grasp_several_batches_and_temperature(temperature):
    model = _softmax_regression(seed=1)
    x, y = _regression_data(10, seed=21)
    mask = np.ones((4, 3), dtype=np.float32)
    mask[0, 2] = mask[3, 0] = 0.0
    model.get_layer("linear").mask.assign(mask)
    # batch_size 4: batches of 4, 4 and 2; g and then Hg are batch-size-weighted means
    scores = tfprune.score(model, "grasp", data=(x / 30, y), batch_size=4, temperature=temperature)
    batches = [(x[:4] / 30, y[:4]), (x[4:8] / 30, y[4:8]), (x[8:] / 30, y[8:])]
    w, hg = _regression_grasp(model, batches, temperature)
    bounds = _regression_grasp_tolerance(w * hg, 4)  # batches are averaged in float64
    np.testing.assert_allclose(scores["linear/kernel"], w * hg, **bounds)
    assert np.all(scores["linear/kernel"][mask == 0] == 0.0)
    # not the mean of per-batch keep-scores w ⊙ H_b g_b
    per_batch = sum(
        (len(yb) / 10)
        * tfprune.score(model, "grasp", data=(xb, yb), temperature=temperature)["linear/kernel"]
        for xb, yb in batches
    )
    assert not np.allclose(scores["linear/kernel"], per_batch, rtol=1e-2)


def test_grasp_removes_the_highest_published_score():
    """Keeping the top w ⊙ Hg is GraSP's "remove the highest S = -w ⊙ Hg" (SPEC §2)."""
    model = _softmax_regression(seed=2, inputs=10, classes=4)
    x, y = _regression_data(16, seed=22, inputs=10, classes=4)
    w, hg = _regression_grasp(model, [(x, y)])
    published = (-w * hg).ravel()  # S of the GraSP paper
    density, total = 0.3, published.size
    count = round(density * total)  # 12 of 40 kept
    removed = np.argsort(-published, kind="stable")[: total - count]
    kept = np.setdiff1d(np.arange(total), removed)
    ordered = np.sort(published)
    assert ordered[count] - ordered[count - 1] > 1e-2 * np.abs(published).max()  # no near-tie
    masks = tfprune.prune(model, "grasp", density, data=(x, y))
    np.testing.assert_array_equal(np.flatnonzero(masks["linear/kernel"]), kept)
    # The other sign, or the magnitude, would keep different weights.
    assert not np.array_equal(np.sort(np.argsort(published)[-count:]), kept)
    assert not np.array_equal(np.sort(np.argsort(np.abs(published))[-count:]), kept)


def test_grasp_with_batch_norm_matches_finite_differences():
    """Hg ≈ (∇L(w + εg) - ∇L(w - εg)) / 2ε in float64, BN on batch statistics."""
    model = _cnn(dtype="float64")
    x, y = _cnn_data(12)
    before = _state(model)
    scores = tfprune.score(model, "grasp", data=(x, y), batch_size=12)
    _assert_same_state(model, before)  # moving statistics included

    kernels = [w.kernel for w in prunable_weights(model).values()]
    w0 = [k.numpy().copy() for k in kernels]

    def gradients(step: float, direction) -> list[np.ndarray]:
        for kernel, w, d in zip(kernels, w0, direction, strict=True):
            kernel.assign(w + step * d)
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits / T, from_logits=True)
            )
        return [g.numpy() for g in tape.gradient(loss, [k.value for k in kernels])]

    g = gradients(0.0, w0)
    eps = 1e-4
    plus, minus = gradients(eps, g), gradients(-eps, g)
    for variable, (_, _, value) in zip(model.variables, before, strict=True):
        variable.assign(value)  # the training-mode calls moved the BN statistics
    for (path, score), w, gp, gm in zip(scores.items(), w0, plus, minus, strict=True):
        expected = w * (gp - gm) / (2 * eps)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-6 * scale, err_msg=path)
        assert np.count_nonzero(expected) == expected.size


def test_grasp_from_probabilities_equals_from_logits():
    logits_model = _softmax_regression(seed=3)
    x = keras.Input((4,))
    layer = MaskedDense(3, activation="softmax", name="linear")
    probabilities_model = keras.Model(x, layer(x))
    for name in ("kernel", "bias"):
        getattr(layer, name).assign(getattr(logits_model.get_layer("linear"), name))
    x, y = _regression_data(8, seed=23)
    data = (x / 30, y)  # probabilities far from 0, so their logarithms are exact logits
    from_logits = tfprune.score(logits_model, "grasp", data=data, temperature=2.0)
    scores = tfprune.score(
        probabilities_model, "grasp", data=data, temperature=2.0, from_logits=False
    )
    # log softmax(z) = z - logsumexp(z), and softmax ignores the shift: both models have the
    # closed-form score. The softmax and the logarithm add 6 operations to each pass.
    w, hg = _regression_grasp(logits_model, [data], temperature=2.0)
    expected = w * hg
    bounds = _regression_grasp_tolerance(expected, len(y))
    np.testing.assert_allclose(from_logits["linear/kernel"], expected, **bounds)
    bounds = _regression_grasp_tolerance(expected, len(y), extra=2 * 6)
    np.testing.assert_allclose(scores["linear/kernel"], expected, **bounds)


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), "hot", True])
def test_grasp_rejects_bad_temperature(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        tfprune.score(_cnn(), "grasp", data=_cnn_data(4), temperature=temperature)


# ---------------------------------------------------------------------------------------------
# SPEC §2 synflow: |w ⊙ ∂R/∂w| of the float64, absolute-valued network on one all-ones input.


def test_synflow_matches_hand_derivation_on_mlp():
    model = _mlp()
    hidden, logits = model.get_layer("hidden"), model.get_layer("logits")
    m1 = np.ones((3, 4), dtype=np.float32)
    m1[1, 2] = 0.0
    hidden.mask.assign(m1)
    scores = tfprune.score(model, "synflow")
    w1, b1, w2, b2 = (
        np.abs(np.float64(v.numpy()))
        for v in (hidden.kernel, hidden.bias, logits.kernel, logits.bias)
    )
    # All weights are positive, so every ReLU passes its input: with x = 1,
    # h = 1ᵀ(W1 ⊙ m1) + b1 and R = h W2 1 + Σ b2, hence ∂R/∂W2_ij = h_i and
    # ∂R/∂W1_ai = m1_ai (W2 1)_i.
    h = (w1 * m1).sum(axis=0) + b1
    expected = {
        "hidden/kernel": w1 * m1 * w2.sum(axis=1)[None, :],
        "logits/kernel": w2 * h[:, None],
    }
    assert list(scores) == list(expected)
    for path, value in expected.items():
        assert scores[path].dtype == np.float64
        np.testing.assert_allclose(scores[path], value, rtol=1e-9, atol=0, err_msg=path)
    assert scores["hidden/kernel"][1, 2] == 0.0
    assert np.count_nonzero(scores["logits/kernel"]) == 8


def test_synflow_with_batch_norm_matches_manual_float64_network():
    model = _cnn(seed=4)
    conv, bn, out = model.get_layer("conv"), model.get_layer("bn"), model.get_layer("out")
    mask = np.ones((3, 3, 2, 3), dtype=np.float32)
    mask[0, 0, 0, 0] = mask[2, 1, 1, 2] = 0.0
    conv.mask.assign(mask)
    # A large moving mean makes channel 1 negative before the ReLU, which then cuts it.
    bn.moving_mean.assign([0.1, 50.0, -0.2])
    scores = tfprune.score(model, "synflow")

    def f64(variable, absolute=True):
        value = np.float64(variable.numpy())
        return tf.constant(np.abs(value) if absolute else value)

    k1, k2 = f64(conv.kernel), f64(out.kernel)
    with tf.GradientTape() as tape:
        tape.watch([k1, k2])
        h = tf.nn.conv2d(tf.ones((1, 5, 5, 2), tf.float64), k1 * mask, 1, "VALID") + f64(conv.bias)
        # BatchNorm in inference mode: moving statistics as they are, |gamma| and |beta|.
        h = (h - f64(bn.moving_mean, False)) / tf.sqrt(f64(bn.moving_variance, False) + bn.epsilon)
        h = tf.nn.relu(h * f64(bn.gamma) + f64(bn.beta))
        total = tf.reduce_sum(tf.reshape(h, (1, -1)) @ k2 + f64(out.bias))
    expected = [
        np.abs(k.numpy() * g.numpy())
        for k, g in zip([k1, k2], tape.gradient(total, [k1, k2]), strict=True)
    ]
    for (path, score), value in zip(scores.items(), expected, strict=True):
        np.testing.assert_allclose(score, value, rtol=1e-3, atol=0, err_msg=path)
    assert np.all(scores["conv/kernel"][mask == 0] == 0.0)
    cut = scores["out/kernel"].reshape(3, 3, 3, 3)[:, :, 1, :]  # (h, w, channel, class)
    assert np.all(cut == 0.0)
    assert np.count_nonzero(scores["out/kernel"]) == 81 - cut.size


def test_synflow_leaves_the_model_and_random_streams_unchanged():
    model = _cnn(seed=5)
    before = _state(model)
    policies = [layer.dtype_policy.name for layer in model.layers]
    python_random = random.getstate()
    tfprune.score(model, "synflow")
    _assert_same_state(model, before)
    assert random.getstate() == python_random
    tfprune.prune(model, "synflow", 0.5, rounds=3)
    masks = {w.mask.path: w.mask.numpy() for w in prunable_weights(model).values()}
    assert 0 < sum(m.sum() for m in masks.values()) < _total(model)
    after = [(p, d, masks.get(p, v)) for p, d, v in before]  # only the masks changed
    _assert_same_state(model, after)
    assert {v.dtype for v in model.variables} == {"float32"}
    assert [layer.dtype_policy.name for layer in model.layers] == policies
    assert random.getstate() == python_random


def test_synflow_runs_100_rounds_by_default_and_copies_once(monkeypatch):
    calls, copies = [], []
    real_call, real_copy = SynflowScorer.__call__, synflow._float64_copy

    def counting_call(self, model, *args):
        calls.append(tfprune.overall_density(tfprune.get_masks(model)))
        return real_call(self, model, *args)

    def counting_copy(model):
        copies.append(model.name)
        return real_copy(model)

    monkeypatch.setattr(SynflowScorer, "__call__", counting_call)
    monkeypatch.setattr(synflow, "_float64_copy", counting_copy)
    model = _cnn(seed=6)
    total = _total(model)
    masks = tfprune.prune(model, "synflow", 0.1)
    assert len(calls) == registry.get("synflow").default_rounds == 100
    assert copies == ["cnn"]
    assert _kept(masks) == round(0.1 * total) == 14  # 13.5, half to even
    # Each round scores the previous round's mask: d^((i - 1) / 100) before round i.
    np.testing.assert_allclose(
        calls[1:], [round(0.1 ** (i / 100) * total) / total for i in range(1, 100)]
    )


def _synflow_trace_count(model) -> int:
    flow = synflow._flow_of(model, prunable_weights(model), None, synflow.ABSOLUTE)
    return flow._flow_scores.experimental_get_tracing_count()


def test_synflow_traces_and_copies_once_per_model_and_reads_the_current_weights(monkeypatch):
    copies = []
    real_copy = synflow._float64_copy
    monkeypatch.setattr(synflow, "_float64_copy", lambda m: copies.append(m.name) or real_copy(m))
    model, twin = _cnn(seed=8), _cnn(seed=8)
    first = tfprune.prune(model, "synflow", 0.3, rounds=4)
    # New weights and a fresh start: the second call reuses the copy and the trace, and
    # scores what a fresh model with those weights scores.
    rng = np.random.default_rng(9)
    for a, b in zip(model.trainable_variables, twin.trainable_variables, strict=True):
        value = rng.normal(size=tuple(a.shape))
        a.assign(value)
        b.assign(value)
    tfprune.assign_masks(model, {p: np.ones_like(m) for p, m in first.items()})
    again = tfprune.prune(model, "synflow", 0.3, rounds=4)
    assert copies == ["cnn"]
    assert _synflow_trace_count(model) == 1
    expected = tfprune.prune(twin, "synflow", 0.3, rounds=4)
    for path in expected:
        np.testing.assert_array_equal(again[path], expected[path], err_msg=path)
    assert any(np.any(again[p] != first[p]) for p in first)  # the new weights were read
    scores = tfprune.score(model, "synflow")
    np.testing.assert_equal(scores, tfprune.score(twin, "synflow"))
    assert _synflow_trace_count(model) == 1
    # The cached copy and trace die with the model.
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_one_batch_runs_eagerly_and_gives_the_traced_masks(method):
    """One batch is scored eagerly; after a call on several batches has traced the scorer,
    the same batch is scored by the trace: the same masks, and no retracing after that."""
    from tfprune.pruning.scorers import cached_functions

    x, y = _cnn_data(24)
    model = _cnn(seed=10)
    eager = tfprune.score(model, method, data=(x, y), batch_size=24)
    assert not cached_functions(model)
    tfprune.score(model, method, data=(x, y), batch_size=12)  # two batches: traced
    (traced_functions,) = cached_functions(model).values()
    traced = tfprune.score(model, method, data=(x, y), batch_size=24)
    tfprune.score(model, method, data=(x, y), batch_size=12)
    for function in tf.nest.flatten(traced_functions):
        # Two batches of 12 trace once; one batch of 24 (and, for GraSP, its own gradient
        # as g) once more.
        assert function.experimental_get_tracing_count() <= 2
    counts = [f.experimental_get_tracing_count() for f in tf.nest.flatten(traced_functions)]
    tfprune.score(model, method, data=(x, y), batch_size=24)
    tfprune.score(model, method, data=(x, y), batch_size=12)
    assert [f.experimental_get_tracing_count() for f in tf.nest.flatten(traced_functions)] == (
        counts
    )
    for path, value in eager.items():
        scale = float(np.abs(value).max())
        np.testing.assert_allclose(
            traced[path], value, **tolerance(np.float32, 100, scale), err_msg=path
        )
    for density in (0.2, 0.5, 0.8):
        np.testing.assert_equal(
            tfprune.select(eager, tfprune.get_masks(model), density),
            tfprune.select(traced, tfprune.get_masks(model), density),
        )


def test_grasp_of_one_batch_in_one_pass_equals_two_passes():
    from tfprune._keras_compat import exact_batch_moments
    from tfprune.pruning import grasp
    from tfprune.pruning._losses import DEFAULT_LOSS
    from tfprune.pruning.scorers import variable_values

    model = _cnn(seed=12)
    x, y = _cnn_data(16)
    weights = prunable_weights(model)
    scorer = GraspScorer()
    gradient, hessian_gradient = scorer._functions(model, weights, DEFAULT_LOSS)
    trainable = variable_values(model.trainable_variables)
    non_trainable = variable_values(model.non_trainable_variables)
    x, y = tf.constant(x), tf.constant(y)
    with exact_batch_moments(model):
        one_pass = hessian_gradient(trainable, non_trainable, x, y, None)
        two_passes = grasp._hessian_gradient(
            gradient, hessian_gradient, trainable, non_trainable, weights, [(x, y)], [16]
        )
    for a, b in zip(one_pass, two_passes, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)


def test_synflow_one_round_is_single_shot_selection():
    model = _cnn(seed=7)
    scores = tfprune.score(_cnn(seed=7), "synflow")
    ones = {p: np.ones(s.shape, dtype=np.float32) for p, s in scores.items()}
    masks = tfprune.prune(model, "synflow", 0.2, rounds=1)
    expected = tfprune.select(scores, ones, 0.2)
    for path in scores:
        np.testing.assert_array_equal(masks[path], expected[path])
    # 100 rounds rescore with the growing mask and end elsewhere.
    iterative = tfprune.prune(_cnn(seed=7), "synflow", 0.2)
    assert not all(np.array_equal(iterative[p], masks[p]) for p in masks)


def test_synflow_never_revives_pruned_weights():
    model = _cnn(seed=8)
    rng = np.random.default_rng(8)
    previous = {
        path: (rng.random(tuple(w.kernel.shape)) < 0.6).astype(np.float32)
        for path, w in prunable_weights(model).items()
    }
    tfprune.assign_masks(model, previous)
    scores = tfprune.score(model, "synflow")
    for path, mask in previous.items():
        assert np.all(scores[path][mask == 0] == 0.0)
        assert np.all(scores[path][mask == 1] > 0.0)
    masks = tfprune.prune(model, "synflow", 0.3, rounds=5)
    for path, mask in previous.items():
        assert np.all(masks[path][mask == 0] == 0.0)
    assert _kept(masks) == round(0.3 * _total(model))


def test_synflow_needs_the_input_shape_of_a_subclassed_model():
    """A subclassed model cannot be copied in float64; SynFlow then scores it in place
    (tests/test_pruning_any_model.py), which needs the shape of its all-ones input."""

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = MaskedDense(2, name="dense")

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model.dense.build((None, 3))  # built layers, but the model was never called
    with pytest.raises(ModelError, match="input_shape"):
        tfprune.score(model, "synflow")
    assert tfprune.score(model, "synflow", input_shape=(3,))["dense/kernel"].shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# SPEC §1 Selection through `tfprune.prune`: exactly round(d * N), globally or per layer.


@pytest.mark.parametrize("method", ["grasp", "synflow"])
@pytest.mark.parametrize("density", [0.5, 0.2, 0.05])
def test_exact_counts(method, density):
    data = _cnn_data(10) if method == "grasp" else None
    model = _cnn(seed=9)
    total = _total(model)  # 54 + 81
    masks = tfprune.prune(model, method, density, data=data)
    assert _kept(masks) == round(density * total)
    for path, mask in tfprune.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[path])
    layer_masks = tfprune.prune(_cnn(seed=9), method, density, data=data, scope="layer")
    assert [int(m.sum()) for m in layer_masks.values()] == [
        round(density * 54),
        round(density * 81),
    ]


def test_scorers_are_registered_with_their_options():
    assert {"grasp", "synflow"} <= set(tfprune.scorer_names())
    grasp, synflow_method = registry.get("grasp"), registry.get("synflow")
    assert grasp.needs_data and not synflow_method.needs_data
    assert grasp.default_rounds == 1
    # The options a method file declares (so that checking them imports no implementation)
    # are those its scorer takes.
    assert grasp.option_defaults() == registry.scorer_options(GraspScorer)
    assert synflow_method.option_defaults() == registry.scorer_options(SynflowScorer) == {}
    with pytest.raises(ConfigError, match="'temperature'"):
        tfprune.score(_cnn(), "synflow", temperature=2.0)


@pytest.mark.parametrize(
    "method, options",
    [
        ("snip", {}),
        ("grasp", {}),
        ("iter_snip", {"rounds": 2}),
        ("force", {"rounds": 2}),
        ("prospr", {}),
        ("ntk_sap", {"rounds": 2}),
        ("synflow", {"rounds": 2}),
    ],
)
def test_traced_scorers_are_cached_on_the_model_and_die_with_it(method, options):
    """Two batches trace the scorer, cached for the model; once the model is dropped, the
    model and its traced functions are freed (the cache does not keep them alive)."""
    from tfprune.pruning.scorers import cached_functions

    x, y = _cnn_data(24)
    model = _cnn(seed=11)
    tfprune.prune(model, method, 0.5, data=(x, y), batch_size=12, **options)
    functions = cached_functions(model)
    assert functions, f"{method} cached no traced function"
    # A copy of the model starts without the original's functions.
    assert not cached_functions(copy.deepcopy(model))
    gone, cache = weakref.ref(model), weakref.ref(functions)
    del model, functions
    gc.collect()
    assert gone() is None and cache() is None
