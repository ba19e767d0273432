import re

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_barlow import backbones

pytestmark = pytest.mark.core


# torchvision's parameter counts minus the 1000-class classifier (fc weight + bias),
# and the CIFAR variant of ResNet-18: a 3x3 instead of a 7x7 stem convolution.
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
}


def classifier_parameters(features):
    return features * 1000 + 1000


def trainable_parameters(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


@pytest.fixture(scope="module")
def resnet50():
    return backbones.ResNet50((224, 224, 3))


@pytest.fixture(scope="module")
def resnet18_cifar():
    return backbones.ResNet18((32, 32, 3), stem="cifar")


def test_resnet50_has_the_papers_parameter_count(resnet50):
    assert trainable_parameters(resnet50) == 23_508_032
    assert (
        TORCHVISION_PARAMETERS["resnet50"] - classifier_parameters(2048) == 23_508_032
    )
    assert resnet50.output_shape == (None, 2048)


def test_resnet18_cifar_stem_parameter_count(resnet18_cifar):
    assert trainable_parameters(resnet18_cifar) == 11_168_832
    stem_difference = (7 * 7 - 3 * 3) * 3 * 64
    assert (
        TORCHVISION_PARAMETERS["resnet18"]
        - classifier_parameters(512)
        - stem_difference
        == 11_168_832
    )
    assert resnet18_cifar.output_shape == (None, 512)


@pytest.mark.parametrize(
    "builder, name",
    [(backbones.ResNet18, "resnet18"), (backbones.ResNet34, "resnet34")],
)
def test_imagenet_stem_parameter_counts_match_torchvision(builder, name):
    model = builder((32, 32, 3))
    expected = TORCHVISION_PARAMETERS[name] - classifier_parameters(512)
    assert trainable_parameters(model) == expected
    assert model.output_shape == (None, 512)
    assert model.name == name


def test_stage_output_shapes_match_torchvision(resnet50, resnet18_cifar):
    def shapes(model, stage_blocks):
        names = [
            "stem_pool"
            if model.get_layer("stem_conv").strides == (2, 2)
            else "stem_relu"
        ]
        names += [
            f"stage{stage}_block{last}_out"
            for stage, last in enumerate(stage_blocks, start=1)
        ]
        return [model.get_layer(name).output.shape[1:] for name in names]

    # torchvision: after maxpool, layer1, layer2, layer3, layer4 at 224x224.
    assert shapes(resnet50, (3, 4, 6, 3)) == [
        (56, 56, 64),
        (56, 56, 256),
        (28, 28, 512),
        (14, 14, 1024),
        (7, 7, 2048),
    ]
    assert shapes(resnet18_cifar, (2, 2, 2, 2)) == [
        (32, 32, 64),
        (32, 32, 64),
        (16, 16, 128),
        (8, 8, 256),
        (4, 4, 512),
    ]


@pytest.mark.parametrize(
    "model_fixture, blocks", [("resnet50", 16), ("resnet18_cifar", 8)]
)
def test_convolutions_have_no_bias_and_each_residual_ends_in_a_zero_gamma(
    model_fixture, blocks, request
):
    model = request.getfixturevalue(model_fixture)
    convolutions = [
        layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    ]
    assert convolutions and all(len(layer.weights) == 1 for layer in convolutions)

    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == blocks
    zero_gammas = []
    for add in adds:
        # The residual branch and the shortcut: exactly one ends in a zero gamma.
        producers = [tensor._keras_history.operation for tensor in add.input]
        gammas = [
            to_numpy(layer.gamma)
            for layer in producers
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        assert sum(not gamma.any() for gamma in gammas) == 1
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5 and layer.momentum == 0.9
            if not to_numpy(layer.gamma).any():
                zero_gammas.append(layer.name)
    assert len(zero_gammas) == blocks


def test_zero_init_residual_false_keeps_unit_gammas():
    model = backbones.ResNet18((32, 32, 3), stem="cifar", zero_init_residual=False)
    gammas = [
        to_numpy(layer.gamma)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    np.testing.assert_array_equal(np.concatenate(gammas), 1.0)


def test_convolutions_use_torchvisions_he_normal_fan_out_init(resnet18_cifar):
    kernel = to_numpy(resnet18_cifar.get_layer("stage4_block2_conv2").kernel)
    fan_out = 3 * 3 * 512
    assert abs(kernel.std() / np.sqrt(2.0 / fan_out) - 1.0) < 0.02
    assert abs(kernel.mean()) < 1e-3


def test_bottleneck_stride_sits_on_the_3x3_convolution(resnet50):
    for stage in (2, 3, 4):
        block = f"stage{stage}_block1"
        assert resnet50.get_layer(f"{block}_conv1").strides == (1, 1)
        assert resnet50.get_layer(f"{block}_conv2").kernel_size == (3, 3)
        assert resnet50.get_layer(f"{block}_conv2").strides == (2, 2)
        assert resnet50.get_layer(f"{block}_conv3").strides == (1, 1)


# ----------------------------------------------------------------------------------
# Numerical checks against a float64 NumPy ResNet (PyTorch's conventions: symmetric
# zero padding, cross-correlation, BatchNorm2d formula).


def conv2d(x, kernel, stride, padding):
    """PyTorch's Conv2d(bias=False) on NHWC arrays with an HWIO kernel."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    size_h, size_w = kernel.shape[:2]
    out_h = (x.shape[1] - size_h) // stride + 1
    out_w = (x.shape[2] - size_w) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(size_h):
        for j in range(size_w):
            patch = x[
                :, i : i + stride * out_h : stride, j : j + stride * out_w : stride
            ]
            out += patch @ kernel[i, j]
    return out


def max_pool_3x3_stride2_pad1(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    windows = [
        x[:, i : i + 2 * out_h : 2, j : j + 2 * out_w : 2]
        for i in range(3)
        for j in range(3)
    ]
    return np.max(windows, axis=0)


def relu(x):
    return np.maximum(x, 0.0)


class NumpyResNet:
    """Reads a model's weights by layer name and evaluates blocks in inference mode."""

    def __init__(self, model):
        self.weights = {
            layer.name: [to_numpy(w).astype(np.float64) for w in layer.weights]
            for layer in model.layers
            if layer.weights
        }

    def conv(self, name, x, stride, padding):
        return conv2d(x, self.weights[name][0], stride, padding)

    def bn(self, name, x):
        gamma, beta, mean, variance = self.weights[name]
        return (x - mean) / np.sqrt(variance + 1e-5) * gamma + beta

    def imagenet_stem(self, x):
        x = relu(self.bn("stem_bn", self.conv("stem_conv", x, 2, 3)))
        return max_pool_3x3_stride2_pad1(x)

    def basic_block(self, name, x, stride):
        y = relu(self.bn(f"{name}_bn1", self.conv(f"{name}_conv1", x, stride, 1)))
        y = self.bn(f"{name}_bn2", self.conv(f"{name}_conv2", y, 1, 1))
        return relu(y + self.projection(name, x, stride))

    def bottleneck_block(self, name, x, stride):
        y = relu(self.bn(f"{name}_bn1", self.conv(f"{name}_conv1", x, 1, 0)))
        y = relu(self.bn(f"{name}_bn2", self.conv(f"{name}_conv2", y, stride, 1)))
        y = self.bn(f"{name}_bn3", self.conv(f"{name}_conv3", y, 1, 0))
        return relu(y + self.projection(name, x, stride))

    def projection(self, name, x, stride):
        return self.bn(
            f"{name}_shortcut_bn", self.conv(f"{name}_shortcut_conv", x, stride, 0)
        )


def randomize_batch_norms(model, seed):
    """Non-trivial BN parameters and statistics, so that no branch vanishes."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size))
            layer.beta.assign(rng.normal(0.0, 0.2, size))
            layer.moving_mean.assign(rng.normal(0.0, 0.2, size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size))


def intermediate_outputs(model, names, images):
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    return [
        to_numpy(output).astype(np.float64) for output in probe(images, training=False)
    ]


def test_resnet18_cifar_downsampling_block_matches_numpy():
    model = backbones.ResNet18((32, 32, 3), stem="cifar")
    randomize_batch_norms(model, seed=0)
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    block_input, block_output = intermediate_outputs(
        model, ["stage1_block2_out", "stage2_block1_out"], images
    )
    expected = NumpyResNet(model).basic_block("stage2_block1", block_input, stride=2)
    assert block_output.shape == (2, 16, 16, 128)
    np.testing.assert_allclose(block_output, expected, rtol=1e-4, atol=1e-4)


def test_resnet50_stem_and_bottleneck_block_match_numpy(resnet50):
    initial_weights = resnet50.get_weights()  # the fixture is shared: restore it
    randomize_batch_norms(resnet50, seed=2)
    images = np.random.default_rng(3).normal(size=(1, 224, 224, 3)).astype(np.float32)
    try:
        stem, block_input, block_output = intermediate_outputs(
            resnet50, ["stem_pool", "stage1_block3_out", "stage2_block1_out"], images
        )
        reference = NumpyResNet(resnet50)
    finally:
        resnet50.set_weights(initial_weights)
    np.testing.assert_allclose(
        stem, reference.imagenet_stem(images.astype(np.float64)), rtol=1e-4, atol=1e-4
    )
    expected = reference.bottleneck_block("stage2_block1", block_input, stride=2)
    np.testing.assert_allclose(block_output, expected, rtol=1e-4, atol=1e-4)


def test_zero_init_blocks_start_as_relu_of_their_shortcut():
    # Training mode: the shortcut's BN normalizes with the batch statistics.
    model = backbones.ResNet18((32, 32, 3), stem="cifar")
    names = ["stem_relu"] + [
        f"stage{stage}_block{block}_out" for stage in (1, 2, 3, 4) for block in (1, 2)
    ]
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    images = np.random.default_rng(4).normal(size=(4, 32, 32, 3)).astype(np.float32)
    outputs = [
        to_numpy(output).astype(np.float64) for output in probe(images, training=True)
    ]
    blocks = zip(names[1:], outputs[:-1], outputs[1:], strict=True)
    for name, block_input, block_output in blocks:
        if block_output.shape == block_input.shape:
            expected = block_input  # relu(x) == x: x is itself a ReLU output
        else:
            kernel = to_numpy(model.get_layer(f"{name[:-4]}_shortcut_conv").kernel)
            projected = block_input[:, ::2, ::2] @ kernel[0, 0].astype(np.float64)
            mean, variance = projected.mean((0, 1, 2)), projected.var((0, 1, 2))
            expected = relu((projected - mean) / np.sqrt(variance + 1e-5))
        np.testing.assert_allclose(
            block_output, expected, rtol=1e-4, atol=1e-4, err_msg=name
        )


# ----------------------------------------------------------------------------------
# Synchronized batch normalization and argument checks.


def synchronized_flags(model):
    return {
        layer.synchronized
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


@pytest.mark.tensorflow_only  # tf.distribute.MirroredStrategy
def test_sync_batch_norm_follows_the_strategy_unless_forced(
    resnet18_cifar, mirrored_strategy
):
    assert synchronized_flags(resnet18_cifar) == {False}
    assert synchronized_flags(
        backbones.ResNet18((32, 32, 3), stem="cifar", sync_batch_norm=True)
    ) == {True}
    with mirrored_strategy.scope():
        assert synchronized_flags(backbones.ResNet18((32, 32, 3), stem="cifar")) == {
            True
        }
        assert synchronized_flags(
            backbones.ResNet18((32, 32, 3), stem="cifar", sync_batch_norm=False)
        ) == {False}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stem": "tiny"}, "`stem` must be one of"),
        ({"input_shape": (32, 32, 1)}, "Received: input_shape=(32, 32, 1)"),
        ({"input_shape": (32, 32)}, "must be (height, width, 3)"),
        ({"input_shape": (16, 16, 3)}, "at least 32"),
        ({"input_shape": (4, 8, 3), "stem": "cifar"}, "at least 8"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        backbones.ResNet18(**kwargs)


def test_sync_batch_norm_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="sync_batch_norm='yes'"):
        backbones.ResNet18((32, 32, 3), sync_batch_norm="yes")


def test_variable_image_size():
    model = backbones.ResNet18((None, None, 3), stem="cifar")
    assert model(np.zeros((1, 40, 24, 3), np.float32)).shape == (1, 512)
