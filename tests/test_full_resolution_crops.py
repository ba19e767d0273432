"""Crops from the full-resolution image: the boxes, the pixels, the batch format.

References built here, independent of the code under test: torchvision's
`RandomResizedCrop.get_params` re-implemented in plain Python (a loop of 10
attempts, as torchvision writes it) and PIL's `crop(box).resize(size, BICUBIC)`.
Loaders and training on such batches: test_full_resolution_training.py.

The tests marked `core` run on both backends (`KERAS_BACKEND=jax python -m
pytest -m core tests/test_full_resolution_crops.py`); this module does not import
TensorFlow.
"""

import math

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_barlow import augment, batches, distortions, image_ops

SEED = np.array([11, 5], np.int32)
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


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
            to_numpy(t)
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
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


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
        drawn = [to_numpy(t).astype(int).tolist() for t in boxes]
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
    views = to_numpy(layer.transform_images(unit, transformation))
    called = to_numpy(layer(batch, seed=SEED))
    np.testing.assert_array_equal(views, called)

    boxes = np.stack(
        [to_numpy(transformation[k]) for k in ("top", "left", "height", "width")], 1
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
    pixels = (to_numpy(resized).astype(np.float64) * std + mean) * 255.0
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
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


# ----------------------------------------------------------------------------------
# The batch format: a dict of images and their true sizes.


@pytest.mark.core
def test_first_images_still_refuses_other_dicts():

    batch = {"images": np.zeros((2, 4, 4, 3)), "image_sizes": np.zeros((2, 2))}
    assert batches.first_images({**batch, "labels": np.zeros(2)}) is batch["images"]
    with pytest.raises(ValueError, match="Received a dict with keys"):
        batches.first_images({"image": np.zeros((2, 4, 4, 3))})
    with pytest.raises(ValueError, match="Received a dict with keys"):
        batches.first_images({**batch, "extra": 1})
