"""The random distortion layers of the recipe, each drawn per sample.

Keras 3 has `RandomResizedCrop`-like cropping and `RandomApply`-like layers, but
they draw their random parameters once per batch (one crop offset, one blur sigma,
one jitter factor for all samples), and several follow other semantics than the
torchvision transforms of the paper (additive brightness, a fixed jitter order,
anisotropic blur, an unscaled solarization threshold). Barlow Twins needs every
draw per sample, so these layers follow the Keras pattern with per-sample draws:
`get_random_transformation` draws the parameters from a stateless seed,
`transform_images` applies them deterministically with the pure functions of
`keras_barlow.image_ops`.

They run on Keras' TensorFlow and JAX backends. The same parameters give the
same pixels on both; the same seed draws different parameters on each. Inputs and
outputs are float32 images in [0, 1] of shape `(B, H, W, 3)`.
"""

import keras
from keras import ops

from keras_barlow import _backend, batches
from keras_barlow import _checks as checks
from keras_barlow.image_ops import (
    TO_GRAY_MATRIX,
    adjust_hue,
    apply_color_matrices,
    apply_separable,
    batch_height_width,
    blend_at,
    gaussian_matrices,
    resize_matrices,
    sample_crop_boxes,
    solarize,
    true_height_width,
)


def _bernoulli(seed, batch_size, probability):
    return _backend.uniform(seed, (batch_size,)) < probability


# ----------------------------------------------------------------------------------
# Layers.


class RandomLayer(keras.layers.Layer):
    """Base of the random layers: per-sample draws from a stateless seed.

    `call(inputs, seed=None)` draws with `get_random_transformation(inputs,
    seed)` and applies with `transform_images(images, transformation)`; `inputs`
    is the images or, for the crop, a full-resolution batch (see
    `keras_barlow.batches`). Without `seed`, the
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

    def call(self, inputs, seed=None):
        seed = _backend.seed_for_call(self.seed_generator) if seed is None else seed
        transformation = self.get_random_transformation(inputs, _backend.as_seed(seed))
        return self.transform_images(batches.first_images(inputs), transformation)

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
        self.probability = checks.probability("probability", probability)

    def get_random_transformation(self, images, seed):
        batch_size = ops.shape(batches.first_images(images))[0]
        return {"apply": _bernoulli(seed, batch_size, self.probability)}

    def get_config(self):
        return {**super().get_config(), "probability": self.probability}


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

    Call arguments:
        inputs: float32 images `(B, H, W, 3)` in [0, 1], or a full-resolution
            batch `{"images", "image_sizes"}` (see `keras_barlow.batches`): images
            padded at the bottom and right to a common `(H, W)` canvas and their
            true sizes int `(B, 2)`. The boxes are then drawn on each true size
            and the padding is never sampled.
        seed: optional int32 `(2,)` stateless seed for this call.

    Input shape: `(B, H, W, 3)` float32 in [0, 1] (or the dict above).
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
        self.size = checks.image_size("size", size)
        self.scale = checks.interval("scale", scale)
        self.ratio = checks.interval("ratio", ratio, low=1e-6)
        self.flip_probability = checks.probability("flip_probability", flip_probability)

    def get_random_transformation(self, inputs, seed):
        crop_seed, flip_seed = _backend.split(seed, 2)
        images, image_sizes, _ = batches.unpack(inputs)
        batch_size, height, width = batch_height_width(images)
        if image_sizes is not None:
            height, width = true_height_width(image_sizes, height, width)
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
        _, height, width = batch_height_width(images)
        rows = resize_matrices(
            height, self.size[0], transformation["top"], transformation["height"]
        )
        cols = resize_matrices(
            width, self.size[1], transformation["left"], transformation["width"]
        )
        cols = ops.where(
            transformation["flip"][:, None, None], ops.flip(cols, axis=1), cols
        )
        return ops.clip(apply_separable(images, rows, cols), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        input_shape = batches.images_shape(input_shape)
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
        self.brightness = checks.non_negative("brightness", brightness)
        self.contrast = checks.non_negative("contrast", contrast)
        self.saturation = checks.non_negative("saturation", saturation)
        self.hue = checks.number("hue", hue, low=0.0, high=0.5)

    def get_random_transformation(self, images, seed):
        batch_size = ops.shape(images)[0]
        seeds = _backend.split(seed, 6)
        transformation = super().get_random_transformation(images, seeds[5])

        def factor(seed, strength):
            return _backend.uniform(
                seed, (batch_size,), max(0.0, 1.0 - strength), 1.0 + strength
            )

        return {
            **transformation,
            "brightness": factor(seeds[0], self.brightness),
            "contrast": factor(seeds[1], self.contrast),
            "saturation": factor(seeds[2], self.saturation),
            "hue": _backend.uniform(seeds[3], (batch_size,), -self.hue, self.hue),
            "order": ops.cast(
                ops.argsort(_backend.uniform(seeds[4], (batch_size, 4))), "int32"
            ),
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
        hue_position = ops.cast(
            ops.argmax(ops.cast(order == 3, "int32"), axis=1), "int32"
        )
        factors = ops.stack(
            [
                transformation["brightness"],
                transformation["contrast"],
                transformation["saturation"],
            ],
            axis=1,
        )  # B x 3
        jittered = images
        for slot in range(3):
            jittered = blend_at(jittered, order, hue_position - 3 + slot, factors)
        jittered = adjust_hue(jittered, transformation["hue"])
        for slot in range(3):
            jittered = blend_at(jittered, order, hue_position + 1 + slot, factors)
        return ops.where(transformation["apply"][:, None, None, None], jittered, images)

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
        gray = ops.convert_to_tensor(TO_GRAY_MATRIX, "float32")
        return apply_color_matrices(images, ops.where(apply, gray, ops.eye(3)))


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
        self.sigma_range = checks.interval("sigma_range", sigma_range, low=1e-6)

    def get_random_transformation(self, images, seed):
        sigma_seed, apply_seed = _backend.split(seed, 2)
        sigma = _backend.uniform(sigma_seed, (ops.shape(images)[0],), *self.sigma_range)
        return {**super().get_random_transformation(images, apply_seed), "sigma": sigma}

    def transform_images(self, images, transformation):
        _, height, width = batch_height_width(images)
        apply = transformation["apply"][:, None, None]
        sigma = transformation["sigma"]
        rows = ops.where(apply, gaussian_matrices(height, sigma), ops.eye(height))
        cols = ops.where(apply, gaussian_matrices(width, sigma), ops.eye(width))
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
        return ops.where(
            transformation["apply"][:, None, None, None], solarize(images), images
        )
