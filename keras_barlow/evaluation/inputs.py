"""Batches of any input form, read on the host: what the evaluation functions take.

The evaluation functions and `keras_barlow.callbacks.KNNMonitor` take their data
in one of these forms, read by `iterate_batches`:

* a batched `tf.data.Dataset` (TensorFlow is needed for this form only);
* arrays: a NumPy array of images, a tuple `(images, labels)` of arrays, or a
  full-resolution dict of arrays (see `keras_barlow.batches`), batched here;
* any other iterable of batches: a list of batches, a Python generator, a
  `keras.utils.PyDataset`, a Grain dataset, a torch `DataLoader`.

Each batch is in one of the forms of `keras_barlow.batches`: images, `(images,
labels)` or a full-resolution dict `{"images", "image_sizes"[, "labels"]}`.
"""

import math
import sys

import keras
import numpy as np

from keras_barlow import array_data, batches, input_checks

FORMS = (
    "a batched tf.data.Dataset, a NumPy array of images, a tuple (images, labels) "
    "of arrays, or an iterable of batches (a list, a generator, a "
    "keras.utils.PyDataset, a Grain dataset, a torch DataLoader)"
)


def iterate_batches(data, batch_size=256, seed=None):
    """The batches of `data` as NumPy `batches.Batch(images, image_sizes, labels)`.

    Args:
        data: any input form (see the module docstring).
        batch_size: batch size for arrays; other forms come batched.
        seed: for arrays only: `None` keeps their order; an int or a
            `np.random.Generator` shuffles them (pass the same generator at every
            pass for a new order each time).

    Yields:
        `Batch` of NumPy arrays: images `(B, H, W, 3)`, image sizes int `(B, 2)`
        or None, labels `(B,)` or None.

    Raises:
        TypeError: on data of no known form.
        ValueError: on an infinite `PyDataset`, arrays of unequal lengths, or
            image sizes outside their canvases.

    Example:

    >>> images = np.zeros((5, 8, 8, 3), np.uint8)
    >>> [len(batch.images) for batch in iterate_batches(images, batch_size=2)]
    [2, 2, 1]
    """
    if array_data.is_arrays(data):
        source = array_data.ArrayBatches(data, batch_size, seed)
    else:
        source = _source_batches(data)
    for batch in source:
        images, image_sizes, labels = batches.unpack(batch)
        images = np.asarray(images)
        if image_sizes is not None:
            image_sizes = np.asarray(image_sizes)
            batches.check_image_sizes(image_sizes, images.shape)
        yield batches.Batch(
            images,
            image_sizes,
            None if labels is None else np.reshape(np.asarray(labels), (-1,)),
        )


def first_batch(data):
    """The first batch of a dataset or iterable of batches, as it is, in NumPy."""
    for batch in _source_batches(data):
        return keras.tree.map_structure(
            lambda part: None if part is None else np.asarray(part), batch
        )
    raise ValueError("The data is empty: it has no batch.")


def batches_per_pass(data, batch_size=256):
    """The number of batches that one pass of `iterate_batches` yields.

    Read from the length of the data where it has one (see `known_length`);
    otherwise (e.g. a Grain `IterDataset`) the data is read once to count.
    """
    length = known_length(data, batch_size)
    if length is not None:
        return length
    return sum(1 for _ in iterate_batches(data, batch_size))


def known_length(data, batch_size=256):
    """The number of batches of one pass, if known without reading; else None.

    Known for arrays, a tf.data cardinality, a `PyDataset`'s `num_batches` and
    anything with a `len`.

    Raises:
        ValueError: for an infinite tf.data.Dataset or PyDataset.
    """
    if array_data.is_arrays(data):
        return math.ceil(array_data.num_samples(data) / batch_size)
    if input_checks.is_tf_dataset(data):
        cardinality = int(data.cardinality())
        if cardinality == sys.modules["tensorflow"].data.INFINITE_CARDINALITY:
            raise ValueError(
                "The dataset is infinite (e.g. `repeat()`): give a dataset of one "
                "pass over the data."
            )
        return cardinality if cardinality >= 0 else None
    if isinstance(data, keras.utils.PyDataset):
        return _finite(data).num_batches
    return len(data) if hasattr(data, "__len__") else None


def model_inputs(batch):
    """What a model takes from a `Batch`: the images, or a full-resolution dict.

    Labels are left out.
    """
    if batch.image_sizes is None:
        return batch.images
    return batches.full_resolution_batch(batch.images, batch.image_sizes)


def _source_batches(data):
    """An iterator over the batches of a dataset or another iterable of batches."""
    if input_checks.is_tf_dataset(data):
        return data.as_numpy_iterator()
    if isinstance(data, keras.utils.PyDataset):
        return iter(_finite(data))
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"Expected {FORMS}. Received: {type(data).__name__}.")
    return iter(data)


def _finite(py_dataset):
    if py_dataset.num_batches is None:
        raise ValueError(
            "The PyDataset is infinite (its `num_batches` is None): give one whose "
            "length is one pass over the data."
        )
    return py_dataset
