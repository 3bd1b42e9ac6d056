"""Tests of the masked EinsumDense, Embedding and MultiHeadAttention (SPEC §1, "mask").

Each masked layer is checked against the stock Keras layer: with masks of ones it computes
what the stock layer computes with the same weights, and with a 0/1 mask what the stock layer
computes with `kernel * mask`; pruned weights get exactly zero gradient; the masks survive
configuration and `.keras` round trips; `tfprune.masked` and `tfprune.strip` convert whole
models both ways.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from _tolerance import tolerance

import tfprune
from tfprune.errors import ModelError
from tfprune.layers import (
    MaskedDense,
    MaskedEinsumDense,
    MaskedEmbedding,
    MaskedMultiHeadAttention,
    all_ones_input,
    prunable_weights,
)

STOCK = {
    MaskedEinsumDense: keras.layers.EinsumDense,
    MaskedEmbedding: keras.layers.Embedding,
    MaskedMultiHeadAttention: keras.layers.MultiHeadAttention,
}


def _random_mask(rng: np.random.Generator, shape) -> np.ndarray:
    mask = rng.integers(0, 2, size=shape).astype(np.float32)
    mask.flat[0], mask.flat[-1] = 0.0, 1.0  # both values present whatever the draw
    return mask


def _unmasked(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The layer's weights other than masks, in order."""
    masks = {id(weight.mask) for weight in prunable_weights(layer).values()}
    return [weight for weight in layer.weights if id(weight) not in masks]


def _copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Gives `target` the weights of `source` (masks left out), checking names and shapes."""
    sources, targets = _unmasked(source), _unmasked(target)
    assert [(w.name, tuple(w.shape)) for w in sources] == [
        (w.name, tuple(w.shape)) for w in targets
    ]
    for src, dst in zip(sources, targets, strict=True):
        dst.assign(src)


def _mask_randomly(layer: keras.layers.Layer, rng: np.random.Generator) -> dict[str, np.ndarray]:
    masks = {}
    for path, weight in prunable_weights(layer).items():
        masks[path] = _random_mask(rng, tuple(weight.mask.shape))
        weight.mask.assign(masks[path])
    return masks


def _stock_with_masked_kernels(layer, stock) -> None:
    """Sets `stock`'s weights to `layer`'s, each prunable kernel as `kernel * mask`."""
    effective = {
        id(w.kernel): w.kernel.numpy() * w.mask.numpy() for w in prunable_weights(layer).values()
    }
    for src, dst in zip(_unmasked(layer), stock.weights, strict=True):
        dst.assign(effective.get(id(src), src.numpy()))


# --- EinsumDense ---------------------------------------------------------------------------

EINSUM_CASES = {
    "dense": (dict(equation="ab,bc->ac", output_shape=4, bias_axes="c"), (3, 5)),
    "dense, no bias": (dict(equation="ab,bc->ac", output_shape=4), (3, 5)),
    "sequence, relu": (
        dict(equation="abc,cd->abd", output_shape=(None, 4), bias_axes="d", activation="relu"),
        (2, 3, 5),
    ),
    "heads": (dict(equation="abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de"), (2, 3, 5)),
    "bias over sequence and units": (
        dict(equation="abc,cde->abde", output_shape=(3, 2, 4), bias_axes="be"),
        (2, 3, 5),
    ),
    "two contracted axes": (
        dict(equation="abcd,cde->abe", output_shape=(None, 6), bias_axes="e"),
        (2, 3, 4, 5),
    ),
    "left ellipsis, tanh": (
        dict(equation="...b,bc->...c", output_shape=4, bias_axes="c", activation="tanh"),
        (2, 3, 4, 5),
    ),
    "right ellipsis": (dict(equation="ab...,bc->ac...", output_shape=4, bias_axes="c"), (2, 5, 3)),
}


@pytest.mark.parametrize("case", list(EINSUM_CASES))
def test_einsum_dense_matches_stock(case):
    config, input_shape = EINSUM_CASES[case]
    rng = np.random.default_rng(10)
    x = rng.normal(size=input_shape).astype(np.float32)
    # Seeded initializers: the fans of a kernel of any rank come from its axes as in the stock
    # layer, so both draw the same kernel.
    initializers = dict(
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
        bias_initializer=keras.initializers.RandomNormal(seed=2),
    )
    stock = keras.layers.EinsumDense(**config, **initializers)
    expected = stock(x).numpy()
    layer = MaskedEinsumDense(**config, **initializers)
    outputs = layer(x).numpy()
    assert [(w.name, tuple(w.shape)) for w in layer.weights] == [
        (w.name, tuple(w.shape)) for w in stock.weights
    ] + [("mask", tuple(stock.kernel.shape))]
    np.testing.assert_array_equal(layer.kernel.numpy(), stock.kernel.numpy())
    # The same einsum on the same values: bit for bit.
    np.testing.assert_array_equal(outputs, expected)
    assert layer.compute_output_shape(input_shape) == outputs.shape
    symbolic = layer(keras.Input(input_shape[1:], batch_size=input_shape[0]))
    assert tuple(symbolic.shape) == outputs.shape

    mask = _random_mask(rng, layer.mask.shape)
    layer.mask.assign(mask)
    stock.kernel.assign(stock.kernel.numpy() * mask)
    pruned = layer(x).numpy()
    np.testing.assert_array_equal(pruned, stock(x).numpy())
    assert not np.allclose(pruned, expected)


def test_einsum_dense_by_hand():
    layer = MaskedEinsumDense("abc,cd->abd", output_shape=(None, 2), bias_axes="d")
    x = np.array([[[1.0, 2.0], [3.0, -1.0]]], dtype=np.float32)  # (1, 2, 2)
    layer(x)
    layer.kernel.assign(np.array([[1.0, 2.0], [-1.0, 0.5]]))
    layer.bias.assign(np.array([0.25, -0.25]))
    layer.mask.assign(np.array([[1.0, 0.0], [1.0, 1.0]]))
    # Row [1, 2]: [1*1 + 2*(-1) + 0.25, 2*0.5 - 0.25]; row [3, -1]: [3 + 1 + 0.25, -0.5 - 0.25].
    np.testing.assert_array_equal(layer(x).numpy(), [[[-0.75, 0.75], [4.25, -0.75]]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(equation="ab,bc", output_shape=4), "invalid einsum equation 'ab,bc'"),
        (dict(equation="ab,bc->ac", output_shape=4, bias_axes="x"), "names 'x'"),
        (dict(equation="ab,bc->ac", output_shape=4, bias_axes=""), "at least one output axis"),
    ],
)
def test_einsum_dense_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ModelError, match=message):
        MaskedEinsumDense(**kwargs)


@pytest.mark.parametrize(
    "config, input_shape, message",
    [
        (dict(equation="ab,bc->ac", output_shape=(4, 2)), (3, 5), "does not fit"),
        (dict(equation="abc,cd->abd", output_shape=(7, 4)), (2, 3, 5), "size 3 on axis 'b'"),
        (dict(equation="ab,bc->ac", output_shape=4), (2, 3, 5), "inputs of rank 2,"),
    ],
)
def test_einsum_dense_rejects_inputs_that_do_not_fit(config, input_shape, message):
    with pytest.raises(ModelError, match=message):
        MaskedEinsumDense(**config).build(input_shape)


# --- Embedding -----------------------------------------------------------------------------

EMBEDDING_CASES = {
    "1-D ids": (dict(input_dim=7, output_dim=3), (6,)),
    "2-D ids": (dict(input_dim=7, output_dim=3), (3, 5)),
    "1-D ids, mask_zero": (dict(input_dim=7, output_dim=3, mask_zero=True), (6,)),
    "2-D ids, mask_zero": (dict(input_dim=9, output_dim=4, mask_zero=True), (3, 5)),
}


def _ids(rng: np.random.Generator, input_dim: int, shape) -> np.ndarray:
    ids = rng.integers(0, input_dim, size=shape).astype(np.int32)
    ids.flat[0], ids.flat[-1] = 0, input_dim - 1  # padding and the last row both looked up
    return ids


@pytest.mark.parametrize("case", list(EMBEDDING_CASES))
def test_embedding_matches_stock(case):
    config, shape = EMBEDDING_CASES[case]
    rng = np.random.default_rng(11)
    ids = _ids(rng, config["input_dim"], shape)
    stock = keras.layers.Embedding(**config)
    expected = stock(ids).numpy()
    layer = MaskedEmbedding(**config)
    layer(ids)
    assert [(w.name, tuple(w.shape)) for w in layer.weights] == [
        ("embeddings", (config["input_dim"], config["output_dim"])),
        ("embeddings_mask", (config["input_dim"], config["output_dim"])),
    ]
    _copy_weights(stock, layer)
    np.testing.assert_array_equal(layer(ids).numpy(), expected)
    # Float ids are cast as the stock layer casts them.
    np.testing.assert_array_equal(layer(ids.astype(np.float32)).numpy(), expected)
    stock_mask, mask = stock.compute_mask(ids), layer.compute_mask(ids)
    if config.get("mask_zero"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), ids != 0)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mask), keras.ops.convert_to_numpy(stock_mask)
        )
        assert layer.supports_masking
    else:
        assert mask is None and stock_mask is None

    pruning = _random_mask(rng, layer.embeddings_mask.shape)
    layer.embeddings_mask.assign(pruning)
    stock.embeddings.assign(stock.embeddings.numpy() * pruning)
    pruned = layer(ids).numpy()
    # A looked-up row of `embeddings * mask` is the product of the looked-up rows.
    np.testing.assert_array_equal(pruned, stock(ids).numpy())
    assert not np.allclose(pruned, expected)


def test_embedding_keras_mask_reaches_the_next_layer():
    ids = np.array([[3, 0, 2, 0]], dtype=np.int32)
    inputs = keras.Input((4,), dtype="int32")
    h = MaskedEmbedding(5, 2, mask_zero=True, embeddings_initializer="ones")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(h))
    # The padded positions are left out of the average: (1 + 1) / 2 per unit.
    np.testing.assert_array_equal(model(ids).numpy(), [[1.0, 1.0]])


def test_embedding_rejects_bad_sizes():
    with pytest.raises(ModelError, match="input_dim must be a positive int, got 0"):
        MaskedEmbedding(0, 3)
    with pytest.raises(ModelError, match="output_dim must be a positive int, got 2.5"):
        MaskedEmbedding(4, 2.5)


def test_embedding_initial_weights():
    weights = np.arange(6, dtype=np.float32).reshape(3, 2)
    layer = MaskedEmbedding(3, 2, weights=weights)
    np.testing.assert_array_equal(layer(np.array([2, 0])).numpy(), [[4.0, 5.0], [0.0, 1.0]])


# The all-ones input of SynFlow (SPEC §2): an Embedding is a Dense layer on one-hot vectors,
# and the all-ones vector gives, at every position, ones(input_dim) @ (embeddings * mask).


def _ones_reference(layer: MaskedEmbedding) -> tuple[np.ndarray, float]:
    """The float64 sum of the masked rows, and the largest sum of their absolute values."""
    effective = np.float64(layer.embeddings.numpy()) * layer.embeddings_mask.numpy()
    return effective.sum(axis=0), float(np.abs(effective).sum(axis=0).max())


def test_embedding_ones_response():
    rng = np.random.default_rng(12)
    layer = MaskedEmbedding(11, 4, embeddings_initializer="random_normal")
    ids = np.ones((2, 5), dtype=np.int32)
    looked_up = layer(ids).numpy()
    layer.embeddings_mask.assign(_random_mask(rng, layer.embeddings_mask.shape))
    reference, scale = _ones_reference(layer)
    response = layer.ones_response(ids).numpy()
    assert response.shape == (2, 5, 4)
    # A float32 sum of 11 rows.
    bounds = tolerance(np.float32, layer.input_dim, scale)
    np.testing.assert_allclose(response, np.broadcast_to(reference, (2, 5, 4)), **bounds)
    # Every position gets the same row sum, whatever the ids (only their shape is read).
    np.testing.assert_array_equal(response, np.broadcast_to(response[0, 0], response.shape))
    np.testing.assert_array_equal(layer.ones_response(np.zeros((3,), np.int32))[0], response[0, 0])
    # The mode is off unless asked for: the layer looks up row 1.
    assert not layer.ones_input
    np.testing.assert_array_equal(
        looked_up, np.broadcast_to(layer.embeddings.numpy()[1], (2, 5, 4))
    )


def test_all_ones_input_switches_every_embedding_of_a_model_and_restores():
    rng = np.random.default_rng(13)
    inner = keras.Sequential(
        [keras.Input((3,), dtype="int32"), MaskedEmbedding(6, 2, name="inner_embedding")],
        name="inner",
    )
    inputs = keras.Input((3,), dtype="int32")
    outer = MaskedEmbedding(8, 2, name="outer_embedding")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([outer, inner(inputs)]))
    for weight in prunable_weights(model).values():
        weight.mask.assign(_random_mask(rng, tuple(weight.mask.shape)))
    ones = np.ones((2, 3), dtype=np.int32)
    looked_up = model(ones).numpy()
    first, second = model.get_layer("outer_embedding"), inner.get_layer("inner_embedding")
    second.ones_input = True  # set before: restored to True, not to False
    with all_ones_input(model) as layers:
        assert layers == [first, second]
        assert first.ones_input and second.ones_input
        flow = model(ones).numpy()
    assert not first.ones_input and second.ones_input
    second.ones_input = False
    np.testing.assert_array_equal(model(ones).numpy(), looked_up)
    (a, scale_a), (b, scale_b) = _ones_reference(first), _ones_reference(second)
    # Two float32 row sums (of 8 and 6 rows), then their sum.
    bounds = tolerance(np.float32, first.input_dim + 1, scale_a + scale_b)
    np.testing.assert_allclose(flow, np.broadcast_to(a + b, flow.shape), **bounds)
    assert not np.allclose(flow, looked_up)


def test_all_ones_input_in_a_stateless_traced_call():
    """SynFlow runs the network through `stateless_call` inside a `tf.function` with values of
    its own: the response and its gradient must come from those values."""
    rng = np.random.default_rng(14)
    inputs = keras.Input((4,), dtype="int32")
    layer = MaskedEmbedding(5, 3, name="embedding")
    model = keras.Model(inputs, layer(inputs))
    mask = _random_mask(rng, (5, 3))
    values = np.abs(rng.normal(size=(5, 3)))
    ones = tf.ones((1, 4), dtype="int32")

    @tf.function
    def flow(embeddings, embeddings_mask):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            outputs, _ = model.stateless_call([embeddings], [embeddings_mask], ones)
            total = tf.reduce_sum(outputs)
        return outputs, tape.gradient(total, embeddings)

    with all_ones_input(model):
        outputs, grad = flow(tf.constant(values, tf.float32), tf.constant(mask))
    # d/dE of the sum over 4 positions of the masked row sums: 4 where kept, 0 where pruned.
    np.testing.assert_array_equal(grad.numpy(), 4.0 * mask)
    reference = (np.float64(values.astype(np.float32)) * mask).sum(axis=0)
    bounds = tolerance(np.float32, 5, float(np.abs(reference).max()))
    np.testing.assert_allclose(outputs.numpy()[0], np.broadcast_to(reference, (4, 3)), **bounds)
    np.testing.assert_array_equal(layer.embeddings_mask.numpy(), np.ones((5, 3)))  # untouched


# --- MultiHeadAttention ------------------------------------------------------------------------

MHA_CASES = {
    "self": (dict(num_heads=2, key_dim=3), dict(query=(2, 4, 6))),
    "cross, key, value_dim": (
        dict(num_heads=2, key_dim=3, value_dim=5),
        dict(query=(2, 4, 6), value=(2, 3, 5), key=(2, 3, 7)),
    ),
    "no bias": (
        dict(num_heads=3, key_dim=2, use_bias=False),
        dict(query=(2, 4, 6), value=(2, 5, 4)),
    ),
    "output_shape": (dict(num_heads=2, key_dim=3, output_shape=(2, 5)), dict(query=(2, 4, 6))),
    "attention axis 2": (
        dict(num_heads=2, key_dim=2, attention_axes=(2,)),
        dict(query=(2, 3, 4, 6)),
    ),
    "attention axes 1, 2": (
        dict(num_heads=2, key_dim=2, attention_axes=(1, 2), output_shape=3),
        dict(query=(2, 3, 4, 6), value=(2, 2, 5, 6)),
    ),
    "gated": (dict(num_heads=2, key_dim=3, use_gate=True), dict(query=(2, 4, 6), value=(2, 3, 6))),
    "attention_mask": (
        dict(num_heads=2, key_dim=3, use_gate=True),
        dict(query=(2, 4, 6), value=(2, 3, 5), attention_mask=(2, 4, 3)),
    ),
}


def _attention_inputs(shapes: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    inputs = {}
    for name, shape in shapes.items():
        if name == "attention_mask":
            allowed = rng.integers(0, 2, size=shape).astype(bool)
            allowed[..., 0] = True  # every query attends to something
            inputs[name] = allowed
        else:
            inputs[name] = rng.normal(size=shape).astype(np.float32)
    inputs.setdefault("value", inputs["query"])
    return inputs


def _projection_names(config: dict) -> list[str]:
    gate = ["gate"] if config.get("use_gate") else []
    return ["query", "key", *gate, "value", "attention_output"]


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multi_head_attention_matches_stock(case):
    config, shapes = MHA_CASES[case]
    rng = np.random.default_rng(15)
    inputs = _attention_inputs(shapes, rng)
    stock = keras.layers.MultiHeadAttention(**config, bias_initializer="random_normal")
    expected = stock(**inputs).numpy()
    layer = MaskedMultiHeadAttention(**config, name="mha")
    layer(**inputs)
    assert list(prunable_weights(layer)) == [f"mha/{p}/kernel" for p in _projection_names(config)]
    _copy_weights(stock, layer)
    # The stock call on projections computing the same einsums on the same values.
    np.testing.assert_array_equal(layer(**inputs).numpy(), expected)

    _mask_randomly(layer, rng)
    pruned = layer(**inputs).numpy()
    _stock_with_masked_kernels(layer, stock)
    np.testing.assert_array_equal(pruned, stock(**inputs).numpy())
    assert not np.allclose(pruned, expected)


# --- gradients (SPEC §1: pruned weights get exactly zero gradient) ---------------------------

GRADIENT_CASES = {
    "einsum": (
        lambda: MaskedEinsumDense("abc,cde->abde", (None, 2, 4), bias_axes="de"),
        dict(inputs=(2, 3, 5)),
    ),
    "embedding": (lambda: MaskedEmbedding(6, 4, mask_zero=True), dict(inputs=(3, 5))),
    "attention": (
        lambda: MaskedMultiHeadAttention(num_heads=2, key_dim=3, use_gate=True),
        dict(query=(2, 4, 6), value=(2, 3, 5), attention_mask=(2, 4, 3)),
    ),
}


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_gradient_is_zero_at_pruned_weights(case):
    make, shapes = GRADIENT_CASES[case]
    rng = np.random.default_rng(16)
    if case == "embedding":
        args = dict(inputs=_ids(rng, 6, shapes["inputs"]))
    elif case == "einsum":
        args = dict(inputs=rng.normal(size=shapes["inputs"]).astype(np.float32))
    else:
        args = _attention_inputs(shapes, rng)
    layer = make()
    layer(**args)
    masks = _mask_randomly(layer, rng)
    stock = STOCK[type(layer)].from_config(layer.get_config())
    stock(**args)
    _stock_with_masked_kernels(layer, stock)
    kernels = [w.kernel for w in prunable_weights(layer).values()]
    stock_kernels = [w for w in stock.weights if w.name in ("kernel", "embeddings")]
    assert len(stock_kernels) == len(kernels)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(**args)))
    grads = tape.gradient(loss, [k.value for k in kernels])
    with tf.GradientTape() as tape:
        stock_loss = tf.reduce_sum(tf.square(stock(**args)))
    stock_grads = tape.gradient(stock_loss, [k.value for k in stock_kernels])
    assert loss.numpy() == stock_loss.numpy()

    for mask, grad, stock_grad in zip(masks.values(), grads, stock_grads, strict=True):
        grad, stock_grad = tf.convert_to_tensor(grad).numpy(), tf.convert_to_tensor(stock_grad)
        assert np.all(grad[mask == 0] == 0.0)
        assert np.count_nonzero(grad[mask == 1]) > 0
        # d/dw L(w * m) = m * L'(w * m), the same ops on the same values: bit for bit.
        np.testing.assert_array_equal(grad, stock_grad.numpy() * mask)


# --- configuration, .keras files, masked() and strip() ---------------------------------------


def _einsum_model() -> keras.Model:
    inputs = keras.Input((3, 5))
    h = keras.layers.EinsumDense(
        "abc,cde->abde", (None, 2, 4), bias_axes="de", activation="relu", name="heads"
    )(inputs)
    h = keras.layers.Reshape((3, 8))(h)
    outputs = keras.layers.EinsumDense("...b,bc->...c", 2, name="out")(h)
    return keras.Model(inputs, outputs)


def _embedding_model() -> keras.Model:
    inputs = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(9, 4, mask_zero=True, name="embedding")(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


def _attention_model() -> keras.Model:
    query, value = keras.Input((4, 6)), keras.Input((3, 5))
    mask = keras.Input((4, 3), dtype="bool")
    attention = keras.layers.MultiHeadAttention(
        num_heads=2,
        key_dim=3,
        use_gate=True,
        output_shape=4,
        name="mha",
        bias_initializer="random_normal",
    )
    outputs = attention(query, value, attention_mask=mask)
    return keras.Model([query, value, mask], outputs)


MODELS = {
    "einsum": (
        _einsum_model,
        ["heads/kernel", "out/kernel"],
        lambda rng: rng.normal(size=(3, 3, 5)).astype(np.float32),
    ),
    "embedding": (
        _embedding_model,
        ["embedding/embeddings", "out/kernel"],
        lambda rng: _ids(rng, 9, (3, 5)),
    ),
    "attention": (
        _attention_model,
        [f"mha/{name}/kernel" for name in ("query", "key", "gate", "value", "attention_output")],
        lambda rng: list(
            _attention_inputs(
                dict(query=(2, 4, 6), value=(2, 3, 5), attention_mask=(2, 4, 3)), rng
            ).values()
        ),
    ),
}


def _run(model: keras.Model, x) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("name", list(MODELS))
def test_masked_save_load_and_strip(name, tmp_path):
    build, paths, draw = MODELS[name]
    rng = np.random.default_rng(17)
    original = build()
    x = draw(rng)
    expected = _run(original, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tfprune.UnprunedLayerWarning)
        model = tfprune.masked(original)
    assert list(prunable_weights(model)) == paths
    assert tfprune.unpruned_layers(model) == {}
    for old, new in zip(original.weights, _unmasked(model), strict=True):
        assert new.path == old.path
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    for weight in prunable_weights(model).values():
        np.testing.assert_array_equal(weight.mask.numpy(), np.ones(tuple(weight.mask.shape)))
    np.testing.assert_array_equal(_run(model, x), expected)

    masks = _mask_randomly(model, rng)
    pruned = _run(model, x)
    assert not np.allclose(pruned, expected)

    # Configuration: every masked layer's config rebuilds it and is the stock layer's.
    for layer in model.layers:
        if type(layer) in STOCK:
            config = layer.get_config()
            assert type(layer).from_config(config).get_config() == config
            restored = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(layer)
            )
            assert type(restored) is type(layer)
            assert restored.get_config() == config
            stock_config = STOCK[type(layer)].from_config(config).get_config()
            assert {key: stock_config[key] for key in config} == config
            name = keras.saving.get_registered_name(type(layer))
            assert name == f"tfprune>{type(layer).__name__}"

    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    reloaded = prunable_weights(loaded)
    assert list(reloaded) == paths
    for path_, weight in reloaded.items():
        np.testing.assert_array_equal(weight.mask.numpy(), masks[path_])
        np.testing.assert_array_equal(
            weight.kernel.numpy(), prunable_weights(model)[path_].kernel.numpy()
        )
    np.testing.assert_array_equal(_run(loaded, x), pruned)

    stripped = tfprune.strip(model)
    assert prunable_weights(stripped) == {}
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in original.layers]
    by_path = {weight.path: weight.numpy() for weight in stripped.weights}
    for path_, weight in prunable_weights(model).items():
        kept = by_path[path_]
        np.testing.assert_array_equal(
            kept[masks[path_] == 1], weight.kernel.numpy()[masks[path_] == 1]
        )
        assert np.all(kept[masks[path_] == 0] == 0.0)
        assert not np.any(np.signbit(kept[masks[path_] == 0]))  # +0.0, never -0.0
    np.testing.assert_array_equal(_run(stripped, x), pruned)


def test_from_stock_refuses_options_it_cannot_keep():
    layer = keras.layers.EinsumDense("ab,bc->ac", 3, lora_rank=2, name="adapted")
    with pytest.raises(ModelError, match=r"'adapted' \(EinsumDense\) sets lora_rank=2"):
        MaskedEinsumDense.from_stock(layer)


# --- pruning a Transformer block (SPEC §1: exact counts over every prunable kernel) ----------


def test_magnitude_pruning_of_a_transformer_block():
    keras.utils.set_random_seed(18)
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="embedding")(inputs)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(h, h)
    h = keras.layers.LayerNormalization(name="norm")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    model = tfprune.masked(keras.Model(inputs, outputs))
    assert tfprune.unpruned_layers(model) == {}
    weights = prunable_weights(model)
    assert {path: tuple(w.kernel.shape) for path, w in weights.items()} == {
        "embedding/embeddings": (20, 8),
        "mha/query/kernel": (8, 2, 4),
        "mha/key/kernel": (8, 2, 4),
        "mha/value/kernel": (8, 2, 4),
        "mha/attention_output/kernel": (2, 4, 8),
        "head/kernel": (8, 3),
    }
    total = 20 * 8 + 4 * 64 + 8 * 3

    masks = tfprune.prune(model, "magnitude", 0.3)
    assert sum(mask.size for mask in masks.values()) == total
    assert sum(int(mask.sum()) for mask in masks.values()) == round(0.3 * total)
    # Global magnitude: every kept |w| is at least every pruned one.
    kept = np.concatenate([np.abs(weights[p].kernel.numpy())[m == 1] for p, m in masks.items()])
    dropped = np.concatenate([np.abs(weights[p].kernel.numpy())[m == 0] for p, m in masks.items()])
    assert kept.min() >= dropped.max()
    for path, weight in weights.items():
        np.testing.assert_array_equal(weight.mask.numpy(), masks[path])


# --- subclasses of stock layers ---------------------------------------------------------------


class _WideDense(keras.layers.Dense):
    """Only other defaults: still a Dense layer."""

    def __init__(self, units=6, activation="relu", **kwargs):
        super().__init__(units, activation=activation, **kwargs)


class _DoubledDense(keras.layers.Dense):
    """Its own call: a masked Dense would compute something else."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


def test_subclass_with_new_defaults_is_masked_and_one_with_its_own_call_is_not():
    inputs = keras.Input((4,))
    h = _WideDense(name="wide")(inputs)
    outputs = _DoubledDense(3, name="doubled")(h)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(19).normal(size=(2, 4)).astype(np.float32)
    with pytest.warns(tfprune.UnprunedLayerWarning) as caught:
        converted = tfprune.masked(model)
    messages = [str(w.message) for w in caught if w.category is tfprune.UnprunedLayerWarning]
    assert len(messages) == 1
    assert messages[0].startswith("layer 'doubled' holds 21 parameters that no mask covers")
    assert type(converted.get_layer("wide")) is MaskedDense
    assert converted.get_layer("wide").units == 6
    assert type(converted.get_layer("doubled")) is _DoubledDense
    assert list(prunable_weights(converted)) == ["wide/kernel"]
    assert tfprune.unpruned_layers(converted) == {"doubled": 21}
    np.testing.assert_array_equal(_run(converted, x), _run(model, x))


# --- recurrent layers have no masked twin -----------------------------------------------------


def test_masked_warns_about_an_lstm():
    inputs = keras.Input((5, 3))
    h = keras.layers.LSTM(4, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    with pytest.warns(tfprune.UnprunedLayerWarning) as caught:
        converted = tfprune.masked(model)
    messages = [str(w.message) for w in caught if w.category is tfprune.UnprunedLayerWarning]
    # The cell's kernel 3x16, recurrent kernel 4x16 and bias 16.
    assert messages == [
        "layer 'lstm/lstm_cell' holds 128 parameters that no mask covers; it stays dense "
        "(register a masked twin with tfprune.register_masked to prune it)"
    ]
    assert list(prunable_weights(converted)) == ["out/kernel"]
