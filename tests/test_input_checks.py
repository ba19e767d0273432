"""Bad training data gives a clear error before any weight changes.

A global batch that does not split across replicas is tested in
test_distributed.py; corrupt image files in test_data_folders.py.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import StepLosses, tiny_encoder

from keras_barlow.checkpoints import TrainingCheckpoint
from keras_barlow.model import BarlowTwins

SIZE = 8


def make_model():
    model = BarlowTwins(
        tiny_encoder(SIZE, 4, relu=False),
        projector_dims=(4,),
        augmenter="cifar",
        seed=0,
    )
    model.compile(optimizer="sgd")
    return model


def pixels(count=8, channels=3, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, SIZE, SIZE, channels)).astype(dtype)


def fit_fails(data, error, match, good_batches=None, **kwargs):
    """Fit on `data`, expect `error` and the weights of a fit on `good_batches`.

    Without `good_batches`, no weight may have changed. With them, the weights
    must be those of the same model trained on the good batches alone, so that
    the bad batch that stopped `fit` changed nothing.
    """
    model = make_model()
    model.build((None, SIZE, SIZE, 3))
    initial = model.get_weights()
    expected = initial
    expected_steps = 0
    if good_batches is not None:
        model.fit(good_batches, verbose=0)
        expected = model.get_weights()
        expected_steps = int(model.optimizer.iterations.numpy())
        assert any(
            not np.array_equal(a, b) for a, b in zip(expected, initial, strict=True)
        )
        model.set_weights(initial)  # the step counter, and so the draws, too
        model.optimizer.iterations.assign(0)
    with pytest.raises(error, match=match) as raised:
        model.fit(data, verbose=0, **kwargs)
    for weight, reference in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(weight, reference)
    # A refused step does not advance the optimizer's schedule either.
    assert int(model.optimizer.iterations.numpy()) == expected_steps
    return str(raised.value)


def batches(*arrays, size=4):
    return tf.data.Dataset.from_tensor_slices(
        arrays if len(arrays) > 1 else arrays[0]
    ).batch(size)


def test_images_without_batch_axis():
    message = fit_fails(
        batches(pixels()[..., 0]), ValueError, r"shape \(batch_size, height, width, 3\)"
    )
    assert "Received: shape (None, 8, 8)" in message and "dataset.batch(n)" in message


def test_grayscale_images():
    message = fit_fails(
        batches(pixels(channels=1)), ValueError, "Expected 3 color channels"
    )
    assert "Received: 1 channels" in message and "grayscale images to RGB" in message


def test_float_pixels_outside_0_255():
    # A ValueError whose message starts with the rule, not TensorFlow's
    # "Graph execution error" with the node's trace first.
    message = fit_fails(
        batches(pixels() * 2),
        ValueError,
        "^Float images must hold pixel values in \\[0, 255\\]",
    )
    assert "values from 0 to 510" in message
    assert "Multiply images in [0, 1] by 255" in message
    assert "Graph execution error" not in message


@pytest.mark.parametrize("largest", [1.0, 1.04, 1.5])
def test_float_pixels_already_scaled_to_0_1(largest):
    # Images in [0, 1], also when a resize overshot 1 a little.
    images = pixels() / 255.0
    images[0, 0, 0, 0] = largest
    message = fit_fails(
        batches(images), ValueError, "largest value is below 2 is taken as scaled"
    )
    assert f"to {largest:g}" in message
    assert "Multiply images in [0, 1] by 255" in message


def test_a_scaled_batch_after_good_batches_stops_before_its_step():
    images = pixels(12)
    images[8:] /= 255.0  # the third batch of 4 is in [0, 1]
    fit_fails(
        batches(images), ValueError, "taken as scaled", good_batches=batches(images[:8])
    )


def test_all_black_float_batches_train():
    # Not refused as "scaled to [0, 1]": black is black at any scale. Every view of
    # a black image is one constant image, so all embeddings are equal, their
    # batch-normalized values 0, C = 0 and the paper's loss sum_i (1 - C_ii)^2 = D
    # (the projector's width), with a zero gradient: SGD leaves the weights.
    model = make_model()
    initial = [weight.numpy() for weight in model.trainable_weights]
    images = np.zeros((8, SIZE, SIZE, 3), np.float32)
    steps = StepLosses(weights=True)
    model.fit(batches(images), verbose=0, callbacks=[steps])
    assert int(model.optimizer.iterations.numpy()) == 2
    np.testing.assert_allclose(steps.losses, [4.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(
        steps.losses, steps.numpy_losses(model, [images[:4], images[4:]]), rtol=1e-6
    )
    for weight, start in zip(model.trainable_weights, initial, strict=True):
        np.testing.assert_allclose(weight.numpy(), start, atol=1e-7)


def test_nan_pixels():
    images = pixels()
    images[1, 1, 2, 0] = np.nan
    message = fit_fails(batches(images), ValueError, "without NaN or Inf")
    assert "from nan" in message and "check the input pipeline for NaN" in message


def test_labels_before_images():
    message = fit_fails(
        batches(np.arange(8), pixels()), ValueError, "images must be the first element"
    )
    assert "[(None,), (None, 8, 8, 3)]" in message
    assert "lambda labels, images: (images, labels)" in message


def test_dict_batches():
    data = batches({"image": pixels(), "label": np.arange(8)})
    message = fit_fails(data, ValueError, "Received a dict with keys")
    assert "['image', 'label']" in message and "example['image']" in message


def test_a_last_batch_of_one_image_is_skipped_and_the_epoch_kept():
    # 9 images in batches of 4: the last batch has 1 image, no batch statistics.
    model = make_model()
    model.build((None, SIZE, SIZE, 3))
    initial = model.get_weights()
    with pytest.warns(UserWarning, match="short last batch, are skipped"):
        history = model.fit(batches(pixels(9)), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations.numpy()) == 4  # 2 steps per epoch

    reference = make_model()
    reference.build((None, SIZE, SIZE, 3))
    reference.set_weights(initial)
    reference.fit(batches(pixels(9)[:8]), epochs=2, verbose=0)
    for weight, expected in zip(
        model.get_weights(), reference.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(weight, expected)


@pytest.mark.parametrize(
    "data",
    [
        batches(pixels()).take(0),
        np.zeros((0, SIZE, SIZE, 3), np.uint8),
        batches(pixels()).filter(
            lambda images: tf.reduce_all(images < 0)
        ),  # size unknown
        batches(pixels(3)).unbatch().batch(4, drop_remainder=True),
    ],
    ids=["take_0", "empty_array", "filtered_out", "too_few_for_drop_remainder"],
)
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_empty_data(data):
    message = fit_fails(data, ValueError, "The data is empty")
    assert "`filter`" in message and "drop_remainder=True" in message


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_data_that_runs_out_after_the_first_epoch(tmp_path):
    data = batches(pixels()).filter(lambda images: True)  # size unknown: no repeat
    message = fit_fails(
        data,
        ValueError,
        "yielded no batch in epoch 2",
        good_batches=batches(pixels()),  # epoch 1
        epochs=2,
        steps_per_epoch=2,
        callbacks=[TrainingCheckpoint(tmp_path)],
    )
    assert "`steps_per_epoch` batches per epoch" in message
    assert [path.name for path in tmp_path.iterdir()] == ["epoch-000001"]
