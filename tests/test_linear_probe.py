"""The linear probe and fine-tuning of keras_barlow.evaluation, on both backends.

`linear_probe_on_features` is compared with SGD written out in NumPy (float64);
with one batch per epoch the order of the samples does not matter, so the
comparison holds for any shuffling. Stated tolerance: the trained weights within
1e-4 relative (float32 against float64 over 6 steps) and the same test
predictions. The TensorFlow implementation of the first releases gave the same
weights to 2e-7 on this problem (checked once by hand).
"""

import numpy as np
import pytest
from conftest import round_trip, tiny_encoder, to_numpy

from keras_barlow import batches, evaluation, preprocessing

pytestmark = pytest.mark.core


def numpy_probe(
    features, labels, kernel, bias, epochs, learning_rate, momentum, weight_decay
):
    """Full-batch SGD as `linear_probe_on_features` trains: Keras' SGD with
    momentum (`m = mu * m - lr * g; w += m`), a cosine decay to 0 over the
    steps, the mean cross-entropy and `wd * w` added to every gradient."""
    kernel, bias = kernel.astype(np.float64), bias.astype(np.float64)
    kernel_momentum, bias_momentum = np.zeros_like(kernel), np.zeros_like(bias)
    onehot = np.eye(kernel.shape[1])[labels]
    for step in range(epochs):
        logits = features @ kernel + bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        grad_logits = (probabilities - onehot) / len(features)
        kernel_grad = features.T @ grad_logits + weight_decay * kernel
        bias_grad = grad_logits.sum(axis=0) + weight_decay * bias
        rate = learning_rate * 0.5 * (1 + np.cos(np.pi * step / epochs))
        kernel_momentum = momentum * kernel_momentum - rate * kernel_grad
        bias_momentum = momentum * bias_momentum - rate * bias_grad
        kernel, bias = kernel + kernel_momentum, bias + bias_momentum
    return kernel, bias


def separable_features(rng, count, num_classes=4, dim=16, margin=0.5):
    """Features labelled by a random linear map, keeping points off its boundaries."""
    weights = rng.normal(size=(dim, num_classes))
    features = rng.normal(size=(4 * count, dim))
    logits = features @ weights
    ordered = np.sort(logits, axis=1)
    keep = (ordered[:, -1] - ordered[:, -2]) > margin
    return features[keep][:count], logits[keep][:count].argmax(axis=1)


def colored_images(rng, count, size=16):
    """Noisy images whose label is the dominant color channel."""
    labels = rng.integers(0, 3, count)
    images = rng.uniform(0, 90, size=(count, size, size, 3))
    images[np.arange(count), :, :, labels] += 150
    return images.astype(np.uint8), labels


def test_linear_probe_on_features_is_sgd_with_a_cosine_schedule():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(120, 6)).astype(np.float32)
    labels = (features[:, :3] + 0.5 * rng.normal(size=(120, 3))).argmax(axis=1)
    settings = {"learning_rate": 0.3, "momentum": 0.9, "weight_decay": 1e-2}
    result = evaluation.linear_probe_on_features(
        features[:96],
        labels[:96],
        features[96:],
        labels[96:],
        epochs=6,
        batch_size=128,  # one batch per epoch
        seed=2,
        **settings,
    )
    # The initial weights: Keras' RandomNormal(0.01) of the seed, on this backend.
    initial = evaluation.Classifier(3, seed=2)
    initial(features[:1])
    kernel, bias = numpy_probe(
        features[:96].astype(np.float64),
        labels[:96],
        to_numpy(initial.head.kernel),
        to_numpy(initial.head.bias),
        epochs=6,
        **settings,
    )

    head = result.classifier.head
    np.testing.assert_allclose(head.kernel.numpy(), kernel, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(head.bias.numpy(), bias, rtol=1e-4, atol=1e-6)
    predictions = (features[96:] @ kernel + bias).argmax(axis=1)
    assert result.top1 == np.mean(predictions == labels[96:])
    assert result.classifier.optimizer.iterations.numpy() == 6
    assert float(result.classifier.optimizer.learning_rate) == pytest.approx(0.0)


def test_linear_probe_on_features_separates_linearly_separable_data():
    rng = np.random.default_rng(5)
    features, labels = separable_features(rng, 1200)
    result = evaluation.linear_probe_on_features(
        features[:1000],
        labels[:1000],
        features[1000:],
        labels[1000:],
        epochs=20,
        batch_size=64,
    )
    assert result.top1 > 0.95
    # The reported accuracy is that of the returned classifier's predictions.
    predictions = result.classifier.predict(features[1000:], verbose=0).argmax(axis=1)
    assert result.top1 == pytest.approx(np.mean(predictions == labels[1000:]))
    assert result.top5 == 1.0  # 4 classes
    assert len(result.history["loss"]) == 20
    assert result.classifier.optimizer.iterations.numpy() == 20 * 16


def test_linear_probe_on_a_frozen_encoder_of_tiny_images():
    rng = np.random.default_rng(6)
    images, labels = colored_images(rng, 160)
    encoder = tiny_encoder()
    weights_before = [w.copy() for w in encoder.get_weights()]

    result = evaluation.linear_probe(
        encoder, (images[:128], labels[:128]), (images[128:], labels[128:]), epochs=8,
        batch_size=32,
    )  # fmt: skip

    assert result.top1 > 0.95
    for before, after in zip(weights_before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # frozen
    # The optimizer holds state for the linear layer only (kernel and bias).
    classifier = result.classifier
    assert [v.path for v in classifier.trainable_variables] == [
        v.path for v in classifier.head.trainable_variables
    ]
    assert len(classifier.optimizer.momentums) == 2


@pytest.mark.tensorflow_only
def test_linear_probe_on_tf_data():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(6)
    images, labels = colored_images(rng, 160)
    train = tf.data.Dataset.from_tensor_slices((images[:128], labels[:128])).batch(32)
    test = tf.data.Dataset.from_tensor_slices((images[128:], labels[128:])).batch(32)
    result = evaluation.linear_probe(tiny_encoder(), train, test, epochs=8)
    assert result.top1 > 0.95
    assert result.classifier.optimizer.iterations.numpy() == 8 * 4


def test_linear_probe_on_full_resolution_batches_of_any_form():
    rng = np.random.default_rng(9)
    images, labels = colored_images(rng, 96)
    canvases = np.zeros((96, 24, 24, 3), np.uint8)
    canvases[:, :16, :16] = images
    sizes = np.full((96, 2), 16, np.int32)
    train = [
        batches.full_resolution_batch(
            canvases[start : start + 16], sizes[start : start + 16],
            labels[start : start + 16],
        )
        for start in range(0, 64, 16)
    ]  # fmt: skip
    test = iter(
        [batches.full_resolution_batch(canvases[64:], sizes[64:], labels[64:])]
    )  # read once: a generator will do

    result = evaluation.linear_probe(tiny_encoder(), train, test, epochs=6)

    assert result.top1 > 0.9
    assert result.classifier.optimizer.iterations.numpy() == 6 * 4
    # The classifier predicts on full-resolution arrays as on the images.
    np.testing.assert_allclose(
        result.classifier.predict(
            batches.full_resolution_batch(canvases[64:], sizes[64:]), verbose=0
        ),
        result.classifier.predict(images[64:], verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_linear_probe_on_ready_inputs_trains_and_tests_on_the_same_inputs():
    rng = np.random.default_rng(7)
    images, labels = colored_images(rng, 64)
    ready = to_numpy(preprocessing.Preprocessing(16)(images))
    result = evaluation.linear_probe(
        tiny_encoder(), (ready, labels), (ready, labels), epochs=1, preprocess=None
    )
    classifier = result.classifier
    np.testing.assert_array_equal(classifier.train_transform(ready), ready)
    np.testing.assert_array_equal(classifier.test_transform(ready), ready)


def test_training_data_must_be_readable_at_every_epoch():
    rng = np.random.default_rng(7)
    images, labels = colored_images(rng, 8)
    generator = (batch for batch in [(images, labels)])
    with pytest.raises(ValueError, match="`train_ds` is read at every epoch.*once"):
        evaluation.linear_probe(tiny_encoder(), generator, None, epochs=1)
    with pytest.raises(ValueError, match="needs labels"):
        evaluation.linear_probe(tiny_encoder(), [images], None, epochs=1)


def test_labels_of_num_classes_or_more_are_refused_before_training(monkeypatch):
    rng = np.random.default_rng(7)
    images, labels = colored_images(rng, 16)
    labels[:3] = [0, 1, 2]
    bad = labels.copy()
    bad[5] = 3
    features = rng.normal(size=(16, 4))

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the labels were checked")

    monkeypatch.setattr(evaluation.Classifier, "fit", no_training)
    message = r"label 3 with num_classes=3\. Pass num_classes=4 or more, or None"
    for train, test in [(bad, labels), (labels, bad)]:
        batches_of_test = [(images[:8], test[:8]), (images[8:], test[8:])]
        with pytest.raises(ValueError, match=message):
            evaluation.linear_probe(
                tiny_encoder(), (images, train), batches_of_test, num_classes=3
            )
        with pytest.raises(ValueError, match=message):
            evaluation.linear_probe_on_features(
                features, train, features, test, num_classes=3
            )
    for train, test in [(bad, labels), (labels, bad)]:
        with pytest.raises(ValueError, match=message):
            evaluation.fine_tune(
                tiny_encoder(), (images, train), (images, test), num_classes=3
            )
    # Without num_classes, the classes are counted from both sets, as on features.
    monkeypatch.undo()
    result = evaluation.linear_probe(
        tiny_encoder(), (images, labels), (images, bad), epochs=1
    )
    assert result.classifier.num_classes == 4


@pytest.mark.parametrize("bad_label", [-1, 1.5, "cat"])
def test_labels_that_are_not_class_indices_are_refused(bad_label):
    rng = np.random.default_rng(9)
    images, labels = colored_images(rng, 8)
    bad = labels.astype(type(bad_label))
    bad[2] = bad_label
    message = rf"must be class indices: integers from 0\. Received: dtype {bad.dtype}"
    with pytest.raises(ValueError, match="The labels of `train_ds` " + message):
        evaluation.linear_probe(tiny_encoder(), (images, bad), None, epochs=1)
    with pytest.raises(ValueError, match="`test_labels` " + message):
        evaluation.linear_probe_on_features(
            rng.normal(size=(8, 4)), labels, rng.normal(size=(8, 4)), bad
        )


def test_fine_tune_trains_the_encoder_on_a_labeled_subset():
    rng = np.random.default_rng(8)
    images, labels = colored_images(rng, 400)
    indices = evaluation.labeled_subset(labels[:360], 0.25, seed=0)
    encoder = tiny_encoder()
    kernel_before = to_numpy(encoder.get_layer("conv").kernel)

    result = evaluation.fine_tune(
        encoder,
        (images[indices], labels[indices]),
        (images[360:], labels[360:]),
        epochs=4,
        backbone_learning_rate=0.05,
        batch_size=30,
    )

    assert result.top1 > 0.95
    kernel_after = to_numpy(encoder.get_layer("conv").kernel)
    assert not np.allclose(kernel_after, kernel_before)
    # Head and encoder are trained: the optimizer holds momentum for both.
    assert len(result.classifier.optimizer.momentums) == 2 + 2


def test_a_saved_probe_loads_and_predicts_as_before(tmp_path):
    rng = np.random.default_rng(8)
    images, labels = colored_images(rng, 64)
    classifier = evaluation.linear_probe(
        tiny_encoder(), (images, labels), None, epochs=1, batch_size=32
    ).classifier

    loaded = round_trip(classifier, str(tmp_path / "probe.keras"))

    for saved, restored in zip(
        classifier.optimizer.variables, loaded.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    assert isinstance(loaded.train_transform, evaluation.CropAndFlip)
    assert isinstance(loaded.test_transform, preprocessing.Preprocessing)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0),
        classifier.predict(images, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    # It trains on: the loaded optimizer state fits the trained variables.
    loaded.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    assert loaded.optimizer.iterations.numpy() == 2 + 2
