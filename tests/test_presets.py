"""The preset recipes against the published numbers (../shared/NOTES.md)."""

import dataclasses

import numpy as np
import pytest
from conftest import tiny_encoder

import keras_barlow
from keras_barlow import backbones, presets
from keras_barlow.optimizers import LARS
from keras_barlow.schedules import WarmupCosine

pytestmark = pytest.mark.core

# Written from the paper / facebookresearch/barlowtwins and solo-learn's
# scripts/pretrain/cifar/barlow.yaml, not from keras_barlow/presets.py.
NAMES = ("imagenet-resnet50", "cifar10-resnet18")
PUBLISHED = {  # field: (ImageNet, CIFAR-10); None: not in the source
    "backbone": ("ResNet50", "ResNet18"),
    "stem": ("imagenet", "cifar"),
    "image_size": (224, 32),
    "augment": ("imagenet", "cifar"),
    "projector_dims": ((8192, 8192, 8192), (2048, 2048, 2048)),
    "lambd": (0.0051, 0.0051),
    "scale_loss": (1.0, 0.1),
    "batch_size": (2048, 256),
    "epochs": (1000, 1000),
    "warmup_epochs": (10, 10),
    "learning_rate_weights": (0.2, 0.3),
    "learning_rate_biases": (0.0048, None),
    "momentum": (0.9, 0.9),
    "eta": (0.001, 0.02),
    "weight_decay": (1.5e-6, 1e-4),
    "end_factor": (0.001, None),
}


@pytest.mark.parametrize("column, name", list(enumerate(NAMES)), ids=NAMES)
def test_values(column, name):
    recipe = presets.get(name)
    assert recipe.name == name
    for field, values in PUBLISHED.items():
        if values[column] is not None:
            assert getattr(recipe, field) == values[column], field


def test_imagenet_learning_rates_scale_with_batch():
    recipe = presets.get("imagenet-resnet50")
    assert recipe.learning_rate == pytest.approx(0.2 * 2048 / 256)
    bias_rate = recipe.learning_rate * recipe.bias_learning_rate_multiplier
    assert bias_rate == pytest.approx(0.0048 * 2048 / 256)


def test_cifar_learning_rate_and_augmentation():
    recipe = presets.get("cifar10-resnet18")
    assert recipe.learning_rate == pytest.approx(0.3)
    assert recipe.bias_learning_rate_multiplier == pytest.approx(1.0)
    options = keras_barlow.augment.PRESETS[recipe.augment]
    assert options["blur_probability"] == (0.0, 0.0)
    assert options["solarize_probability"] == (0.0, 0.2)


def test_optimizer_and_schedule():
    recipe = presets.get("imagenet-resnet50")
    steps_per_epoch = 1_281_167 // 2048
    optimizer = recipe.optimizer(steps_per_epoch)
    assert isinstance(optimizer, LARS)
    config = optimizer.get_config()
    assert (config["momentum"], config["eta"], config["weight_decay"]) == (
        0.9,
        0.001,
        1.5e-6,
    )
    assert config["bias_learning_rate_multiplier"] == pytest.approx(0.0048 / 0.2)
    assert config["exclude_from_weight_decay"] is None  # the ndim <= 1 rule
    schedule = optimizer._learning_rate
    assert isinstance(schedule, WarmupCosine)
    assert schedule.get_config() == pytest.approx(
        dict(
            base_learning_rate=1.6,
            total_steps=1000 * steps_per_epoch,
            warmup_steps=10 * steps_per_epoch,
            end_factor=0.001,
        )
    )


def test_model_from_recipe():
    recipe = presets.get("cifar10-resnet18").replace(projector_dims=(16, 16))
    encoder = tiny_encoder(32, filters=0)
    model = recipe.model(encoder, seed=1)
    assert isinstance(model, keras_barlow.BarlowTwins)
    assert model.encoder is encoder
    assert model.projector_dims == (16, 16)
    assert (model.lambd, model.scale_loss, model.seed) == (0.0051, 0.1, 1)
    assert model.augmenter.preset == "cifar"
    assert model.augmenter.image_size == (32, 32)


def test_encoder_from_recipe():
    recipe = presets.get("cifar10-resnet18")
    encoder = recipe.encoder()
    assert encoder.input_shape == (None, 32, 32, 3)
    # NOTES: ResNet-18 with the CIFAR stem (3x3 stride-1, no max-pool).
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == 11_168_832
    assert (
        getattr(backbones, presets.get("imagenet-resnet50").backbone)
        is backbones.ResNet50
    )


def test_override():
    recipe = presets.get("imagenet-resnet50")
    smaller = recipe.replace(batch_size=256, epochs=100)
    assert (smaller.batch_size, smaller.epochs) == (256, 100)
    assert smaller.learning_rate == pytest.approx(0.2)
    assert recipe.batch_size == 2048  # the preset itself is unchanged
    assert dataclasses.replace(recipe, lambd=0.01).lambd == 0.01
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.epochs = 10
    with pytest.raises(ValueError, match="Valid fields"):
        recipe.replace(learning_rate=1.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        recipe.replace(warmup_epochs=100, epochs=100)
    with pytest.raises(ValueError, match="augment"):
        recipe.replace(augment="imagenet-v2")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10-resnet18.*imagenet-resnet50"):
        presets.get("cifar100-resnet18")


def test_prints_one_field_per_line():
    text = str(presets.get("cifar10-resnet18"))
    assert text.splitlines()[0] == "Recipe 'cifar10-resnet18':"
    assert "  eta = 0.02" in text.splitlines()
    assert len(text.splitlines()) == len(dataclasses.fields(presets.Recipe))
