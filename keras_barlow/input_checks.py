"""Checks of the data given to `BarlowTwins.fit`, with messages that say what to do.

Static facts (rank, channels, dtype, a static batch size, an empty dataset) are
checked before any work, when `fit` is called or the step is traced. On
TensorFlow, facts known only at run time (the float pixel range, a batch size
that is not static) are checked by assertions that the step's forward pass waits
for, so a bad batch never changes the weights; TensorFlow drops run-time
assertions under XLA (`jit_compile=True`). On JAX every shape is static, and the
pixel range is checked on the host, batch by batch, before the step.

The pixel rule: uint8 images are always fine. Float images must lie in [0, 255]
without NaN or Inf, and a float batch whose largest value is above 0 but below 2
is refused as already scaled to [0, 1] (a resize can overshoot 1 a little): no
batch of real [0, 255] images is that dark. All-zero batches pass.
"""

import sys

import keras
import numpy as np
from keras import backend

from keras_barlow import _backend, batches

BATCH_SPLIT_RULE = (
    "The global batch must split into equal shares across replicas or devices, "
    "and batch statistics need at least 2 samples (per replica on TensorFlow)."
)
EMPTY_DATA_MESSAGE = (
    "The data is empty (no batch). Check the file pattern and any `filter`, and "
    "that `batch(n, drop_remainder=True)` gets at least n samples."
)
NO_SPLITTABLE_BATCH_MESSAGE = (
    "The data is empty, or every batch was skipped: no batch splits into equal "
    "per-replica batches of at least 2 samples. Check the file pattern and any "
    "`filter`, and batch the dataset with `drop_remainder=True` and a global "
    "batch size that is a multiple of the number of replicas and at least twice "
    "that."
)
TOO_SMALL_BATCHES_MESSAGE = (
    "No step was taken: every batch had fewer than 2 samples. Barlow Twins "
    "normalizes the embeddings along the batch, which needs at least 2 samples "
    "(per replica on TensorFlow). Use a batch size of at least 2 and data of at "
    "least one such batch."
)
PIXEL_RULE = (
    "Float images must hold pixel values in [0, 255] (keras_barlow scales them "
    "itself; a batch whose largest value is below 2 is taken as scaled to [0, 1] "
    "already), without NaN or Inf."
)
PIXEL_ADVICE = (
    "Multiply images in [0, 1] by 255 (or pass uint8), undo any normalization, "
    "and check the input pipeline for NaN."
)
# Below this, a float batch is taken for images scaled to [0, 1].
UNIT_RANGE_LIMIT = 2.0


def check_pixel_range(images):
    """Raise unless a NumPy batch of float pixels follows the pixel rule.

    The host-side check (JAX backend); see the module docstring for the rule.

    Args:
        images: `(B, H, W, 3)` NumPy array, uint8 or float.

    Raises:
        ValueError: on pixels outside [0, 255], NaN or Inf, or a batch scaled to
            [0, 1] already.
    """
    # The dtype first: uint8 batches, on the host or a device, are not copied.
    if not backend.is_float_dtype(backend.standardize_dtype(images.dtype)):
        return
    images = np.asarray(images)
    if images.size == 0:
        return
    smallest, largest = np.min(images), np.max(images)
    if not _pixels_valid(smallest, largest, np.all(np.isfinite(images))):
        raise ValueError(
            f"{PIXEL_RULE} Received a batch with values from {float(smallest)} to "
            f"{float(largest)}. {PIXEL_ADVICE}"
        )


def _pixels_valid(smallest, largest, finite):
    """The pixel rule on a batch's extremes: NumPy scalars or TensorFlow tensors."""
    scaled_to_unit = (largest > 0) & (largest < UNIT_RANGE_LIMIT)
    return finite & (smallest >= 0) & (largest <= 255) & ~scaled_to_unit


def checked_pixel_range(images):
    """The images, made to wait for a check of the pixel rule (TensorFlow).

    A cheap run-time check (comparisons and two reductions per batch): normalized
    images (negative values), images scaled beyond 255 or already scaled to [0, 1]
    would silently train on wrong pixels, and NaN or Inf pixels would make the loss
    NaN. On JAX the step cannot stop on a value; `check_pixel_range` runs on the
    host instead and this returns the images unchanged.

    Args:
        images: `(B, H, W, 3)` uint8 or float.

    Returns:
        `images`, unchanged.
    """
    images = batches.validate_images(images)
    dtype = backend.standardize_dtype(images.dtype)
    if _backend.BACKEND != "tensorflow" or not backend.is_float_dtype(dtype):
        return images
    tf = _backend.tf
    smallest, largest = tf.reduce_min(images), tf.reduce_max(images)
    finite = tf.reduce_all(tf.math.is_finite(images))
    check = tf.debugging.Assert(
        _pixels_valid(smallest, largest, finite),
        [
            f"{PIXEL_RULE} Received a batch with values from",
            smallest,
            "to",
            largest,
            f". {PIXEL_ADVICE}",
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def batch_split_rule(num_replicas=None):
    """`(shards, smallest)`: a global batch is a multiple of `shards`, >= `smallest`.

    On TensorFlow every one of R replicas computes batch statistics on its share:
    `(R, 2R)`. On JAX one program runs on the global batch, sharded over the
    devices of the `keras.distribution` batch axis (those of this process, which
    feeds its own share): `(devices, 2)`.

    Args:
        num_replicas: TensorFlow replicas sharing each batch; defaults to those of
            the current strategy. Ignored on JAX.
    """
    if _backend.BACKEND != "tensorflow":
        return _backend.local_batch_shards(), 2
    shards = _backend.num_replicas() if num_replicas is None else num_replicas
    return shards, 2 * shards


def checked_image_sizes(images, image_sizes):
    """`image_sizes`, made to wait for a check that they fit the canvas (TensorFlow).

    The run-time counterpart of `batches.check_image_sizes`, which JAX runs on
    the host: on JAX this returns `image_sizes` unchanged.

    Args:
        images: `(B, S, S, 3)` canvases.
        image_sizes: int `(B, 2)` true `(height, width)`.
    """
    if _backend.BACKEND != "tensorflow":
        return image_sizes
    tf = _backend.tf
    sizes = tf.cast(image_sizes, tf.int32)
    canvas = tf.shape(images)[1:3]
    valid = tf.reduce_all((sizes >= 1) & (sizes <= canvas))
    check = tf.debugging.Assert(
        valid,
        [
            f"{batches.IMAGE_SIZE_RULE} Received sizes from",
            tf.reduce_min(sizes, axis=0),
            "to",
            tf.reduce_max(sizes, axis=0),
            "on a canvas of",
            canvas,
            f". {batches.IMAGE_SIZE_ADVICE}",
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(image_sizes)


def check_batch_split(batch_size, shards, smallest=None):
    """Raise unless `batch_size` is a multiple of `shards` and >= `smallest`.

    Args:
        batch_size: int, the global batch size.
        shards: int, replicas (TensorFlow) or devices (JAX) sharing each batch.
        smallest: the smallest global batch; defaults to `2 * shards`, the
            TensorFlow rule (see `batch_split_rule`).

    Raises:
        ValueError: if `batch_size` is not a multiple of `shards` or is below
            `smallest`.
    """
    if not splits_evenly(batch_size, shards, smallest):
        raise ValueError(
            f"{BATCH_SPLIT_RULE} Received: a global batch of {batch_size} for "
            f"{shards} {_sharing(shards)}. {batch_split_advice(shards, smallest)}"
        )


def splits_evenly(batch_size, shards, smallest=None):
    """Whether a batch size (int or tensor) follows the split rule."""
    smallest = 2 * shards if smallest is None else smallest
    return (batch_size % shards == 0) & (batch_size >= smallest)


def batch_split_advice(shards, smallest=None):
    smallest = 2 * shards if smallest is None else smallest
    return (
        "Batch the dataset with `drop_remainder=True` and a global batch size that "
        f"is a multiple of {shards} and at least {smallest}."
    )


def _sharing(shards):
    return "replica(s)" if _backend.BACKEND == "tensorflow" else "device(s)"


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (never imports TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def is_one_shot(data):
    """Whether `data` is an iterator that can be read once only (a generator)."""
    return hasattr(data, "__next__") and iter(data) is data


def check_reiterable(data, name, purpose):
    """Raise unless `data` can be read more than once (no one-shot iterator).

    Args:
        data: any data form (see `keras_barlow.evaluation.inputs`).
        name: the argument's name, for the message.
        purpose: why it is read again, e.g. "at every epoch".

    Raises:
        ValueError: for an iterator such as a Python generator.
    """
    if is_one_shot(data):
        raise ValueError(
            f"`{name}` is read {purpose}, but it is a {type(data).__name__}, which "
            "can be read only once. Pass arrays, a list of batches, a "
            "keras.utils.PyDataset, a Grain dataset, a torch DataLoader or a "
            "tf.data.Dataset instead."
        )


def static_batch_size(dataset):
    """The static batch size of a `tf.data.Dataset` of batches, else None."""
    shape = batches.first_images(dataset.element_spec).shape
    return shape[0] if shape.rank else None


def check_global_batch(dataset, num_replicas=None):
    """Raise unless a `tf.data.Dataset`'s static batch size follows the split rule.

    The loss needs batch statistics on every replica, and the replicas (devices
    on JAX) must hold equal shares of the global batch (`batch_split_rule`).
    Batches of a size unknown until run time (no `drop_remainder=True`) are left
    to `BarlowTwins.fit`, which skips those that do not split (a short last
    batch).

    Args:
        dataset: a `tf.data.Dataset` of batches; anything else is not checked.
        num_replicas: TensorFlow replicas sharing each batch; defaults to those
            of the current `tf.distribute` strategy.

    Raises:
        ValueError: if the static global batch does not follow the rule.

    Example:

    >>> images = tf.data.Dataset.from_tensor_slices(tf.zeros((12, 8, 8, 3)))
    >>> check_global_batch(images.batch(6, drop_remainder=True), num_replicas=2)
    """
    if not is_tf_dataset(dataset):
        return
    batch_size = static_batch_size(dataset)
    if batch_size is not None:
        check_batch_split(batch_size, *batch_split_rule(num_replicas))


def checked_replica_batch(view1, view2):
    """The views, made to wait for a check that every replica's batch is valid.

    Called in the step (in a replica context on TensorFlow). A static
    per-replica batch below 2 raises at once; on JAX every batch is static and
    global, so that is the whole check there. On TensorFlow a batch size unknown
    when tracing is checked when the step runs, before the forward pass: one
    all-reduce of `(n, n^2)` gives every replica the same verdict, as all n are
    equal exactly when `R * sum(n^2) == sum(n)^2`.

    Args:
        view1, view2: `(n, H, W, 3)` views of this replica.

    Returns:
        `(view1, view2)`, unchanged.
    """
    replicas = _backend.num_replicas()
    local = view1.shape[0]
    if local is not None and local < 2:
        raise ValueError(
            f"{BATCH_SPLIT_RULE} Received: a batch of {local} in the step "
            f"({replicas} replica(s)). {batch_split_advice(replicas)}"
        )
    if _backend.BACKEND != "tensorflow" or local is not None:
        return view1, view2
    tf = _backend.tf
    local = tf.cast(tf.shape(view1)[0], tf.float64)
    total, squares = _backend.sum_across_replicas([local, tf.square(local)])
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
            batch_split_advice(replicas),
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
    if is_tf_dataset(x):
        empty = int(x.cardinality()) == 0
    else:
        arrays = keras.tree.flatten(x) if isinstance(x, (tuple, list, dict)) else [x]
        empty = any(
            getattr(array, "shape", None) is not None
            and len(array.shape)
            and array.shape[0] == 0
            for array in arrays
        )
    if empty:
        raise ValueError(EMPTY_DATA_MESSAGE)
