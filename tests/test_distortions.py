"""The per-sample distortion layers of `keras_barlow.distortions`.

Probabilities are measured on the output pixels; each transform is compared with
an independent reference (NumPy, colorsys, a torchvision-like NumPy port), and
every random draw is read back per sample from the pixels.
"""

import colorsys

import numpy as np
import pytest
from conftest import to_numpy, unit_images

from keras_barlow import distortions

pytestmark = pytest.mark.core

# The same seed draws other numbers on each backend: the tests below read what was
# drawn (from the pixels or the transformation), never pin drawn values.
SEED = np.array([3, 7], np.int32)


def within_three_sigma(fraction, probability, count):
    sigma = np.sqrt(probability * (1.0 - probability) / count)
    return abs(fraction - probability) <= 3.0 * sigma


# ---- probabilities, measured on the images, 2,000 samples each ----------------------


def test_grayscale_probability():
    images = unit_images(2000, size=4)
    out = to_numpy(distortions.RandomGrayscale(0.2)(images, seed=SEED))
    gray = np.all(
        np.isclose(out[..., 0], out[..., 1]) & np.isclose(out[..., 1], out[..., 2]),
        axis=(1, 2),
    )
    assert within_three_sigma(gray.mean(), 0.2, 2000), gray.mean()


def test_solarize_probability():
    images = np.full((2000, 2, 2, 3), 0.8, np.float32)
    out = to_numpy(distortions.RandomSolarize(0.2)(images, seed=SEED))
    solarized = np.isclose(out[:, 0, 0, 0], 0.2)
    assert np.all(solarized | np.isclose(out[:, 0, 0, 0], 0.8))
    assert within_three_sigma(solarized.mean(), 0.2, 2000), solarized.mean()


def test_flip_probability():
    images = unit_images(2000, size=6)
    layer = distortions.RandomResizedCrop(
        6, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_probability=0.5
    )
    out = to_numpy(layer(images, seed=SEED))
    same = np.all(np.abs(out - images) < 1e-4, axis=(1, 2, 3))
    flipped = np.all(np.abs(out - images[:, :, ::-1]) < 1e-4, axis=(1, 2, 3))
    assert np.all(same ^ flipped)
    assert within_three_sigma(flipped.mean(), 0.5, 2000), flipped.mean()


def test_blur_probability():
    images = unit_images(2000, size=8)
    out = to_numpy(
        distortions.RandomGaussianBlur(0.1, sigma_range=(1.0, 2.0))(images, seed=SEED)
    )
    changed = np.any(np.abs(out - images) > 1e-3, axis=(1, 2, 3))
    unchanged_exactly = np.all(out == images, axis=(1, 2, 3))
    assert np.all(changed ^ unchanged_exactly)
    assert within_three_sigma(changed.mean(), 0.1, 2000), changed.mean()


def test_color_jitter_probability():
    images = unit_images(2000, size=4) * 0.5 + 0.25  # no clipping at the start
    out = to_numpy(distortions.RandomColorJitter(probability=0.8)(images, seed=SEED))
    changed = np.any(np.abs(out - images) > 1e-4, axis=(1, 2, 3))
    assert within_three_sigma(changed.mean(), 0.8, 2000), changed.mean()


# ---- each transform against an independent reference --------------------------------


def test_jitter_order_is_random_per_sample():
    layer = distortions.RandomColorJitter()
    transformation = layer.get_random_transformation(unit_images(500, size=2), SEED)
    orders = {tuple(order) for order in to_numpy(transformation["order"])}
    assert len(orders) == 24  # every permutation of the 4 adjustments occurs


def test_gaussian_blur_matches_numpy_convolution_in_the_interior():
    rng = np.random.default_rng(4)
    image = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    sigma = 1.5
    layer = distortions.RandomGaussianBlur(1.0, sigma_range=(sigma, sigma))
    out = to_numpy(layer(image, seed=SEED))[0]
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
    images = unit_images(6, size=size, seed=9)
    layer = distortions.RandomGaussianBlur(0.5, sigma_range=(0.5, 2.0))
    transformation = layer.get_random_transformation(images, SEED)
    out = to_numpy(layer.transform_images(images, transformation))
    sigmas = to_numpy(transformation["sigma"])
    applied = to_numpy(transformation["apply"])
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
    images = unit_images(96, size=3, seed=10)
    layer = distortions.RandomColorJitter(0.8, 0.8, 0.8, 0.4, probability=0.8)
    transformation = layer.get_random_transformation(images, SEED)
    out = to_numpy(layer.transform_images(images, transformation))
    draws = {key: to_numpy(value) for key, value in transformation.items()}
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


# ---- one draw per sample, read back from the pixels ---------------------------------
# A port that draws one factor (or one sigma) for the whole batch and broadcasts it
# still matches a reference fed with "whatever was drawn"; these tests read each
# sample's factor back from its own pixels, with NumPy and colorsys, and require the
# factors to differ across the batch and to be spread uniformly over their range.


def assert_uniform_per_sample(values, low, high):
    """`values` are distinct per sample and look like draws of U(low, high)."""
    values = np.sort(np.asarray(values, np.float64))
    count = len(values)
    assert len(np.unique(np.round(values, 5))) >= 0.9 * count, values[:8]
    assert low - 1e-4 <= values[0] and values[-1] <= high + 1e-4, values[[0, -1]]
    # Kolmogorov-Smirnov distance to U(low, high); 2.23 / sqrt(n) is the 0.01% level
    # (one factor for the whole batch gives at least 0.5).
    cdf = (values - low) / (high - low)
    distance = max(
        (np.arange(1, count + 1) / count - cdf).max(),
        (cdf - np.arange(count) / count).max(),
    )
    assert distance < 2.23 / np.sqrt(count), distance


# A 2 x 2 image with pixels in [0.3, 0.7]: no jitter of the recipe's strength clips it.
JITTER_IMAGE = np.array(
    [[[0.6, 0.3, 0.4], [0.35, 0.55, 0.45]], [[0.4, 0.45, 0.65], [0.5, 0.5, 0.3]]]
)
LUMA = np.array([0.299, 0.587, 0.114])
# name: (index in numpy_color_jitter's order, recipe strength, range of the factor)
JITTER_RECIPE = {
    "brightness": (0, 0.4, (0.6, 1.4)),
    "contrast": (1, 0.4, (0.6, 1.4)),
    "saturation": (2, 0.2, (0.8, 1.2)),
    "hue": (3, 0.1, (-0.1, 0.1)),
}


def read_jitter_factor(name, image, result):
    """The factor that turned `image` into `result`, from the top-left pixel."""
    x, y = image[0, 0], result[0, 0]
    if name == "brightness":  # y = f x
        return y[0] / x[0]
    if name == "contrast":  # y = f x + (1 - f) * mean luma of the image
        mean = (image @ LUMA).mean()
        return (y[0] - mean) / (x[0] - mean)
    if name == "saturation":  # y = f x + (1 - f) * luma of the pixel
        return (y[0] - x @ LUMA) / (x[0] - x @ LUMA)
    turn = colorsys.rgb_to_hsv(*y)[0] - colorsys.rgb_to_hsv(*x)[0]
    return (turn + 0.5) % 1.0 - 0.5


def jitter_reference(name, image, factor):
    """numpy_color_jitter with only the adjustment `name`, by `factor`."""
    factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    factors[name] = factor
    return numpy_color_jitter(image, **factors, order=[JITTER_RECIPE[name][0]])


@pytest.mark.parametrize("name", list(JITTER_RECIPE))
def test_color_jitter_draws_each_factor_per_sample(name):
    _, strength, (low, high) = JITTER_RECIPE[name]
    strengths = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    strengths[name] = strength
    layer = distortions.RandomColorJitter(**strengths, probability=1.0)
    images = np.repeat(JITTER_IMAGE[None], 256, axis=0).astype(np.float32)

    # Identical images in, one factor per sample out, each a torchvision-like
    # adjustment of the whole image by that sample's own factor.
    out = to_numpy(layer(images, seed=SEED))
    factors = [read_jitter_factor(name, JITTER_IMAGE, result) for result in out]
    assert_uniform_per_sample(factors, low, high)
    for index, (result, factor) in enumerate(zip(out, factors, strict=True)):
        expected = jitter_reference(name, JITTER_IMAGE, factor)
        np.testing.assert_allclose(result, expected, atol=2e-5, err_msg=str(index))

    # The drawn parameters are per sample too, and each sample gets its own.
    transformation = layer.get_random_transformation(images, SEED)
    drawn = to_numpy(transformation[name])
    assert drawn.shape == (256,)
    assert_uniform_per_sample(drawn, low, high)
    out = to_numpy(layer.transform_images(images, transformation))
    applied = [read_jitter_factor(name, JITTER_IMAGE, result) for result in out]
    np.testing.assert_allclose(applied, drawn, atol=1e-4)


def impulse_center_to_sigma(center_values, size, center):
    """Invert sigma -> center value of an impulse blurred along both axes.

    For an untruncated Gaussian renormalized over the pixels inside (see
    numpy_gaussian_blur), the center pixel of a unit impulse becomes `1 / Z^2` with
    `Z = sum_k exp(-(k - center)^2 / (2 sigma^2))`, which falls as sigma grows:
    bisection finds sigma.
    """
    offsets = np.arange(size) - center
    low = np.full(len(center_values), 0.05)
    high = np.full(len(center_values), 10.0)
    for _ in range(60):
        middle = (low + high) / 2
        norm = np.exp(-0.5 * (offsets[None, :] / middle[:, None]) ** 2).sum(axis=1)
        too_blurred = 1.0 / norm**2 < center_values
        high = np.where(too_blurred, middle, high)
        low = np.where(too_blurred, low, middle)
    return (low + high) / 2


def test_blur_sigma_is_drawn_per_sample():
    size, center, count = 16, 8, 200
    image = np.zeros((size, size, 3))
    image[center, center, 0] = 1.0  # channel 0: a unit impulse, to read sigma from
    image[..., 1:] = np.random.default_rng(11).uniform(size=(size, size, 2))
    images = np.repeat(image[None], count, axis=0).astype(np.float32)
    layer = distortions.RandomGaussianBlur(1.0, sigma_range=(0.5, 2.0))
    out = to_numpy(layer(images, seed=SEED))
    sigmas = impulse_center_to_sigma(out[:, center, center, 0], size, center)
    assert_uniform_per_sample(sigmas, 0.5, 2.0)
    for index, (result, sigma) in enumerate(zip(out, sigmas, strict=True)):
        expected = numpy_gaussian_blur(image, sigma)
        np.testing.assert_allclose(result, expected, atol=1e-5, err_msg=str(index))


# ---- arguments and replicas ----------------------------------------------------------


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: distortions.RandomGrayscale(1.5), "Received: probability=1.5"),
        (
            lambda: distortions.RandomResizedCrop(8, scale=(0.5, 0.1)),
            "Received: scale=",
        ),
        (lambda: distortions.RandomColorJitter(hue=0.7), "Received: hue=0.7"),
        (lambda: distortions.RandomResizedCrop(8.5), "Received: size=8.5"),
    ],
)
def test_bad_arguments_raise_clear_errors(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.tensorflow_only  # tf.distribute.MirroredStrategy, tf.function
def test_seedless_calls_draw_differently_on_each_replica(mirrored_strategy):
    import tensorflow as tf

    with mirrored_strategy.scope():
        layer = distortions.RandomGrayscale(0.5)
    images = unit_images(64, size=2)

    @tf.function
    def draw():
        return mirrored_strategy.run(lambda: layer(images))

    first, second = mirrored_strategy.experimental_local_results(draw())
    assert np.abs(to_numpy(first) - to_numpy(second)).max() > 1e-3
