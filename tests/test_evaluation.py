"""Features of keras_barlow.evaluation from every input form, against NumPy references.

The tests marked `core` run on both backends (`KERAS_BACKEND=jax python -m pytest
-m core tests/test_evaluation.py`); those of `tf.data` input need TensorFlow.
"""

import keras
import numpy as np
import pytest
from conftest import tiny_encoder, to_numpy, uint8_images

from keras_barlow import batches, callbacks, evaluation, image_ops, metrics
from keras_barlow.evaluation import inputs

SIZE = 16


def reference_features(encoder, images):
    """The encoder on images normalized with NumPy: what the features must be."""
    normalized = (images / 255.0 - image_ops.IMAGENET_MEAN) / image_ops.IMAGENET_STD
    return to_numpy(encoder(normalized.astype(np.float32), training=False))


def full_resolution_data(seed=0):
    """Canvases with junk outside each image, and the features they must give.

    Half the images are `SIZE x SIZE` (their true region is the encoder's input
    as it is); the others are flat colors of 8 x 12, which stay the same flat
    color at any size. The padding is noise: read, it would change the features.
    """
    rng = np.random.default_rng(seed)
    count, canvas = 8, SIZE + 8
    images = rng.integers(0, 256, size=(count, canvas, canvas, 3)).astype(np.uint8)
    sizes = np.full((count, 2), SIZE, np.int32)
    sizes[1::2] = (8, 12)
    expected = images[:, :SIZE, :SIZE].copy()
    for index in range(1, count, 2):
        color = rng.integers(0, 256, size=3)
        images[index, :8, :12] = color
        expected[index] = color
    labels = rng.integers(0, 3, count).astype(np.int32)
    return images, sizes, labels, expected


class ArrayBatches(keras.utils.PyDataset):
    """A PyDataset of (images, labels) batches."""

    def __init__(self, images, labels, batch_size):
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[part], self.labels[part]


def batch_list(images, labels, batch_size):
    return [
        (images[start : start + batch_size], labels[start : start + batch_size])
        for start in range(0, len(images), batch_size)
    ]


@pytest.mark.core
def test_collapse_metrics_stay_reachable_from_evaluation():
    # Moved to keras_barlow.metrics (tested there); the old names still work.
    assert evaluation.effective_rank is metrics.effective_rank
    assert evaluation.mean_abs_off_diagonal is metrics.mean_abs_off_diagonal


@pytest.mark.core
def test_every_public_name_of_the_first_release_is_still_there():
    for name in (
        "KNN_BLOCK_ELEMENTS", "Classifier", "CropAndFlip", "ProbeResult",
        "collect_features", "effective_rank", "extract_features", "feature_function",
        "fine_tune", "knn_accuracy", "labeled_subset", "linear_probe",
        "linear_probe_on_features", "mean_abs_off_diagonal", "resolve_preprocess",
    ):  # fmt: skip
        assert hasattr(evaluation, name), name
    for name in ("KNNMonitor", "CollapseMonitor", "CrossCorrelationImage", "NaNGuard"):
        assert hasattr(callbacks, name), name
    assert callbacks.HISTOGRAM_BINS == 50 and callable(callbacks.correlation_image)


@pytest.mark.core
@pytest.mark.parametrize(
    "form", ["arrays", "tuple of arrays", "list", "generator", "PyDataset", "Grain"]
)
def test_extract_features_takes_every_input_form(form):
    images, labels = uint8_images(10, SIZE, seed=4), np.arange(10) % 3
    encoder = tiny_encoder(SIZE)
    if form == "arrays":
        data = images
    elif form == "tuple of arrays":
        data = (images, labels)
    elif form == "list":
        data = batch_list(images, labels, 4)
    elif form == "generator":
        data = iter(batch_list(images, labels, 4))
    elif form == "PyDataset":
        data = ArrayBatches(images, labels, 4)
    else:
        grain = pytest.importorskip("grain")
        records = [(image, label) for image, label in zip(images, labels, strict=True)]
        data = grain.MapDataset.source(records).batch(4).to_iter_dataset()

    features, found_labels = evaluation.extract_features(encoder, data, batch_size=3)

    assert features.dtype == np.float32 and features.shape == (10, 8)
    np.testing.assert_allclose(
        features, reference_features(encoder, images), rtol=1e-4, atol=1e-5
    )
    if form == "arrays":
        assert found_labels is None
    else:
        np.testing.assert_array_equal(found_labels, labels)
        assert found_labels.dtype == np.int64


@pytest.mark.core
def test_extract_features_embeds_full_resolution_batches_whole():
    # Issue 22, wrong answer 2: dict batches failed in Preprocessing.call().
    images, sizes, labels, expected_images = full_resolution_data()
    encoder = tiny_encoder(SIZE)
    dict_batches = (
        batches.full_resolution_batch(
            images[start : start + 4],
            sizes[start : start + 4],
            labels[start : start + 4],
        )
        for start in (0, 4)
    )

    features, found_labels = evaluation.extract_features(encoder, dict_batches)

    np.testing.assert_allclose(
        features, reference_features(encoder, expected_images), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(found_labels, labels)
    # Arrays in the dict form, batched here, give the same.
    arrays = batches.full_resolution_batch(images, sizes, labels)
    np.testing.assert_allclose(
        evaluation.extract_features(encoder, arrays, batch_size=3)[0],
        features,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.tensorflow_only
def test_extract_features_on_tf_data_of_images_and_of_dicts():
    tf = pytest.importorskip("tensorflow")
    images, labels = uint8_images(10, SIZE, seed=4), np.arange(10) % 3
    encoder = tiny_encoder(SIZE)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    features, found_labels = evaluation.extract_features(encoder, dataset)
    np.testing.assert_allclose(
        features, reference_features(encoder, images), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(found_labels, labels)

    # Issue 22, wrong answer 2: a training dataset of large images (dict batches,
    # as keras_barlow.data makes them) failed with "TypeError ...
    # Preprocessing.call(). Expected any non-tensor type, but got a tensor".
    canvases, sizes, labels, expected_images = full_resolution_data()
    dicts = tf.data.Dataset.from_tensor_slices(
        batches.full_resolution_batch(canvases, sizes, labels)
    ).batch(3)
    features, found_labels = evaluation.extract_features(encoder, dicts)
    np.testing.assert_allclose(
        features, reference_features(encoder, expected_images), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(found_labels, labels)


@pytest.mark.core
def test_feature_function_reads_the_current_weights():
    encoder = tiny_encoder(SIZE)
    images = uint8_images(4, SIZE, seed=5)
    features_of = evaluation.feature_function(encoder)
    before = features_of(images)
    kernel = encoder.get_layer("conv").kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_allclose(
        features_of(images), reference_features(encoder, images), rtol=1e-4, atol=1e-5
    )
    assert not np.allclose(features_of(images), before)


@pytest.mark.core
def test_preprocess_auto_needs_a_fixed_input_size():
    encoder = tiny_encoder(None, filters=0)
    with pytest.raises(ValueError, match="Preprocess"):
        evaluation.extract_features(encoder, np.zeros((2, 8, 8, 3), np.uint8))


@pytest.mark.core
def test_bad_inputs_say_what_to_pass():
    encoder = tiny_encoder(SIZE)
    with pytest.raises(TypeError, match="Expected a batched tf.data.Dataset.*int"):
        evaluation.extract_features(encoder, 3)
    with pytest.raises(ValueError, match="Select the images first"):
        evaluation.extract_features(encoder, {"image": uint8_images(2)})
    with pytest.raises(ValueError, match="same number each"):
        evaluation.extract_features(encoder, (uint8_images(3), np.arange(2)))
    with pytest.raises(ValueError, match="empty"):
        evaluation.extract_features(encoder, [])
    with pytest.raises(ValueError, match="encoder must return features"):
        evaluation.extract_features(
            keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Identity()]),
            uint8_images(2),
        )


@pytest.mark.core
def test_pixels_the_library_normalizes_follow_the_pixel_rule():
    encoder = tiny_encoder(SIZE)
    scaled = uint8_images(4).astype(np.float32) / 255.0
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
        evaluation.extract_features(encoder, scaled)
    canvas = batches.full_resolution_batch(scaled, np.full((4, 2), SIZE, np.int32))
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
        evaluation.extract_features(encoder, canvas, preprocess=None)
    # Images normalized by the caller are the caller's business.
    features, _ = evaluation.extract_features(encoder, scaled, preprocess=None)
    assert features.shape[0] == 4 and np.isfinite(features).all()


@pytest.mark.core
def test_batches_per_pass_of_each_form():
    images, labels = uint8_images(10), np.arange(10)
    assert inputs.batches_per_pass((images, labels), batch_size=4) == 3
    assert inputs.batches_per_pass(batch_list(images, labels, 3)) == 4
    assert inputs.batches_per_pass(ArrayBatches(images, labels, 5)) == 2
    assert inputs.known_length(iter([images])) is None
    # Read once to count when the length is unknown.
    assert inputs.batches_per_pass(batch for batch in [images, images]) == 2
