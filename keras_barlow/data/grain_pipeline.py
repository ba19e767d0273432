"""The Grain pipeline: batches read in threads (or processes), without TensorFlow.

The same batches as the tf.data pipeline (`tf_pipeline`), as a `grain.IterDataset`
that Keras `fit` takes on every backend:

* Order. A pass (one `iter()`) reads the batches of one epoch, or with
  `options.epochs` those of epochs `initial_epoch` to `epochs - 1`. Epoch `k`
  is `epoch_order(count, seed, k)` (the file order when not shuffling), cut into
  whole batches: it depends only on `(seed, k)`, so a run rebuilt with
  `initial_epoch=k` continues exactly. Without `epochs`, pass `p` reads epoch
  `p`'s order: every iteration reshuffles, as tf.data's does.
* Shards. Each process reads part `shard_index` of `shard_count` of every
  global batch (`numpy.array_split` of the batch's positions), so the
  processes' batches, concatenated in shard order, are the one-process batch.
* Reading. A whole batch is read and decoded by one of `grain_threads`
  threads (`grain.ReadOptions`), in `grain_workers` processes when asked
  (`mp_prefetch`); Grain keeps the order whatever the parallelism.
"""

import math
import os
from concurrent import futures

import grain
import numpy as np
from absl import flags, logging

from keras_barlow import batches
from keras_barlow.data import canvas, images
from keras_barlow.data import options as options_lib


def file_batches(paths, labels, options, canvas_side=None, skip_errors=False):
    """A `grain.IterDataset` of batches of the image files `paths`.

    Args:
        paths: string array `(N,)`.
        labels: int32 array `(N,)`, or None for images only.
        options: the resolved `Options` (`full_resolution` a bool).
        canvas_side: the canvas side, with `options.full_resolution`.
        skip_errors: leave out the files that fail to decode (a warning each):
            the batch that held one comes out shorter.

    Returns:
        `Passes` of uint8 images `(b, H, W, 3)` and int32 labels `(b,)`
        (`(images, labels)`, or images only), or of full-resolution dicts; `b`
        is this process's part of `options.batch_size`.
    """
    reader = _FileReader(
        np.asarray(paths, str), labels, options, canvas_side, skip_errors
    )
    return Passes(reader, len(paths), options)


def array_batches(arrays, labels, indices, options):
    """A `grain.IterDataset` of batches of `arrays[indices]` (and their labels).

    Args:
        arrays: uint8 `(N, H, W, C)`, C in {1, 3, 4}.
        labels: int32 `(N,)` or None.
        indices: int64 `(M,)`, the selected images.
        options: the resolved `Options`.
    """
    reader = _ArrayReader(arrays, labels, np.asarray(indices), options)
    return Passes(reader, len(indices), options)


def decodable(paths):
    """bool `(N,)`: whether each file decodes (as strictly as TensorFlow)."""
    with futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return np.fromiter(pool.map(images.decodes, paths), bool, len(paths))


def epoch_order(count, seed, epoch):
    """The shuffled order of `range(count)` in epoch `epoch`: keyed by `(seed, epoch)`.

    Example:

    >>> epoch_order(5, seed=0, epoch=3)  # the same in every process and run
    array([3, 0, 2, 1, 4])
    """
    # SeedSequence takes non-negative ints: a negative seed is wrapped.
    rng = np.random.default_rng([seed % 2**64, epoch])
    return rng.permutation(count)


class Passes(grain.IterDataset):
    """Batches read in order by Grain; every `iter()` starts a new pass.

    Args:
        reader: picklable callable, positions of a batch (int array) -> batch.
        count: number of elements (images) the positions index.
        options: the resolved `Options`.
    """

    def __init__(self, reader, count, options):
        super().__init__()
        self._reader = reader
        self._count = count
        self._options = options
        self._passes = 0

    def __iter__(self):
        options = self._options
        if options.epochs is None:
            first, epochs = self._passes, 1
        else:
            first, epochs = (
                options.initial_epoch,
                options.epochs - options.initial_epoch,
            )
        self._passes += 1
        positions = BatchPositions(self._count, options, first, epochs)
        dataset = grain.MapDataset.source(positions).map(self._reader)
        dataset = dataset.to_iter_dataset(
            grain.ReadOptions(
                num_threads=options.grain_threads,
                prefetch_buffer_size=options.grain_threads,
            )
        )
        if options.grain_workers:
            _allow_grain_workers()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=options.grain_workers)
            )
        return iter(dataset)

    def __str__(self):
        return f"keras_barlow Passes(count={self._count}, passes={self._passes})"


class BatchPositions:
    """This process's positions of every batch of epochs `first`..: a Sequence.

    Item `i` is the int64 positions (into the loader's files or arrays) of the
    `i`-th batch: epoch `first + i // steps`, batch `i % steps` of its order,
    this shard's part of it.
    """

    def __init__(self, count, options, first, epochs):
        self._count = count
        self._options = options
        self._first = first
        self._epochs = epochs
        steps = options_lib.full_batches_per_epoch(count, options)
        self._steps = steps or math.ceil(count / options.batch_size)
        self._cached = (None, None)

    def __len__(self):
        return self._steps * self._epochs

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        epoch, step = divmod(index, self._steps)
        size = self._options.batch_size
        batch = self._order(self._first + epoch)[step * size : (step + 1) * size]
        parts = np.array_split(batch, self._options.shard_count)
        return parts[self._options.shard_index]

    def _order(self, epoch):
        if self._cached[0] != epoch:
            options = self._options
            if options.shuffle:
                order = epoch_order(self._count, options.seed, epoch)
            else:
                order = np.arange(self._count)
            self._cached = (epoch, order)
        return self._cached[1]


class _FileReader:
    """Positions -> a decoded batch of image files (a Grain map function)."""

    def __init__(self, paths, labels, options, canvas_side, skip_errors):
        self._paths = paths
        self._labels = labels
        self._options = options
        self._canvas_side = canvas_side
        self._skip_errors = skip_errors

    def __call__(self, positions):
        loaded, kept = [], []
        for position in positions:
            image = self._load(self._paths[position])
            if image is not None:
                loaded.append(image)
                kept.append(position)
        labels = None if self._labels is None else self._labels[kept]
        if self._canvas_side is None:
            return _tuple(np.stack(loaded) if loaded else _empty(self._options), labels)
        return _canvases(loaded, self._canvas_side, labels)

    def _load(self, path):
        try:
            image = images.decode(images.read(path))
        except (OSError, ValueError, SyntaxError) as error:
            if not self._skip_errors:
                raise ValueError(
                    f"Could not decode {path!r}: {error}. Remove or replace the file, "
                    "or pass on_corrupt='skip'."
                ) from error
            logging.warning("Skipping %s, which cannot be decoded: %s", path, error)
            return None
        if self._canvas_side is not None:
            return images.shrink(image, canvas.longest_side(self._options))
        return _resized(image, self._options)


class _ArrayReader:
    """Positions -> a batch gathered from arrays in memory (a Grain map function)."""

    def __init__(self, arrays, labels, indices, options):
        self._arrays = arrays
        self._labels = labels
        self._indices = indices
        self._options = options

    def __call__(self, positions):
        selected = self._indices[positions]
        batch = images.to_rgb(self._arrays[selected])
        if self._options.image_size is not None:
            resized = [_resized(image, self._options) for image in batch]
            batch = np.stack(resized) if resized else _empty(self._options)
        labels = None if self._labels is None else self._labels[selected]
        return _tuple(batch, labels)


def _resized(image, options):
    if options.image_size is None:
        return image
    return images.resize(
        image, options.image_size, options.interpolation, options.crop_to_aspect_ratio
    )


def _canvases(loaded, side, labels):
    canvases = np.zeros((len(loaded), side, side, 3), np.uint8)
    sizes = np.zeros((len(loaded), 2), np.int32)
    for index, image in enumerate(loaded):
        height, width = image.shape[:2]
        canvases[index, :height, :width] = image
        sizes[index] = height, width
    return batches.full_resolution_batch(canvases, sizes, labels)


def _tuple(images_batch, labels):
    return images_batch if labels is None else (images_batch, labels)


def _empty(options):
    return np.zeros((0, *options.image_size, 3), np.uint8)


def _allow_grain_workers():
    # Grain's worker processes read an absl flag, which fails until the flags
    # are parsed (google/grain#1355): mark them parsed when no program did.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
