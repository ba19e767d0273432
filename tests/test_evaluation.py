"""Tests of keras_barlow.evaluation against NumPy formulas and known-answer data."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import round_trip, tiny_encoder

from keras_barlow import augment, evaluation, metrics, preprocessing


def numpy_weighted_knn(
    train, train_labels, test, test_labels, k, temperature, num_classes
):
    """InstDisc's weighted kNN, one test sample at a time, in float64."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    top1 = top5 = 0
    for sample, label in zip(test, test_labels, strict=True):
        similarity = train @ sample
        neighbours = np.argsort(-similarity, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for index in neighbours:
            scores[train_labels[index]] += np.exp(similarity[index] / temperature)
        ranking = np.argsort(-scores, kind="stable")
        top1 += ranking[0] == label
        top5 += label in ranking[:5]
    return top1 / len(test), top5 / len(test)


def clustered_data(rng, centers, count, noise):
    labels = rng.integers(0, len(centers), count)
    return centers[labels] + noise * rng.normal(size=(count, centers.shape[1])), labels


@pytest.mark.parametrize(
    "k, temperature, chunk_size",
    [
        (20, 0.07, 16),  # several chunks, the last one partial
        (1, 0.1, None),
        (500, 1.0, 7),  # k above the number of training samples
        (50, 0.005, None),  # exp(1 / 0.005) overflows float32 without care
    ],
)
def test_knn_accuracy_equals_numpy_reference(k, temperature, chunk_size):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 12))
    train, train_labels = clustered_data(rng, centers, 300, noise=1.5)
    test, test_labels = clustered_data(rng, centers, 101, noise=1.5)
    train[:, 0] += 0.3  # features that are not centered, as after a ReLU
    expected = numpy_weighted_knn(
        train, train_labels, test, test_labels, min(k, 300), temperature, 8
    )
    assert 0.2 < expected[0] < 0.9  # neither trivial nor chance: errors would show
    result = evaluation.knn_accuracy(
        train,
        train_labels,
        test,
        test_labels,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    assert result["top1"] == pytest.approx(expected[0], abs=1e-12)
    assert result["top5"] == pytest.approx(expected[1], abs=1e-12)


def test_knn_accuracy_validates_arguments():
    features, labels = np.ones((4, 3)), np.arange(4)
    with pytest.raises(ValueError, match="temperature"):
        evaluation.knn_accuracy(features, labels, features, labels, temperature=0)
    with pytest.raises(ValueError, match="one label per feature"):
        evaluation.knn_accuracy(features, labels[:3], features, labels)
    with pytest.raises(ValueError, match="same dimension"):
        evaluation.knn_accuracy(features, labels, np.ones((4, 5)), labels)
    with pytest.raises(ValueError, match="below `num_classes`"):
        evaluation.knn_accuracy(features, labels, features, labels, num_classes=2)


def test_collapse_metrics_stay_reachable_from_evaluation():
    # Moved to keras_barlow.metrics (tested there); the old names still work.
    assert evaluation.effective_rank is metrics.effective_rank
    assert evaluation.mean_abs_off_diagonal is metrics.mean_abs_off_diagonal


def test_every_public_name_of_the_first_release_is_still_there():
    for name in (
        "KNN_BLOCK_ELEMENTS", "Classifier", "CropAndFlip", "ProbeResult",
        "collect_features", "effective_rank", "extract_features", "feature_function",
        "fine_tune", "knn_accuracy", "labeled_subset", "linear_probe",
        "linear_probe_on_features", "mean_abs_off_diagonal", "resolve_preprocess",
    ):  # fmt: skip
        assert hasattr(evaluation, name), name


def test_extract_features_applies_the_encoder_to_normalized_images():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(10, 16, 16, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, 10)
    encoder = tiny_encoder()
    normalized = (images / 255.0 - augment.IMAGENET_MEAN) / augment.IMAGENET_STD
    expected = encoder(normalized.astype(np.float32)).numpy()

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    features, found_labels = evaluation.extract_features(encoder, dataset)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(found_labels, labels)

    features, no_labels = evaluation.extract_features(
        encoder, normalized, None, batch_size=3
    )
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert no_labels is None


def separable_features(rng, count, num_classes=4, dim=16, margin=0.5):
    """Features labelled by a random linear map, keeping points off its boundaries."""
    weights = rng.normal(size=(dim, num_classes))
    features = rng.normal(size=(4 * count, dim))
    logits = features @ weights
    ordered = np.sort(logits, axis=1)
    keep = (ordered[:, -1] - ordered[:, -2]) > margin
    return features[keep][:count], logits[keep][:count].argmax(axis=1)


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


def colored_images(rng, count, size=16):
    """Noisy images whose label is the dominant color channel."""
    labels = rng.integers(0, 3, count)
    images = rng.uniform(0, 90, size=(count, size, size, 3))
    images[np.arange(count), :, :, labels] += 150
    return images.astype(np.uint8), labels


def test_linear_probe_on_a_frozen_encoder_of_tiny_images():
    rng = np.random.default_rng(6)
    images, labels = colored_images(rng, 160)
    train = tf.data.Dataset.from_tensor_slices((images[:128], labels[:128])).batch(32)
    test = tf.data.Dataset.from_tensor_slices((images[128:], labels[128:])).batch(32)
    encoder = tiny_encoder()
    weights_before = [w.copy() for w in encoder.get_weights()]

    result = evaluation.linear_probe(encoder, train, test, epochs=8)

    assert result.top1 > 0.95
    for before, after in zip(weights_before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # frozen


def test_linear_probe_on_ready_inputs_trains_and_tests_on_the_same_inputs():
    rng = np.random.default_rng(7)
    images, labels = colored_images(rng, 64)
    ready = preprocessing.Preprocessing(16)(
        images
    ).numpy()  # normalized: preprocess=None
    data = tf.data.Dataset.from_tensor_slices((ready, labels)).batch(32)
    result = evaluation.linear_probe(
        tiny_encoder(), data, data, epochs=1, preprocess=None
    )
    classifier = result.classifier
    np.testing.assert_array_equal(
        classifier.train_transform(ready), classifier.test_transform(ready)
    )
    np.testing.assert_array_equal(classifier.test_transform(ready), ready)


def test_classifier_step_is_sgd_with_a_backbone_learning_rate():
    """One fine-tuning step against the rule w -= lr_group * (grad + wd * w)."""
    rng = np.random.default_rng(7)
    images = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    encoder = tiny_encoder()
    classifier = evaluation.Classifier(
        3, encoder, backbone_ratio=0.1, weight_decay=0.01
    )
    classifier(images)
    variables = classifier.head.trainable_variables + encoder.trainable_variables
    before = [v.numpy() for v in variables]
    with tf.GradientTape() as tape:
        logits = classifier.head(encoder(images))
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        )
        loss += 0.005 * sum(tf.reduce_sum(tf.square(v)) for v in variables)
    gradients = tape.gradient(loss, variables)

    classifier.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    classifier.fit(images, labels, batch_size=8, epochs=1, verbose=0)

    head_count = len(classifier.head.trainable_variables)
    steps = zip(variables, before, gradients, strict=True)
    for index, (variable, old, gradient) in enumerate(steps):
        learning_rate = 0.5 if index < head_count else 0.05
        np.testing.assert_allclose(
            variable.numpy(),
            old - learning_rate * gradient.numpy(),
            rtol=1e-4,
            atol=1e-6,
        )


def test_fine_tune_trains_the_encoder_on_a_labeled_subset():
    rng = np.random.default_rng(8)
    images, labels = colored_images(rng, 400)
    indices = evaluation.labeled_subset(labels[:360], 0.25, seed=0)
    train = (
        tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
        .shuffle(90, seed=0)
        .batch(30)
    )
    test = tf.data.Dataset.from_tensor_slices((images[360:], labels[360:])).batch(40)
    encoder = tiny_encoder()
    kernel_before = encoder.get_layer("conv").kernel.numpy()

    result = evaluation.fine_tune(
        encoder, train, test, epochs=8, backbone_learning_rate=0.05
    )

    assert result.top1 > 0.95
    assert not np.allclose(encoder.get_layer("conv").kernel.numpy(), kernel_before)


def test_preprocess_auto_needs_a_fixed_input_size():
    encoder = tiny_encoder(None, filters=0)
    with pytest.raises(ValueError, match="Preprocess"):
        evaluation.extract_features(encoder, np.zeros((2, 8, 8, 3), np.uint8))


def test_a_saved_probe_loads_and_predicts_as_before(tmp_path):
    rng = np.random.default_rng(8)
    images, labels = colored_images(rng, 64)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    classifier = evaluation.linear_probe(
        tiny_encoder(), data, None, epochs=1
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


def test_saving_a_classifier_with_a_plain_function_transform_says_what_to_do(
    tmp_path,
):
    classifier = evaluation.Classifier(3, test_transform=lambda x: x / 255.0)
    classifier(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="test transform .* make its transforms Keras"):
        classifier.save(str(tmp_path / "probe.keras"))
