"""The pure functions of `keras_barlow.image_ops`, against NumPy, PIL and colorsys."""

import colorsys

import numpy as np
import pytest
from conftest import to_numpy, unit_images

from keras_barlow import image_ops

pytestmark = pytest.mark.core

# The same seed draws other numbers on each backend: the tests below read what was
# drawn, never pin drawn values.
SEED = np.array([3, 7], np.int32)
# Written out from torchvision's ImageNet normalization, not read from image_ops.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def test_solarize_inverts_pixels_at_and_above_the_threshold():
    below = to_numpy(image_ops.solarize(np.array([0.49, 0.5, 0.51], np.float32)))
    np.testing.assert_allclose(below, [0.49, 0.5, 0.49], atol=1e-6)


def test_hue_matches_colorsys():
    images = unit_images(2, size=3, seed=2)
    delta = np.array([0.1, -0.07], np.float32)
    got = to_numpy(image_ops.adjust_hue(images, delta))
    for b in range(2):
        pixels = zip(images[b].reshape(-1, 3), got[b].reshape(-1, 3), strict=True)
        for pixel, result in pixels:
            h, s, v = colorsys.rgb_to_hsv(*pixel)
            np.testing.assert_allclose(
                result, colorsys.hsv_to_rgb((h + delta[b]) % 1.0, s, v), atol=1e-5
            )


def test_resized_crop_matches_pil_bicubic():
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.uniform(size=(40, 48, 3)), 0), 1)
    image = np.round(255 * smooth / smooth.max()).astype(np.uint8)
    top, left, height, width = 5.0, 7.0, 30.0, 36.0
    for size in (12, 56):  # downscaling (antialiased) and upscaling
        rows = image_ops.resize_matrices(
            40, size, np.array([top], np.float32), np.array([height], np.float32)
        )
        cols = image_ops.resize_matrices(
            48, size, np.array([left], np.float32), np.array([width], np.float32)
        )
        ours = to_numpy(
            image_ops.apply_separable(image[None].astype(np.float32), rows, cols)
        )[0]
        box = (int(left), int(top), int(left + width), int(top + height))
        reference = np.asarray(
            pil.fromarray(image).crop(box).resize((size, size), pil.BICUBIC)
        )
        assert np.abs(np.clip(ours, 0, 255) - reference).max() <= 1.5, size


def test_crop_boxes_follow_scale_and_ratio():
    top, left, height, width = [
        to_numpy(t)
        for t in image_ops.sample_crop_boxes(
            SEED, 4000, 64, 48, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
        )
    ]
    assert np.all((top >= 0) & (left >= 0) & (height >= 1) & (width >= 1))
    assert np.all((top + height <= 64) & (left + width <= 48))
    area = height * width / (64 * 48)
    assert area.min() >= 0.06 and area.max() <= 1.0
    ratio = width / height
    assert np.all((ratio > 3 / 4 * 0.8) & (ratio < 4 / 3 * 1.25))  # rounding to pixels
    assert np.all(top == np.floor(top)) and np.all(height == np.floor(height))
    assert len(np.unique(np.stack([top, left, height, width], 1), axis=0)) > 3000


def test_crop_falls_back_to_a_centered_box_when_nothing_fits():
    # A very wide image: a box with ratio <= 4/3 and area >= 90% cannot fit.
    top, left, height, width = [
        float(t[0])
        for t in image_ops.sample_crop_boxes(
            SEED, 1, 10, 100, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)
        )
    ]
    assert (height, width) == (10.0, 13.0)
    assert (top, left) == (0.0, float((100 - 13) // 2))


def test_normalize_uses_imagenet_statistics():
    images = unit_images(2, size=3)
    expected = (images - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(
        to_numpy(image_ops.normalize(images)), expected, atol=1e-5
    )
