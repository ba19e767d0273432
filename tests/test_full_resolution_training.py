"""Training on full-resolution batches: the loaders, the model's views, a fit step.

The loaders give dict batches of canvases with each image's true size; the model
crops its views inside the true regions only and fits on such batches.
References built here: PNG files written from NumPy arrays, TensorFlow's
antialiased resize, and a fine checkerboard whose contrast a copy resized first
loses. The boxes and pixels of the crops: test_full_resolution_crops.py.

The tests marked `core` run on both backends (`KERAS_BACKEND=jax python -m
pytest -m core tests/test_full_resolution_training.py`); this module imports
TensorFlow only inside the TensorFlow-only tests.
"""

import keras
import numpy as np
import pytest
from _data_helpers import encode_image, write_file
from conftest import tiny_encoder, to_numpy

from keras_barlow import augment, image_ops

SEED = np.array([11, 5], np.int32)


# ----------------------------------------------------------------------------------
# Loaders (TensorFlow only): dict batches of canvases with the true sizes.


@pytest.fixture
def large_folder(tmp_path):
    """PNGs of several sizes, the first (by sorted path) larger than 32 px."""
    shapes = {"a/0.png": (60, 40), "a/1.png": (40, 60), "b/2.png": (100, 20)}
    shapes.update({"b/3.png": (16, 16)})
    rng = np.random.default_rng(7)
    arrays = {}
    for name, (height, width) in shapes.items():
        arrays[name] = rng.integers(0, 256, (height, width, 3), np.uint8)
        write_file(tmp_path / "images" / name, encode_image(arrays[name]))
    return tmp_path / "images", arrays


def _by_size(loaded):
    images = np.concatenate([batch["images"] for batch in loaded])
    sizes = np.concatenate([batch["image_sizes"] for batch in loaded])
    return images, sizes


@pytest.mark.tensorflow_only
def test_folder_training_batches_are_canvases_with_true_sizes(large_folder):
    from keras_barlow import data

    root, arrays = large_folder
    dataset, info = data.from_image_folder(
        root, image_size=32, batch_size=2, max_side=64, with_info=True
    )
    loaded = list(dataset.as_numpy_iterator())
    assert info.full_resolution and info.image_size == (64, 64)
    assert set(loaded[0]) == {"images", "image_sizes", "labels"}
    assert loaded[0]["images"].dtype == np.uint8
    assert loaded[0]["image_sizes"].dtype == np.int32
    images, sizes = _by_size(loaded)
    assert images.shape == (4, 64, 64, 3)
    expected_sizes = {(60, 40), (40, 60), (64, 13), (16, 16)}  # 100x20 is shrunk
    assert {tuple(size) for size in sizes} == expected_sizes
    for image, (height, width) in zip(images, sizes, strict=True):
        assert not image[height:].any() and not image[:, width:].any()  # zeros
        region = image[:height, :width]
        if (height, width) == (64, 13):
            import tensorflow as tf

            shrunk = tf.image.resize(
                arrays["b/2.png"], (64, 13), "bicubic", antialias=True
            )
            error = np.abs(region - np.clip(np.round(shrunk.numpy()), 0, 255))
            assert error.max() <= 1
        else:
            matches = [
                name
                for name, array in arrays.items()
                if array.shape[:2] == (height, width)
            ]
            np.testing.assert_array_equal(region, arrays[matches[0]])

    labelled = data.from_image_folder(root, labels=None, image_size=32, batch_size=2)
    assert set(labelled.element_spec) == {"images", "image_sizes"}


@pytest.mark.tensorflow_only
def test_small_images_and_evaluation_data_keep_todays_path(large_folder, tmp_path):
    from keras_barlow import data

    root, _ = large_folder
    # Images no larger than image_size: today's tuples, identical batches.
    small = tmp_path / "small"
    rng = np.random.default_rng(3)
    for index in range(4):
        write_file(
            small / "c" / f"{index}.png",
            encode_image(rng.integers(0, 256, (8, 8, 3), "u1")),
        )
    for image_size in (8, 16):
        auto = data.from_image_folder(small, image_size=image_size, batch_size=2)
        forced = data.from_image_folder(
            small, image_size=image_size, batch_size=2, full_resolution=False
        )
        assert auto.element_spec == forced.element_spec
        assert auto.element_spec[0].shape == (2, image_size, image_size, 3)
        for a, b in zip(auto, forced, strict=True):
            np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())

    # Evaluation data of large images: resized to image_size, as today.
    evaluation, info = data.from_image_folder(
        root, image_size=32, batch_size=2, training=False, with_info=True
    )
    forced = data.from_image_folder(
        root, image_size=32, batch_size=2, training=False, full_resolution=False
    )
    assert not info.full_resolution and info.image_size == (32, 32)
    for a, b in zip(evaluation, forced, strict=True):
        assert a[0].shape == (2, 32, 32, 3)
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    with pytest.raises(ValueError, match="full_resolution=True, training=False"):
        data.from_image_folder(
            root, image_size=32, training=False, full_resolution=True
        )
    with pytest.raises(ValueError, match="from_numpy does not take full_resolution"):
        data.from_numpy(np.zeros((4, 8, 8, 3), np.uint8), full_resolution=True)


@pytest.mark.tensorflow_only
def test_tfds_training_data_come_at_full_resolution(tfds):
    from keras_barlow import data

    with tfds.testing.mock_data(num_examples=6):
        dataset, info = data.from_tfds(
            "mnist", "test", image_size=8, batch_size=3, max_side=32, with_info=True
        )
        loaded = list(dataset.as_numpy_iterator())
        evaluation = data.from_tfds(
            "mnist", "test", image_size=8, batch_size=3, training=False
        )
        assert evaluation.element_spec[0].shape == (None, 8, 8, 3)
        # Images of varying sizes (the feature's shape is (None, None, 3)): the
        # first image decides, each keeps its own size.
        flowers, flowers_info = data.from_tfds(
            "tf_flowers",
            "train",
            image_size=16,
            batch_size=3,
            max_side=64,
            with_info=True,
        )
        flower_images, flower_sizes = _by_size(list(flowers.as_numpy_iterator()))
    # The canvas is the images' fixed size (28), not max_side=32.
    assert info.full_resolution and info.image_size == (28, 28)
    images, sizes = _by_size(loaded)
    assert images.shape == (6, 28, 28, 3) and np.all(sizes == 28)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray made RGB

    assert flowers_info.full_resolution and flower_images.shape == (6, 64, 64, 3)
    assert len({tuple(size) for size in flower_sizes}) > 1
    assert np.all((flower_sizes >= 1) & (flower_sizes <= 64))
    for image, (height, width) in zip(flower_images, flower_sizes, strict=True):
        assert not image[height:].any() and not image[:, width:].any()


# ----------------------------------------------------------------------------------
# Through the model: folder -> loader -> BarlowTwins.make_views, and a fit step.


def _tiny_model(size, **augment_options):
    import keras_barlow

    encoder = tiny_encoder(size, 4, strides=4, relu=False)
    augmenter = augment.BarlowTwinsAugment(size, "imagenet", **augment_options)
    return keras_barlow.BarlowTwins(
        encoder, projector_dims=(16, 16), augmenter=augmenter, seed=1
    )


def _gray_contrast(views):
    """Std of the (unnormalized) gray pixels, relative to a 0/1 checkerboard's 0.5."""
    mean = np.asarray(image_ops.IMAGENET_MEAN)
    std = np.asarray(image_ops.IMAGENET_STD)
    pixels = to_numpy(views).astype(np.float64) * std + mean
    return float(np.mean(pixels.mean(-1).std(axis=(1, 2))) / 0.5)


@pytest.mark.tensorflow_only
def test_small_crops_of_a_fine_checkerboard_keep_their_contrast(tmp_path):
    from keras_barlow import data

    square = 4
    rows, cols = np.indices((448, 448)) // square
    board = (((rows + cols) % 2) * 255).astype(np.uint8)
    board = np.repeat(board[..., None], 3, axis=-1)
    for index in range(4):
        write_file(tmp_path / "boards" / f"{index}.png", encode_image(board))
    model = _tiny_model(
        112,
        crop_scale=(0.08, 0.25),  # every view's crop has scale <= 0.25
        jitter_probability=0.0,
        grayscale_probability=0.0,
        blur_probability=(0.0, 0.0),
        solarize_probability=(0.0, 0.0),
    )
    seed = keras.ops.convert_to_tensor(SEED)
    contrast = {}
    for name, full_resolution in (("full resolution", None), ("resized first", False)):
        dataset = data.from_image_folder(
            tmp_path / "boards",
            labels=None,
            image_size=112,
            batch_size=4,
            full_resolution=full_resolution,
        )
        batch = next(iter(dataset))
        assert isinstance(batch, dict) == (full_resolution is None)
        views = model.make_views(batch, seed)
        contrast[name] = np.mean([_gray_contrast(view) for view in views])
    # Measured: about 0.72 at full resolution, 0.12 resized first.
    print("checkerboard contrast kept:", contrast)
    assert contrast["full resolution"] > 0.5, contrast
    assert contrast["resized first"] < 0.2, contrast


@pytest.mark.core
def test_make_views_of_a_dict_batch_crop_inside_the_true_regions_only():
    # Gray images on a red canvas: a view that saw any padding would turn red.
    shapes = [(20, 30), (30, 20), (64, 8), (10, 10)] * 4
    canvas = np.zeros((len(shapes), 64, 64, 3), np.uint8)
    canvas[..., 0] = 255
    rng = np.random.default_rng(5)
    for index, (height, width) in enumerate(shapes):
        gray = rng.integers(0, 256, (height, width, 1), np.uint8)
        canvas[index, :height, :width] = gray
    batch = {
        "images": canvas,
        "image_sizes": np.array(shapes, np.int32),
        "labels": np.zeros(len(shapes), np.int32),  # ignored
    }
    model = _tiny_model(
        16,
        jitter_probability=0.0,
        grayscale_probability=0.0,
        blur_probability=(0.0, 0.0),
        solarize_probability=(0.0, 0.0),
    )
    mean = np.asarray(image_ops.IMAGENET_MEAN)
    std = np.asarray(image_ops.IMAGENET_STD)
    for view in model.make_views(batch, keras.ops.convert_to_tensor(SEED)):
        pixels = to_numpy(view).astype(np.float64) * std + mean
        redness = np.abs(pixels[..., 0] - pixels[..., 1]).max()
        assert redness < 1e-4, redness


@pytest.mark.tensorflow_only
def test_mirrored_fit_step_on_full_resolution_batches(large_folder, mirrored_strategy):
    from keras_barlow import data

    root, _ = large_folder
    dataset = data.from_image_folder(
        root, labels=None, image_size=32, batch_size=4, max_side=64
    )
    with mirrored_strategy.scope():
        model = _tiny_model(32)
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(to_numpy(model.train_step_count.value)) == 1
