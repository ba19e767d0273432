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

import contextlib
import sys
import warnings

import keras
import numpy as np
from keras import backend, ops

from keras_barlow import _backend, losses

BATCH_SPLIT_RULE = (
    "The global batch must split into equal per-replica batches of at least 2 "
    "samples (each replica computes batch statistics)."
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
    images = ops.convert_to_tensor(images)
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(
            "Expected a batch of images of shape (batch_size, height, width, 3). "
            f"Received: shape {shape}. Batch the dataset "
            "(`dataset.batch(n)`) or add the missing axis."
        )
    if shape[-1] != 3:
        raise ValueError(
            f"Expected 3 color channels (RGB). Received: {shape[-1]} channels "
            f"(shape {shape}). Convert grayscale images with "
            "`tf.image.grayscale_to_rgb` and drop alpha channels first."
        )
    dtype = backend.standardize_dtype(images.dtype)
    if not (dtype == "uint8" or backend.is_float_dtype(dtype)):
        raise ValueError(
            "Expected uint8 images or float images in [0, 255]. "
            f"Received: dtype {dtype}. Cast them to uint8 first."
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


# The keys of the loaders' full-resolution batches (`keras_barlow.data`): images
# padded to a common canvas and their true sizes, optionally with labels.
FULL_RESOLUTION_KEYS = ("images", "image_sizes")


def is_full_resolution_batch(data):
    """Whether `data` is a dict `{"images", "image_sizes"[, "labels"]}`."""
    return isinstance(data, dict) and set(data) - {"labels"} == set(
        FULL_RESOLUTION_KEYS
    )


def first_images(data):
    """The images of a batch given to `fit`: the batch itself, or its first element.

    Args:
        data: images, a tuple `(images, labels, ...)` (Keras pads it with None),
            or a full-resolution dict `{"images", "image_sizes"[, "labels"]}`.

    Raises:
        ValueError: on any other dict, or a tuple whose image-like element is not
            first.
    """
    if is_full_resolution_batch(data):
        return data["images"]
    if isinstance(data, dict):
        raise ValueError(
            "Expected batches of images or of (images, labels). Received a dict with "
            f"keys {sorted(data)}. Select the images first, e.g. "
            "`dataset.map(lambda example: example['image'])`."
        )
    if not isinstance(data, (tuple, list)):
        return data
    elements = [element for element in data if element is not None]
    shapes = [tuple(getattr(x, "shape", ())) for x in elements]
    ranks = [len(shape) for shape in shapes]
    if ranks[0] != 4 and 4 in ranks:
        raise ValueError(
            "The images must be the first element of each batch: (images, labels). "
            f"Received elements of shapes {shapes}, element {ranks.index(4)} looks "
            "like the images. Reorder them, e.g. "
            "`dataset.map(lambda labels, images: (images, labels))`."
        )
    return elements[0]


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
    images = validate_images(images)
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


def check_batch_split(batch_size, num_replicas):
    """Raise unless `batch_size` splits into equal per-replica batches of >= 2.

    Args:
        batch_size: int, the global batch size.
        num_replicas: int, replicas sharing each batch.

    Raises:
        ValueError: if `batch_size` is not a multiple of `num_replicas`, or gives
            fewer than 2 samples per replica.
    """
    if not splits_evenly(batch_size, num_replicas):
        raise ValueError(
            f"{BATCH_SPLIT_RULE} Received: a global batch of {batch_size} for "
            f"{num_replicas} replicas. {batch_split_advice(num_replicas)}"
        )


def splits_evenly(batch_size, num_replicas):
    """Whether a batch size (int or tensor) splits into per-replica batches of >= 2."""
    return (batch_size % num_replicas == 0) & (batch_size >= 2 * num_replicas)


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (never imports TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def static_batch_size(dataset):
    """The static batch size of a `tf.data.Dataset` of batches, else None."""
    shape = _first_leaf(dataset.element_spec).shape
    return shape[0] if shape.rank else None


def check_global_batch(dataset, num_replicas=None):
    """Raise unless a dataset's batches split evenly into per-replica batches of >= 2.

    The loss needs batch statistics on every replica, and the replicas must hold
    equal shares of the global batch. This checks the static batch size of a
    `tf.data.Dataset` at once (`check_batch_split`); batches of a size unknown
    until run time (no `drop_remainder=True`) are handled by `BarlowTwins.fit`,
    which skips those that do not split (a short last batch).

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
    if not is_tf_dataset(dataset):
        return
    if num_replicas is None:
        num_replicas = _backend.strategy_replicas()
    batch_size = static_batch_size(dataset)
    if batch_size is not None:
        check_batch_split(batch_size, num_replicas)


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
            f"{BATCH_SPLIT_RULE} Received: a per-replica batch of {local} "
            f"({replicas} replicas). {batch_split_advice(replicas)}"
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
        arrays = x if isinstance(x, (tuple, list)) else [x]
        empty = any(
            getattr(array, "shape", None) is not None
            and len(array.shape)
            and array.shape[0] == 0
            for array in arrays
        )
    if empty:
        raise ValueError(EMPTY_DATA_MESSAGE)


@contextlib.contextmanager
def readable_run_time_errors():
    """Re-raise a failed run-time check (this module's or the loss's) as a `ValueError`.

    TensorFlow reports a failed `tf.debugging.Assert` as "Graph execution error"
    with the node's trace first and the message last; the `ValueError` says what
    was wrong and what to do first, with TensorFlow's error chained.
    """
    try:
        yield
    except Exception as error:
        text = str(getattr(error, "message", error))
        marker = "assertion failed: "
        ours = (PIXEL_RULE, BATCH_SPLIT_RULE, losses.TOO_SMALL_BATCH_RULE)
        if marker not in text or not any(rule in text for rule in ours):
            raise
        message = text[text.index(marker) + len(marker) :].split("\n")[0]
        message = message.replace("] [", " ").strip("[] ").replace(" .", ".")
        raise ValueError(message) from error


def skipping_unsplittable_batches(dataset, num_replicas):
    """A `tf.data.Dataset` of batches without those that do not split evenly.

    Batches of a static size were checked already; a batch size unknown until
    run time (no `drop_remainder=True`) may end an epoch with a short batch that
    has no batch statistics. Such batches are skipped, with a warning now, so
    that the epoch is not lost.
    """
    if static_batch_size(dataset) is not None:
        return dataset
    warnings.warn(
        "The dataset's batch size is not static (batched without "
        "`drop_remainder=True`): batches that do not split into equal "
        f"per-replica batches of at least 2 ({num_replicas} replica(s)), such as a "
        "short last batch, are skipped. "
        f"{batch_split_advice(num_replicas)}",
        stacklevel=3,
    )
    tf = sys.modules["tensorflow"]

    def splits(*batch):
        return splits_evenly(tf.shape(_first_leaf(batch))[0], num_replicas)

    return dataset.filter(splits)


def with_pixel_checks(x):
    """`x` (arrays, a `PyDataset` or a `tf.data.Dataset`), checked on the host.

    For the JAX backend, whose step cannot stop on a value: NumPy arrays are
    checked at once, the batches of a `PyDataset` or a dataset as they come,
    before the step that would use them.
    """
    if is_tf_dataset(x):
        tf = sys.modules["tensorflow"]
        spec = x.element_spec
        if is_full_resolution_batch(spec) and spec["images"].dtype == tf.uint8:
            return x  # the loaders' full-resolution batches: uint8, always in range

        def checked(*batch):
            images = tf.numpy_function(
                _checked_numpy, [_first_leaf(batch)], _first_leaf(batch).dtype
            )
            images = tf.ensure_shape(images, _first_leaf(batch).shape)
            return (images, *batch[1:]) if len(batch) > 1 else images

        return x.map(checked)
    if isinstance(x, keras.utils.PyDataset):
        return _PixelCheckedPyDataset(x)
    if x is not None and not isinstance(x, (tuple, list, dict)):
        check_pixel_range(x)
    elif isinstance(x, (tuple, list)) and x:
        check_pixel_range(x[0])
    return x


def _checked_numpy(images):
    check_pixel_range(images)
    return images


class _PixelCheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches pass `check_pixel_range` before they are used."""

    def __init__(self, dataset):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __getitem__(self, index):
        batch = self.dataset[index]
        check_pixel_range(first_images(batch))
        return batch

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def batch_split_advice(num_replicas):
    return (
        "Batch the dataset with `drop_remainder=True` and a global batch size that "
        f"is a multiple of {num_replicas} and at least {2 * num_replicas}."
    )


def _first_leaf(structure):
    while isinstance(structure, (tuple, list, dict)):
        structure = (
            next(iter(structure.values()))
            if isinstance(structure, dict)
            else structure[0]
        )
    return structure
