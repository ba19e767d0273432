"""The Classifier of keras_barlow.evaluation and its transforms, on both backends."""

import keras
import numpy as np
import pytest
from conftest import tiny_encoder, to_numpy, value_and_gradients

from keras_barlow import batches, evaluation, image_ops

pytestmark = pytest.mark.core


@pytest.mark.parametrize("backbone_ratio", [0.1, None])
def test_classifier_step_is_sgd_with_a_backbone_learning_rate(backbone_ratio):
    """One step against the rule w -= lr_group * (grad + wd * w)."""
    rng = np.random.default_rng(7)
    images = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    encoder = tiny_encoder()
    classifier = evaluation.Classifier(
        3, encoder, backbone_ratio=backbone_ratio, weight_decay=0.01
    )
    classifier(images)
    variables = classifier.head.trainable_variables + encoder.trainable_variables
    before = [to_numpy(v) for v in variables]

    def loss_fn():
        logits = classifier.head(encoder(images))
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        )
        return loss + 0.005 * sum(keras.ops.sum(keras.ops.square(v)) for v in variables)

    _, gradients = value_and_gradients(loss_fn, variables)

    classifier.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    classifier.fit(images, labels, batch_size=8, epochs=1, verbose=0)

    head_count = len(classifier.head.trainable_variables)
    steps = zip(variables, before, gradients, strict=True)
    for index, (variable, old, gradient) in enumerate(steps):
        if index < head_count:
            learning_rate = 0.5
        else:  # frozen (None): no step at all
            learning_rate = 0.0 if backbone_ratio is None else 0.5 * backbone_ratio
        np.testing.assert_allclose(
            to_numpy(variable),
            old - learning_rate * to_numpy(gradient),
            rtol=1e-4,
            atol=1e-6,
        )


def test_a_frozen_encoder_is_not_among_the_trained_variables():
    encoder = tiny_encoder(batch_norm=True)
    classifier = evaluation.Classifier(3, encoder)
    classifier(np.zeros((2, 16, 16, 3), np.float32))
    trained = {v.path for v in classifier.trainable_variables}
    assert trained == {v.path for v in classifier.head.trainable_variables}
    assert {v.path for v in classifier.trainable_weights} == trained
    everything = {v.path for v in classifier.weights}
    assert {v.path for v in classifier.non_trainable_weights} == everything - trained
    assert encoder.trainable  # the encoder's own flags are left alone
    assert len(encoder.trainable_variables) == 4  # conv, batch norm


def test_saving_a_classifier_with_a_plain_function_transform_says_what_to_do(
    tmp_path,
):
    classifier = evaluation.Classifier(3, test_transform=lambda x: x / 255.0)
    classifier(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="test transform .* make its transforms Keras"):
        classifier.save(str(tmp_path / "probe.keras"))


def test_the_classifier_needs_labelled_batches():
    classifier = evaluation.Classifier(3)
    classifier.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="labelled batches"):
        classifier.fit(np.zeros((4, 5), np.float32), epochs=1, verbose=0)


def test_crop_and_flip_never_samples_the_padding_of_full_resolution_batches():
    # Flat colors on canvases of noise: every crop of the true region is the
    # same flat color, normalized; a crop reaching into the padding is not.
    rng = np.random.default_rng(0)
    canvases = rng.integers(0, 256, size=(6, 40, 40, 3)).astype(np.uint8)
    colors = rng.integers(0, 256, size=(6, 3))
    sizes = np.array([[10, 30], [40, 40], [25, 8], [12, 12], [33, 20], [5, 40]])
    for canvas, color, (height, width) in zip(canvases, colors, sizes, strict=True):
        canvas[:height, :width] = color
    layer = evaluation.CropAndFlip(16, seed=3)

    crops = to_numpy(layer(batches.full_resolution_batch(canvases, sizes)))

    expected = (colors / 255.0 - image_ops.IMAGENET_MEAN) / image_ops.IMAGENET_STD
    expected = np.broadcast_to(expected[:, None, None, :], (6, 16, 16, 3))
    np.testing.assert_allclose(crops, expected, atol=1e-4)
    assert layer.compute_output_shape(
        {batches.IMAGES: (None, 40, 40, 3), batches.IMAGE_SIZES: (None, 2)}
    ) == (None, 16, 16, 3)
