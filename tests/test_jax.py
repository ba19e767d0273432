"""The training core on Keras' JAX backend (`KERAS_BACKEND=jax`, 2 XLA CPU devices).

Runs without TensorFlow installed. `keras.distribution.DataParallel` on two
devices must give the single-device step on the same global batch: global batch
statistics, global C, BN statistics of the global batch, no factor of R.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import (
    StepLosses,
    assert_same_updates,
    tiny_encoder,
    tiny_model,
    to_numpy,
    uint8_images,
    view_pairs,
    weights_of,
)

import keras_barlow
from keras_barlow import input_checks

pytestmark = [pytest.mark.core, pytest.mark.jax_only]

SIZE = 8
BATCH = 8
STEPS = 3


def test_the_training_core_imports_without_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        import keras_barlow
        from keras_barlow import (augment, backbones, losses, model, optimizers,
                                  presets, schedules)
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_tensorflow_modules_name_the_extra_when_tensorflow_is_missing():
    # Hide TensorFlow from the import system, as in an environment without it.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now fails
        import keras_barlow
        try:
            keras_barlow.export
        except ImportError as error:
            print(error)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "keras_barlow.export needs TensorFlow" in result.stdout
    assert "keras-barlow[cpu]" in result.stdout


def batches_of(data, size=BATCH):
    """The consecutive batches of an array, or of each array of a tuple."""
    if isinstance(data, tuple):
        return list(zip(*(batches_of(array, size) for array in data), strict=True))
    return [data[start : start + size] for start in range(0, len(data), size)]


def test_fit_on_uint8_arrays_draws_views_in_the_step():
    model = tiny_model(optimizer=keras.optimizers.SGD(0.05))
    images = uint8_images(32, SIZE)
    steps = StepLosses(weights=True)
    history = model.fit(
        images, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[steps]
    )
    assert set(history.history) == {"loss", "on_diag", "off_diag", "embedding_std"}
    assert int(to_numpy(model.train_step_count)) == 8
    # Each step's loss is the paper's loss (NumPy) of the model's embeddings of
    # the views drawn with that step's seed, from the weights before the step.
    expected = steps.numpy_losses(model, batches_of(images) * 2)
    np.testing.assert_allclose(steps.losses, expected, rtol=1e-4)
    assert len(set(np.round(expected, 4))) == 8  # new views (and weights) each step
    # And each step moved the weights by the SGD step of that loss.
    steps.assert_sgd_steps(model, batches_of(images) * 2, learning_rate=0.05)


def test_fit_on_a_py_dataset_and_on_ready_views():
    class Images(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return uint8_images(BATCH, SIZE, seed=index)

    model = tiny_model()
    steps = StepLosses(weights=True)
    model.fit(Images(), shuffle=False, verbose=0, callbacks=[steps])
    expected = [uint8_images(BATCH, SIZE, seed=index) for index in range(3)]
    expected = steps.numpy_losses(model, expected)
    np.testing.assert_allclose(steps.losses, expected, rtol=1e-4)

    ready = tiny_model(augmenter=None)
    pairs = view_pairs(16)
    steps = StepLosses(weights=True)
    ready.fit(pairs, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[steps])
    expected = steps.numpy_losses(ready, batches_of(pairs))
    np.testing.assert_allclose(steps.losses, expected, rtol=1e-4)


def test_views_depend_on_the_seed_variable_and_the_step():
    images = uint8_images(4, SIZE)
    model = tiny_model()
    step0 = model.make_views(images, model._step_seed(0))[0]
    step1 = model.make_views(images, model._step_seed(1))[0]
    assert not np.allclose(step0, step1)
    # The seed is a variable: assigning it changes the draws, as a restore does.
    other = keras_barlow.BarlowTwins(
        tiny_encoder(SIZE, 4, use_bias=False, batch_norm=True),
        projector_dims=(16, 16),
        augmenter="cifar",
        seed=7,
    )
    model.augment_seed.assign(7)
    np.testing.assert_array_equal(
        model.make_views(images, model._step_seed(0))[0],
        other.make_views(images, other._step_seed(0))[0],
    )


def run_steps(model, initial, data, **fit_kwargs):
    model.set_weights(initial)
    steps = StepLosses()
    model.fit(*data, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[steps])
    return np.array(steps.losses), weights_of(model)


@pytest.mark.parametrize("augmenter", ["cifar", None])
def test_data_parallel_on_two_devices_is_the_single_device_step(augmenter):
    import jax

    assert len(jax.devices()) == 2, "conftest sets 2 XLA CPU devices"
    data = (
        (uint8_images(STEPS * BATCH, SIZE),) if augmenter else view_pairs(STEPS * BATCH)
    )
    single_model = tiny_model(augmenter)
    initial = single_model.get_weights()
    single_losses, single_weights = run_steps(single_model, initial, data)

    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        parallel_model = tiny_model(augmenter)
        parallel_losses, parallel_weights = run_steps(parallel_model, initial, data)
        kernel = parallel_model.projector.blocks[0].kernel.value
        assert len(kernel.sharding.device_set) == 2  # replicated on both devices
    finally:
        keras.distribution.set_distribution(None)

    np.testing.assert_allclose(parallel_losses, single_losses, rtol=1e-4)
    assert_same_updates(initial, single_weights, parallel_weights, rtol=1e-2)
    # Every moving statistic moved the same way: batch normalization (not
    # synchronized, which Keras offers on TensorFlow only) saw the global batch.
    bn = single_model.projector.blocks[1]
    assert not bn.synchronized


def test_views_under_data_parallel_equal_one_device_views():
    import jax

    images = uint8_images(BATCH, SIZE)
    model = tiny_model()
    seed = model._step_seed(5)
    expected = model.make_views(images, seed)
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        layout = keras.distribution.distribution().get_data_layout(images.shape)
        sharded = jax.device_put(images, layout.backend_layout)
        views = jax.jit(lambda x: model.make_views(x, seed))(sharded)
    finally:
        keras.distribution.set_distribution(None)
    for view, reference in zip(views, expected, strict=True):
        # The same draws; sharded sums round a little differently.
        np.testing.assert_allclose(view, reference, atol=1e-5)


def test_sync_batch_norm_is_refused_on_jax():
    with pytest.raises(ValueError, match="needs Keras' TensorFlow backend"):
        keras_barlow.ResNet18((32, 32, 3), stem="cifar", sync_batch_norm=True)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = tiny_model(optimizer=keras.optimizers.SGD(0.01))
        images = uint8_images(16, SIZE)
        steps = StepLosses(weights=True)
        model.fit(images, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[steps])
        # The logged loss is the unscaled float32 loss of the step's low-precision
        # embeddings (a float16 loss scale, 2^15, would show); in half precision
        # an eager forward pass and the compiled step round differently.
        expected = steps.numpy_losses(model, batches_of(images))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    np.testing.assert_allclose(steps.losses, expected, rtol=0.02)
    # float16 needs loss scaling, which Keras adds at compile on JAX too.
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")


@pytest.mark.parametrize("largest", [1.0, 1.04, 300.0, np.nan])
def test_float_pixels_are_checked_on_the_host_before_any_step(largest):
    images = uint8_images(16, SIZE).astype(np.float32)
    if largest < 2:
        images /= 255.0
    images[3, 0, 0, 0] = largest
    model = tiny_model()
    initial = weights_of(model)
    with pytest.raises(ValueError, match="^Float images must hold pixel values"):
        model.fit(images, batch_size=BATCH, verbose=0)
    for weight, start in zip(weights_of(model), initial, strict=True):
        np.testing.assert_array_equal(weight, start)


def test_a_bad_batch_of_a_py_dataset_stops_before_its_step():
    class Images(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            images = uint8_images(BATCH, SIZE, seed=index).astype(np.float32)
            return images / 255.0 if index == 2 else images

    model = tiny_model()
    initial = model.get_weights()
    with pytest.raises(ValueError, match="taken as scaled"):
        model.fit(Images(), shuffle=False, verbose=0)  # batches 0, 1, then 2

    # Keras reads batches ahead of the steps (in a thread): the error stops fit
    # before the bad batch's step, after k = 0, 1 or 2 good steps, and the model
    # keeps its variables: those of a fit on the first k batches.
    steps = int(to_numpy(model.train_step_count))
    assert steps in (0, 1, 2)
    reference = tiny_model()
    reference.set_weights(initial)
    if steps:
        good = np.concatenate([uint8_images(BATCH, SIZE, seed=i) for i in range(steps)])
        reference.fit(good, batch_size=BATCH, shuffle=False, verbose=0)
    for weight, expected in zip(weights_of(model), weights_of(reference), strict=True):
        np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-7)


def test_a_short_last_batch_is_skipped_and_the_epoch_kept():
    model = tiny_model()
    with pytest.warns(UserWarning, match="Skipping a batch of 1"):
        history = model.fit(
            uint8_images(17, SIZE), batch_size=BATCH, epochs=2, verbose=0
        )
    assert len(history.history["loss"]) == 2
    assert int(to_numpy(model.optimizer.iterations)) == 4
    assert int(to_numpy(model.train_step_count)) == 4


def test_host_pixel_check_matches_the_rule():
    input_checks.check_pixel_range(np.zeros((2, 4, 4, 3), np.float32))  # black
    input_checks.check_pixel_range(np.full((2, 4, 4, 3), 255, np.uint8))
    with pytest.raises(ValueError, match="from -1.0 to"):
        input_checks.check_pixel_range(np.full((2, 4, 4, 3), -1.0, np.float32))


def test_fit_on_images_larger_than_the_encoder_input_and_on_unbuilt_pairs():
    # The model is built from the encoder's input at construction: Keras would
    # otherwise build it from the first batch, whose images are not the views.
    encoder = keras_barlow.backbones.convnet((32, 32, 3), width=4)
    model = keras_barlow.BarlowTwins(encoder, projector_dims=(16,), augmenter="cifar")
    model.compile(optimizer="sgd")
    images = uint8_images(8, SIZE)
    larger = np.pad(images, ((0, 0), (14, 14), (14, 14), (0, 0)))  # 36 x 36
    assert larger.shape[1:3] == (36, 36)
    steps = StepLosses(weights=True)
    model.fit(larger, batch_size=4, shuffle=False, verbose=0, callbacks=[steps])
    # The 32 x 32 views are cropped from the 36 x 36 images.
    expected = steps.numpy_losses(model, batches_of(larger, 4))
    np.testing.assert_allclose(steps.losses, expected, rtol=1e-4)

    encoder = keras_barlow.backbones.convnet((SIZE, SIZE, 3), width=4)
    ready = keras_barlow.BarlowTwins(encoder, projector_dims=(16,), augmenter=None)
    ready.compile(optimizer="sgd")
    pairs = view_pairs(8)
    steps = StepLosses(weights=True)
    ready.fit(pairs, batch_size=4, shuffle=False, verbose=0, callbacks=[steps])
    expected = steps.numpy_losses(ready, batches_of(pairs, 4))
    np.testing.assert_allclose(steps.losses, expected, rtol=1e-4)


def test_export_on_jax_says_how_to_export():
    pytest.importorskip("tensorflow")  # export imports it; the check is the backend
    from keras_barlow import export

    model = tiny_model()
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow python -m"):
        export.export_encoder(model, "unused")
