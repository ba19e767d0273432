"""Two-view image distortions of the Barlow Twins recipe, drawn per sample, on device.

`BarlowTwinsAugment` makes the two views of the paper's recipe (or solo-learn's
CIFAR recipe) from the per-sample distortion layers of `keras_barlow.distortions`.

Images enter as uint8 or float in [0, 255] with shape `(B, H, W, 3)` and leave as
float32 normalized with the ImageNet mean and standard deviation.
"""

import inspect

import keras

from keras_barlow import _backend, backbones, batches, input_checks
from keras_barlow import _checks as checks
from keras_barlow.distortions import (
    RandomColorJitter,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomResizedCrop,
    RandomSolarize,
)
from keras_barlow.image_ops import normalize, to_unit_range

__all__ = ["PRESETS", "BarlowTwinsAugment", "make_augmenter"]

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
        inputs: uint8 or float images `(B, H, W, 3)` with values in [0, 255],
            or a full-resolution batch `{"images", "image_sizes"}` (the
            loaders' batches of large images, see `keras_barlow.batches`):
            images padded at the bottom and right to a common canvas and each
            one's true `(height, width)`. The crops are then drawn on, and
            resampled from, each image's own pixels, as torchvision crops the
            decoded image.
        seed: optional int32 `(2,)` stateless seed for this call.

    Returns:
        `(view1, view2)`, float32 `(B, image_size[0], image_size[1], 3)`.

    Example:

    >>> augment = BarlowTwinsAugment(32, preset="cifar")
    >>> images = np.zeros((8, 32, 32, 3), np.uint8)
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
        self.image_size = checks.image_size("image_size", image_size)
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

    def call(self, inputs, seed=None):
        images, image_sizes, _ = batches.unpack(inputs)
        images = batches.validate_images(images)
        unit = to_unit_range(images)
        if image_sizes is not None:
            known = batches.concrete(image_sizes)
            if known is not None:  # eager: checked now; in a graph, at run time
                batches.check_image_sizes(known, images.shape)
            image_sizes = input_checks.checked_image_sizes(images, image_sizes)
            unit = batches.full_resolution_batch(unit, image_sizes)
        seed = _backend.seed_for_call(self.seed_generator) if seed is None else seed
        seeds = _backend.split(_backend.as_seed(seed), 2)
        return tuple(
            self._distort(unit, layers, view_seed)
            for layers, view_seed in zip(self.views, seeds, strict=True)
        )

    def _distort(self, images, layers, seed):
        """One view; the crop comes first and alone reads a full-resolution batch."""
        seeds = _backend.split(seed, len(layers))
        for layer, layer_seed in zip(layers, seeds, strict=True):
            images = layer(images, seed=layer_seed)
        return normalize(images)

    def build(self, input_shape):
        # Nothing depends on the input shape; the random layers hold no weights.
        input_shape = batches.images_shape(input_shape)
        for layer in (layer for view in self.views for layer in view):
            layer.build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = (batches.images_shape(input_shape)[0], *self.image_size, 3)
        return shape, shape

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "preset": self.preset,
            "seed": self.seed,
            **self.options,
        }


def make_augmenter(augmenter, encoder):
    """The augmenter of `BarlowTwins(augmenter=...)`: a layer, a preset name or None."""
    if augmenter is None:
        return None
    if isinstance(augmenter, keras.layers.Layer):
        if "seed" not in inspect.signature(augmenter.call).parameters:
            raise TypeError(
                "An augmenter layer must accept the step's seed: "
                "`call(images, seed=None)` returning (view1, view2), with its random "
                "draws taken from `seed` (an int32 tensor of shape (2,)) when given. "
                f"Received: {type(augmenter).__name__}, whose call has no `seed`."
            )
        return augmenter
    if isinstance(augmenter, str):
        image_size = backbones.encoder_image_size(encoder)
        if image_size is None:
            raise ValueError(
                f"augmenter={augmenter!r} needs the encoder's input size, but the "
                "encoder has no fixed (height, width) input. Pass "
                "`augmenter=keras_barlow.BarlowTwinsAugment(image_size, preset)`."
            )
        return BarlowTwinsAugment(image_size, preset=augmenter)
    raise TypeError(
        "`augmenter` must be a layer returning (view1, view2), a preset name "
        f"or None. Received: {augmenter!r}"
    )
