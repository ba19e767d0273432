"""The evaluation transform of images: resize, center crop, normalize.

The deterministic counterpart of `keras_barlow.augment`: what the encoder sees in
evaluation and in the exported SavedModel.
"""

import keras
import numpy as np
from keras import ops

from keras_barlow import _checks as checks
from keras_barlow.batches import validate_images
from keras_barlow.image_ops import normalize, to_unit_range


@keras.saving.register_keras_serializable(package="keras_barlow")
class Preprocessing(keras.layers.Layer):
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
        self.crop_fraction = checks.number(
            "crop_fraction", crop_fraction, low=0.0, high=1.0, low_open=True
        )
        self.image_size = checks.image_size("image_size", image_size)

    def call(self, images):
        images = to_unit_range(validate_images(images))
        if None in images.shape[1:3]:
            images = _resize_and_center_crop_at_run_time(
                images, self.image_size, self.crop_fraction
            )
        elif self.crop_fraction != 1.0 or tuple(images.shape[1:3]) != self.image_size:
            images = _resize_and_center_crop(
                images, self._resized_shape(images.shape[1:3]), self.image_size
            )
        return normalize(images)

    def _resized_shape(self, shape):
        """The shape whose center crop is `image_size`: the shorter side scaled."""
        # In float32, as the run-time path computes it, so both agree to the pixel.
        target = np.float32(
            [round(side / self.crop_fraction) for side in self.image_size]
        )
        shape = np.float32(shape)
        return tuple(int(side) for side in np.ceil(shape * np.max(target / shape)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_size, 3)

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "crop_fraction": self.crop_fraction,
        }


def _resize_and_center_crop(images, resized_shape, crop_shape):
    """Antialiased bilinear resize to `resized_shape`, then the center `crop_shape`."""
    images = ops.image.resize(
        images, resized_shape, antialias=True, data_format="channels_last"
    )
    top = (resized_shape[0] - crop_shape[0]) // 2
    left = (resized_shape[1] - crop_shape[1]) // 2
    images = images[:, top : top + crop_shape[0], left : left + crop_shape[1], :]
    return ops.clip(images, 0.0, 1.0)


def _resize_and_center_crop_at_run_time(images, image_size, crop_fraction):
    """`Preprocess` for images whose size is known only at run time.

    Only TensorFlow graphs have such sizes (a serving signature for any image
    size). With `crop_fraction=1`, images that already have `image_size` skip the
    resize and stay bit-exact.
    """
    import tensorflow as tf

    target = [round(side / crop_fraction) for side in image_size]
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)
    factor = tf.reduce_max(tf.constant(target, tf.float32) / shape)
    resized_shape = tf.cast(tf.math.ceil(shape * factor), tf.int32)

    def resize():
        resized = tf.image.resize(images, resized_shape, antialias=True)
        resized = tf.image.resize_with_crop_or_pad(resized, *image_size)
        return tf.clip_by_value(resized, 0.0, 1.0)

    if crop_fraction == 1.0:
        same_size = tf.reduce_all(tf.shape(images)[1:3] == image_size)
        resized = tf.cond(same_size, lambda: images, resize)
    else:
        resized = resize()
    return tf.ensure_shape(resized, (None, *image_size, 3))


# The first releases' name of the layer: configs saved with it still load.
keras.saving.get_custom_objects()["keras_barlow>Preprocess"] = Preprocessing
