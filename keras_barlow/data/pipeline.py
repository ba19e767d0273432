"""The one pipeline of every loader: order, read, make RGB, resize, batch, prefetch."""

import tensorflow as tf

from keras_barlow.data import options as options_lib

AUTOTUNE = tf.data.AUTOTUNE


def build_batches(ordered, read, options, *, read_batches=False, skip_errors=False):
    """Batches of uint8 RGB images `(B, H, W, 3)` (and int32 labels `(B,)`).

    Args:
        ordered: `tf.data.Dataset` of what `read` takes, in the order of the
            batches (see `in_training_order`).
        read: maps an element (or a batch of them, with `read_batches`) to uint8
            images `(..., H, W, C)` with C in {1, 3, 4}, or `(images, labels)`.
        options: the loader's `Options` (batch size, training, resizing).
        read_batches: batch the elements first, then read each batch (e.g. a
            gather from arrays in memory).
        skip_errors: leave out the elements whose reading fails (a warning each).

    Returns:
        The batched, prefetched `tf.data.Dataset`; with `options.full_resolution`
        (one image per element, not `read_batches`), of dicts
        `{"images", "image_sizes"[, "labels"]}` (see `to_canvas`).
    """
    if options.full_resolution and read_batches:
        raise ValueError("Full-resolution batches are read one image at a time.")

    def load(*element):
        loaded = read(*element)
        images, labels = loaded if isinstance(loaded, tuple) else (loaded, None)
        if options.full_resolution:
            canvas, size = to_canvas(to_rgb(images), options_lib.canvas_side(options))
            batch = {"images": canvas, "image_sizes": size}
            if labels is not None:
                batch["labels"] = tf.cast(labels, tf.int32)
            return batch
        images = resize(to_rgb(images), options)
        return images if labels is None else (images, tf.cast(labels, tf.int32))

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
    """JPEG/PNG bytes -> uint8 `(H, W, 3)`: gray made RGB, alpha dropped."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
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
    center-cropped to the target's aspect ratio first.
    """
    size = options.image_size
    if size is None:
        return images
    if options.crop_to_aspect_ratio:
        images = _center_crop_to_aspect(images, size)

    def resized():
        result = tf.image.resize(
            images, size, method=options.interpolation, antialias=True
        )
        return tf.cast(tf.clip_by_value(tf.round(result), 0.0, 255.0), tf.uint8)

    same = tf.reduce_all(tf.shape(images)[-3:-1] == tf.constant(size))
    result = tf.cond(same, lambda: images, resized)
    return tf.ensure_shape(result, images.shape[:-3].concatenate((*size, 3)))


def to_canvas(image, side):
    """uint8 `(H, W, 3)` -> `(side, side, 3)` canvas and its int32 `(2,)` true size.

    The image keeps its pixels, unless its longer side exceeds `side`: it is then
    shrunk (bicubic, antialiased, PIL's filter) to a longer side of `side`. It is
    placed at the top left, the rest is zeros. Cropping then happens in the
    model, on the true region (`RandomResizedCrop(image_sizes=...)`).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    longer = tf.maximum(height, width)

    def shrunk():
        scale = side / tf.cast(longer, tf.float32)
        new_size = _round_int(tf.cast(tf.stack([height, width]), tf.float32) * scale)
        new_size = tf.minimum(new_size, side)
        result = tf.image.resize(image, new_size, method="bicubic", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(result), 0.0, 255.0), tf.uint8)

    image = tf.cond(longer > side, shrunk, lambda: image)
    size = tf.shape(image)[:2]
    canvas = tf.image.pad_to_bounding_box(image, 0, 0, side, side)
    return tf.ensure_shape(canvas, (side, side, 3)), tf.cast(size, tf.int32)


def _center_crop_to_aspect(images, size):
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    aspect = size[1] / size[0]
    crop_height = tf.minimum(height, _round_int(tf.cast(width, tf.float32) / aspect))
    crop_width = tf.minimum(width, _round_int(tf.cast(height, tf.float32) * aspect))
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return images[..., top : top + crop_height, left : left + crop_width, :]


def _round_int(value):
    return tf.maximum(1, tf.cast(tf.round(value), tf.int32))
