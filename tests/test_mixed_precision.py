"""Training under the mixed-precision policies: float32 loss, finite metrics."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import StepLosses, tiny_model

from keras_barlow.optimizers import LARS

IMAGES = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype="uint8")
# Ready views for a model without augmenter: [0, 1] images and their mirror images.
VIEWS = tuple(
    (images / 255.0).astype("float32") for images in (IMAGES, IMAGES[:, :, ::-1])
)


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_dtype_policy(request.param)
    keras.utils.set_random_seed(0)  # the models below: the same start every run
    yield request.param
    keras.mixed_precision.set_dtype_policy("float32")


def check_loss_is_float32(model, data, compute_dtype):
    views = model.make_views(data, tf.constant([0, 1]))
    assert model(views[0]).dtype == compute_dtype  # the policy is in force
    loss, on_diag, off_diag, _ = model._loss_terms(*views, training=False)
    assert {loss.dtype, on_diag.dtype, off_diag.dtype} == {tf.float32}


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_bfloat16_fit_is_finite(policy):
    model = tiny_model("cifar", LARS(0.1), filters=8)  # under the policy
    steps = StepLosses(weights=True)
    history = model.fit(
        IMAGES, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[steps]
    )
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), name
    # Each step logs the paper's loss (NumPy) of its own bfloat16 embeddings of the
    # views of its seed; eager calls and the step's graph round a little apart.
    expected = steps.numpy_losses(model, [IMAGES[:16], IMAGES[16:]] * 2)
    np.testing.assert_allclose(steps.losses, expected, rtol=0.02)
    check_loss_is_float32(model, tf.constant(IMAGES[:8]), tf.bfloat16)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_float16_fifty_lars_steps_are_finite(policy):
    # Pre-made views: a quicker graph to trace.
    model = tiny_model(None, LARS(0.1, eta=0.02, weight_decay=1e-4), filters=8)
    # compile wraps the optimizer for dynamic loss scaling under mixed_float16.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, LARS)
    initial = [v.numpy() for v in model.trainable_variables]
    scaled_losses = []
    scale_loss = model.optimizer.scale_loss

    def recording_scale_loss(loss):
        scaled_losses.append(loss.dtype)
        return scale_loss(loss)

    model.optimizer.scale_loss = recording_scale_loss

    dataset = tf.data.Dataset.from_tensor_slices(VIEWS).repeat().batch(8)
    history = model.fit(dataset, steps_per_epoch=50, epochs=1, verbose=0)

    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), name
    for variable in model.variables:
        assert np.all(np.isfinite(variable.numpy())), variable.path
    # Steps were applied, not all skipped by the loss scaler.
    pairs = zip(initial, model.trainable_variables, strict=True)
    assert any(not np.array_equal(before, after.numpy()) for before, after in pairs)
    # The train step scales its (float32) loss before taking gradients.
    assert scaled_losses and set(scaled_losses) == {tf.float32}
    # `iterations` counts the applied steps; the first few, whose scaled gradients
    # overflow float16, are skipped while the loss scale adapts.
    assert 0 < int(model.optimizer.iterations) <= 50
    check_loss_is_float32(model, tuple(view[:8] for view in VIEWS), tf.float16)
