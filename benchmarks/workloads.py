"""What the Keras benchmark scripts train and time, on Keras' JAX or TensorFlow backend.

* `CONFIGS`: the networks measured (ResNet-50 at 224 px with the 8192x3
  projector, the CIFAR ResNet-18 at 32 px, and a tiny convnet for `--smoke`).
* `make_model(kind, config)`: `"barlow_twins"` (the library's step on uint8
  images, augmentation and loss inside), `"ready"` (the library's step on ready
  views, `augmenter=None`) or `"network_only"` (`NetworkOnly`: the same encoder,
  projector and loss in Keras' own train step on ready views).
* `fit_steps(model, batch)`: a `run(steps)` for `harness.time_rounds` that trains
  `steps` steps of `model.fit` on one batch held on the device.
* `compiled(function)`: a function compiled as the backend compiles a train
  step (`jax.jit`, or `tf.function` with or without XLA), and
  `compiled_value_and_grad`.
"""

import os
from typing import NamedTuple

import keras
import numpy as np

import keras_barlow
from keras_barlow import backbones, losses

BACKEND = os.environ["KERAS_BACKEND"]
KINDS = ("barlow_twins", "ready", "network_only")


class Config(NamedTuple):
    """A network and the augmentation preset it is trained with."""

    backbone: str  # a constructor of keras_barlow.backbones
    stem: str | None
    image_size: int  # of the views
    input_size: int  # of the uint8 images the augmentation crops from
    projector: tuple
    preset: str


CONFIGS = {
    "resnet50_224": Config("ResNet50", "imagenet", 224, 256, (8192,) * 3, "imagenet"),
    "resnet18_32": Config("ResNet18", "cifar", 32, 32, (2048,) * 3, "cifar"),
    "smoke": Config("convnet", None, 32, 36, (64, 64), "imagenet"),
}


def make_encoder(config):
    """The encoder of `config`: `(B, S, S, 3)` normalized images -> `(B, F)`."""
    shape = (config.image_size, config.image_size, 3)
    if config.backbone == "convnet":
        return backbones.convnet(shape, width=8)
    return getattr(backbones, config.backbone)(shape, stem=config.stem)


class NetworkOnly(keras.Model):
    """Encoder, projector and Barlow Twins loss in Keras' own train step.

    What a straightforward Keras model of the same network costs on ready views:
    no augmentation, no seeds, no input checks, Keras' default `train_step` with
    `compute_loss` returning `keras_barlow.losses.barlow_twins_loss`.

    Args:
        encoder: `keras.Model`, normalized images `(B, S, S, 3)` -> `(B, F)`.
        projector: layer `(B, F)` -> `(B, D)`, e.g. `keras_barlow.Projector`.

    Data for `fit`: `((view1, view2),)`, two float batches `(B, S, S, 3)`.
    """

    def __init__(self, encoder, projector, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.projector = projector

    def call(self, views, training=None):
        return tuple(
            self.projector(self.encoder(view, training=training), training=training)
            for view in views
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return losses.barlow_twins_loss(*y_pred)


def make_model(kind, config, optimizer="sgd", jit_compile="auto", seed=0):
    """A compiled model of `kind` (see `KINDS`) for `config`, seeded weights.

    Args:
        kind: `"barlow_twins"`, `"ready"` or `"network_only"`.
        config: a `Config`.
        optimizer: `"sgd"` (SGD 0.01, momentum 0.9, as the PyTorch reference) or
            `"lars"` (`keras_barlow.LARS(0.2)`).
        jit_compile: of `compile`.
        seed: weights and augmentation seed: the same for every kind.

    Returns:
        A compiled `keras.Model`.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
    keras.utils.set_random_seed(seed)
    model = keras_barlow.BarlowTwins(
        make_encoder(config),
        projector_dims=config.projector,
        augmenter=config.preset if kind == "barlow_twins" else None,
        seed=seed,
    )
    if kind == "barlow_twins":
        # Built for the images it will see: larger than the views.
        model.augmenter.build((None, config.input_size, config.input_size, 3))
    if kind == "network_only":
        model = NetworkOnly(model.encoder, model.projector)
    if optimizer == "lars":
        optimizer = keras_barlow.LARS(0.2)
    else:
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def uint8_images(batch_size, size, seed=0):
    """Random uint8 images `(batch_size, size, size, 3)` on the device."""
    shape = (batch_size, size, size, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    return keras.ops.convert_to_tensor(pixels)


def batch_for(kind, config, batch_size, seed=0):
    """One batch of `kind`'s data, on the device: `(uint8 images,)` or views."""
    if kind == "barlow_twins":
        return (uint8_images(batch_size, config.input_size, seed),)
    rng = np.random.default_rng(seed)
    shape = (batch_size, config.image_size, config.image_size, 3)
    views = tuple(
        keras.ops.convert_to_tensor(rng.standard_normal(shape, np.float32))
        for _ in range(2)
    )
    return (views,) if kind == "network_only" else views


class _Repeat(keras.utils.PyDataset):
    def __init__(self, batch, length):
        super().__init__()
        self.batch, self.length = batch, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.batch


def fit_steps(model, batch):
    """`run(steps)`: `steps` train steps of `model.fit` on `batch`, then the logs.

    The logs are Python floats, so `fit` has waited for the device; a non-finite
    loss raises `FloatingPointError`.
    """

    def run(steps):
        history = model.fit(_Repeat(batch, steps), epochs=1, shuffle=False, verbose=0)
        loss = history.history["loss"][-1]
        if not np.isfinite(loss):
            raise FloatingPointError(f"Non-finite loss {loss} in {model.name}")
        return loss

    return run


def compiled(function, jit_compile=True):
    """`function` compiled as the backend compiles a train step.

    JAX: `jax.jit` (always XLA). TensorFlow: `tf.function`, with XLA when
    `jit_compile`.
    """
    if BACKEND == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function, jit_compile=bool(jit_compile))


def compiled_value_and_grad(loss_function, jit_compile=True):
    """`(z1, z2) -> (loss, (d loss / d z1, d loss / d z2))`, compiled."""
    if BACKEND == "jax":
        import jax

        return jax.jit(jax.value_and_grad(loss_function, argnums=(0, 1)))
    import tensorflow as tf

    def value_and_grad(z1, z2):
        with tf.GradientTape() as tape:
            tape.watch([z1, z2])
            loss = loss_function(z1, z2)
        return loss, tuple(tape.gradient(loss, [z1, z2]))

    return tf.function(value_and_grad, jit_compile=bool(jit_compile))


def correlated_embeddings(batch_size, dim, seed=0):
    """Two float32 `(N, D)` device arrays, the second a noisy copy of the first."""
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal((batch_size, dim), np.float32)
    z2 = z1 + 0.5 * rng.standard_normal((batch_size, dim), np.float32)
    return keras.ops.convert_to_tensor(z1), keras.ops.convert_to_tensor(z2)
