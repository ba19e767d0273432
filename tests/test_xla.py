import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import StepLosses, tiny_encoder, uint8_images

import keras_barlow
from keras_barlow import batches, image_ops

IMAGE_SIZE = 16


def tiny_model(augmenter):
    model = keras_barlow.BarlowTwins(
        tiny_encoder(IMAGE_SIZE, strides=2, use_bias=False, batch_norm=True),
        projector_dims=(32, 32),
        augmenter=augmenter,
        seed=3,
    )
    model.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
    return model


def fit_losses(model, data, jit_compile, optimizer, **fit_kwargs):
    """The loss of each step of one epoch of `model.fit` on `data`, NumPy `(steps,)`."""
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    assert model.jit_compile is jit_compile
    recorder = StepLosses()
    model.fit(
        data, epochs=1, shuffle=False, verbose=0, callbacks=[recorder], **fit_kwargs
    )
    return np.array(recorder.losses)


class FixedViews(keras.layers.Layer):
    """A deterministic augmenter, so that both settings see the same views.

    (XLA draws other random numbers than TensorFlow's kernels from one seed.)
    """

    def call(self, images, seed=None):
        unit = image_ops.to_unit_range(images)
        flipped = image_ops.solarize(tf.reverse(unit, axis=[2]))
        return image_ops.normalize(unit), image_ops.normalize(flipped)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.SGD(0.1),
        lambda: keras_barlow.LARS(0.5),
        lambda: keras.optimizers.Adam(0.01),
    ],
    ids=["sgd", "lars", "adam"],
)
def test_jit_compiled_steps_match_uncompiled_steps(make_optimizer):
    # Keras builds an optimizer in its first step, which XLA cannot compile
    # ("failed to lift variable creations"): BarlowTwins builds it before.
    initial_weights = tiny_model(FixedViews()).get_weights()
    losses = {}
    for jit_compile in (False, True):
        model = tiny_model(FixedViews())
        model.set_weights(initial_weights)
        losses[jit_compile] = fit_losses(
            model, uint8_images(24), jit_compile, make_optimizer(), batch_size=8
        )
    assert losses[True].shape == (3,) and np.isfinite(losses[True]).all()
    # Step 1: the same weights; step 2: the same update (SGD's, LARS' trust
    # ratio, Adam's moments). Step 3 is not compared: XLA orders float32 sums its
    # own way, and in this tiny network a feature with almost no variance over
    # the batch of 8 (normalized in the loss) can blow that up (seen: 1e-5 at
    # step 2, 1% at step 3).
    np.testing.assert_allclose(losses[True][:2], losses[False][:2], rtol=1e-4)


def test_jit_compiled_step_trains_on_full_resolution_batches():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (8, 40, 40, 3)).astype(np.uint8)
    sizes = rng.integers(10, 41, (8, 2)).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices(
        batches.full_resolution_batch(canvas, sizes)
    ).batch(4, drop_remainder=True)
    # "cifar": the resampling of full-resolution crops is under test here (the
    # blur of "imagenet" compiles in test_builtin_augmentation_compiles_...).
    model = tiny_model("cifar")
    start = model.get_weights()
    model.compile(optimizer=keras_barlow.LARS(0.5), jit_compile=True)
    history = model.fit(dataset, verbose=0)
    assert model.jit_compile is True and np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == 2
    assert any(
        not np.array_equal(after, before)
        for after, before in zip(model.get_weights(), start, strict=True)
    )


def test_builtin_augmentation_compiles_and_transforms_alike():
    # Every layer of the "imagenet" recipe (blur and solarize made likelier): the
    # draws compile; given them, the compiled transforms (resampling, color
    # jitter through HSV, blur, solarize) match the uncompiled ones. (A whole
    # BarlowTwins step with this augmenter compiles too, in ~45 s on 2 CPU cores.)
    augmenter = keras_barlow.BarlowTwinsAugment(
        IMAGE_SIZE,
        preset="imagenet",
        blur_probability=(0.5, 0.5),
        solarize_probability=(0.5, 0.5),
    )
    images = tf.constant(uint8_images(8, seed=2), tf.float32) / 255.0
    for index, layer in enumerate(augmenter.views[0]):
        seed = tf.constant([index, 7], tf.int32)
        draw = tf.function(layer.get_random_transformation, jit_compile=True)
        transformation = draw(images, seed)
        compiled = tf.function(layer.transform_images, jit_compile=True)
        np.testing.assert_allclose(
            compiled(images, transformation).numpy(),
            layer.transform_images(images, transformation).numpy(),
            atol=1e-5,
            err_msg=layer.name,
        )


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")),
    reason="on a GPU Keras' 'auto' turns XLA on",
)
def test_auto_leaves_xla_off_on_a_cpu_only_machine():
    # benchmarks/precision.py measures it: XLA makes the CPU train step slower.
    model = tiny_model(augmenter="imagenet")
    model.compile(optimizer="sgd")
    assert model.jit_compile is False


def test_jit_compile_falls_back_with_a_warning_on_several_replicas(mirrored_strategy):
    with mirrored_strategy.scope():
        model = tiny_model(augmenter="imagenet")
        with pytest.warns(UserWarning, match="keras-team/keras#19005"):
            model.compile(optimizer=keras_barlow.LARS(0.5), jit_compile=True)
    assert model.jit_compile is False
    history = model.fit(uint8_images(16), batch_size=8, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert np.isfinite(history.history["loss"][0])
