"""XLA (`training.jit_compile`) and mixed precision (`training.precision`) in training, pruning
and export: masks, zeros, checkpoints and float32 scoring are as in float32 without XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance
from _toy import toy_problem, toy_trainer

import tfprune
from tfprune.errors import ConfigError
from tfprune.layers import MaskedDense
from tfprune.layers.precision import dtype_policy
from tfprune.training import Interrupted, TrainConfig
from tfprune.training.acceleration import uses_xla


def _pruned_toy_model(policy="float32"):
    """A two-layer masked network keeping half of its kernels (magnitude)."""
    keras.utils.set_random_seed(1)
    with dtype_policy(policy):
        model = keras.Sequential(
            [
                keras.Input((6,)),
                MaskedDense(16, activation="relu", name="fc1"),
                MaskedDense(2, name="fc2"),
            ],
            name="toy",
        )
    tfprune.prune(model, "magnitude", 0.5)
    return model


def _trainer(output_dir, config, model, **kwargs):
    return toy_trainer(output_dir, config, model, *toy_problem(), **kwargs)


def _state(model):
    """`{path: value}` of every variable, and `{path: (kernel, mask)}` of the prunable ones."""
    values = {v.path: v.numpy() for v in model.variables}
    pairs = {
        p: (w.kernel.numpy(), w.mask.numpy()) for p, w in tfprune.prunable_weights(model).items()
    }
    return values, pairs


def _xla_calls(trainer):
    """Names of the functions that the traced training loop must compile with XLA (TensorFlow
    raises rather than running such a function uncompiled)."""
    x, y = toy_problem()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset))
    graph = trainer._train_steps.get_concrete_function(iterator, tf.constant(1)).graph
    return [
        f.signature.name
        for f in graph.as_graph_def().library.function
        if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b
    ]


@pytest.mark.parametrize(
    "field, value",
    [
        ("jit_compile", "yes"),
        ("jit_compile", 1),
        ("jit_compile", None),
        ("precision", "float16"),
        ("precision", "bfloat16"),
        ("precision", None),
    ],
)
def test_bad_jit_compile_or_precision_is_a_one_line_config_error(field, value):
    with pytest.raises(ConfigError, match=f"training.{field}") as raised:
        TrainConfig(**{field: value}).validate()
    assert "\n" not in str(raised.value)


def test_xla_step_is_compiled_and_trains_as_the_uncompiled_step(tmp_path):
    config = TrainConfig(epochs=2, learning_rate=0.3, momentum=0.9, progress=False)
    states, trainers = {}, {}
    for jit in (False, True):
        config.jit_compile = jit
        trainer = _trainer(tmp_path / str(jit), config, _pruned_toy_model())
        before = _state(trainer.model)[1]
        history = trainer.run().history
        trainers[jit], states[jit] = trainer, (before, history, *_state(trainer.model))
    assert _xla_calls(trainers[True]) and not _xla_calls(trainers[False])
    assert trainers[True].jit_compile and not trainers[False].jit_compile
    (before, history, values, pairs), (_, xla_history, xla_values, xla_pairs) = (
        states[False],
        states[True],
    )
    assert sorted(xla_pairs) == ["toy/fc1/kernel", "toy/fc2/kernel"]
    for path, (kernel, mask) in xla_pairs.items():
        # Masks unchanged; pruned weights get an exactly zero gradient (no weight decay), so
        # they keep their values, and the forward pass reads exact zeros there.
        np.testing.assert_array_equal(mask, before[path][1])
        np.testing.assert_array_equal(kernel[mask == 0], before[path][0][mask == 0])
        assert np.all((kernel * mask)[mask == 0] == 0.0)
        np.testing.assert_array_equal(mask, pairs[path][1])
    # XLA fuses and reorders the float32 operations: 6 iterations of sums of at most 32 · 16
    # terms apart, against weights of magnitude up to the largest one.
    scale = max(np.abs(v).max() for v in values.values())
    bounds = tolerance(np.float32, 6 * 32 * 16, scale)
    for path, value in values.items():
        np.testing.assert_allclose(xla_values[path], value, **bounds)
    for a, b in zip(history, xla_history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=bounds["rtol"])


def test_xla_run_stopped_and_resumed_equals_the_whole_xla_run(tmp_path):
    config = TrainConfig(
        epochs=3, learning_rate=0.3, momentum=0.9, progress=False, jit_compile=True
    )
    whole = _trainer(tmp_path / "whole", config, _pruned_toy_model())
    whole_history = whole.run().history
    calls = {"n": 0}

    def stop_after_four():
        calls["n"] += 1
        return calls["n"] == 4

    with pytest.raises(Interrupted):
        _trainer(tmp_path / "split", config, _pruned_toy_model(), should_stop=stop_after_four).run()
    resumed = _trainer(tmp_path / "split", config, _pruned_toy_model())
    history = resumed.run().history
    # The same compiled steps on the same restored values: bit for bit.
    assert [h["test_loss"] for h in history] == [h["test_loss"] for h in whole_history]
    for a, b in zip(resumed.model.variables, whole.model.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_auto_compiles_networks_without_convolutions_on_one_cpu_replica():
    strategy = tf.distribute.get_strategy()
    on_gpu = bool(tf.config.list_logical_devices("GPU"))  # 'auto' compiles everything there
    lenet = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
    conv = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    assert uses_xla("auto", lenet, strategy)
    assert uses_xla("auto", conv, strategy) == on_gpu
    assert uses_xla("auto", tfprune.masked(conv), strategy) == on_gpu
    assert uses_xla(True, conv, strategy) and not uses_xla(False, lenet, strategy)


def test_mixed_bfloat16_training_keeps_masks_and_zeros_in_float32(tmp_path):
    model = _pruned_toy_model("mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the policy did not leak
    before = _state(model)[1]
    config = TrainConfig(
        epochs=4, learning_rate=0.5, progress=False, precision="mixed_bfloat16", jit_compile=False
    )
    history = _trainer(tmp_path, config, model).run().history
    assert _trainer(tmp_path / "b", config, _pruned_toy_model("mixed_bfloat16")).loss_scale is None
    for layer in model.layers:
        assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert {v.dtype for v in model.variables} == {"float32"}
    for path, (kernel, mask) in _state(model)[1].items():
        assert mask.dtype == np.float32
        np.testing.assert_array_equal(mask, before[path][1])
        np.testing.assert_array_equal(kernel[mask == 0], before[path][0][mask == 0])
        assert np.all((kernel * mask)[mask == 0] == 0.0)
    losses = [h["train_loss"] for h in history]
    assert all(np.isfinite(losses))
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]


def test_a_policy_other_than_the_networks_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="computes in bfloat16: set training.precision"):
        _trainer(tmp_path, TrainConfig(progress=False), _pruned_toy_model("mixed_bfloat16"))
    with pytest.raises(ConfigError, match="does not compute in float16"):
        _trainer(tmp_path, TrainConfig(precision="mixed_float16"), _pruned_toy_model())


def test_run_context_builds_under_the_policy_without_leaking_it():
    from tfprune.runner import RunContext

    config = TrainConfig(epochs=1, batch_size=32, precision="mixed_bfloat16")
    ctx = RunContext(
        "fashion_mnist",
        "lenet_300_100",
        0,
        config,
        tf.distribute.get_strategy(),
        train_limit=64,
        test_limit=32,
    )
    model = ctx.build_model()
    assert keras.config.dtype_policy().name == "float32"
    assert {layer.compute_dtype for layer in model.layers} == {"bfloat16"}
    assert {v.dtype for v in model.variables} == {"float32"}


def test_float16_training_scales_the_loss(tmp_path):
    model = _pruned_toy_model("mixed_float16")
    before = _state(model)[1]
    config = TrainConfig(
        epochs=1, learning_rate=0.5, momentum=0.9, progress=False, precision="mixed_float16"
    )
    trainer = _trainer(tmp_path, config, model)
    assert isinstance(trainer.loss_scale, keras.optimizers.LossScaleOptimizer)
    assert trainer.loss_scale.inner_optimizer is trainer.optimizer
    state = trainer.run()
    assert np.isfinite(state.history[-1]["train_loss"])
    assert int(trainer.optimizer.iterations.numpy()) == 3
    # The scale is checkpointed with the optimizer, and restored.
    scale = float(trainer.loss_scale.dynamic_scale.numpy())
    restored = _trainer(tmp_path, config, _pruned_toy_model("mixed_float16"))
    assert restored.restore().step == 3
    assert float(restored.loss_scale.dynamic_scale.numpy()) == scale
    for path, (kernel, mask) in _state(model)[1].items():
        np.testing.assert_array_equal(mask, before[path][1])
        np.testing.assert_array_equal(kernel[mask == 0], before[path][0][mask == 0])


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_a_mixed_precision_network_is_scored_in_float32(method):
    x = np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32)
    y = np.arange(20) % 10
    scores = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        with dtype_policy(policy):
            model = tfprune.models.build("lenet_300_100", (28, 28, 1), 10)
        scores[policy] = tfprune.score(model, method, (x, y))
        assert model.layers[-1].compute_dtype == ("bfloat16" if policy != "float32" else policy)
    # The same float32 computation; bfloat16 (8 bits of mantissa) would be ~1e-2 away.
    for path, expected in scores["float32"].items():
        bounds = tolerance(np.float32, 784 + 300 + 100, np.abs(expected).max())
        np.testing.assert_allclose(scores["mixed_bfloat16"][path], expected, **bounds)


def test_fit_with_prune_at_and_strip_of_a_mixed_bfloat16_model():
    keras.utils.set_random_seed(0)
    with dtype_policy("mixed_bfloat16"):
        stock = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
        )
    model = tfprune.masked(stock)
    x, y = toy_problem()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callback = tfprune.keras.PruneAt("snip", 0.25, step=0, data=(x, y))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    assert callback.pruned_at == 0
    masks = tfprune.get_masks(model)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.25 * (6 * 16 + 16 * 2))
    for path, weight in tfprune.prunable_weights(model).items():
        assert weight.layer.compute_dtype == "bfloat16"
        assert weight.mask.dtype == "float32"
        assert np.all((weight.kernel.numpy() * weight.mask.numpy())[masks[path] == 0] == 0.0)
    stripped = tfprune.strip(model)
    dense = [layer for layer in stripped.layers if isinstance(layer, keras.layers.Dense)]
    assert [type(layer) for layer in dense] == [keras.layers.Dense] * 2
    for layer, mask in zip(dense, masks.values(), strict=True):
        assert layer.compute_dtype == "bfloat16"
        assert np.all(layer.kernel.numpy()[mask == 0] == 0.0)
        assert np.count_nonzero(layer.kernel.numpy()) == np.count_nonzero(mask)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_export_of_a_mixed_bfloat16_network_keeps_exact_zeros_and_converts_to_float32(tmp_path):
    model = _pruned_toy_model("mixed_bfloat16")
    masks = tfprune.get_masks(model)
    tfprune.export(model, str(tmp_path / "m.keras"), "keras")
    loaded = tfprune.load_model(str(tmp_path / "m.keras"))
    dense = [layer for layer in loaded.layers if isinstance(layer, keras.layers.Dense)]
    for layer, mask in zip(dense, masks.values(), strict=True):
        assert type(layer) is keras.layers.Dense and layer.compute_dtype == "bfloat16"
        assert np.all(layer.kernel.numpy()[mask == 0] == 0.0)
    # TFLite has no bfloat16 MatMul: the flatbuffer computes in float32, as the float32
    # network of the same weights does.
    tfprune.export(model, str(tmp_path / "m.tflite"), "tflite")
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "m.tflite"))
    interpreter.allocate_tensors()
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inputs["dtype"] == outputs["dtype"] == np.float32
    x = toy_problem()[0][:1]
    interpreter.set_tensor(inputs["index"], x)
    interpreter.invoke()
    (w1, b1), (w2, b2) = [
        (np.float64(layer.kernel.numpy()), np.float64(layer.bias.numpy())) for layer in dense
    ]
    hidden = np.maximum(x @ w1 + b1, 0.0)
    expected = hidden @ w2 + b2
    scale = (np.abs(x) @ np.abs(w1) + np.abs(b1)) @ np.abs(w2) + np.abs(b2)
    np.testing.assert_allclose(
        interpreter.get_tensor(outputs["index"]),
        expected,
        **tolerance(np.float32, 6 + 16 + 2, scale.max()),
    )


def test_run_directories_of_older_runs_stay_valid_and_precision_names_a_new_one():
    from tfprune.experiment import Experiment, config_dict, default_output_dir
    from tfprune.runner import semantic

    experiment, training = Experiment(method="snip", density=0.1), TrainConfig()
    # A run directory written before the two settings existed is the same run; XLA changes
    # float32 rounding only, so a run may resume with it switched.
    stored = config_dict(experiment, training)
    del stored["training"]["precision"], stored["training"]["jit_compile"]
    assert semantic(stored) == semantic(config_dict(experiment, TrainConfig(jit_compile=True)))
    assert default_output_dir(experiment, TrainConfig(jit_compile=False)) == default_output_dir(
        experiment, training
    )
    bf16 = TrainConfig(precision="mixed_bfloat16")
    assert default_output_dir(experiment, bf16) != default_output_dir(experiment, training)
