"""Tests of the model zoo: architecture (pinned parameter counts), initialisation, naming."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfprune import models
from tfprune.errors import ConfigError
from tfprune.layers import MaskedConv2D, MaskedDense, prunable_weights
from tfprune.models import _common

# (name, input_shape, num_classes) of the paper's settings.
LENET = ("lenet_300_100", (28, 28, 1), 10)
RESNET20 = ("resnet20", (32, 32, 3), 10)
VGG16 = ("vgg16", (32, 32, 3), 10)
RESNET18 = ("resnet18", (64, 64, 3), 200)
RESNET50 = ("resnet50", (224, 224, 3), 1000)
SETTINGS = [LENET, RESNET20, VGG16, RESNET18, RESNET50]


@pytest.fixture(scope="module")
def built():
    """Builds each setting once per module (ResNet-50 is the slow one)."""
    cache: dict[tuple, keras.Model] = {}

    def get(setting: tuple) -> keras.Model:
        if setting not in cache:
            cache[setting] = models.build(*setting)
        return cache[setting]

    return get


def _size(variables) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


def _bn_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_registry_names():
    assert models.names() == ["lenet_300_100", "resnet18", "resnet20", "resnet50", "vgg16"]
    assert sorted(models.MODELS) == models.names()


@pytest.mark.parametrize(
    "setting, expected",
    [
        (LENET, 266_200),
        (RESNET20, 270_896),
        (VGG16, 14_715_584),
        (RESNET18, 11_269_312),
        (RESNET50, 25_502_912),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else None,
)
def test_prunable_weight_counts(built, setting, expected):
    weights = prunable_weights(built(setting))
    assert _size(w.kernel for w in weights.values()) == expected
    assert _size(w.mask for w in weights.values()) == expected


@pytest.mark.parametrize(
    "setting, trainable, bn_trainable",
    [
        # 784*300 + 300 + 300*100 + 100 + 100*10 + 10.
        (LENET, 266_610, 0),
        # BN channels: 16 (stem) + 6*16 + 7*32 + 7*64 = 784, two parameters each.
        (RESNET20, 272_474, 1_568),
        # Conv biases and BN over 4224 channels, plus the classifier bias.
        (VGG16, 14_715_584 + 4_224 + 8_448 + 10, 8_448),
        # torchvision's resnet18 / resnet50 totals.
        (("resnet18", (64, 64, 3), 1000), 11_689_512, 9_600),
        (RESNET18, 11_689_512 - 513_000 + 102_600, 9_600),
        (RESNET50, 25_557_032, 53_120),
    ],
    ids=["lenet_300_100", "resnet20", "vgg16", "resnet18_1000", "resnet18_200", "resnet50"],
)
def test_parameter_totals(built, setting, trainable, bn_trainable):
    model = built(setting)
    assert _size(model.trainable_weights) == trainable
    bn = _bn_layers(model)
    assert _size(w for layer in bn for w in layer.trainable_weights) == bn_trainable
    # Non-trainable: one mask per kernel and BN's moving mean and variance.
    masks = _size(w.mask for w in prunable_weights(model).values())
    assert _size(model.non_trainable_weights) == masks + bn_trainable


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s[0])
def test_output_is_logits_of_shape_batch_by_classes(built, setting):
    name, input_shape, num_classes = setting
    model = built(setting)
    assert model.name == name
    fc = model.get_layer("fc")
    assert isinstance(fc, MaskedDense) and fc.activation is keras.activations.linear
    assert model.layers[-1] is fc
    batch = 1 if name == "resnet50" else 2
    x = np.random.default_rng(0).normal(size=(batch, *input_shape)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (batch, num_classes)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("name", ["lenet_300_100", "resnet20", "vgg16"])
@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
def test_small_models_accept_mnist_and_cifar_inputs(name, input_shape):
    model = models.build(name, input_shape, 10)
    logits = model(np.zeros((2, *input_shape), "float32"), training=False)
    assert tuple(logits.shape) == (2, 10)


def test_every_kernel_is_masked(built):
    for setting in SETTINGS:
        model = built(setting)
        for layer in model.layers:
            assert type(layer) not in (keras.layers.Dense, keras.layers.Conv2D), layer.name


@pytest.mark.parametrize(
    "setting, layer, shape",
    [
        (RESNET20, "stage1_block3_out", (None, 32, 32, 16)),
        (RESNET20, "stage3_block3_out", (None, 8, 8, 64)),
        (("resnet20", (28, 28, 1), 10), "stage3_block3_out", (None, 7, 7, 64)),
        (VGG16, "relu13", (None, 2, 2, 512)),
        (("vgg16", (28, 28, 1), 10), "relu13", (None, 1, 1, 512)),
        (RESNET18, "pool1", (None, 16, 16, 64)),
        (RESNET18, "stage4_block2_out", (None, 2, 2, 512)),
        (RESNET50, "pool1", (None, 56, 56, 64)),
        (RESNET50, "stage1_block1_out", (None, 56, 56, 256)),
        (RESNET50, "stage4_block3_out", (None, 7, 7, 2048)),
    ],
)
def test_feature_map_shapes(built, setting, layer, shape):
    assert tuple(built(setting).get_layer(layer).output.shape) == shape


def test_shortcut_layout(built):
    def shortcuts(setting):
        return sorted(
            layer.name for layer in built(setting).layers if layer.name.endswith("shortcut_conv")
        )

    assert shortcuts(RESNET20) == ["stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"]
    assert shortcuts(RESNET18) == [f"stage{s}_block1_shortcut_conv" for s in (2, 3, 4)]
    # The first bottleneck widens 64 -> 256, so it projects even with stride 1.
    assert shortcuts(RESNET50) == [f"stage{s}_block1_shortcut_conv" for s in (1, 2, 3, 4)]
    assert built(RESNET50).get_layer("stage2_block1_conv2").strides == (2, 2)
    assert built(RESNET50).get_layer("stage2_block1_conv1").strides == (1, 1)
    for setting in (RESNET20, RESNET18, RESNET50):
        convs = [layer for layer in built(setting).layers if isinstance(layer, MaskedConv2D)]
        assert not any(layer.use_bias for layer in convs)
    vgg_convs = [layer for layer in built(VGG16).layers if isinstance(layer, MaskedConv2D)]
    assert len(vgg_convs) == 13 and all(layer.use_bias for layer in vgg_convs)


def test_stride_two_conv_pads_symmetrically_like_pytorch():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, _common.conv(inputs, 1, 3, name="conv", strides=2))
    layer = model.get_layer("conv")
    layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
    out = keras.ops.convert_to_numpy(model(np.ones((1, 4, 4, 1), "float32")))[0, :, :, 0]
    # PyTorch, padding=1: windows over rows/cols -1..1 and 1..3 (Keras "same": 0..2 and 2..4).
    np.testing.assert_array_equal(out, [[4.0, 6.0], [6.0, 9.0]])


def _check_kaiming_normal(kernel, fan_in: int):
    w = kernel.numpy().ravel()
    expected = np.sqrt(2.0 / fan_in)
    assert abs(w.mean()) < 0.01 * expected
    assert w.std() == pytest.approx(expected, rel=0.02)
    # Untruncated: Keras' truncated normal never exceeds 2 standard deviations.
    tail = np.mean(np.abs(w) > 2.5 * expected)
    assert tail == pytest.approx(0.0124, rel=0.15)


def test_conv_kernel_init_is_untruncated_kaiming_normal_fan_in(built):
    kernel = built(VGG16).get_layer("conv13").kernel
    assert tuple(kernel.shape) == (3, 3, 512, 512)
    _check_kaiming_normal(kernel, fan_in=3 * 3 * 512)


def test_dense_kernel_init_is_untruncated_kaiming_normal_fan_in(built):
    kernel = built(LENET).get_layer("fc1").kernel
    assert tuple(kernel.shape) == (784, 300)
    _check_kaiming_normal(kernel, fan_in=784)


def test_batchnorm_and_bias_init(built):
    model = built(VGG16)
    bn = _bn_layers(model)
    gamma = np.concatenate([layer.gamma.numpy() for layer in bn])
    assert gamma.size == 4_224
    assert gamma.min() >= 0.0 and gamma.max() <= 1.0
    assert gamma.mean() == pytest.approx(0.5, abs=0.03)
    for layer in bn:
        assert layer.momentum == pytest.approx(0.9)
        assert layer.epsilon == pytest.approx(1e-5)
        assert not layer.beta.numpy().any()
    biases = [layer.bias for layer in model.layers if getattr(layer, "bias", None) is not None]
    assert len(biases) == 14
    assert not any(b.numpy().any() for b in biases)


def test_same_shaped_layers_get_different_kernels(built):
    model = built(RESNET20)
    first = model.get_layer("stage1_block1_conv1").kernel.numpy()
    second = model.get_layer("stage1_block1_conv2").kernel.numpy()
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s[0])
def test_paths_are_unique_readable_and_stable(built, setting):
    model = built(setting)
    paths = [w.path for w in model.weights]
    assert len(paths) == len(set(paths))
    assert "fc/kernel" in prunable_weights(model)
    if setting[0] != "resnet50":  # built once only, to keep the file fast
        again = models.build(*setting)
        assert [w.path for w in again.weights] == paths
        assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]


def test_resnet20_kernel_paths():
    paths = list(prunable_weights(models.build(*RESNET20)))
    assert paths[0] == "conv1/kernel"
    assert paths[-1] == "fc/kernel"
    assert "stage2_block1_shortcut_conv/kernel" in paths
    assert len(paths) == 19 + 2 + 1  # 19 3x3 convs, 2 shortcuts, the classifier


def test_same_seed_gives_identical_weights():
    def weights(seed: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(seed)
        return [w.numpy() for w in models.build(*RESNET20).weights]

    first, second, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_unknown_model_name():
    with pytest.raises(ConfigError, match=r"'resnet21'.*lenet_300_100, resnet18, resnet20"):
        models.build("resnet21", (32, 32, 3), 10)


@pytest.mark.parametrize(
    "input_shape", [(32, 32), (32, 32, 3, 1), (32, 0, 3), (32.0, 32, 3), (True, 32, 3), 32, None]
)
def test_invalid_input_shape(input_shape):
    with pytest.raises(ConfigError, match="input_shape"):
        models.build("resnet20", input_shape, 10)


@pytest.mark.parametrize("num_classes", [1, 0, 10.0, True])
def test_invalid_num_classes(num_classes):
    with pytest.raises(ConfigError, match="num_classes"):
        models.build("lenet_300_100", (28, 28, 1), num_classes)


def test_numpy_ints_are_accepted():
    model = models.build("lenet_300_100", np.array([28, 28, 1]), np.int64(10))
    assert tuple(model.output.shape) == (None, 10)


def test_vgg16_rejects_inputs_too_small_for_its_pools():
    with pytest.raises(ConfigError, match="16x16"):
        models.build("vgg16", (8, 8, 3), 10)


def test_the_networks_table_knows_the_smallest_input_of_each_network():
    """`tfprune.models` names and checks networks without importing them: its table must hold
    what the builders themselves require."""
    from tfprune.models import vgg_cifar

    assert models.MIN_SIDE == {"vgg16": vgg_cifar.MIN_SIDE}
    for name in models.names():
        assert callable(models.builder(name))
