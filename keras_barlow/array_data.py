"""Arrays given as data: recognized, measured and cut into batches.

`BarlowTwins.fit` (on JAX) and the evaluation functions both take arrays in
place of a dataset: an array of images, a tuple `(images, labels)` or a
full-resolution dict of arrays (see `keras_barlow.batches`), with one entry per
sample along the first axis. This module owns what counts as such arrays and
how they are batched; a list is not arrays here (the evaluation reads a list as
a list of batches).
"""

import keras
import numpy as np


def is_array(value):
    """Whether `value` is one array: NumPy, JAX, TensorFlow or torch alike."""
    return hasattr(value, "shape") and hasattr(value, "__array__")


def is_arrays(data):
    """Whether `data` is an array, or a tuple or dict of arrays (None parts allowed)."""
    if isinstance(data, (tuple, dict)):
        parts = data.values() if isinstance(data, dict) else data
        return all(is_array(part) for part in parts if part is not None)
    return is_array(data)


def num_samples(data):
    """The number of samples of arrays `data` (the length of each array).

    Raises:
        ValueError: when the arrays have different lengths.
    """
    lengths = {len(part) for part in keras.tree.flatten(data) if part is not None}
    if len(lengths) != 1:
        raise ValueError(
            "The arrays must have one entry per sample, the same number each. "
            f"Received arrays of lengths {sorted(lengths)}."
        )
    return lengths.pop()


class ArrayBatches(keras.utils.PyDataset):
    """Arrays in batches, in their order or reshuffled at every epoch.

    Args:
        data: arrays (see `is_arrays`); read as NumPy.
        batch_size: int, samples per batch.
        seed: `None` keeps the order of the samples; an int or a
            `np.random.Generator` shuffles them, anew at each `on_epoch_end`
            (pass the same generator to several instances for a new order each
            time).
        drop_remainder: whether to leave out a last batch smaller than
            `batch_size`.

    A batch has the structure of `data`: `(batch_size, ...)` slices of each
    array (views of the arrays when they are not shuffled), None parts as None.

    Example:

    >>> images = np.zeros((5, 8, 8, 3), np.uint8)
    >>> [len(batch) for batch in ArrayBatches(images, 2)]
    [2, 2, 1]
    """

    def __init__(self, data, batch_size, seed=None, drop_remainder=False):
        super().__init__()
        self.count = num_samples(data)
        self.data = keras.tree.map_structure(_as_numpy, data)
        self.batch_size = int(batch_size)
        self.drop_remainder = drop_remainder
        self.random = None if seed is None else np.random.default_rng(seed)
        self.order = self._new_order()

    def _new_order(self):
        return None if self.random is None else self.random.permutation(self.count)

    def __len__(self):
        if self.drop_remainder:
            return self.count // self.batch_size
        return -(-self.count // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} of {len(self)}.")
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.order is not None:
            rows = self.order[rows]
        return keras.tree.map_structure(
            lambda array: None if array is None else array[rows], self.data
        )

    def on_epoch_end(self):
        self.order = self._new_order()


def _as_numpy(array):
    return None if array is None else np.asarray(array)
