import colorsys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_barlow import augment

SEED = tf.constant([3, 7], tf.int32)


def random_images(batch, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(batch, size, size, 3)).astype(np.float32)


def within_three_sigma(fraction, probability, count):
    sigma = np.sqrt(probability * (1.0 - probability) / count)
    return abs(fraction - probability) <= 3.0 * sigma


# ---- probabilities, measured on the images, 2,000 samples each ----------------------


def test_grayscale_probability():
    images = random_images(2000, size=4)
    out = augment.RandomGrayscale(0.2)(images, seed=SEED).numpy()
    gray = np.all(
        np.isclose(out[..., 0], out[..., 1]) & np.isclose(out[..., 1], out[..., 2]),
        axis=(1, 2),
    )
    assert within_three_sigma(gray.mean(), 0.2, 2000), gray.mean()


def test_solarize_probability_and_threshold():
    images = np.full((2000, 2, 2, 3), 0.8, np.float32)
    out = augment.RandomSolarize(0.2)(images, seed=SEED).numpy()
    solarized = np.isclose(out[:, 0, 0, 0], 0.2)
    assert np.all(solarized | np.isclose(out[:, 0, 0, 0], 0.8))
    assert within_three_sigma(solarized.mean(), 0.2, 2000), solarized.mean()
    below = augment.solarize(tf.constant([0.49, 0.5, 0.51])).numpy()
    np.testing.assert_allclose(below, [0.49, 0.5, 0.49], atol=1e-6)


def test_flip_probability():
    images = random_images(2000, size=6)
    layer = augment.RandomResizedCrop(
        6, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_probability=0.5
    )
    out = layer(images, seed=SEED).numpy()
    same = np.all(np.abs(out - images) < 1e-4, axis=(1, 2, 3))
    flipped = np.all(np.abs(out - images[:, :, ::-1]) < 1e-4, axis=(1, 2, 3))
    assert np.all(same ^ flipped)
    assert within_three_sigma(flipped.mean(), 0.5, 2000), flipped.mean()


def test_blur_probability():
    images = random_images(2000, size=8)
    out = augment.RandomGaussianBlur(0.1, sigma_range=(1.0, 2.0))(
        images, seed=SEED
    ).numpy()
    changed = np.any(np.abs(out - images) > 1e-3, axis=(1, 2, 3))
    unchanged_exactly = np.all(out == images, axis=(1, 2, 3))
    assert np.all(changed ^ unchanged_exactly)
    assert within_three_sigma(changed.mean(), 0.1, 2000), changed.mean()


def test_color_jitter_probability():
    images = random_images(2000, size=4) * 0.5 + 0.25  # no clipping at the start
    out = augment.RandomColorJitter(probability=0.8)(images, seed=SEED).numpy()
    changed = np.any(np.abs(out - images) > 1e-4, axis=(1, 2, 3))
    assert within_three_sigma(changed.mean(), 0.8, 2000), changed.mean()


# ---- each transform against an independent reference --------------------------------


def test_hue_matches_colorsys():
    images = random_images(2, size=3, seed=2)
    delta = np.array([0.1, -0.07], np.float32)
    got = augment.adjust_hue(images, delta).numpy()
    for b in range(2):
        pixels = zip(images[b].reshape(-1, 3), got[b].reshape(-1, 3), strict=True)
        for pixel, result in pixels:
            h, s, v = colorsys.rgb_to_hsv(*pixel)
            np.testing.assert_allclose(
                result, colorsys.hsv_to_rgb((h + delta[b]) % 1.0, s, v), atol=1e-5
            )


def test_jitter_order_is_random_per_sample():
    layer = augment.RandomColorJitter()
    transformation = layer.get_random_transformation(random_images(500, size=2), SEED)
    orders = {tuple(order) for order in transformation["order"].numpy()}
    assert len(orders) == 24  # every permutation of the 4 adjustments occurs


def test_resized_crop_matches_pil_bicubic():
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.uniform(size=(40, 48, 3)), 0), 1)
    image = np.round(255 * smooth / smooth.max()).astype(np.uint8)
    top, left, height, width = 5.0, 7.0, 30.0, 36.0
    for size in (12, 56):  # downscaling (antialiased) and upscaling
        rows = augment.resize_matrices(
            40, size, tf.constant([top]), tf.constant([height])
        )
        cols = augment.resize_matrices(
            48, size, tf.constant([left]), tf.constant([width])
        )
        ours = augment.apply_separable(image[None].astype(np.float32), rows, cols)[
            0
        ].numpy()
        box = (int(left), int(top), int(left + width), int(top + height))
        reference = np.asarray(
            pil.fromarray(image).crop(box).resize((size, size), pil.BICUBIC)
        )
        assert np.abs(np.clip(ours, 0, 255) - reference).max() <= 1.5, size


def test_crop_boxes_follow_scale_and_ratio():
    top, left, height, width = [
        t.numpy()
        for t in augment.sample_crop_boxes(
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
        for t in augment.sample_crop_boxes(
            SEED, 1, 10, 100, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)
        )
    ]
    assert (height, width) == (10.0, 13.0)
    assert (top, left) == (0.0, float((100 - 13) // 2))


def test_gaussian_blur_matches_numpy_convolution_in_the_interior():
    rng = np.random.default_rng(4)
    image = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    sigma = 1.5
    layer = augment.RandomGaussianBlur(1.0, sigma_range=(sigma, sigma))
    out = layer(image, seed=SEED).numpy()[0]
    offsets = np.arange(-15, 16)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    expected = np.apply_along_axis(
        lambda v: np.convolve(v, kernel, "same"), 0, image[0]
    )
    expected = np.apply_along_axis(
        lambda v: np.convolve(v, kernel, "same"), 1, expected
    )
    np.testing.assert_allclose(out[12:20, 12:20], expected[12:20, 12:20], atol=1e-4)


def numpy_gaussian_blur(image, sigma):
    """Untruncated Gaussian along each axis, renormalized over the pixels inside."""
    for axis in (0, 1):
        positions = np.arange(image.shape[axis])
        distance = positions[:, None] - positions[None, :]
        weights = np.exp(-0.5 * (distance / sigma) ** 2)
        weights /= weights.sum(axis=1, keepdims=True)
        blurred = np.tensordot(weights, np.moveaxis(image, axis, 0), 1)
        image = np.moveaxis(blurred, 0, axis)
    return image


@pytest.mark.parametrize("size", [8, 40])  # kernel wider than the image, and truncated
def test_gaussian_blur_matches_numpy_including_the_border(size):
    images = random_images(6, size=size, seed=9)
    layer = augment.RandomGaussianBlur(0.5, sigma_range=(0.5, 2.0))
    transformation = layer.get_random_transformation(images, SEED)
    out = layer.transform_images(images, transformation).numpy()
    sigmas, applied = transformation["sigma"].numpy(), transformation["apply"].numpy()
    for image, result, sigma, apply in zip(images, out, sigmas, applied, strict=True):
        expected = image
        if apply:
            expected = numpy_gaussian_blur(image.astype(np.float64), sigma)
        np.testing.assert_allclose(result, expected, atol=1e-5)


def numpy_color_jitter(image, brightness, contrast, saturation, hue, order):
    """torchvision's ColorJitter on one image: the four adjustments in `order`."""

    def gray(x):
        return x @ np.array([0.299, 0.587, 0.114])

    for adjustment in order:
        if adjustment == 0:
            image = np.clip(brightness * image, 0, 1)
        elif adjustment == 1:
            mean = gray(image).mean()
            image = np.clip(contrast * image + (1 - contrast) * mean, 0, 1)
        elif adjustment == 2:
            other = gray(image)[..., None]
            image = np.clip(saturation * image + (1 - saturation) * other, 0, 1)
        else:
            pixels = [colorsys.rgb_to_hsv(*pixel) for pixel in image.reshape(-1, 3)]
            pixels = [colorsys.hsv_to_rgb((h + hue) % 1.0, s, v) for h, s, v in pixels]
            image = np.array(pixels).reshape(image.shape)
    return image


def test_color_jitter_applies_the_drawn_order_per_sample_like_torchvision():
    images = random_images(96, size=3, seed=10)
    layer = augment.RandomColorJitter(0.8, 0.8, 0.8, 0.4, probability=0.8)
    transformation = layer.get_random_transformation(images, SEED)
    out = layer.transform_images(images, transformation).numpy()
    draws = {key: value.numpy() for key, value in transformation.items()}
    assert len({tuple(order) for order in draws["order"]}) > 12
    for index, image in enumerate(images.astype(np.float64)):
        expected = image
        if draws["apply"][index]:
            expected = numpy_color_jitter(
                image,
                *[
                    draws[key][index]
                    for key in ("brightness", "contrast", "saturation", "hue", "order")
                ],
            )
        np.testing.assert_allclose(out[index], expected, atol=2e-5, err_msg=str(index))


def test_normalize_uses_imagenet_statistics():
    images = random_images(2, size=3)
    expected = (images - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(augment.normalize(images).numpy(), expected, atol=1e-5)


# ---- the two-view layer --------------------------------------------------------------


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_identical_images_give_different_views(preset):
    image = np.random.default_rng(5).integers(
        0, 256, size=(1, 32, 32, 3), dtype=np.uint8
    )
    images = np.repeat(image, 32, axis=0)
    view1, view2 = augment.BarlowTwinsAugment(32, preset=preset)(images, seed=SEED)
    view1, view2 = view1.numpy(), view2.numpy()
    assert view1.shape == (32, 32, 32, 3) and view1.dtype == np.float32
    flat = view1.reshape(32, -1)
    distinct = {row.tobytes() for row in flat}
    assert len(distinct) == 32
    assert np.all(np.abs(view1 - view2).max(axis=(1, 2, 3)) > 1e-3)


def test_output_is_normalized_float32_of_the_requested_size():
    images = np.random.default_rng(6).integers(
        0, 256, size=(4, 40, 48, 3), dtype=np.uint8
    )
    view1, view2 = augment.BarlowTwinsAugment((24, 20), preset="imagenet")(images)
    assert view1.shape == view2.shape == (4, 24, 20, 3)
    unit = view1.numpy() * np.array([0.229, 0.224, 0.225]) + np.array(
        [0.485, 0.456, 0.406]
    )
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5


def test_same_seed_same_views_and_float_input_equals_uint8_input():
    images = np.random.default_rng(7).integers(
        0, 256, size=(4, 16, 16, 3), dtype=np.uint8
    )
    layer = augment.BarlowTwinsAugment(16, preset="imagenet")
    first = layer(images, seed=SEED)
    second = layer(images.astype(np.float32), seed=SEED)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_runs_in_graph_mode():
    layer = augment.BarlowTwinsAugment(16, preset="cifar")
    images = np.zeros((4, 16, 16, 3), np.uint8)
    view1, _ = tf.function(lambda x: layer(x, seed=SEED))(images)
    assert view1.shape == (4, 16, 16, 3)


def test_presets_follow_the_recipe():
    imagenet = augment.BarlowTwinsAugment(32, preset="imagenet").get_config()
    assert imagenet["blur_probability"] == (1.0, 0.1)
    assert imagenet["solarize_probability"] == (0.0, 0.2)
    assert (
        imagenet["jitter"] == (0.4, 0.4, 0.2, 0.1)
        and imagenet["jitter_probability"] == 0.8
    )
    assert (
        imagenet["grayscale_probability"] == 0.2 and imagenet["flip_probability"] == 0.5
    )
    assert imagenet["crop_scale"] == (0.08, 1.0)
    cifar = augment.BarlowTwinsAugment(32, preset="cifar")
    assert cifar.get_config()["blur_probability"] == (0.0, 0.0)
    assert not any(
        isinstance(layer, augment.RandomGaussianBlur)
        for view in cifar.views
        for layer in view
    )


def test_config_round_trip_gives_the_same_views():
    layer = augment.BarlowTwinsAugment(16, preset="cifar", grayscale_probability=0.5)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.get_config() == layer.get_config()
    images = np.random.default_rng(8).integers(
        0, 256, size=(4, 16, 16, 3), dtype=np.uint8
    )
    for a, b in zip(layer(images, seed=SEED), clone(images, seed=SEED), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_preprocess_resizes_center_crops_and_normalizes():
    images = np.zeros((2, 40, 60, 3), np.uint8)
    images[:, :, 20:40] = 255  # a white vertical band in the middle third
    out = augment.Preprocess(16, crop_fraction=0.8)(images).numpy()
    assert out.shape == (2, 16, 16, 3)
    unit = out * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])
    # Resized to 20 x 30 then center-cropped to 16: the band (cols 10-20) maps to 3-13.
    np.testing.assert_allclose(unit[:, 8, 5:11], 1.0, atol=1e-4)
    np.testing.assert_allclose(unit[:, 8, 0], 0.0, atol=1e-4)
    same_size = augment.Preprocess(40)(np.full((1, 40, 40, 3), 255, np.uint8)).numpy()
    np.testing.assert_allclose(
        same_size[0, 0, 0],
        (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((32, 32, 3), np.uint8), "Batch the dataset"),
        (np.zeros((2, 32, 32, 1), np.uint8), "Received: 1 channels"),
        (np.zeros((2, 32, 32, 4), np.uint8), "Received: 4 channels"),
        (np.zeros((2, 32, 32, 3), bool), "Received: dtype bool"),
    ],
)
def test_bad_images_raise_clear_errors(images, message):
    with pytest.raises(ValueError, match=message):
        augment.BarlowTwinsAugment(32)(images)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: augment.RandomGrayscale(1.5), "Received: probability=1.5"),
        (lambda: augment.RandomResizedCrop(8, scale=(0.5, 0.1)), "Received: scale="),
        (lambda: augment.RandomColorJitter(hue=0.7), "Received: hue=0.7"),
        (lambda: augment.BarlowTwinsAugment(8, preset="stl"), "Received: preset='stl'"),
        (
            lambda: augment.BarlowTwinsAugment(8, blurr=1),
            "Unknown augmentation options",
        ),
        (lambda: augment.BarlowTwinsAugment(0), "Received: image_size=0"),
        (
            lambda: augment.Preprocess((32, 32, 3)),
            r"Received: image_size=\(32, 32, 3\)",
        ),
        (lambda: augment.RandomResizedCrop(8.5), "Received: size=8.5"),
    ],
)
def test_bad_arguments_raise_clear_errors(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_seedless_calls_draw_differently_on_each_replica(mirrored_strategy):
    with mirrored_strategy.scope():
        layer = augment.RandomGrayscale(0.5)
    images = random_images(64, size=2)

    @tf.function
    def draw():
        return mirrored_strategy.run(lambda: layer(images))

    first, second = mirrored_strategy.experimental_local_results(draw())
    assert np.abs(first.numpy() - second.numpy()).max() > 1e-3
