"""Checks of the data given to `BarlowTwins.fit`, with messages that say what to do.

Static facts (rank, channels, dtype, a static batch size, an empty dataset) are
checked before any work, when `fit` is called or the step is traced. Facts known
only at run time (float pixel range, a batch size that is not static) are checked
by assertions that the step's forward pass waits for, so a bad batch never changes
the weights. TensorFlow drops run-time assertions under XLA (`jit_compile=True`);
the static checks still hold there.
"""

import tensorflow as tf

BATCH_SPLIT_RULE = (
    "The global batch must split into equal per-replica batches of at least 2 "
    "samples (each replica computes batch statistics)."
)
EMPTY_DATA_MESSAGE = (
    "The data is empty (no batch). Check the file pattern and any `filter`, and "
    "that `batch(n, drop_remainder=True)` gets at least n samples."
)


def validate_images(images):
    """Check that `images` is a `(B, H, W, 3)` batch of uint8 or float pixels.

    Args:
        images: a tensor or array.

    Returns:
        `images` as a tensor.

    Raises:
        ValueError: with what was received and what to do, on a wrong rank, a
            channel count other than 3 or a non-numeric dtype.
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(
            "Expected a batch of images of shape (batch_size, height, width, 3). "
            f"Received: shape {images.shape}. Batch the dataset (`dataset.batch(n)`) "
            "or add the missing axis."
        )
    if images.shape[-1] != 3:
        raise ValueError(
            f"Expected 3 color channels (RGB). Received: {images.shape[-1]} channels "
            f"(shape {images.shape}). Convert grayscale images with "
            "`tf.image.grayscale_to_rgb` and drop alpha channels first."
        )
    if not (images.dtype == tf.uint8 or images.dtype.is_floating):
        raise ValueError(
            "Expected uint8 images or float images in [0, 255]. "
            f"Received: dtype {images.dtype.name}. "
            "Cast with `tf.cast(images, tf.uint8)`."
        )
    return images


def encoder_input_shape(encoder):
    """An encoder's input shape, or None when Keras does not know it.

    A subclassed model that was never called has none; a multi-input model gives
    a list of shapes.
    """
    try:
        return encoder.input_shape
    except (AttributeError, ValueError):
        return None


def encoder_image_size(encoder):
    """The fixed `(height, width)` of an image encoder's input, or None if not fixed."""
    shape = encoder_input_shape(encoder)
    if not isinstance(shape, tuple) or len(shape) != 4 or None in shape[1:3]:
        return None
    return tuple(shape[1:3])


def images_of(data):
    """The images of a batch given to `fit`: the batch itself, or its first element.

    Args:
        data: images, or a tuple `(images, labels, ...)` (Keras pads it with None).

    Raises:
        ValueError: on a dict, or a tuple whose image-like element is not first.
    """
    if isinstance(data, dict):
        raise ValueError(
            "Expected batches of images or of (images, labels). Received a dict with "
            f"keys {sorted(data)}. Select the images first, e.g. "
            "`dataset.map(lambda example: example['image'])`."
        )
    if not isinstance(data, (tuple, list)):
        return data
    elements = [element for element in data if element is not None]
    ranks = [tf.TensorShape(getattr(x, "shape", None)).rank for x in elements]
    if ranks[0] != 4 and 4 in ranks:
        raise ValueError(
            "The images must be the first element of each batch: (images, labels). "
            f"Received elements of shapes {[tuple(x.shape) for x in elements]}, "
            f"element {ranks.index(4)} looks like the images. Reorder them, e.g. "
            "`dataset.map(lambda labels, images: (images, labels))`."
        )
    return elements[0]


def checked_pixel_range(images):
    """The images, made to wait for a check that float pixels are in [0, 255].

    A cheap run-time check (comparisons and two reductions per batch): normalized
    images (negative values), images scaled beyond 255 or already scaled to [0, 1]
    would silently train on wrong pixels, and NaN or Inf pixels would make the loss
    NaN. A batch whose largest value is in (0, 1] is taken for [0, 1] images: no
    batch of real [0, 255] images is that dark. An all-zero batch passes.

    Args:
        images: `(B, H, W, 3)` uint8 or float.

    Returns:
        `images`, unchanged.
    """
    images = validate_images(images)
    if not images.dtype.is_floating:
        return images
    in_range = tf.reduce_all((images >= 0) & (images <= 255))  # False for NaN too
    largest = tf.reduce_max(images)
    scaled_to_unit = (largest > 0) & (largest <= 1)
    check = tf.debugging.Assert(
        in_range & ~scaled_to_unit,
        [
            "Float images must hold pixel values in [0, 255] (keras_barlow scales them "
            "itself; a batch with all values in [0, 1] is taken as scaled already), "
            "without NaN or Inf. Received a batch with values from",
            tf.reduce_min(images),
            "to",
            largest,
            ". Multiply images "
            "in [0, 1] by 255 (or pass uint8), undo any normalization, and check the "
            "input pipeline for NaN.",
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def check_batch_split(batch_size, num_replicas):
    """Raise unless `batch_size` splits into equal per-replica batches of >= 2.

    Args:
        batch_size: int, the global batch size.
        num_replicas: int, replicas sharing each batch.

    Raises:
        ValueError: if `batch_size` is not a multiple of `num_replicas`, or gives
            fewer than 2 samples per replica.
    """
    if batch_size % num_replicas or batch_size < 2 * num_replicas:
        raise ValueError(
            f"{BATCH_SPLIT_RULE} Received: a global batch of {batch_size} for "
            f"{num_replicas} replicas. {_batch_split_advice(num_replicas)}"
        )


def check_global_batch(dataset, num_replicas=None):
    """Raise unless a dataset's batches split evenly into per-replica batches of >= 2.

    The loss needs batch statistics on every replica, and the replicas must hold
    equal shares of the global batch. This checks the static batch size of a
    `tf.data.Dataset` at once (`check_batch_split`); a batch size unknown until
    run time (no `drop_remainder=True`) is checked in the step by
    `checked_replica_batch`.

    Args:
        dataset: a `tf.data.Dataset` of batches; anything else is not checked.
        num_replicas: replicas sharing each batch; defaults to those of the
            current `tf.distribute` strategy.

    Raises:
        ValueError: if the global batch is not a multiple of `num_replicas`, or
            gives fewer than 2 samples per replica.

    Example:

    >>> images = tf.data.Dataset.from_tensor_slices(tf.zeros((12, 8, 8, 3)))
    >>> check_global_batch(images.batch(6, drop_remainder=True), num_replicas=2)
    """
    if not isinstance(dataset, tf.data.Dataset):
        return
    if num_replicas is None:
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    shape = tf.nest.flatten(dataset.element_spec)[0].shape
    if shape.rank and shape[0] is not None:
        check_batch_split(shape[0], num_replicas)


def checked_replica_batch(view1, view2):
    """The views, made to wait for a check that every replica's batch is valid.

    Called in a replica context. A static per-replica batch below 2 raises at
    once. A batch size unknown when tracing (e.g. the last, partial batch of a
    dataset without `drop_remainder`) is checked when the step runs, before the
    forward pass. One all-reduce of `(n, n^2)` gives every replica the same
    verdict: all n are equal exactly when `R * sum(n^2) == sum(n)^2`.

    Args:
        view1, view2: `(n, H, W, 3)` views of this replica.

    Returns:
        `(view1, view2)`, unchanged.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    local = view1.shape[0]
    if local is not None and local < 2:
        raise ValueError(
            f"{BATCH_SPLIT_RULE} Received: a per-replica batch of {local} "
            f"({replicas} replicas). {_batch_split_advice(replicas)}"
        )
    local = tf.cast(tf.shape(view1)[0], tf.float64)
    total, squares = context.all_reduce(
        tf.distribute.ReduceOp.SUM, [local, tf.square(local)]
    )
    valid = tf.logical_and(
        tf.equal(replicas * squares, tf.square(total)), total >= 2 * replicas
    )
    check = tf.debugging.Assert(
        valid,
        [
            f"{BATCH_SPLIT_RULE} Received: a global batch of",
            total,
            f"samples for {replicas} replicas; this replica has",
            local,
            _batch_split_advice(replicas),
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(view1), tf.identity(view2)


def check_not_empty(x):
    """Raise on training data known to be empty before training starts.

    A dataset whose size is unknown (e.g. after `filter`) and turns out empty is
    caught by `BarlowTwins.fit` when it ends without a step.

    Args:
        x: the `x` given to `fit`: a `tf.data.Dataset`, arrays, or a structure.

    Raises:
        ValueError: when `x` has no sample.
    """
    if isinstance(x, tf.data.Dataset):
        empty = int(x.cardinality()) == 0
    else:
        empty = any(
            getattr(array, "shape", None) is not None
            and len(array.shape)
            and array.shape[0] == 0
            for array in tf.nest.flatten(x)
        )
    if empty:
        raise ValueError(EMPTY_DATA_MESSAGE)


def _batch_split_advice(num_replicas):
    return (
        "Batch the dataset with `drop_remainder=True` and a global batch size that "
        f"is a multiple of {num_replicas} and at least {2 * num_replicas}."
    )
