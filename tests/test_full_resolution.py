"""Crops from the full-resolution image: boxes, pixels, loaders and the model path.

References built here, independent of the code under test: torchvision's
`RandomResizedCrop.get_params` re-implemented in plain Python (a loop of 10
attempts, as torchvision writes it), PIL's `crop(box).resize(size, BICUBIC)`, and
PNG files written from NumPy arrays.

The tests marked `core` run on both backends
(`KERAS_BACKEND=jax python -m pytest -m core tests/test_full_resolution.py`); this
module imports TensorFlow only inside the TensorFlow-only tests.
"""

import math

import keras
import numpy as np
import pytest
from conftest import tiny_encoder

from keras_barlow import augment, batches, distortions, image_ops

SEED = np.array([11, 5], np.int32)
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def as_numpy(x):
    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------------------------
# The boxes: drawn on each sample's own size, as torchvision draws them.


def torchvision_box(rng, height, width, scale=SCALE, ratio=RATIO):
    """`RandomResizedCrop.get_params` of torchvision 0.2x, line by line, in NumPy."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def box_statistics(boxes, height, width):
    """Per-box values whose means are compared: area, ratio, position, fallback."""
    top, left, box_height, box_width = (
        boxes[:, k].astype(np.float64) for k in range(4)
    )
    _, _, fallback_height, fallback_width = torchvision_box(_NeverFits(), height, width)
    return {
        "relative area": box_height * box_width / (height * width),
        "log aspect ratio": np.log(box_width / box_height),
        "relative center y": (top + box_height / 2) / height,
        "relative center x": (left + box_width / 2) / width,
        "full height": (box_height == height).astype(np.float64),
        "centered fallback box": (
            (box_height == fallback_height)
            & (box_width == fallback_width)
            & (top == (height - fallback_height) // 2)
            & (left == (width - fallback_width) // 2)
        ).astype(np.float64),
    }


class _NeverFits:
    """An rng that makes every attempt fail: the fallback box of a size."""

    def uniform(self, low, high):
        return high * 1e6 if high > 0.5 else high

    def integers(self, low, high):  # pragma: no cover - never reached
        raise AssertionError


SIZES = [(480, 320), (320, 480), (1000, 200), (64, 64)]
DRAWS = 2000


@pytest.mark.core
def test_boxes_on_each_images_true_size_match_torchvision_within_three_sigma():
    # One batch holding the four sizes interleaved: each sample has its own size.
    sizes = np.tile(np.array(SIZES, np.float32), (DRAWS, 1))
    boxes = np.stack(
        [
            as_numpy(t)
            for t in image_ops.sample_crop_boxes(
                SEED, len(sizes), sizes[:, 0], sizes[:, 1], SCALE, RATIO
            )
        ],
        axis=1,
    )
    rng = np.random.default_rng(2024)
    report = []
    for index, (height, width) in enumerate(SIZES):
        ours = boxes[index :: len(SIZES)]
        assert len(ours) == DRAWS
        top, left, box_height, box_width = ours.T
        assert np.all((top >= 0) & (left >= 0) & (box_height >= 1) & (box_width >= 1))
        assert np.all((top + box_height <= height) & (left + box_width <= width))
        reference = np.array(
            [torchvision_box(rng, height, width) for _ in range(DRAWS)], np.float64
        )
        ours_stats = box_statistics(ours, height, width)
        reference_stats = box_statistics(reference, height, width)
        for name, values in ours_stats.items():
            expected = reference_stats[name]
            sigma = math.sqrt(values.var() / DRAWS + expected.var() / DRAWS)
            difference = abs(values.mean() - expected.mean())
            report.append(
                f"{height}x{width} {name}: {values.mean():.4f} vs "
                f"{expected.mean():.4f} (sigma {sigma:.4f})"
            )
            if sigma == 0.0:
                assert difference == 0.0, report[-1]
            else:
                assert difference <= 3.0 * sigma, report[-1]
    # The fallback really happens for the wide image (about 1 draw in 10).
    wide = box_statistics(boxes[2 :: len(SIZES)], 1000, 200)
    assert wide["centered fallback box"].mean() > 0.03, report


@pytest.mark.core
def test_per_sample_sizes_draw_what_a_static_size_draws():
    # The same numbers are drawn whether the size is static or per sample.
    for height, width in SIZES:
        static = image_ops.sample_crop_boxes(SEED, 64, height, width, SCALE, RATIO)
        per_sample = image_ops.sample_crop_boxes(
            SEED,
            64,
            np.full(64, height, np.float32),
            np.full(64, width, np.int32),
            SCALE,
            RATIO,
        )
        for a, b in zip(static, per_sample, strict=True):
            np.testing.assert_array_equal(as_numpy(a), as_numpy(b))


# Boxes that `sample_crop_boxes` drew on TensorFlow before per-sample sizes existed
# (commit 2f203fe), 6 samples each: (seed, (height, width)) -> top, left, h, w.
TENSORFLOW_DRAWS_BEFORE = {
    ((3, 7), (64, 48)): [
        [30, 3, 4, 17, 28, 7],
        [19, 0, 1, 7, 8, 10],
        [20, 57, 44, 28, 24, 42],
        [18, 48, 43, 32, 21, 33],
    ],
    ((0, 1), (10, 100)): [[0] * 6, [43] * 6, [10] * 6, [13] * 6],  # the fallback
}


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("key", list(TENSORFLOW_DRAWS_BEFORE))
def test_tensorflow_draws_are_unchanged_for_a_given_seed(key):
    seed, (height, width) = key
    seed = np.array(seed, np.int32)
    per_sample = (np.full(6, height, np.float32), np.full(6, width, np.float32))
    for size in ((height, width), per_sample):
        boxes = image_ops.sample_crop_boxes(seed, 6, *size, SCALE, RATIO)
        drawn = [as_numpy(t).astype(int).tolist() for t in boxes]
        assert drawn == TENSORFLOW_DRAWS_BEFORE[key]


# ----------------------------------------------------------------------------------
# The pixels: resampled from the original inside its true region, never the padding.


def textured_image(height, width, seed):
    """Smooth enough for PIL's 8-bit intermediate to agree within 2/255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width, 3))
    for channel in range(3):
        for _ in range(3):
            fy, fx = rng.uniform(0.02, 0.12, 2)
            image[..., channel] += np.sin(2 * np.pi * (fy * y + fx * x + rng.uniform()))
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(255 * image).astype(np.uint8)


@pytest.mark.core
@pytest.mark.parametrize("size", [24, 72])  # shrinking (antialiased) and enlarging
def test_view_equals_pil_crop_resize_of_the_original_on_a_padded_canvas(size):
    pil = pytest.importorskip("PIL.Image")
    canvas_side = 100
    shapes = [(60, 40), (40, 60), (100, 20), (16, 16)] * 3
    originals = [textured_image(h, w, seed) for seed, (h, w) in enumerate(shapes)]
    # Padding of bright noise: any weight on it would show.
    rng = np.random.default_rng(0)
    canvas = rng.integers(200, 256, (len(shapes), canvas_side, canvas_side, 3))
    canvas = canvas.astype(np.uint8)
    for index, image in enumerate(originals):
        canvas[index, : image.shape[0], : image.shape[1]] = image
    image_sizes = np.array(shapes, np.int32)

    layer = distortions.RandomResizedCrop(size)
    unit = image_ops.to_unit_range(canvas)
    batch = batches.full_resolution_batch(unit, image_sizes)
    transformation = layer.get_random_transformation(
        batch, keras.ops.convert_to_tensor(SEED)
    )
    views = as_numpy(layer.transform_images(unit, transformation))
    called = as_numpy(layer(batch, seed=SEED))
    np.testing.assert_array_equal(views, called)

    boxes = np.stack(
        [as_numpy(transformation[k]) for k in ("top", "left", "height", "width")], 1
    ).astype(int)
    errors = []
    for view, image, (top, left, height, width) in zip(
        views, originals, boxes, strict=True
    ):
        assert top + height <= image.shape[0] and left + width <= image.shape[1]
        box = (left, top, left + width, top + height)
        reference = np.asarray(
            pil.fromarray(image).crop(box).resize((size, size), pil.BICUBIC)
        )
        errors.append(np.abs(view * 255.0 - reference).max())
    assert max(errors) <= 2.0, errors


@pytest.mark.core
def test_model_embeds_a_dict_batch_as_its_true_regions_resized():
    # What Keras builds the model on: each true region resized, as PIL resizes it.
    pil = pytest.importorskip("PIL.Image")
    shapes = [(60, 40), (40, 60), (100, 20), (16, 16)]
    canvas = np.full((len(shapes), 100, 100, 3), 255, np.uint8)
    originals = [textured_image(h, w, seed) for seed, (h, w) in enumerate(shapes)]
    for index, image in enumerate(originals):
        canvas[index, : image.shape[0], : image.shape[1]] = image
    resized = image_ops.resized_true_regions(canvas, np.array(shapes), (24, 24))
    mean = np.asarray(image_ops.IMAGENET_MEAN)
    std = np.asarray(image_ops.IMAGENET_STD)
    pixels = (as_numpy(resized).astype(np.float64) * std + mean) * 255.0
    for ours, image in zip(pixels, originals, strict=True):
        reference = np.asarray(pil.fromarray(image).resize((24, 24), pil.BICUBIC))
        assert np.abs(ours - reference).max() <= 2.0


@pytest.mark.core
def test_without_image_sizes_the_augmentation_is_unchanged():
    # A canvas filled by its image: image_sizes = the canvas gives today's views.
    images = np.random.default_rng(1).integers(0, 256, (6, 40, 40, 3), np.uint8)
    layer = augment.BarlowTwinsAugment(24, "imagenet", seed=0)
    today = layer(images, seed=SEED)
    sizes = np.full((6, 2), 40, np.int32)
    with_sizes = layer(batches.full_resolution_batch(images, sizes), seed=SEED)
    for a, b in zip(today, with_sizes, strict=True):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))


# ----------------------------------------------------------------------------------
# Loaders (TensorFlow only): dict batches of canvases with the true sizes.


def _write_png(path, array):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(array).numpy())


@pytest.fixture
def large_folder(tmp_path):
    """PNGs of several sizes, the first (by sorted path) larger than 32 px."""
    shapes = {"a/0.png": (60, 40), "a/1.png": (40, 60), "b/2.png": (100, 20)}
    shapes.update({"b/3.png": (16, 16)})
    rng = np.random.default_rng(7)
    arrays = {}
    for name, (height, width) in shapes.items():
        arrays[name] = rng.integers(0, 256, (height, width, 3), np.uint8)
        _write_png(tmp_path / "images" / name, arrays[name])
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
        _write_png(small / "c" / f"{index}.png", rng.integers(0, 256, (8, 8, 3), "u1"))
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
    pixels = as_numpy(views).astype(np.float64) * std + mean
    return float(np.mean(pixels.mean(-1).std(axis=(1, 2))) / 0.5)


@pytest.mark.tensorflow_only
def test_small_crops_of_a_fine_checkerboard_keep_their_contrast(tmp_path):
    from keras_barlow import data

    square = 4
    rows, cols = np.indices((448, 448)) // square
    board = (((rows + cols) % 2) * 255).astype(np.uint8)
    board = np.repeat(board[..., None], 3, axis=-1)
    for index in range(4):
        _write_png(tmp_path / "boards" / f"{index}.png", board)
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
        pixels = as_numpy(view).astype(np.float64) * std + mean
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
    assert int(as_numpy(model.train_step_count.value)) == 1


@pytest.mark.core
def test_first_images_still_refuses_other_dicts():

    batch = {"images": np.zeros((2, 4, 4, 3)), "image_sizes": np.zeros((2, 2))}
    assert batches.first_images({**batch, "labels": np.zeros(2)}) is batch["images"]
    with pytest.raises(ValueError, match="Received a dict with keys"):
        batches.first_images({"image": np.zeros((2, 4, 4, 3))})
    with pytest.raises(ValueError, match="Received a dict with keys"):
        batches.first_images({**batch, "extra": 1})
