import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_barlow
from keras_barlow.model import BarlowTwins, Projector, embedding_std


def tiny_encoder(size=32, batch_norm=True):
    layers = [keras.Input((size, size, 3)), keras.layers.Conv2D(8, 3, strides=2)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D()]
    return keras.Sequential(layers)


def random_uint8(count, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def numpy_loss(z1, z2, lambd=0.0051, eps=1e-5):
    z1 = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
    z2 = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    c = z1.T @ z2 / len(z1)
    return ((1 - np.diag(c)) ** 2).sum() + lambd * (
        (c**2).sum() - (np.diag(c) ** 2).sum()
    )


def test_fit_on_random_uint8_images_two_epochs_with_finite_metrics():
    model = BarlowTwins(
        tiny_encoder(), projector_dims=(32, 32), augmenter="cifar", seed=0
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(random_uint8(64), batch_size=16, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "on_diag", "off_diag", "embedding_std"}
    for values in history.history.values():
        assert len(values) == 2 and np.all(np.isfinite(values))


def test_fit_ignores_labels_and_evaluates():
    images = random_uint8(32, size=16)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(32))).batch(8)
    model = BarlowTwins(
        tiny_encoder(16), projector_dims=(16,), augmenter="imagenet", seed=1
    )
    model.compile(optimizer="sgd")
    model.fit(dataset, epochs=1, verbose=0)
    first, second = (
        model.evaluate(dataset, verbose=0),
        model.evaluate(dataset, verbose=0),
    )
    assert np.isfinite(first).all()
    np.testing.assert_allclose(first, second, rtol=1e-6)  # fixed evaluation views


def test_train_step_is_the_paper_update_on_premade_views():
    rng = np.random.default_rng(2)
    x1 = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    x2 = (x1 + 0.3 * rng.normal(size=x1.shape)).astype(np.float32)
    model = BarlowTwins(
        tiny_encoder(8), projector_dims=(12, 6), augmenter=None, scale_loss=0.5
    )
    reference = BarlowTwins(tiny_encoder(8), projector_dims=(12, 6), augmenter=None)
    model.build((None, 8, 8, 3))
    reference.build((None, 8, 8, 3))
    reference.set_weights(model.get_weights())

    # Independent loss: NumPy on the embeddings of the initial weights.
    expected_loss = 0.5 * numpy_loss(
        reference(x1, training=True).numpy().astype(np.float64),
        reference(x2, training=True).numpy().astype(np.float64),
    )
    reference.set_weights(model.get_weights())  # undo the BN moving-statistics updates
    with tf.GradientTape() as tape:
        z1, z2 = reference(x1, training=True), reference(x2, training=True)
        loss = keras_barlow.barlow_twins_loss(z1, z2, scale_loss=0.5)
    gradients = tape.gradient(loss, reference.trainable_variables)
    expected_weights = [
        w.numpy() - 0.1 * g.numpy()
        for w, g in zip(reference.trainable_variables, gradients, strict=True)
    ]

    model.compile(optimizer=keras.optimizers.SGD(0.1))
    dataset = tf.data.Dataset.from_tensors((x1, x2))
    history = model.fit(dataset, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected_loss, rtol=1e-4)
    for got, expected in zip(model.trainable_variables, expected_weights, strict=True):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_premade_views_required_without_augmenter():
    model = BarlowTwins(tiny_encoder(8), projector_dims=(8,), augmenter=None)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="pairs of views"):
        model.fit(random_uint8(8, size=8).astype(np.float32), batch_size=4, verbose=0)


def test_augmentation_draws_change_with_the_step():
    model = BarlowTwins(
        tiny_encoder(16), projector_dims=(8,), augmenter="cifar", seed=3
    )
    images = random_uint8(4, size=16)
    step0 = model.make_views(images, model._step_seed(0))[0].numpy()
    again = model.make_views(images, model._step_seed(0))[0].numpy()
    step1 = model.make_views(images, model._step_seed(1))[0].numpy()
    np.testing.assert_array_equal(step0, again)
    assert np.abs(step0 - step1).max() > 1e-3


def test_projector_is_the_reference_architecture():
    projector = Projector((64, 64, 32))
    projector.build((None, 20))
    kinds = [type(layer).__name__ for layer in projector.blocks]
    assert kinds == ["Dense", "BatchNormalization", "ReLU"] * 2 + ["Dense"]
    dense = [
        layer for layer in projector.blocks if isinstance(layer, keras.layers.Dense)
    ]
    assert not any(layer.use_bias for layer in dense)
    norms = [
        layer
        for layer in projector.blocks
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert all(layer.synchronized and layer.epsilon == 1e-5 for layer in norms)
    assert projector(np.zeros((4, 20), np.float32)).shape == (4, 32)
    # 20*64 + 2*64 (BN gamma, beta) + 64*64 + 2*64 + 64*32 trainable parameters.
    assert sum(int(np.prod(w.shape)) for w in projector.trainable_weights) == (
        20 * 64 + 128 + 64 * 64 + 128 + 64 * 32
    )


def test_embedding_std_matches_numpy():
    z = np.random.default_rng(4).normal(size=(50, 10)).astype(np.float32)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    expected = unit.std(axis=0).mean() * np.sqrt(10)
    np.testing.assert_allclose(float(embedding_std(z)), expected, rtol=1e-5)
    assert float(embedding_std(np.ones((50, 10), np.float32))) < 1e-6  # collapsed


def test_model_config_round_trip():
    model = BarlowTwins(
        tiny_encoder(16),
        projector_dims=(8, 4),
        lambd=0.01,
        scale_loss=0.1,
        augmenter="cifar",
        correlation_method="gram",
        seed=5,
    )
    clone = BarlowTwins.from_config(model.get_config())
    for key in ("projector_dims", "lambd", "scale_loss", "correlation_method", "seed"):
        assert getattr(clone, key) == getattr(model, key)
    assert clone.augmenter.get_config() == model.augmenter.get_config()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(encoder="resnet"), TypeError, "must be a keras.Model"),
        (
            dict(correlation_method="fast"),
            ValueError,
            "Received: correlation_method='fast'",
        ),
        (dict(augmenter=3), TypeError, "Received: 3"),
        (dict(augmenter=keras.layers.Identity()), TypeError, "has no `seed`"),
        (dict(projector_dims=()), ValueError, "non-empty"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    arguments = dict(encoder=tiny_encoder(8), projector_dims=(8,))
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        BarlowTwins(**arguments)


def test_preset_augmenter_needs_a_fixed_input_size():
    inputs = keras.Input((None, None, 3))
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match="fixed"):
        BarlowTwins(encoder, projector_dims=(8,), augmenter="imagenet")
