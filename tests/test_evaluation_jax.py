"""The evaluation workflow on Keras' JAX backend, without TensorFlow.

Meant for the environment without TensorFlow (`KERAS_BACKEND=jax python -m pytest
tests/test_evaluation_jax.py`); it also runs on JAX where TensorFlow is installed.
The import test hides TensorFlow in a fresh interpreter, so it proves the
TensorFlow-free path in either environment.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import round_trip, tiny_encoder, to_numpy
from test_knn import numpy_ranked_classes

import keras_barlow
from keras_barlow import batches, callbacks, evaluation, image_ops

pytestmark = [pytest.mark.core, pytest.mark.jax_only]

SIZE = 16


def colored_images(count, seed=0):
    """Noisy images whose label is the dominant color channel."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.uniform(0, 90, size=(count, SIZE, SIZE, 3))
    images[np.arange(count), :, :, labels] += 150
    return images.astype(np.uint8), labels


def dict_batches(images, labels, batch_size=16):
    """Full-resolution batches as the loaders make them: images on noisy canvases."""
    rng = np.random.default_rng(1)
    canvases = rng.integers(0, 256, size=(len(images), SIZE + 8, SIZE + 8, 3))
    canvases = canvases.astype(np.uint8)
    canvases[:, :SIZE, :SIZE] = images
    sizes = np.full((len(images), 2), SIZE, np.int32)
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        yield batches.full_resolution_batch(canvases[part], sizes[part], labels[part])


def numpy_features(encoder, images):
    normalized = (images / 255.0 - image_ops.IMAGENET_MEAN) / image_ops.IMAGENET_STD
    return to_numpy(encoder(normalized.astype(np.float32), training=False))


def test_evaluation_and_monitors_import_and_refuse_tensorboard_without_tensorflow(
    tmp_path,
):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now fails
        import numpy as np
        import keras_barlow
        from keras_barlow import callbacks, evaluation
        assert keras_barlow.KNNMonitor is callbacks.KNNMonitor
        images = np.zeros((4, 8, 8, 3), np.uint8)
        for make in (
            lambda: callbacks.KNNMonitor((images, np.arange(4)), (images, np.arange(4)),
                                         log_dir={str(tmp_path)!r}),
            lambda: callbacks.CrossCorrelationImage({str(tmp_path)!r}, images),
        ):
            try:
                make()
            except ImportError as error:
                print(error)
        print("tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "False"  # TensorFlow was never imported
    assert len(lines) == 3
    for message in lines[:2]:
        assert "needs TensorFlow" in message and "keras-barlow[cpu]" in message


def test_the_evaluation_workflow_without_tensorflow(tmp_path):
    images, labels = colored_images(96)
    encoder = tiny_encoder(SIZE)

    # Features of full-resolution batches from a generator (issue 22).
    train_features, train_labels = evaluation.extract_features(
        encoder, dict_batches(images[:64], labels[:64])
    )
    np.testing.assert_allclose(
        train_features, numpy_features(encoder, images[:64]), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(train_labels, labels[:64])
    test_features, test_labels = evaluation.extract_features(
        encoder, (images[64:], labels[64:]), batch_size=8
    )

    # kNN against the NumPy reference.
    ranked = numpy_ranked_classes(
        train_features, train_labels, test_features, 20, 0.1, 3
    )
    accuracy = evaluation.knn_accuracy(
        train_features, train_labels, test_features, test_labels, k=20
    )
    assert accuracy["top1"] == np.mean(ranked[:, 0] == test_labels)

    # The linear probe on dict batches, saved and loaded.
    probe = evaluation.linear_probe(
        encoder,
        list(dict_batches(images[:64], labels[:64])),
        (images[64:], labels[64:]),
        epochs=4,
    )
    assert probe.top1 > 0.9
    loaded = round_trip(probe.classifier, str(tmp_path / "probe.keras"))
    np.testing.assert_allclose(
        loaded.predict(images[64:], verbose=0),
        probe.classifier.predict(images[64:], verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )

    # Fine-tuning on a class-balanced subset.
    subset = evaluation.labeled_subset(labels[:64], 0.5, seed=0)
    assert len(subset) == 32
    tuned = evaluation.fine_tune(
        encoder,
        (images[subset], labels[subset]),
        (images[64:], labels[64:]),
        epochs=3,
        batch_size=16,
    )
    assert tuned.top1 is not None and tuned.classifier.optimizer.iterations == 6


def test_monitors_in_a_short_fit_without_tensorflow():
    images, labels = colored_images(48, seed=2)
    # Without augmenter (ready views), which is quick to compile: the monitors
    # do not depend on it.
    model = keras_barlow.BarlowTwins(
        tiny_encoder(SIZE), projector_dims=(16, 16), augmenter=None, seed=1
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    unit = images.astype(np.float32) / 255.0
    views = (unit, np.flip(unit, axis=2).copy())
    knn = callbacks.KNNMonitor(
        list(dict_batches(images[:32], labels[:32])), (images[32:], labels[32:]), k=5
    )
    fixed_views = (views[0][:16], views[1][:16])
    monitors = [knn, callbacks.CollapseMonitor(fixed_views), callbacks.NaNGuard()]

    history = model.fit(views, batch_size=16, epochs=1, verbose=0, callbacks=monitors)

    encoder = model.encoder
    expected = evaluation.knn_accuracy(
        numpy_features(encoder, images[:32]),
        labels[:32],
        numpy_features(encoder, images[32:]),
        labels[32:],
        k=5,
    )
    assert history.history["knn_top1"] == [pytest.approx(expected["top1"])]
    assert 1.0 <= history.history["collapse_effective_rank"][0] <= 16.0
