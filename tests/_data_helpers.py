"""Helpers shared by the tests of keras_barlow.data on tf.data.

Used by test_data_folders.py, test_data_splits.py and test_data_tfds.py:
`from _data_helpers import collect_batches, png_bytes` (pytest puts tests/ on
sys.path). TensorFlow is imported where it is used, so that importing this
module needs no TensorFlow.
"""

import numpy as np


def png_bytes(array):
    """`array` (uint8, height x width x channels) encoded as a PNG file's bytes."""
    import tensorflow as tf

    return tf.io.encode_png(array).numpy()


def collect_batches(dataset):
    """A tf.data dataset's batches concatenated: an array, or a tuple of arrays."""
    batches = list(dataset.as_numpy_iterator())
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(part) for part in zip(*batches, strict=True))
    return np.concatenate(batches)
