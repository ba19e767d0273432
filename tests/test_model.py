import inspect

import keras
import numpy as np
import pytest
from conftest import round_trip, tiny_encoder, value_and_gradients

import keras_barlow
from keras_barlow.model import BarlowTwins, Projector, embedding_std

pytestmark = pytest.mark.core

BACKEND = keras.backend.backend()


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


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
        tiny_encoder(32, strides=2, batch_norm=True),
        projector_dims=(32, 32),
        augmenter="cifar",
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(random_uint8(64), batch_size=16, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "on_diag", "off_diag", "embedding_std"}
    for values in history.history.values():
        assert len(values) == 2 and np.all(np.isfinite(values))


def test_fit_ignores_labels_and_evaluates():
    images, labels = random_uint8(32, size=16), np.arange(32)
    model = BarlowTwins(
        tiny_encoder(16, strides=2, batch_norm=True),
        projector_dims=(16,),
        augmenter="imagenet",
        seed=1,
    )
    model.compile(optimizer="sgd")
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    first, second = (
        model.evaluate(images, labels, batch_size=8, verbose=0),
        model.evaluate(images, labels, batch_size=8, verbose=0),
    )
    assert np.isfinite(first).all()
    np.testing.assert_allclose(first, second, rtol=1e-6)  # fixed evaluation views


def test_train_step_is_the_paper_update_on_premade_views():
    rng = np.random.default_rng(2)
    x1 = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    x2 = (x1 + 0.3 * rng.normal(size=x1.shape)).astype(np.float32)
    model = BarlowTwins(
        tiny_encoder(8, strides=2, batch_norm=True),
        projector_dims=(12, 6),
        augmenter=None,
        scale_loss=0.5,
    )
    reference = BarlowTwins(
        tiny_encoder(8, strides=2, batch_norm=True),
        projector_dims=(12, 6),
        augmenter=None,
    )
    model.build((None, 8, 8, 3))
    reference.build((None, 8, 8, 3))
    reference.set_weights(model.get_weights())

    # Independent loss: NumPy on the embeddings of the initial weights.
    expected_loss = 0.5 * numpy_loss(
        to_numpy(reference(x1, training=True)).astype(np.float64),
        to_numpy(reference(x2, training=True)).astype(np.float64),
    )
    reference.set_weights(model.get_weights())  # undo the BN moving-statistics updates

    def loss_fn():
        z1, z2 = reference(x1, training=True), reference(x2, training=True)
        return keras_barlow.barlow_twins_loss(z1, z2, scale_loss=0.5)

    _, gradients = value_and_gradients(loss_fn, reference.trainable_variables)
    expected_weights = [
        to_numpy(w) - 0.1 * to_numpy(g)
        for w, g in zip(reference.trainable_variables, gradients, strict=True)
    ]

    model.compile(optimizer=keras.optimizers.SGD(0.1))
    # One batch of ready view pairs (x1, x2), in order.
    history = model.fit(x1, x2, batch_size=len(x1), shuffle=False, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected_loss, rtol=1e-4)
    for got, expected in zip(model.trainable_variables, expected_weights, strict=True):
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-4, atol=1e-6)


def test_premade_views_required_without_augmenter():
    model = BarlowTwins(
        tiny_encoder(8, strides=2, batch_norm=True), projector_dims=(8,), augmenter=None
    )
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="pairs of views"):
        model.fit(random_uint8(8, size=8).astype(np.float32), batch_size=4, verbose=0)


def test_augmentation_draws_change_with_the_step():
    model = BarlowTwins(
        tiny_encoder(16, strides=2, batch_norm=True),
        projector_dims=(8,),
        augmenter="cifar",
        seed=3,
    )
    images = random_uint8(4, size=16)
    step0 = to_numpy(model.make_views(images, model._step_seed(0))[0])
    again = to_numpy(model.make_views(images, model._step_seed(0))[0])
    step1 = to_numpy(model.make_views(images, model._step_seed(1))[0])
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
    # Synchronized across tf.distribute replicas on TensorFlow; on JAX Keras has no
    # synchronized batch normalization and DataParallel's statistics are global.
    synchronized = BACKEND == "tensorflow"
    assert all(
        layer.synchronized == synchronized and layer.epsilon == 1e-5 for layer in norms
    )
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
        tiny_encoder(16, strides=2, batch_norm=True),
        projector_dims=(8, 4),
        lambd=0.01,
        scale_loss=0.1,
        augmenter="cifar",
        correlation_method="gram",
        seed=5,
    )
    clone = round_trip(model)
    assert type(clone) is BarlowTwins
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
        (dict(scale_loss=-1.0), ValueError, "Received: scale_loss=-1.0"),
        (dict(scale_loss=0), ValueError, "Received: scale_loss=0"),
        (dict(scale_loss=float("nan")), ValueError, "Received: scale_loss=nan"),
        (dict(scale_loss=float("inf")), ValueError, "Received: scale_loss=inf"),
        (dict(lambd=float("inf")), ValueError, "Received: lambd=inf"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    arguments = dict(
        encoder=tiny_encoder(8, strides=2, batch_norm=True), projector_dims=(8,)
    )
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        BarlowTwins(**arguments)


def test_preset_augmenter_needs_a_fixed_input_size():
    with pytest.raises(ValueError, match="fixed"):
        BarlowTwins(
            tiny_encoder(None, filters=0), projector_dims=(8,), augmenter="imagenet"
        )


@pytest.mark.tensorflow_only  # the TensorFlow trainer's private member
def test_keras_still_has_the_private_member_barlow_twins_overrides():
    # keras_barlow/_train_step.py overrides TensorFlowTrainer._maybe_symbolic_build
    # (keras-team/keras#20585). If Keras renames it or changes its parameters, the
    # override is silently never called, or called with the wrong arguments.
    from keras.src.backend.tensorflow import trainer  # fails, not skips, if moved

    method = getattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    assert method is not None, "TensorFlowTrainer._maybe_symbolic_build is gone"
    parameters = [
        (parameter.name, parameter.default)
        for parameter in inspect.signature(method).parameters.values()
    ]
    assert parameters == [
        ("self", inspect.Parameter.empty),
        ("iterator", None),
        ("data_batch", None),
    ]
    assert issubclass(BarlowTwins, trainer.TensorFlowTrainer)
    override = BarlowTwins._maybe_symbolic_build
    assert override is not method
    assert list(inspect.signature(override).parameters) == [
        name for name, _ in parameters
    ]
