"""The data given to `BarlowTwins.fit`, made ready for the step.

What the step cannot check or survive is handled here, before Keras reads a
batch:

* Batches that do not split across replicas or devices (a short last batch)
  are skipped with a warning, so no epoch is lost: a `tf.data.Dataset` batched
  without `drop_remainder` is filtered, NumPy arrays on several JAX devices are
  batched without a last batch that would not split, and any other iterable of
  batches (a Grain dataset, a generator, a torch `DataLoader`, a list of tuples
  or dicts) leaves such batches out.
  Keras takes iterables through a data adapter of its own (`DataAdapter` is
  Keras' documented hook for custom data, although under `keras.src`).
* On JAX, whose step cannot stop on a value, every batch is checked on the
  host before its step: the images' shape and dtype, the pixel rule and the
  image sizes of `keras_barlow.input_checks` / `keras_barlow.batches`. A batch
  that breaks a rule stops training with the rule, as does a `PyDataset` batch
  that does not split (a `PyDataset` is read by index: Keras cannot skip one).

On TensorFlow the step checks the pixels and sizes itself (run-time
assertions), and only the short batches of a dataset are handled here.
"""

import sys
import warnings

import keras
import numpy as np
from keras.src.trainers.data_adapters.data_adapter import DataAdapter

from keras_barlow import _backend, array_data, batches, input_checks


def prepared(
    x, num_replicas=None, batch_size=None, shuffle=True, seed=0, host_checks=True
):
    """`x` for `fit`: short batches skipped, and on JAX checked on the host.

    Args:
        x: the `x` given to `fit`: arrays (or a tuple or dict of them), a
            `tf.data.Dataset`, a `keras.utils.PyDataset`, a Grain dataset or
            any iterable of batches.
        num_replicas: TensorFlow replicas of the model's strategy (see
            `input_checks.batch_split_rule`).
        batch_size: the batch size of arrays (Keras' default 32 when None).
        shuffle: whether arrays are shuffled every epoch.
        seed: int seed of that shuffle (None: unseeded), when arrays are
            rebatched here.
        host_checks: whether to check the pixels and sizes on the host, on JAX
            (with an augmenter; views given ready are not checked).

    Returns:
        What to give Keras' `fit` in place of `x`.
    """
    shards, smallest = input_checks.batch_split_rule(num_replicas)
    host_checks = host_checks and _backend.BACKEND != "tensorflow"
    if input_checks.is_tf_dataset(x):
        x = skipping_unsplittable_batches(x, shards, smallest)
        return _host_checked_tf_dataset(x) if host_checks else x
    if _backend.BACKEND == "tensorflow" or x is None:
        return x
    if _is_keras_arrays(x):
        if host_checks:
            check_on_host(x)
        return _arrays_in_splitting_batches(x, batch_size, shuffle, seed, shards)
    check = _checker(shards, smallest, host_checks)
    if isinstance(x, keras.utils.PyDataset):
        return _CheckedPyDataset(x, check)
    if hasattr(x, "__iter__") and not isinstance(x, DataAdapter):
        return _IterableAdapter(x, check, shards, smallest)
    return x


def shuffled_by_keras(x):
    """Whether Keras' `fit(shuffle=...)` applies to `x`: arrays and `PyDataset`s.

    Other data is shuffled (or not) by its own pipeline, and Keras warns that it
    ignores `shuffle=True` for it.
    """
    if isinstance(x, keras.utils.PyDataset):
        return x.num_batches is not None  # Keras shuffles a finite one's batches
    return _is_keras_arrays(x)


def check_on_host(batch):
    """Raise unless a batch (NumPy or any array type) follows the rules.

    The images' shape and dtype (`batches.check_image_format`), the pixel rule
    (`input_checks.check_pixel_range`) and, for a full-resolution batch, the
    image sizes (`batches.check_image_sizes`).
    """
    images, image_sizes, _ = batches.unpack(batch)
    batches.check_image_format(images)
    input_checks.check_pixel_range(images)
    if image_sizes is not None:
        batches.check_image_sizes(image_sizes, tuple(images.shape))


def skipping_unsplittable_batches(dataset, shards, smallest=None):
    """A `tf.data.Dataset` of batches without those that do not split evenly.

    Batches of a static size were checked already; a batch size unknown until
    run time (no `drop_remainder=True`) may end an epoch with a short batch that
    has no batch statistics or does not split across replicas. Such batches are
    skipped, with a warning now, so that the epoch is not lost.
    """
    if input_checks.static_batch_size(dataset) is not None:
        return dataset
    _warn_skipping("The dataset's batch size is not static", shards, smallest)
    tf = sys.modules["tensorflow"]

    def splits(*batch):
        images = batches.first_images(batch[0] if len(batch) == 1 else batch)
        return input_checks.splits_evenly(tf.shape(images)[0], shards, smallest)

    return dataset.filter(splits)


def _warn_skipping(cause, shards, smallest):
    warnings.warn(
        f"{cause}: batches that do not follow the rule, such as a short last "
        f"batch, are skipped. {input_checks.BATCH_SPLIT_RULE} "
        f"{input_checks.batch_split_advice(shards, smallest)}",
        stacklevel=4,
    )


def _checker(shards, smallest, host_checks):
    """A function that raises on a batch that breaks a rule, else returns it."""

    def check(batch):
        input_checks.check_batch_split(batches.batch_size_of(batch), shards, smallest)
        if host_checks:
            check_on_host(batch)
        return batch

    return check


def _host_checked_tf_dataset(dataset):
    """A `tf.data.Dataset` whose batches pass `check_on_host` before they are used."""
    tf = sys.modules["tensorflow"]

    def checked(*batch):
        batch = batch[0] if len(batch) == 1 else batch
        flat = tf.nest.flatten(batch)

        def check(*values):
            check_on_host(tf.nest.pack_sequence_as(batch, list(values)))
            return values

        values = tf.numpy_function(check, flat, [value.dtype for value in flat])
        values = [
            tf.ensure_shape(value, original.shape)
            for value, original in zip(values, flat, strict=True)
        ]
        return tf.nest.pack_sequence_as(batch, values)

    # The format once, from the dataset's spec: an error raised inside
    # `numpy_function` would reach the user as TensorFlow's InvalidArgumentError.
    images = batches.first_images(dataset.element_spec)
    if images.shape.rank is not None:
        batches.check_image_format(images)
    return dataset.map(checked)


def _is_grain_dataset(x):
    grain = sys.modules.get("grain")
    return grain is not None and isinstance(x, (grain.MapDataset, grain.IterDataset))


def _is_keras_arrays(x):
    """Whether Keras' `fit` reads `x` as arrays: `array_data.is_arrays`, or a list."""
    if isinstance(x, list):
        return bool(x) and all(map(array_data.is_array, x))
    return array_data.is_arrays(x)


def _arrays_in_splitting_batches(arrays, batch_size, shuffle, seed, shards):
    """Arrays as they are, or batched here when a last batch would not split.

    Keras batches arrays itself and ends each epoch with the remainder, which
    sharding cannot split over several devices (one sample on one device is
    the no-op step of `JaxTrainStep`).
    """
    batch_size = 32 if batch_size is None else batch_size
    count = array_data.num_samples(arrays)
    input_checks.check_batch_split(min(batch_size, count), shards, 2)
    remainder = count % batch_size
    if shards == 1 or input_checks.splits_evenly(remainder, shards, 2) or not remainder:
        return arrays
    _warn_skipping(
        f"{count} samples in batches of {batch_size} end with a batch of {remainder}",
        shards,
        2,
    )
    return array_data.ArrayBatches(
        arrays,
        batch_size,
        np.random.default_rng(seed) if shuffle else None,
        drop_remainder=True,
    )


class _SplitsEvenly:
    """Whether a batch splits evenly; warns at the first batch that does not."""

    def __init__(self, shards, smallest):
        self.shards, self.smallest = shards, smallest
        self.warned = False

    def __call__(self, batch):
        size = batches.batch_size_of(batch)
        if input_checks.splits_evenly(size, self.shards, self.smallest):
            return True
        if not self.warned:
            _warn_skipping(f"A batch of {size}", self.shards, self.smallest)
            self.warned = True
        return False


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches pass `check` before they are used."""

    def __init__(self, dataset, check):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.check = check

    def __len__(self):
        return len(self.dataset)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __getitem__(self, index):
        return self.check(self.dataset[index])

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


class _IterableAdapter(DataAdapter):
    """A Keras data adapter over any re-iterable of batches (JAX backend).

    Each epoch iterates the iterable again (a Grain dataset, a torch
    `DataLoader`, a list); a generator is read once. Batches that do not split
    are skipped with a warning, the others pass `check` on the host and reach
    the step as NumPy. Data without a single batch that splits is refused
    with a `ValueError` that says which of the two it was: empty, or skipped.
    """

    def __init__(self, iterable, check, shards, smallest):
        self.iterable = iterable
        self.check = check
        self.shards = shards
        self.splits_evenly = _SplitsEvenly(shards, smallest)
        self.has_yielded = False

    def _batches(self):
        for batch in self.iterable:
            batch = tuple(batch) if isinstance(batch, list) else batch
            if not self.splits_evenly(batch):
                continue
            batch = keras.tree.map_structure(np.asarray, self.check(batch))
            # Keras reads a tuple as (x, y); torch's default collate makes lists.
            yield tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            # Only once the batch was used: Keras' build reads a first batch
            # from an iterator that it then drops.
            self.has_yielded = True
        if not self.has_yielded:
            # Keras' JAX trainer fails obscurely on an epoch without a batch.
            raise ValueError(
                input_checks.NO_SPLITTABLE_BATCH_MESSAGE
                if self.splits_evenly.warned
                else input_checks.EMPTY_DATA_MESSAGE
            )

    def get_numpy_iterator(self):
        return self._batches()

    def get_jax_iterator(self):
        return self._batches()

    @property
    def num_batches(self):
        # With several devices a batch may be skipped: the count is not known.
        # A Grain dataset's length counts the batches a `filter` drops, and
        # that of `repeat()` is sys.maxsize.
        if self.shards > 1 or _is_grain_dataset(self.iterable):
            return None
        try:
            return len(self.iterable)
        except TypeError:  # no length, or a torch DataLoader of an IterableDataset
            return None

    @property
    def batch_size(self):
        return getattr(self.iterable, "batch_size", None)

    @property
    def has_partial_batch(self):
        return None

    @property
    def partial_batch_size(self):
        return None
