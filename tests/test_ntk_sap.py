"""Tests of the `ntk_sap` scorer (SPEC §7) against an independent float64 computation."""

from __future__ import annotations

import json
import os
import random

import _procs
import keras
import numpy as np
import pytest
from _tolerance import tolerance

import tfprune
from tfprune import registry
from tfprune.errors import ConfigError, ModelError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.pruning.ntk_sap import NtkSapScorer

# ---------------------------------------------------------------------------------------------
# Small models.


def _mlp(batch_norm: bool = False, dtype: str = "float64") -> keras.Model:
    """3 -> 4 (tanh) -> 2, optionally with BatchNorm before the tanh; smooth, so that finite
    differences converge. Its own weights and BN statistics are far from what the initializers
    draw, so that a score computed from them instead of the redrawn ones fails the tests."""
    rng = np.random.default_rng(0)
    x = keras.Input((3,), dtype=dtype)
    h = MaskedDense(
        4,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.8),
        bias_initializer=keras.initializers.RandomNormal(mean=0.1, stddev=0.3),
        name="hidden",
        dtype=dtype,
    )(x)
    if batch_norm:
        h = keras.layers.BatchNormalization(
            gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5),
            beta_initializer=keras.initializers.RandomNormal(stddev=0.2),
            name="bn",
            dtype=dtype,
        )(h)
    h = keras.layers.Activation("tanh", dtype=dtype)(h)
    y = MaskedDense(
        2,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.7),
        bias_initializer=keras.initializers.Constant(0.25),
        name="out",
        dtype=dtype,
    )(h)
    model = keras.Model(x, y, name="mlp")
    for variable in model.trainable_variables:
        variable.assign(rng.normal(loc=5.0, size=tuple(variable.shape)))
    if batch_norm:
        bn = model.get_layer("bn")
        bn.moving_mean.assign(rng.normal(loc=3.0, size=4))
        bn.moving_variance.assign(rng.uniform(5.0, 9.0, size=4))
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    hidden.mask.assign(np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=dtype))
    out.mask.assign(np.array([[1, 0], [1, 1], [0, 1], [1, 1]], dtype=dtype))
    return model


def _cnn(seed: int = 0, dtype: str = "float32") -> keras.Model:
    """conv 3x3 (4 filters) -> BatchNorm -> ReLU -> Dense 3, with SPEC §5's initializers."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((6, 6, 2), dtype=dtype)
    h = MaskedConv2D(
        4,
        3,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal"),
        name="conv",
        dtype=dtype,
    )(x)
    h = keras.layers.BatchNormalization(
        gamma_initializer=keras.initializers.RandomUniform(0.0, 1.0), name="bn", dtype=dtype
    )(h)
    h = keras.layers.Flatten(dtype=dtype)(keras.layers.ReLU(dtype=dtype)(h))
    return keras.Model(x, MaskedDense(3, name="out", dtype=dtype)(h), name="cnn")


def _total(model: keras.Model) -> int:
    return sum(int(np.prod(w.kernel.shape)) for w in prunable_weights(model).values())


def _kept(masks: dict[str, np.ndarray]) -> int:
    return int(sum(m.sum() for m in masks.values()))


def _state(model: keras.Model) -> list[tuple[str, str, bytes]]:
    return [(v.path, v.dtype, v.numpy().tobytes()) for v in model.variables]


# ---------------------------------------------------------------------------------------------
# The expectation, in float64 numpy from the scorer's own draws, and its finite differences.


def _forward(model: keras.Model, x, values: dict, masks: dict, statistics=None):
    """The MLP's outputs and the batch statistics it normalized with (None without BN).

    `values` maps variable paths to values, `masks` kernel paths to masks; `statistics`,
    when given, replaces the batch statistics (BN in inference mode on fixed statistics)."""
    h = x @ (values["hidden/kernel"] * masks["hidden/kernel"]) + values["hidden/bias"]
    if "bn/gamma" in values:
        if statistics is None:
            statistics = (h.mean(axis=0), h.var(axis=0))  # biased, as Keras normalizes
        mean, variance = statistics
        epsilon = model.get_layer("bn").epsilon
        h = values["bn/gamma"] * (h - mean) / np.sqrt(variance + epsilon) + values["bn/beta"]
    h = np.tanh(h)
    return h @ (values["out/kernel"] * masks["out/kernel"]) + values["out/bias"], statistics


def _expectation(model, draws, masks, statistics) -> float:
    """E‖f(x; θ ⊙ c) − f(x; (θ + Δ) ⊙ c)‖², the mean over draws of the per-input mean."""
    total = 0.0
    for draw, fixed in zip(draws, statistics, strict=True):
        values = {v.path: np.float64(value) for v, value in draw.parameters}
        perturbed = dict(values)
        for path, delta in draw.perturbations.items():
            perturbed[path] = values[path] + delta
        (x,) = draw.inputs
        clean, _ = _forward(model, x, values, masks, fixed)
        noisy, _ = _forward(model, x, perturbed, masks, fixed)
        total += np.sum((clean - noisy) ** 2) / len(x)
    return total / len(draws)


def _finite_difference_scores(model, draws, step: float = 1e-5) -> dict[str, np.ndarray]:
    """|central differences of the expectation in each mask entry| ⊙ [c ≠ 0].

    BatchNorm statistics are those of the unperturbed network at the current masks, held
    fixed while the masks move (SPEC §7 with the authors' BN convention)."""
    masks = {path: np.float64(w.mask.numpy()) for path, w in prunable_weights(model).items()}
    statistics = []
    for draw in draws:
        values = {v.path: np.float64(value) for v, value in draw.parameters}
        statistics.append(_forward(model, draw.inputs[0], values, masks)[1])
    scores = {}
    for path, mask in masks.items():
        gradient = np.zeros(mask.shape)
        for index in np.ndindex(mask.shape):
            up, down = dict(masks), dict(masks)
            up[path], down[path] = mask.copy(), mask.copy()
            up[path][index] += step
            down[path][index] -= step
            difference = _expectation(model, draws, up, statistics) - _expectation(
                model, draws, down, statistics
            )
            gradient[index] = difference / (2 * step)
        scores[path] = np.abs(gradient) * (mask != 0)
    return scores


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm"])
def test_scores_are_finite_differences_of_the_expectation_on_the_same_draws(batch_norm):
    model = _mlp(batch_norm)
    weights = prunable_weights(model)
    scorer = NtkSapScorer(epsilon=0.1, samples=3, input_batch=5)
    draws = scorer.draw(model, weights, np.random.default_rng(11))
    scores = scorer(model, weights, None, np.random.default_rng(11))
    expected = _finite_difference_scores(model, draws)
    scale = max(np.abs(e).max() for e in expected.values())
    for path, value in expected.items():
        # A central difference of step h is off by h²/6·|E'''| (E is smooth, its third
        # derivative of the order of E: ~1e-11) plus the rounding of E divided by h (a few
        # hundred float64 operations: ~1e-13 / 1e-5); both far below 1e-7 of the largest score.
        np.testing.assert_allclose(scores[path], value, rtol=1e-6, atol=1e-7 * scale)
        assert scores[path].dtype == np.float64
    # Pruned entries score 0; every kept one has a score of its own.
    for path, w in weights.items():
        mask = w.mask.numpy()
        assert np.all(scores[path][mask == 0] == 0.0)
        assert np.all(scores[path][mask != 0] > 0.0)


def test_draws_come_from_the_initializers_and_the_generator():
    model = _mlp(batch_norm=True)
    weights = prunable_weights(model)
    scorer = NtkSapScorer(epsilon=0.1, samples=100, input_batch=20)
    draws = scorer.draw(model, weights, np.random.default_rng(3))
    redrawn = {v.path for v, _ in draws[0].parameters}
    # Every parameter a layer initializes; not the masks, not the BN statistics.
    assert redrawn == {
        "hidden/kernel",
        "hidden/bias",
        "bn/gamma",
        "bn/beta",
        "out/kernel",
        "out/bias",
    }
    values = {
        path: np.stack([dict((v.path, x) for v, x in d.parameters)[path] for d in draws])
        for path in redrawn
    }
    assert np.all(values["out/bias"] == 0.25)  # Constant(0.25), whatever the model holds
    # RandomNormal(stddev=0.8): 100 * 12 draws, std within 10% (the estimate's sd is 2%).
    assert np.std(values["hidden/kernel"]) == pytest.approx(0.8, rel=0.1)
    assert np.all((values["bn/gamma"] >= 0.5) & (values["bn/gamma"] <= 1.5))
    assert len({v.tobytes() for v in values["hidden/kernel"]}) == len(draws)  # fresh each time
    inputs = np.stack([d.inputs[0] for d in draws])
    assert inputs.shape == (100, 20, 3) and inputs.dtype == np.float64
    assert np.std(inputs) == pytest.approx(1.0, rel=0.05) and abs(np.mean(inputs)) < 0.05
    deltas = np.concatenate([d.perturbations["hidden/kernel"].ravel() for d in draws])
    assert np.std(deltas) == pytest.approx(0.1, rel=0.05)
    assert set(draws[0].perturbations) == set(weights)
    # The same seed draws the same, another seed draws otherwise.
    again = scorer.draw(model, weights, np.random.default_rng(3))[0]
    other = scorer.draw(model, weights, np.random.default_rng(4))[0]
    for (_, a), (_, b), (_, c) in zip(
        draws[0].parameters, again.parameters, other.parameters, strict=True
    ):
        np.testing.assert_array_equal(a, b)
        assert a.shape != () and (not np.array_equal(a, c) or np.all(a == 0.25))


# ---------------------------------------------------------------------------------------------
# Through `score` and `prune`: the model untouched, reproducible, exact counts every round.


def test_scoring_and_pruning_leave_the_model_unchanged_bit_for_bit():
    model = _cnn(seed=1)
    before = _state(model)
    python_random, numpy_random = random.getstate(), np.random.get_state()[1].copy()
    tfprune.score(model, "ntk_sap", samples=2, input_batch=6)
    assert _state(model) == before
    tfprune.prune(model, "ntk_sap", 0.3, rounds=3, samples=2, input_batch=6)
    masks = {w.mask.path for w in prunable_weights(model).values()}
    assert [s for s in _state(model) if s[0] not in masks] == [
        s for s in before if s[0] not in masks
    ]
    assert random.getstate() == python_random
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_random)


def test_seeded_scores_are_reproducible_and_depend_on_the_seed():
    model = _cnn(seed=2)
    options = {"samples": 2, "input_batch": 6}
    first = tfprune.score(model, "ntk_sap", seed=5, **options)
    second = tfprune.score(model, "ntk_sap", seed=5, **options)
    other = tfprune.score(model, "ntk_sap", seed=6, **options)
    for path in first:
        np.testing.assert_array_equal(first[path], second[path])
        assert not np.array_equal(first[path], other[path])
    masks = tfprune.prune(_cnn(seed=2), "ntk_sap", 0.2, seed=5, rounds=2, **options)
    again = tfprune.prune(_cnn(seed=2), "ntk_sap", 0.2, seed=5, rounds=2, **options)
    for path in masks:
        np.testing.assert_array_equal(masks[path], again[path])


def test_every_round_keeps_exactly_its_count_and_revives_nothing(monkeypatch):
    seen = []
    real_call = NtkSapScorer.__call__

    def recording_call(self, model, *args):
        seen.append(tfprune.get_masks(model))
        return real_call(self, model, *args)

    monkeypatch.setattr(NtkSapScorer, "__call__", recording_call)
    model = _cnn(seed=3)
    total = _total(model)  # 72 + 192
    density, rounds = 0.05, 4
    final = tfprune.prune(model, "ntk_sap", density, rounds=rounds, samples=1, input_batch=4)
    assert len(seen) == rounds
    after_each = [*seen[1:], final]  # round i's mask is what round i + 1 scores
    for i, masks in enumerate(after_each, start=1):
        assert _kept(masks) == round(density ** (i / rounds) * total)
    for earlier, later in zip(seen, after_each, strict=True):
        for path in later:
            assert np.all(later[path] <= earlier[path])


def test_a_subclassed_model_scores_as_the_functional_model_it_wraps():
    # The batch statistics and outputs of a subclassed model come from a stateless scope, not
    # from `stateless_call`: the same draws (in the order of the variables, however the layers
    # nest) and the same computation, which Keras may order otherwise: float64 agrees to its
    # rounding. A score of 18 + 64 products, BN, and sums over 6 inputs of 18 outputs, and
    # as much again backwards: well under 1000 operations.
    class Wrapper(keras.Model):
        def __init__(self, inner):
            super().__init__(name="wrapper", dtype="float64")
            self.inner = inner

        def call(self, x, training=None):
            return self.inner(x, training=training)

    inner = _cnn(seed=4, dtype="float64")
    wrapper = Wrapper(inner)
    options = {"seed": 2, "samples": 2, "input_batch": 6}
    expected = tfprune.score(inner, "ntk_sap", **options)
    scores = tfprune.score(wrapper, "ntk_sap", input_shape=(6, 6, 2), **options)
    assert list(scores) == list(expected)
    for path in expected:
        bounds = tolerance("float64", terms=1000, scale=np.abs(expected[path]).max())
        np.testing.assert_allclose(scores[path], expected[path], **bounds)


def test_default_rounds_and_options_are_the_authors():
    entry = registry.get("ntk_sap")
    assert entry.default_rounds == 20 and not entry.needs_data
    assert entry.option_defaults() == registry.scorer_options(NtkSapScorer)
    assert entry.option_defaults() == {"epsilon": 0.01, "samples": 5, "input_batch": 100}


def test_resnet20_reaches_the_exact_count():
    keras.utils.set_random_seed(0)
    model = tfprune.models.build("resnet20", (32, 32, 3), 10)
    total = _total(model)
    masks = tfprune.prune(model, "ntk_sap", 0.0281, rounds=2, samples=1, input_batch=8)
    assert _kept(masks) == round(0.0281 * total)
    assert _kept(tfprune.get_masks(model)) == round(0.0281 * total)


def test_lenet_reaches_the_exact_count():
    keras.utils.set_random_seed(0)
    model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    masks = tfprune.prune(model, "ntk_sap", 0.0281, rounds=3, samples=2, input_batch=16)
    assert _kept(masks) == round(0.0281 * 266_200)


# ---------------------------------------------------------------------------------------------
# What cannot be scored, and bad options.


def test_integer_inputs_are_refused():
    ids = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(10, 4)(ids)
    model = keras.Model(ids, MaskedDense(2)(keras.layers.Flatten()(h)))
    with pytest.raises(ModelError, match="ntk_sap.*int32.*floating inputs"):
        tfprune.score(model, "ntk_sap")


def test_a_subclassed_model_needs_its_input_shape_or_takes_it():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.dense = MaskedDense(2, name="dense")

        def call(self, x):
            return self.dense(x)

    model = Net()
    model.dense.build((None, 3))  # built layers, but the model was never called
    with pytest.raises(ModelError, match="ntk_sap needs a fixed input shape.*input_shape"):
        tfprune.score(model, "ntk_sap")
    scores = tfprune.score(model, "ntk_sap", input_shape=(3,), samples=1, input_batch=4)
    assert scores["dense/kernel"].shape == (3, 2) and np.all(scores["dense/kernel"] > 0)
    with pytest.raises(ConfigError, match="input_shape"):
        tfprune.score(_mlp(), "ntk_sap", input_shape=(4,))


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"epsilon": 0.0}, "epsilon must be a positive number"),
        ({"epsilon": float("nan")}, "epsilon must be a positive number"),
        ({"samples": 0}, "samples must be a positive integer"),
        ({"input_batch": 2.5}, "input_batch must be a positive integer"),
        ({"temperature": 2.0}, "'temperature'"),
    ],
)
def test_bad_options_are_refused(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tfprune.score(_mlp(), "ntk_sap", **options)


def test_batch_renormalization_is_refused():
    x = keras.Input((3,))
    h = keras.layers.BatchNormalization(renorm=True, name="renorm")(MaskedDense(4)(x))
    model = keras.Model(x, MaskedDense(2)(h))
    with pytest.raises(ModelError, match="'renorm'"):
        tfprune.score(model, "ntk_sap")


# ---------------------------------------------------------------------------------------------
# The command line: a short run, and the shuffle and reinit ablations.

TINY = [
    "--gin_file=gin_configs/ntk_sap.gin",
    "--gin_bindings=training.steps = 1",
    "--gin_bindings=experiment.train_limit = 256",
    "--gin_bindings=experiment.test_limit = 256",
    "--gin_bindings=training.progress = False",
    "--gin_bindings=experiment.rounds = 2",
    "--gin_bindings=experiment.method_options = {'samples': 1, 'input_batch': 8}",
]
ABLATED = [
    "--gin_file=gin_configs/ablations/shuffle.gin",
    "--gin_file=gin_configs/ablations/reinit.gin",
]
LENET_PRUNABLE = 266_200


def _masks(run_dir: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(run_dir, "masks.npz")) as data:
        return {k: data[k] for k in data.files}


def test_command_line_run_with_shuffle_and_reinit(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = _procs.run("tfprune.train", *TINY, *ABLATED, f"--output_dir={run_dir}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = _procs.results(run_dir)
    assert results["method"] == "ntk_sap" and results["ablations"] == ["shuffle", "reinit"]
    kept = round(0.05 * LENET_PRUNABLE)
    assert results["density_actual"] == pytest.approx(kept / LENET_PRUNABLE, rel=1e-12)
    masks = _masks(run_dir)
    assert sum(int(m.sum()) for m in masks.values()) == kept
    for path, fraction in results["layer_density"].items():
        assert fraction == np.count_nonzero(masks[path]) / masks[path].size
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["experiment"]["method_options"] == {"samples": 1, "input_batch": 8}


@pytest.mark.slow
def test_command_line_shuffle_keeps_the_layer_counts_of_ntk_sap(tmp_path):
    # SPEC §3: shuffle keeps every layer's count and moves the positions; reinit keeps the mask.
    plain, ablated = str(tmp_path / "plain"), str(tmp_path / "ablated")
    for run_dir, extra in ((plain, []), (ablated, ABLATED)):
        proc = _procs.run("tfprune.train", *TINY, *extra, f"--output_dir={run_dir}", timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert _procs.results(plain)["layer_density"] == _procs.results(ablated)["layer_density"]
    a, b = _masks(plain), _masks(ablated)
    assert all(int(a[k].sum()) == int(b[k].sum()) for k in a)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
