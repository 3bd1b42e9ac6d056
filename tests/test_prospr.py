"""Tests of the `prospr` scorer against finite differences of the loss after M steps (SPEC §7)."""

from __future__ import annotations

import contextlib
import os

import _procs
import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune import registry
from tfprune.errors import ConfigError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.pruning import prospr
from tfprune.pruning.prospr import ProsprScorer

# Fourth-order central differences in float64, f' ~ (8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h:
# with h = 1e-3 truncation (h^4 f^(5) / 30) and rounding (~eps / h) stay near 1e-12 of the largest
# score, a hundredth of these bounds. A step size of float32 0.1 (0.10000000149) puts the scores
# off by ~3e-8, beyond them; BatchNorm's inexact second derivative (Keras' moments) by 1e-4 to
# 1e-3 on these tiny networks (about 2% on larger ones, SPEC §7).
STEP = 1e-3
RTOL, ATOL = 1e-8, 1e-9  # ATOL relative to the largest score of the kernel

# ---------------------------------------------------------------------------------------------
# Small models and data.


def _mlp(seed: int = 0, dtype: str = "float64") -> keras.Model:
    """4 -> 5 (tanh) -> 3, with biases; tanh keeps the loss smooth for finite differences."""
    rng = np.random.default_rng(seed)
    x = keras.Input((4,), dtype=dtype)
    h = MaskedDense(5, activation="tanh", name="hidden", dtype=dtype)(x)
    model = keras.Model(x, MaskedDense(3, name="logits", dtype=dtype)(h), name="mlp")
    for layer in (model.get_layer("hidden"), model.get_layer("logits")):
        layer.kernel.assign(rng.normal(size=tuple(layer.kernel.shape)))
        layer.bias.assign(rng.normal(scale=0.5, size=tuple(layer.bias.shape)))
    return model


def _mlp_data(n: int, seed: int = 10):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def _cnn(seed: int = 0, dtype: str = "float64") -> keras.Model:
    """conv 3x3 (3 filters) -> BatchNorm -> tanh -> Dense 3, with non-trivial BN statistics."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((5, 5, 2), dtype=dtype)
    h = MaskedConv2D(3, 3, name="conv", dtype=dtype)(x)
    h = keras.layers.BatchNormalization(name="bn", dtype=dtype)(h)
    h = keras.layers.Activation("tanh", name="tanh", dtype=dtype)(h)
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


def _cnn_data(n: int, seed: int = 11, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5, 5, 2)).astype(dtype), rng.integers(0, 3, size=n)


def _total(model: keras.Model) -> int:
    return sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())


def _kept(masks: dict[str, np.ndarray]) -> int:
    return int(sum(m.sum() for m in masks.values()))


def _state(model: keras.Model) -> list[tuple[str, str, np.ndarray]]:
    return [(v.path, v.dtype, v.numpy().copy()) for v in model.variables]


def _assert_same_state(model: keras.Model, before) -> None:
    after = _state(model)
    assert [(p, d) for p, d, _ in after] == [(p, d) for p, d, _ in before]
    for (path, _, value), (_, _, old) in zip(after, before, strict=True):
        np.testing.assert_array_equal(value, old, err_msg=path)


# ---------------------------------------------------------------------------------------------
# The reference: L_M(θ_M) as a function of c, and its central differences.


def _cross_entropy(y, outputs):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, outputs, True))


def _loss_after_steps(model, sequence, learning_rate, loss=_cross_entropy, reapply=False):
    """c -> L_M(θ_M), θ_0 = θ ⊙ c, θ_{k+1} = θ_k - η ∇L_k(θ_k) on every trainable parameter,
    the model's own masks in force, BN on batch statistics (SPEC §7).

    Each step takes a first derivative only (exact with Keras' batch moments), so the
    function is exact; `reapply` multiplies the kernels by c at every step instead (another
    method, SPEC §7).
    """
    weights = prunable_weights(model)
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    index = [position[id(w.kernel)] for w in weights.values()]
    trainable = [tf.constant(v.numpy()) for v in model.trainable_variables]
    non_trainable = [tf.constant(v.numpy()) for v in model.non_trainable_variables]
    sequence = [(tf.constant(x), tf.constant(y)) for x, y in sequence]

    def value(params, c, x, y):
        if reapply:
            params = list(params)
            for i, ci in zip(index, c, strict=True):
                params[i] = params[i] * ci
        outputs, _ = model.stateless_call(params, non_trainable, x, training=True)
        return loss(y, outputs)

    @tf.function
    def function(c):
        params = list(trainable)
        if not reapply:
            for i, ci in zip(index, c, strict=True):
                params[i] = params[i] * ci
        for x, y in sequence[:-1]:
            with tf.GradientTape() as tape:
                tape.watch(params)
                current = value(params, c, x, y)
            grads = tape.gradient(current, params)
            params = [p - learning_rate * g for p, g in zip(params, grads, strict=True)]
        return value(params, c, *sequence[-1])

    return function


def _central_differences(model, function) -> dict[str, np.ndarray]:
    """|∂f/∂c| at c = 1, entry by entry, by fourth-order central differences of step `STEP`."""
    weights = prunable_weights(model)
    ones = [np.ones(tuple(w.kernel.shape)) for w in weights.values()]

    def at(n, j, offset):
        c = [value.copy() for value in ones]
        c[n].flat[j] += offset
        return function(c).numpy()

    result = {}
    for n, path in enumerate(weights):
        derivative = np.zeros(ones[n].size)
        for j in range(ones[n].size):
            near = at(n, j, STEP) - at(n, j, -STEP)
            far = at(n, j, 2 * STEP) - at(n, j, -2 * STEP)
            derivative[j] = (8 * near - far) / (12 * STEP)
        result[path] = np.abs(derivative.reshape(ones[n].shape))
    return result


def _assert_matches(scores, expected) -> None:
    assert list(scores) == list(expected)
    for path, value in expected.items():
        assert scores[path].dtype == np.float64
        scale = np.abs(value).max()
        np.testing.assert_allclose(scores[path], value, rtol=RTOL, atol=ATOL * scale, err_msg=path)


def _differs(scores, expected) -> bool:
    """Whether some entry lies outside the tolerance of `_assert_matches`."""
    for path, value in expected.items():
        scale = np.abs(value).max()
        if np.any(np.abs(scores[path] - value) > RTOL * np.abs(value) + ATOL * scale):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# SPEC §7 prospr: |∂L_M(θ_M)/∂c| at c = 1 through M steps of SGD from θ_0 = θ ⊙ c.


def test_meta_gradient_matches_finite_differences_on_mlp():
    model = _mlp()
    mask = np.ones((4, 5))
    mask[0, 1] = mask[3, 4] = 0.0  # an earlier round's mask, in force during the steps
    model.get_layer("hidden").mask.assign(mask)
    x, y = _mlp_data(8)
    before = _state(model)
    scores = tfprune.score(model, "prospr", data=(x, y), learning_rate=0.5)
    _assert_same_state(model, before)
    expected = _central_differences(model, _loss_after_steps(model, [(x, y)] * 4, 0.5))
    _assert_matches(scores, expected)
    assert np.all(scores["hidden/kernel"][mask == 0] == 0.0)
    assert np.count_nonzero(scores["hidden/kernel"]) == 18
    assert np.count_nonzero(scores["logits/kernel"]) == 15
    # The steps matter: neither SNIP's score (no step) nor c applied at every step.
    snip = _central_differences(model, _loss_after_steps(model, [(x, y)], 0.5))
    assert _differs(scores, snip)
    reapplied = _loss_after_steps(model, [(x, y)] * 4, 0.5, reapply=True)
    assert _differs(scores, _central_differences(model, reapplied))


def test_meta_gradient_with_batch_norm_needs_exact_moments(monkeypatch):
    """BatchNorm's second derivatives (SPEC §7): with exact batch moments the meta-gradient
    matches the finite differences; with Keras' moments it does not."""
    x, y = _cnn_data(6)
    model = _cnn()
    before = _state(model)
    scores = tfprune.score(model, "prospr", data=(x, y))  # M = 3, η = 0.1
    _assert_same_state(model, before)  # moving statistics included
    expected = _central_differences(model, _loss_after_steps(model, [(x, y)] * 4, 0.1))
    _assert_matches(scores, expected)
    assert all(np.count_nonzero(value) == value.size for value in expected.values())

    # A fresh model, so that the function is traced again, with Keras' own moments.
    monkeypatch.setattr(prospr, "exact_batch_moments", lambda model: contextlib.nullcontext())
    keras_moments = tfprune.score(_cnn(), "prospr", data=(x, y))
    assert _differs(keras_moments, expected)
    errors = [
        np.abs(keras_moments[p] - expected[p]).max() / np.abs(expected[p]).max() for p in expected
    ]
    assert max(errors) > 100 * RTOL


@pytest.mark.parametrize("model_fn", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_zero_steps_is_snip(model_fn):
    """M = 0: |∂L/∂c| = |θ ⊙ ∂L/∂θ|, SNIP's score (SPEC §2, §7)."""
    model = model_fn()
    x, y = _mlp_data(8) if model_fn is _mlp else _cnn_data(8)
    scores = tfprune.score(model, "prospr", data=(x, y), steps=0)
    weights = prunable_weights(model)
    kernels = [w.kernel.value for w in weights.values()]
    with tf.GradientTape() as tape:
        tape.watch(kernels)
        loss = _cross_entropy(y, model(x, training=True))
    grads = tape.gradient(loss, kernels)
    # The same float64 derivative, built another way: forward and backward (sums of up to 27
    # terms, BN over 72 values, the batch mean) may round in another order.
    for (path, w), grad in zip(weights.items(), grads, strict=True):
        expected = np.abs(w.kernel.numpy() * grad.numpy())
        bounds = tolerance(np.float64, 2 * (27 + 72 + 8 + 20), scale=expected.max())
        np.testing.assert_allclose(scores[path], expected, **bounds, err_msg=path)


def test_zero_steps_matches_snip_in_float32():
    model = _cnn(seed=3, dtype="float32")
    x, y = _cnn_data(8, seed=13, dtype=np.float32)
    scores = tfprune.score(model, "prospr", data=(x, y), steps=0)
    snip = tfprune.score(model, "snip", data=(x, y))
    # Both are θ ⊙ ∂L/∂θ of the same float32 network, in differently built graphs: the
    # forward and backward passes (sums of up to 27 terms, BN over 72 values, the batch mean)
    # may round in another order. Held to the largest score, as the batch sums cancel.
    for path, value in snip.items():
        bounds = tolerance(np.float32, 2 * (27 + 72 + 8 + 20), scale=np.abs(value).max())
        np.testing.assert_allclose(scores[path], value, **bounds, err_msg=path)


def test_another_loss_is_differentiated_through_the_steps():
    """`batches.loss`: a given loss is the L of every step and of L_M."""
    model = _mlp(seed=1)
    rng = np.random.default_rng(12)
    x, targets = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    scores = tfprune.score(model, "prospr", data=(x, targets), loss="mse", learning_rate=0.3)

    def mse(y, outputs):
        return tf.reduce_mean(tf.square(outputs - y))

    function = _loss_after_steps(model, [(x, targets)] * 4, 0.3, loss=mse)
    _assert_matches(scores, _central_differences(model, function))
    with pytest.raises(ConfigError, match="from_logits"):
        tfprune.score(model, "prospr", data=(x, targets), loss="mse", from_logits=False)


def test_inner_batches_same_averages_per_batch_scores():
    """`same`: each batch runs all M steps and L_M; the |scores| are averaged by batch size."""
    model = _mlp(seed=2)
    x, y = _mlp_data(10, seed=14)
    scores = tfprune.score(model, "prospr", data=(x, y), batch_size=6)
    parts = [(x[:6], y[:6]), (x[6:], y[6:])]
    expected = {path: np.zeros(value.shape) for path, value in scores.items()}
    for xb, yb in parts:
        single = _central_differences(model, _loss_after_steps(model, [(xb, yb)] * 4, 0.1))
        for path, value in single.items():
            expected[path] += len(yb) / 10 * value
    _assert_matches(scores, expected)


def test_inner_batches_cycle_takes_the_batches_in_turn():
    """`cycle`: step k on batch k mod B, L_M on batch M mod B (B = 2, M = 3: 0, 1, 0 | 1)."""
    model = _mlp(seed=3)
    x, y = _mlp_data(10, seed=15)
    scores = tfprune.score(model, "prospr", data=(x, y), batch_size=6, inner_batches="cycle")
    first, second = (x[:6], y[:6]), (x[6:], y[6:])
    function = _loss_after_steps(model, [first, second, first, second], 0.1)
    _assert_matches(scores, _central_differences(model, function))
    same = tfprune.score(model, "prospr", data=(x, y), batch_size=6)
    assert _differs(scores, same)


class _SubclassedCnn(keras.Model):
    """`_cnn` as a subclassed model, scored through a `keras.StatelessScope`."""

    def __init__(self):
        super().__init__(name="subclassed", dtype="float64")
        self.conv = MaskedConv2D(3, 3, name="conv", dtype="float64")
        self.bn = keras.layers.BatchNormalization(name="bn", dtype="float64")
        self.out = MaskedDense(3, name="out", dtype="float64")

    def call(self, inputs, training=False):
        h = keras.ops.tanh(self.bn(self.conv(inputs), training=training))
        return self.out(keras.ops.reshape(h, (-1, 27)))


def test_subclassed_model_scores_as_its_functional_twin():
    functional = _cnn(seed=7)
    model = _SubclassedCnn()
    model(np.zeros((1, 5, 5, 2)))
    for name in ("conv", "bn", "out"):
        for a, b in zip(
            getattr(model, name).variables, functional.get_layer(name).variables, strict=True
        ):
            a.assign(b)
    x, y = _cnn_data(6, seed=18)
    before = _state(model)
    scores = tfprune.score(model, "prospr", data=(x, y))
    _assert_same_state(model, before)
    expected = tfprune.score(functional, "prospr", data=(x, y))
    # The subclassed model's paths start with its name; the kernels come in the same order.
    for score, (path, value) in zip(scores.values(), expected.items(), strict=True):
        scale = np.abs(value).max()
        np.testing.assert_allclose(score, value, rtol=RTOL, atol=ATOL * scale, err_msg=path)


# ---------------------------------------------------------------------------------------------
# SPEC §1 selection through `tfprune.prune`: exact counts every round, nothing revived.


def test_exact_counts_after_every_round(monkeypatch):
    seen = []
    real_call = ProsprScorer.__call__

    def recording_call(self, model, *args):
        seen.append(tfprune.get_masks(model))
        return real_call(self, model, *args)

    monkeypatch.setattr(ProsprScorer, "__call__", recording_call)
    model = _cnn(seed=5, dtype="float32")
    total = _total(model)  # 54 + 81
    data = _cnn_data(10, seed=16, dtype=np.float32)
    density, rounds = 0.1, 3
    masks = tfprune.prune(model, "prospr", density, data=data, rounds=rounds)
    assert len(seen) == rounds
    # Before round i: round(d^((i - 1) / R) * N); after the last, round(d * N).
    assert [_kept(m) for m in seen] == [round(density ** (i / rounds) * total) for i in range(3)]
    assert [_kept(m) for m in seen] == [135, 63, 29]
    assert _kept(masks) == round(density * total) == 14
    for earlier, later in zip([*seen, masks], [*seen[1:], masks], strict=False):
        for path in later:
            assert np.all(later[path][earlier[path] == 0] == 0)  # never revived
    layer = tfprune.prune(_cnn(seed=5, dtype="float32"), "prospr", 0.2, data=data, scope="layer")
    assert [int(m.sum()) for m in layer.values()] == [round(0.2 * 54), round(0.2 * 81)]
    assert registry.get("prospr").default_rounds == 1


def test_prune_one_round_keeps_the_top_scores_and_only_changes_masks():
    model = _cnn(seed=6, dtype="float32")
    data = _cnn_data(10, seed=17, dtype=np.float32)
    before = _state(model)
    scores = tfprune.score(model, "prospr", data=data)
    _assert_same_state(model, before)
    again = tfprune.score(model, "prospr", data=data)
    for path in scores:
        np.testing.assert_array_equal(again[path], scores[path])  # deterministic
    masks = tfprune.prune(model, "prospr", 0.3, data=data, seed=4)
    ones = {p: np.ones(s.shape, dtype=np.float32) for p, s in scores.items()}
    expected = tfprune.select(scores, ones, 0.3)
    for path in scores:
        np.testing.assert_array_equal(masks[path], expected[path])
    new_masks = {w.mask.path: masks[path] for path, w in prunable_weights(model).items()}
    _assert_same_state(model, [(p, d, new_masks.get(p, v)) for p, d, v in before])
    repeated = tfprune.prune(_cnn(seed=6, dtype="float32"), "prospr", 0.3, data=data, seed=4)
    for path in masks:
        np.testing.assert_array_equal(repeated[path], masks[path])


def test_prune_lenet_300_100_to_the_exact_count():
    model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    rng = np.random.default_rng(0)
    x = rng.random((100, 28, 28, 1), dtype=np.float32)
    y = rng.permutation(np.repeat(np.arange(10), 10))
    density = 0.0281
    masks = tfprune.prune(model, "prospr", density, data=(x, y))
    total = sum(m.size for m in masks.values())
    assert total == 266_200
    assert _kept(masks) == round(density * total) == 7480


# ---------------------------------------------------------------------------------------------
# Options and the registry entry.


@pytest.mark.parametrize(
    "options, match",
    [
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"inner_batches": "new"}, "inner_batches"),
        ({"momentum": 0.9}, "'momentum'"),
    ],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        tfprune.score(_mlp(), "prospr", data=_mlp_data(4), **options)


def test_registry_entry():
    entry = registry.get("prospr")
    assert entry.kind == registry.AT_INIT and entry.needs_data
    assert entry.option_defaults() == registry.scorer_options(ProsprScorer)
    assert entry.option_defaults() == {
        "steps": 3,
        "learning_rate": 0.1,
        "inner_batches": "same",
        "from_logits": True,
    }
    assert "prospr" in tfprune.scorer_names()


# ---------------------------------------------------------------------------------------------
# The command line: the gin file, the ablations.

TINY = [
    "--gin_file=gin_configs/prospr.gin",
    "--gin_bindings=training.steps = 1",
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.progress = False",
]
LENET_PRUNABLE = 266_200


def test_command_line_run_and_ablations(tmp_path):
    plain, ablated = str(tmp_path / "plain"), str(tmp_path / "ablated")
    proc = _procs.run("tfprune.train", *TINY, f"--output_dir={plain}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _procs.run(
        "tfprune.train",
        *TINY,
        "--gin_file=gin_configs/ablations/shuffle.gin",
        "--gin_file=gin_configs/ablations/reinit.gin",
        f"--output_dir={ablated}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results, shuffled = _procs.results(plain), _procs.results(ablated)
    assert results["method"] == shuffled["method"] == "prospr"
    assert results["ablations"] == [] and shuffled["ablations"] == ["shuffle", "reinit"]
    kept = round(0.05 * LENET_PRUNABLE)
    assert results["density_actual"] == pytest.approx(kept / LENET_PRUNABLE, rel=1e-12)
    # SPEC §3: shuffle keeps each layer's count and moves the positions.
    assert shuffled["layer_density"] == results["layer_density"]
    with (
        np.load(os.path.join(plain, "masks.npz")) as a,
        np.load(os.path.join(ablated, "masks.npz")) as b,
    ):
        assert sum(int(a[k].sum()) for k in a.files) == kept
        assert any(not np.array_equal(a[k], b[k]) for k in a.files)
