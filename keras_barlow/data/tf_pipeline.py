"""The tf.data pipeline: order, read, make RGB, resize or pad, batch, prefetch.

`file_batches` and `array_batches` build the batches of `from_image_folder` and
`from_numpy`, `build_batches` those of TFDS; `decodable` is the integrity check's
decoder. Decoding and resizing run in parallel maps (AUTOTUNE).
"""

import numpy as np
import tensorflow as tf

from keras_barlow import batches
from keras_barlow.data import canvas
from keras_barlow.data import options as options_lib

AUTOTUNE = tf.data.AUTOTUNE


def file_batches(paths, labels, options, canvas_side=None, skip_errors=False):
    """A `tf.data.Dataset` of batches of the image files `paths`.

    Args:
        paths: string array `(N,)`.
        labels: int32 array `(N,)`, or None for images only.
        options: the resolved `Options` (`full_resolution` a bool).
        canvas_side: the canvas side, with `options.full_resolution`.
        skip_errors: leave out the files that fail to decode (a warning each).

    Returns:
        See `build_batches`.
    """

    def read(file_path, label=None):
        image = decode(tf.io.read_file(file_path))
        return image if label is None else (image, label)

    elements = paths if labels is None else (paths, labels)
    ordered = in_training_order(elements, options, _per_epoch(len(paths), options))
    return build_batches(
        ordered, read, options, canvas_side=canvas_side, skip_errors=skip_errors
    )


def array_batches(images, labels, indices, options):
    """A `tf.data.Dataset` of batches of `images[indices]` (and `labels[indices]`).

    The arrays are held once as tensors; the pipeline shuffles and batches
    indices and gathers each batch, so memory is not duplicated in a shuffle
    buffer.

    Args:
        images: uint8 `(N, H, W, C)`, C in {1, 3, 4}.
        labels: int32 `(N,)` or None.
        indices: int64 `(M,)`, the selected images.
        options: the resolved `Options`.
    """
    image_tensor = tf.convert_to_tensor(images)
    label_tensor = None if labels is None else tf.convert_to_tensor(labels)

    def gather(batch_indices):
        batch = tf.gather(image_tensor, batch_indices)
        if label_tensor is None:
            return batch
        return batch, tf.gather(label_tensor, batch_indices)

    ordered = in_training_order(indices, options, _per_epoch(len(indices), options))
    return build_batches(ordered, gather, options, read_batches=True)


def decodable(paths):
    """bool `(N,)`: whether TensorFlow decodes each file (a parallel map)."""

    def shape(index, path):
        return index, tf.shape(decode(tf.io.read_file(path)))

    paths = np.asarray(paths, str)
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    dataset = dataset.map(shape, num_parallel_calls=AUTOTUNE).ignore_errors()
    decoded = np.zeros(len(paths), bool)
    decoded[[int(index) for index, _ in dataset.as_numpy_iterator()]] = True
    return decoded


def build_batches(
    ordered, read, options, *, canvas_side=None, read_batches=False, skip_errors=False
):
    """Batches of uint8 RGB images `(B, H, W, 3)` (and int32 labels `(B,)`).

    Args:
        ordered: `tf.data.Dataset` of what `read` takes, in the order of the
            batches (see `in_training_order`).
        read: maps an element (or a batch of them, with `read_batches`) to uint8
            images `(..., H, W, C)` with C in {1, 3, 4}, or `(images, labels)`.
        options: the loader's resolved `Options` (batch size, training, resizing).
        canvas_side: the canvas side, with `options.full_resolution`.
        read_batches: batch the elements first, then read each batch (e.g. a
            gather from arrays in memory).
        skip_errors: leave out the elements whose reading fails (a warning each).

    Returns:
        The batched, prefetched `tf.data.Dataset`; with `options.full_resolution`
        (one image per element, not `read_batches`), of full-resolution dicts
        (see `keras_barlow.batches` and `to_canvas`).
    """
    if options.full_resolution and read_batches:
        raise ValueError("Full-resolution batches are read one image at a time.")
    longest = canvas.longest_side(options)

    def load(*element):
        loaded = read(*element)
        images, labels = loaded if isinstance(loaded, tuple) else (loaded, None)
        labels = None if labels is None else tf.cast(labels, tf.int32)
        if options.full_resolution:
            image, size = to_canvas(to_rgb(images), canvas_side, longest)
            return batches.full_resolution_batch(image, size, labels)
        images = resize(to_rgb(images), options)
        return images if labels is None else (images, labels)

    def batch(dataset):
        return dataset.batch(options.batch_size, drop_remainder=options.training)

    if read_batches:
        dataset = batch(ordered).map(load, num_parallel_calls=AUTOTUNE)
    else:
        dataset = ordered.map(load, num_parallel_calls=AUTOTUNE)
        if skip_errors:
            dataset = dataset.ignore_errors(log_warning=True)
        dataset = batch(dataset)
    return dataset.prefetch(AUTOTUNE)


def _per_epoch(count, options):
    steps = options_lib.full_batches_per_epoch(count, options)
    return steps and steps * options.batch_size


def in_training_order(elements, options, per_epoch):
    """A dataset of the elements (arrays) in training order, before batching.

    Without `options.epochs`: one pass, reshuffled at every iteration when
    shuffling. With `options.epochs`: the first `per_epoch` elements of each epoch
    from `initial_epoch` to `epochs - 1`, in an order keyed by `(seed, epoch)`.
    Each epoch then holds whole batches, so no batch straddles two epochs.
    """
    if options.epochs is None:
        dataset = tf.data.Dataset.from_tensor_slices(elements)
        if options.shuffle:
            count = len(tf.nest.flatten(elements)[0])
            dataset = dataset.shuffle(
                count, options.seed, reshuffle_each_iteration=True
            )
        return dataset
    elements = tf.nest.map_structure(tf.convert_to_tensor, elements)
    count = len(tf.nest.flatten(elements)[0])

    def one_epoch(epoch):
        order = tf.range(count, dtype=tf.int64)
        if options.shuffle:
            # `Dataset.shuffle` takes no tensor seed: shuffle the indices instead.
            seed = tf.stack([tf.constant(options.seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed, alg="philox")
        order = order[:per_epoch]
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda tensor: tf.gather(tensor, order), elements)
        )

    return tf.data.Dataset.range(options.initial_epoch, options.epochs).flat_map(
        one_epoch
    )


# ----------------------------------------------------------------------------------
# Image ops (tf.data map functions).


def decode(contents):
    """JPEG/PNG bytes -> uint8 `(H, W, 3)`: gray made RGB, alpha dropped.

    JPEG with the accurate integer DCT, as Pillow and the Grain pipeline decode
    it (TensorFlow's default is the fast one).
    """
    image = tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def to_rgb(images):
    """uint8 `(..., H, W, C)` with C in {1, 3, 4} -> `(..., H, W, 3)`."""
    channels = images.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(images)
    return images[..., :3] if channels == 4 else images


def resize(images, options):
    """uint8 `(..., H, W, 3)` -> `(..., *options.image_size, 3)`, untouched if equal.

    Antialiased, rounded back to uint8; with `options.crop_to_aspect_ratio`,
    center-cropped to the target's aspect ratio first (`canvas.center_crop_box`).
    """
    size = options.image_size
    if size is None:
        return images
    if options.crop_to_aspect_ratio:
        shape = tf.shape(images, out_type=tf.int64)
        top, left, height, width = canvas.center_crop_box(
            shape[-3], shape[-2], size, tf.minimum, tf.maximum
        )
        images = images[..., top : top + height, left : left + width, :]

    def resized():
        result = tf.image.resize(
            images, size, method=options.interpolation, antialias=True
        )
        return _to_uint8(result)

    same = tf.reduce_all(tf.shape(images)[-3:-1] == tf.constant(size))
    result = tf.cond(same, lambda: images, resized)
    return tf.ensure_shape(result, images.shape[:-3].concatenate((*size, 3)))


def to_canvas(image, side, longest):
    """uint8 `(H, W, 3)` -> `(side, side, 3)` canvas and its int32 `(2,)` true size.

    The image keeps its pixels, unless its longer side exceeds `longest`: it is
    then shrunk (bicubic, antialiased, PIL's filter) to a longer side of
    `longest` (`canvas.shrunk_size`). It is placed at the top left, the rest is
    zeros. Cropping then happens in the model, on the true region
    (`RandomResizedCrop(image_sizes=...)`).
    """
    shape = tf.shape(image, out_type=tf.int64)
    height, width = shape[0], shape[1]

    def shrunk():
        new_size = canvas.shrunk_size(height, width, longest, tf.maximum)
        new_size = tf.cast(tf.stack(new_size), tf.int32)
        result = tf.image.resize(image, new_size, method="bicubic", antialias=True)
        return _to_uint8(result)

    image = tf.cond(tf.maximum(height, width) > longest, shrunk, lambda: image)
    size = tf.shape(image)[:2]
    padded = tf.image.pad_to_bounding_box(image, 0, 0, side, side)
    return tf.ensure_shape(padded, (side, side, 3)), tf.cast(size, tf.int32)


def _to_uint8(images):
    images = tf.cast(images, tf.float32)  # "nearest" keeps uint8
    return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
