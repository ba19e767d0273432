"""Two-view image distortions of the Barlow Twins recipe, drawn per sample, on device.

Keras core lacks RandomResizedCrop and RandomApply, and several core layers differ
from the torchvision transforms the paper used (batch-level draws, other color
jitter semantics, see ../shared/NOTES.md), so the recipe is built here from small
layers that follow the Keras pattern: `get_random_transformation` draws per-sample
parameters from a stateless seed, `transform_images` applies them deterministically.

Resampling and blurring are written as batched matrix products
(`rows @ image @ cols^T` with one `(out, in)` matrix per sample and axis): bicubic
resizing of a different crop box per sample, the horizontal flip and a separable
Gaussian blur of a different sigma per sample all become one einsum, and the color
adjustments are per-sample 3 x 3 color matrices. All of it runs well on CPU and
GPU and compiles under XLA (see benchmarks/RESULTS.md for what was measured).

Images enter as uint8 or float in [0, 255] with shape `(B, H, W, 3)` and leave as
float32 normalized with the ImageNet mean and standard deviation.
"""

import math
import numbers

import keras
import tensorflow as tf

from keras_barlow.validation import validate_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)
# The color matrix (rows: input channels) that makes every channel the gray.
_TO_GRAY_MATRIX = tuple((weight,) * 3 for weight in GRAYSCALE_WEIGHTS)

# The recipe of the paper (ImageNet) and the CIFAR recipe of solo-learn, as data.
# Tuples of two are (view 1, view 2).
_IMAGENET_RECIPE = dict(
    crop_scale=(0.08, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    flip_probability=0.5,
    jitter=(0.4, 0.4, 0.2, 0.1),
    jitter_probability=0.8,
    grayscale_probability=0.2,
    blur_probability=(1.0, 0.1),
    blur_sigma=(0.1, 2.0),
    solarize_probability=(0.0, 0.2),
)
PRESETS = {
    "imagenet": _IMAGENET_RECIPE,
    "cifar": {**_IMAGENET_RECIPE, "blur_probability": (0.0, 0.0)},  # no blur
}


# ----------------------------------------------------------------------------------
# Pure functions: images are float32 in [0, 1], shape (B, H, W, 3).


def to_unit_range(images):
    """uint8 or float images in [0, 255] -> float32 in [0, 1], same shape."""
    return tf.cast(images, tf.float32) / 255.0


def rgb_to_grayscale(images):
    """ITU-R 601 luma of `(B, H, W, 3)` images, shape `(B, H, W, 1)`."""
    # Three slices, not a reduction over the channel axis: several times faster on
    # CPU, and the same sum.
    red, green, blue = tf.split(images, 3, axis=-1)
    weights = GRAYSCALE_WEIGHTS
    return red * weights[0] + green * weights[1] + blue * weights[2]


def apply_color_matrices(images, matrices, offsets=None):
    """Map the RGB of every pixel by a per-sample 3 x 3 matrix and offset.

    `output[b, y, x] = images[b, y, x] @ matrices[b] + offsets[b]`. Brightness,
    saturation, contrast (with its mean as offset), grayscale and the identity
    are all such maps; one batched matrix product applies them much faster on
    CPU than broadcasting per-sample factors over the pixels.

    Args:
        images: float32 `(B, H, W, 3)`.
        matrices: float32 `(B, 3, 3)`, rows are input channels.
        offsets: float32 `(B, 3)`, `(B, 1)` (the same for all channels) or None.

    Returns:
        float32 `(B, H, W, 3)`.
    """
    pixels = tf.reshape(images, [tf.shape(images)[0], -1, 3])
    mapped = tf.matmul(pixels, matrices)
    if offsets is not None:
        mapped += offsets[:, None, :]
    return tf.reshape(mapped, tf.shape(images))


def adjust_hue(images, delta):
    """Rotate the hue by a per-sample `delta` of shape `(B,)`, in turns."""
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., :1] + delta[:, None, None, None], 1.0)
    return tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))


def solarize(images, threshold=0.5):
    """Invert the pixels at or above `threshold` (PIL's solarize at 128/255)."""
    return tf.where(images < threshold, images, 1.0 - images)


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Subtract the per-channel mean and divide by the standard deviation."""
    # As a product with a diagonal matrix and a bias: two fast kernels, where
    # broadcasting along the channel axis is several times slower on CPU.
    scale = 1.0 / tf.constant(std, tf.float32)
    pixels = tf.matmul(tf.reshape(images, [-1, 3]), tf.linalg.diag(scale))
    pixels = tf.nn.bias_add(pixels, -tf.constant(mean, tf.float32) * scale)
    return tf.reshape(pixels, tf.shape(images))


def apply_separable(images, rows, cols):
    """Apply per-sample linear maps along the height and the width.

    Args:
        images: float32 `(B, H, W, C)`.
        rows: float32 `(B, H_out, H)`.
        cols: float32 `(B, W_out, W)`.

    Returns:
        float32 `(B, H_out, W_out, C)`: `rows[b] @ images[b] @ cols[b]^T` per channel.
    """
    resized = tf.einsum("boh,bhwc->bowc", rows, images)
    return tf.einsum("bpw,bowc->bopc", cols, resized)


def cubic_kernel(x, a=-0.5):
    """Keys' cubic convolution kernel (PIL's bicubic uses a = -0.5), support [-2, 2]."""
    x = tf.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return tf.where(x < 1.0, near, tf.where(x < 2.0, far, tf.zeros_like(x)))


def resize_matrices(in_size, out_size, start, length):
    """Bicubic, antialiased resampling of a per-sample window to `out_size` pixels.

    Matches PIL's `crop(box).resize(size, BICUBIC)` along one axis: when shrinking,
    the kernel is stretched by the scale factor (antialiasing); input pixels outside
    the window are not used and each row of weights sums to one.

    Args:
        in_size: int, pixels along the axis.
        out_size: int, pixels of the output.
        start: float32 `(B,)`, first pixel of the window.
        length: float32 `(B,)`, pixels in the window.

    Returns:
        float32 `(B, out_size, in_size)`.
    """
    scale = (length / out_size)[:, None, None]
    support_scale = tf.maximum(scale, 1.0)
    centers = (
        start[:, None, None]
        + (tf.range(out_size, dtype=tf.float32)[:, None] + 0.5) * scale
    )
    pixels = tf.range(in_size, dtype=tf.float32)[None, :] + 0.5  # pixel centers
    weights = cubic_kernel((pixels - centers) / support_scale)
    inside = (pixels >= start[:, None, None]) & (
        pixels < (start + length)[:, None, None]
    )
    weights = tf.where(inside, weights, 0.0)
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


def gaussian_matrices(size, sigma):
    """Per-sample Gaussian blur along one axis as `(B, size, size)` matrices.

    The kernel is not truncated; near the border it is renormalized over the pixels
    inside the image.

    Args:
        size: int, pixels along the axis.
        sigma: float32 `(B,)`, standard deviation in pixels.
    """
    positions = tf.range(size, dtype=tf.float32)
    distance = positions[None, :, None] - positions[None, None, :]
    weights = tf.exp(-0.5 * tf.square(distance / sigma[:, None, None]))
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


def sample_crop_boxes(seed, batch_size, height, width, scale, ratio, attempts=10):
    """torchvision's `RandomResizedCrop.get_params`, drawn for every sample at once.

    Up to `attempts` candidate boxes of area `U(scale) * H * W` and aspect ratio
    `exp(U(log ratio))` are drawn per sample; the first that fits is used, else the
    whole image is cropped to the nearest allowed aspect ratio (centered).

    Args:
        seed: int32 `(2,)` stateless seed.
        batch_size: int or scalar tensor.
        height, width: ints, image size.
        scale, ratio: `(min, max)` floats.

    Returns:
        `(top, left, box_height, box_width)`, float32 `(B,)` each, integer valued.
    """
    area_seed, ratio_seed, top_seed, left_seed = _split(seed, 4)
    shape = (batch_size, attempts)
    area = height * width * _uniform(area_seed, shape, *scale)
    log_ratio = _uniform(ratio_seed, shape, math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    box_width = tf.round(tf.sqrt(area * aspect))
    box_height = tf.round(tf.sqrt(area / aspect))
    fits = (
        (box_width > 0)
        & (box_width <= width)
        & (box_height > 0)
        & (box_height <= height)
    )
    first_fit = tf.argmax(tf.cast(fits, tf.int32), axis=1)
    any_fit = tf.reduce_any(fits, axis=1)
    box_height = tf.gather(box_height, first_fit, batch_dims=1)
    box_width = tf.gather(box_width, first_fit, batch_dims=1)

    fallback_height, fallback_width = _fallback_box(height, width, ratio)
    box_height = tf.where(any_fit, box_height, fallback_height)
    box_width = tf.where(any_fit, box_width, fallback_width)
    top = tf.floor(
        _uniform(top_seed, (batch_size,), 0.0, 1.0) * (height - box_height + 1)
    )
    left = tf.floor(
        _uniform(left_seed, (batch_size,), 0.0, 1.0) * (width - box_width + 1)
    )
    top = tf.where(any_fit, top, float((height - fallback_height) // 2))
    left = tf.where(any_fit, left, float((width - fallback_width) // 2))
    return top, left, box_height, box_width


def _fallback_box(height, width, ratio):
    in_ratio = width / height
    if in_ratio < min(ratio):
        return float(round(width / min(ratio))), float(width)
    if in_ratio > max(ratio):
        return float(height), float(round(height * max(ratio)))
    return float(height), float(width)


def _blend_at(images, order, position, factors):
    """Apply each sample's brightness, contrast or saturation at `position`.

    Args:
        images: float32 `(B, H, W, 3)`.
        order: int32 `(B, 4)`, the adjustment at each position (see
            `RandomColorJitter`).
        position: int32 `(B,)`; outside [0, 4) the sample is left unchanged.
        factors: float32 `(B, 3)`, the brightness, contrast and saturation factors.
    """
    inside = (position >= 0) & (position < 4)
    adjustment = tf.gather(order, tf.clip_by_value(position, 0, 3), batch_dims=1)
    adjustment = tf.where(inside, adjustment, -1)  # -1: leave unchanged
    factor = tf.gather(factors, tf.clip_by_value(adjustment, 0, 2), batch_dims=1)
    factor = tf.where(adjustment >= 0, factor, 1.0)
    # f * x + (1 - f) * other, where other is 0 (brightness), the mean gray
    # (contrast: an offset) or the gray of each pixel (saturation: a matrix). Idle
    # samples get the identity, which leaves them unchanged to the bit.
    is_contrast = tf.cast(adjustment == 1, tf.float32)
    is_saturation = tf.cast(adjustment == 2, tf.float32)
    matrices = (
        factor[:, None, None] * tf.eye(3)
        + ((1.0 - factor) * is_saturation)[:, None, None] * _TO_GRAY_MATRIX
    )
    mean_rgb = tf.reduce_mean(images, axis=(1, 2))
    mean_gray = tf.reduce_sum(mean_rgb * GRAYSCALE_WEIGHTS, axis=-1)
    offsets = ((1.0 - factor) * is_contrast * mean_gray)[:, None]  # same for R, G, B
    return tf.clip_by_value(apply_color_matrices(images, matrices, offsets), 0.0, 1.0)


def fold_in_replica_id(seed):
    """An int32 `(2,)` seed made different on every replica of a `tf.distribute` run.

    Every replica runs the same program with the same seeds; without this their
    random draws would be identical. Outside a replica context (a strategy's
    cross-replica scope) the seed is returned unchanged.
    """
    replica = tf.distribute.get_replica_context()
    if replica is None:
        return seed
    return tf.random.experimental.stateless_fold_in(
        seed, replica.replica_id_in_sync_group
    )


def _seed_for_call(seed_generator):
    """A new int32 `(2,)` seed from a layer's generator, different on every replica."""
    return fold_in_replica_id(tf.cast(seed_generator.next(), tf.int32))


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _bernoulli(seed, batch_size, probability):
    return tf.random.stateless_uniform((batch_size,), seed) < probability


def _split(seed, count):
    return tf.unstack(tf.random.experimental.stateless_split(seed, count))


# ----------------------------------------------------------------------------------
# Layers.


class RandomLayer(keras.layers.Layer):
    """Base of the random layers: per-sample draws from a stateless seed.

    `call(images, seed=None)` draws with `get_random_transformation(images, seed)`
    and applies with `transform_images(images, transformation)`. Without `seed`, the
    layer's own `keras.random.SeedGenerator` supplies one per call. `BarlowTwins`
    passes an explicit seed derived from the training step and the replica, so
    draws differ across steps and replicas and are reproducible after a restart.

    Inputs and outputs are float32 images in [0, 1] of shape `(B, H, W, 3)`.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, seed=None):
        seed = _seed_for_call(self.seed_generator) if seed is None else seed
        seed = tf.cast(seed, tf.int32)
        return self.transform_images(
            images, self.get_random_transformation(images, seed)
        )

    def get_random_transformation(self, images, seed):
        raise NotImplementedError

    def transform_images(self, images, transformation):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


class RandomApplyLayer(RandomLayer):
    """Base of the layers that change each sample with `probability` (RandomApply).

    `get_random_transformation` draws `"apply"`, a bool `(B,)`; subclasses add
    their own parameters and use it in `transform_images`.

    Args:
        probability: chance that a sample is changed.
        seed: int seed for calls without an explicit seed.
    """

    def __init__(self, probability, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_probability("probability", probability)
        self.probability = probability

    def get_random_transformation(self, images, seed):
        return {"apply": _bernoulli(seed, tf.shape(images)[0], self.probability)}

    def get_config(self):
        return {**super().get_config(), "probability": self.probability}


def image_size_pair(name, size):
    """`(height, width)` of an int or pair of positive ints, else a clear error."""
    try:
        pair = (size, size) if isinstance(size, numbers.Number) else tuple(size)
    except TypeError:  # not iterable
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(x, numbers.Integral) and not isinstance(x, bool) and x > 0
        for x in pair
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (height, width) of them. "
            f"Received: {name}={size!r}"
        )
    return tuple(int(x) for x in pair)


def _check_probability(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be between 0 and 1. Received: {name}={value}")


def _check_range(name, value, low=0.0):
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(
            f"`{name}` must be a pair (min, max) with {low} <= min <= max. "
            f"Received: {name}={value}"
        )


@keras.saving.register_keras_serializable(package="keras_barlow")
class RandomResizedCrop(RandomLayer):
    """Crop a random box per sample and resize it bicubically, optionally flipped.

    torchvision's `RandomResizedCrop(size, scale, ratio, BICUBIC)` followed by
    `RandomHorizontalFlip(flip_probability)`, with the flip folded into the
    resampling matrices so that it costs nothing.

    Args:
        size: output height and width, int or `(height, width)`.
        scale: range of the box area as a fraction of the image area.
        ratio: range of the box aspect ratio (width / height).
        flip_probability: chance of a horizontal flip per sample.
        seed: int seed for calls without an explicit seed.

    Input shape: `(B, H, W, 3)` float32 in [0, 1].
    Output shape: `(B, size[0], size[1], 3)` float32 in [0, 1].
    """

    def __init__(
        self,
        size,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        flip_probability=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.size = image_size_pair("size", size)
        _check_range("scale", scale)
        _check_range("ratio", ratio, low=1e-6)
        _check_probability("flip_probability", flip_probability)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.flip_probability = flip_probability

    def get_random_transformation(self, images, seed):
        crop_seed, flip_seed = _split(seed, 2)
        batch_size, height, width = _batch_height_width(images)
        top, left, box_height, box_width = sample_crop_boxes(
            crop_seed, batch_size, height, width, self.scale, self.ratio
        )
        flip = _bernoulli(flip_seed, batch_size, self.flip_probability)
        return {
            "top": top,
            "left": left,
            "height": box_height,
            "width": box_width,
            "flip": flip,
        }

    def transform_images(self, images, transformation):
        _, height, width = _batch_height_width(images)
        rows = resize_matrices(
            height, self.size[0], transformation["top"], transformation["height"]
        )
        cols = resize_matrices(
            width, self.size[1], transformation["left"], transformation["width"]
        )
        cols = tf.where(
            transformation["flip"][:, None, None], tf.reverse(cols, [1]), cols
        )
        return tf.clip_by_value(apply_separable(images, rows, cols), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "scale": self.scale,
            "ratio": self.ratio,
            "flip_probability": self.flip_probability,
        }


@keras.saving.register_keras_serializable(package="keras_barlow")
class RandomColorJitter(RandomApplyLayer):
    """torchvision's `RandomApply([ColorJitter(b, c, s, h)], p)`, drawn per sample.

    Brightness, contrast and saturation factors are drawn from
    `U(max(0, 1 - x), 1 + x)`, the hue shift from `U(-h, h)` (in turns), and the
    four adjustments are applied in a random order per sample, each clipped to
    [0, 1], as torchvision does. Keras' own `RandomColorJitter` has other semantics
    (additive brightness, fixed order).

    Args:
        brightness, contrast, saturation: jitter strengths, >= 0.
        hue: hue jitter strength, in [0, 0.5].
        probability: chance that a sample is jittered at all.
        seed: int seed for calls without an explicit seed.

    Input shape: `(B, H, W, 3)` float32 in [0, 1]. Output shape: the same.
    """

    def __init__(
        self,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        probability=0.8,
        seed=None,
        **kwargs,
    ):
        super().__init__(probability, seed=seed, **kwargs)
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"`hue` must be between 0 and 0.5. Received: hue={hue}")
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.hue = saturation, hue

    def get_random_transformation(self, images, seed):
        batch_size = tf.shape(images)[0]
        seeds = _split(seed, 6)
        transformation = super().get_random_transformation(images, seeds[5])

        def factor(seed, strength):
            return _uniform(
                seed, (batch_size,), max(0.0, 1.0 - strength), 1.0 + strength
            )

        return {
            **transformation,
            "brightness": factor(seeds[0], self.brightness),
            "contrast": factor(seeds[1], self.contrast),
            "saturation": factor(seeds[2], self.saturation),
            "hue": _uniform(seeds[3], (batch_size,), -self.hue, self.hue),
            "order": tf.argsort(tf.random.stateless_uniform((batch_size, 4), seeds[4])),
        }

    def transform_images(self, images, transformation):
        # `order[b, p]` is the adjustment (0 brightness, 1 contrast, 2 saturation,
        # 3 hue) at position p for sample b. Brightness, contrast and saturation
        # are all blends `clip(f * x + (1 - f) * other)`, so each sample's order
        # is run as up to three blends, one hue rotation of the whole batch, and
        # up to three blends: six blend slots and one hue pass instead of all four
        # adjustments at each of the four positions. A sample idles in the slots
        # it does not use (factor 1, which leaves it unchanged to the bit).
        order = transformation["order"]
        hue_position = tf.argmax(
            tf.cast(order == 3, tf.int32), axis=1, output_type=tf.int32
        )
        factors = tf.stack(
            [
                transformation["brightness"],
                transformation["contrast"],
                transformation["saturation"],
            ],
            axis=1,
        )  # B x 3
        jittered = images
        for slot in range(3):
            jittered = _blend_at(jittered, order, hue_position - 3 + slot, factors)
        jittered = adjust_hue(jittered, transformation["hue"])
        for slot in range(3):
            jittered = _blend_at(jittered, order, hue_position + 1 + slot, factors)
        return tf.where(transformation["apply"][:, None, None, None], jittered, images)

    def get_config(self):
        return {
            **super().get_config(),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
        }


@keras.saving.register_keras_serializable(package="keras_barlow")
class RandomGrayscale(RandomApplyLayer):
    """Replace a sample by its luma in all three channels with `probability`.

    Input shape: `(B, H, W, 3)` float32 in [0, 1]. Output shape: the same.
    """

    def __init__(self, probability=0.2, seed=None, **kwargs):
        super().__init__(probability, seed=seed, **kwargs)

    def transform_images(self, images, transformation):
        apply = transformation["apply"][:, None, None]
        return apply_color_matrices(images, tf.where(apply, _TO_GRAY_MATRIX, tf.eye(3)))


@keras.saving.register_keras_serializable(package="keras_barlow")
class RandomGaussianBlur(RandomApplyLayer):
    """Isotropic Gaussian blur with `sigma ~ U(sigma_range)` pixels, per sample.

    The paper blurs with PIL's `GaussianBlur(radius=sigma)`; here the blur is an
    exact, untruncated separable Gaussian applied as two batched matrix products.
    Samples that are not blurred get identity matrices, which leave them unchanged
    to the bit.

    Args:
        probability: chance that a sample is blurred.
        sigma_range: `(min, max)` standard deviation in pixels.
        seed: int seed for calls without an explicit seed.

    Input shape: `(B, H, W, 3)` float32 in [0, 1]. Output shape: the same.
    """

    def __init__(self, probability=1.0, sigma_range=(0.1, 2.0), seed=None, **kwargs):
        super().__init__(probability, seed=seed, **kwargs)
        _check_range("sigma_range", sigma_range, low=1e-6)
        self.sigma_range = tuple(sigma_range)

    def get_random_transformation(self, images, seed):
        sigma_seed, apply_seed = _split(seed, 2)
        sigma = _uniform(sigma_seed, (tf.shape(images)[0],), *self.sigma_range)
        return {**super().get_random_transformation(images, apply_seed), "sigma": sigma}

    def transform_images(self, images, transformation):
        _, height, width = _batch_height_width(images)
        apply = transformation["apply"][:, None, None]
        sigma = transformation["sigma"]
        rows = tf.where(apply, gaussian_matrices(height, sigma), tf.eye(height))
        cols = tf.where(apply, gaussian_matrices(width, sigma), tf.eye(width))
        return apply_separable(images, rows, cols)

    def get_config(self):
        return {**super().get_config(), "sigma_range": self.sigma_range}


@keras.saving.register_keras_serializable(package="keras_barlow")
class RandomSolarize(RandomApplyLayer):
    """Solarize (invert pixels >= 0.5) a sample with `probability`.

    Keras' `Solarization` draws its threshold from a range that is not scaled to the
    value range; this is the recipe's fixed threshold of 128/255.

    Input shape: `(B, H, W, 3)` float32 in [0, 1]. Output shape: the same.
    """

    def __init__(self, probability=0.2, seed=None, **kwargs):
        super().__init__(probability, seed=seed, **kwargs)

    def transform_images(self, images, transformation):
        return tf.where(
            transformation["apply"][:, None, None, None], solarize(images), images
        )


@keras.saving.register_keras_serializable(package="keras_barlow")
class BarlowTwinsAugment(keras.layers.Layer):
    """Make the two distorted views of a batch of images, on the device.

    Per view: random resized crop (bicubic) and horizontal flip, color jitter,
    grayscale, Gaussian blur, solarization, then ImageNet normalization. Every
    random choice is drawn per sample, and the two views get independent draws.
    The views differ only in the blur and solarization probabilities.

    Presets: `"imagenet"` is the paper's recipe (blur p 1.0 / 0.1, solarize p 0.0 /
    0.2); `"cifar"` is the known-good CIFAR recipe (no blur). Any preset value can
    be overridden by keyword, e.g. `BarlowTwinsAugment(96, "imagenet",
    blur_probability=(0.5, 0.5))`.

    The layer augments whether or not it is training: it is the input of the
    Barlow Twins loss, which needs two views in evaluation as well.

    Args:
        image_size: output height and width, int or `(height, width)`.
        preset: `"imagenet"` or `"cifar"`.
        seed: int seed for calls without an explicit seed.
        **overrides: any key of `keras_barlow.augment.PRESETS[preset]`.

    Call arguments:
        images: uint8 or float `(B, H, W, 3)` with values in [0, 255].
        seed: optional int32 `(2,)` stateless seed for this call.

    Returns:
        `(view1, view2)`, float32 `(B, image_size[0], image_size[1], 3)`.

    Example:

    >>> augment = BarlowTwinsAugment(32, preset="cifar")
    >>> images = tf.zeros((8, 32, 32, 3), tf.uint8)
    >>> view1, view2 = augment(images)
    >>> view1.shape
    TensorShape([8, 32, 32, 3])
    """

    def __init__(self, image_size, preset="imagenet", seed=None, **overrides):
        layer_kwargs = {
            key: overrides.pop(key)
            for key in ("name", "dtype", "trainable")
            if key in overrides
        }
        layer_kwargs.setdefault("dtype", "float32")
        super().__init__(**layer_kwargs)
        if preset not in PRESETS:
            raise ValueError(
                f"`preset` must be one of {sorted(PRESETS)}. "
                f"Received: preset={preset!r}"
            )
        unknown = set(overrides) - set(PRESETS[preset])
        if unknown:
            raise ValueError(
                f"Unknown augmentation options {sorted(unknown)}. "
                f"Valid options: {sorted(PRESETS[preset])}"
            )
        self.image_size = image_size_pair("image_size", image_size)
        self.preset = preset
        self.seed = seed
        self.options = {**PRESETS[preset], **overrides}
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.views = [self._view_layers(view) for view in (0, 1)]

    def _view_layers(self, view):
        options = self.options
        layers = [
            RandomResizedCrop(
                self.image_size,
                options["crop_scale"],
                options["crop_ratio"],
                options["flip_probability"],
            ),
            RandomColorJitter(
                *options["jitter"], probability=options["jitter_probability"]
            ),
            RandomGrayscale(options["grayscale_probability"]),
        ]
        if options["blur_probability"][view] > 0:
            layers.append(
                RandomGaussianBlur(
                    options["blur_probability"][view], options["blur_sigma"]
                )
            )
        if options["solarize_probability"][view] > 0:
            layers.append(RandomSolarize(options["solarize_probability"][view]))
        return layers

    def call(self, images, seed=None):
        images = validate_images(images)
        seed = _seed_for_call(self.seed_generator) if seed is None else seed
        seeds = _split(tf.cast(seed, tf.int32), 2)
        unit = to_unit_range(images)
        return tuple(
            self._distort(unit, layers, view_seed)
            for layers, view_seed in zip(self.views, seeds, strict=True)
        )

    def _distort(self, images, layers, seed):
        for layer, layer_seed in zip(layers, _split(seed, len(layers)), strict=True):
            images = layer(images, seed=layer_seed)
        return normalize(images)

    def build(self, input_shape):
        # Nothing depends on the input shape; the random layers hold no weights.
        for layer in (layer for view in self.views for layer in view):
            layer.build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], *self.image_size, 3)
        return shape, shape

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "preset": self.preset,
            "seed": self.seed,
            **self.options,
        }


@keras.saving.register_keras_serializable(package="keras_barlow")
class Preprocess(keras.layers.Layer):
    """The deterministic evaluation transform: resize, center crop, normalize.

    The shorter side is resized (bilinear, antialiased) to
    `image_size / crop_fraction` and the center `image_size` square is kept, as in
    the usual ImageNet evaluation (256 -> 224 is `crop_fraction=0.875`). With
    `crop_fraction=1` and images already of `image_size`, only the normalization
    remains (the CIFAR case).

    Args:
        image_size: output height and width, int or `(height, width)`.
        crop_fraction: fraction of the resized shorter side kept by the center crop.

    Input shape: `(B, H, W, 3)` uint8 or float in [0, 255].
    Output shape: `(B, image_size[0], image_size[1], 3)` float32, normalized.
    """

    def __init__(self, image_size, crop_fraction=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(
                "`crop_fraction` must be in (0, 1]. "
                f"Received: crop_fraction={crop_fraction}"
            )
        self.image_size = image_size_pair("image_size", image_size)
        self.crop_fraction = crop_fraction

    def call(self, images):
        images = to_unit_range(validate_images(images))
        if self.crop_fraction == 1.0 and images.shape[1:3] == self.image_size:
            return normalize(images)
        if self.crop_fraction == 1.0:
            # Sizes known only at run time (a serving signature): images that
            # already have `image_size` skip the resize and stay bit-exact.
            same_size = tf.reduce_all(tf.shape(images)[1:3] == self.image_size)
            images = tf.cond(
                same_size, lambda: images, lambda: self._resize_and_center_crop(images)
            )
        else:
            images = self._resize_and_center_crop(images)
        return normalize(tf.ensure_shape(images, (None, *self.image_size, 3)))

    def _resize_and_center_crop(self, images):
        target = [round(side / self.crop_fraction) for side in self.image_size]
        shape = tf.cast(tf.shape(images)[1:3], tf.float32)
        factor = tf.reduce_max(tf.constant(target, tf.float32) / shape)
        resized_shape = tf.cast(tf.math.ceil(shape * factor), tf.int32)
        images = tf.image.resize(images, resized_shape, antialias=True)
        images = tf.image.resize_with_crop_or_pad(images, *self.image_size)
        return tf.clip_by_value(images, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_size, 3)

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "crop_fraction": self.crop_fraction,
        }


def _batch_height_width(images):
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(
            "Image height and width must be known when the graph is built. "
            f"Received: shape {images.shape}. Resize images to a fixed size in the "
            "input pipeline (see keras_barlow.data)."
        )
    return tf.shape(images)[0], height, width
