"""Input pipelines: TFDS, image folders and archives, NumPy arrays.

Every loader returns a `tf.data.Dataset` of uint8 images `(B, H, W, 3)`, or of
`(images, labels)` with int32 labels `(B,)` where there are labels. Decoding and
resizing run on the CPU inside tf.data (parallel map, AUTOTUNE); the distortions
happen in the model (`keras_barlow.BarlowTwinsAugment`), not here.

Training datasets (`training=True`) are shuffled with a seed and drop the last
partial batch, so every step sees a full global batch; evaluation datasets keep
every image in file order.

Images of another size are resized to `image_size` (bilinear, antialiased),
then rounded back to uint8; grayscale images become RGB and alpha channels are
dropped.

Epochs keyed by their number (exact resumption). By default a training dataset
reshuffles at every pass, so the order of an epoch depends on how many passes
the process has made: a run restarted from a checkpoint sees other batches than
an uninterrupted one. `from_image_folder` and `from_numpy` with `epochs=E`
instead yield the batches of epochs `initial_epoch, ..., E - 1` one after the
other, epoch `e` in an order that depends only on `(seed, e)` (a stateless
shuffle), `steps_per_epoch` full batches each. Built with the `initial_epoch`
that `keras_barlow.checkpoints.TrainingCheckpoint.restore` returns, it continues
exactly where the interrupted run was:

```python
initial_epoch = checkpoint.restore(model)
train = keras_barlow.data.from_image_folder(
    path, batch_size=256, labels=None, epochs=100, initial_epoch=initial_epoch)
model.fit(train, epochs=100, initial_epoch=initial_epoch,
          steps_per_epoch=train.steps_per_epoch, callbacks=[checkpoint])
```

Example:

```python
train = keras_barlow.data.from_image_folder(
    "../shared/datasets/cifar10-jpeg-train.tar.gz", batch_size=256,
    subset="training", val_count=5000)
val = keras_barlow.data.from_image_folder(
    "../shared/datasets/cifar10-jpeg-train.tar.gz", batch_size=256,
    subset="validation", val_count=5000)
train.class_names[:2]  # ['airplane', 'automobile']
```
"""

import collections
import hashlib
import os
import pathlib
import shutil
import tarfile
import tempfile
import time
import zlib
from concurrent import futures

import numpy as np
import tensorflow as tf
from absl import logging

from keras_barlow import augment

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
ARCHIVE_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
INTERPOLATIONS = (
    "area",
    "bicubic",
    "bilinear",
    "gaussian",
    "lanczos3",
    "lanczos5",
    "mitchellcubic",
    "nearest",
)
SUBSETS = ("training", "validation")
AUTOTUNE = tf.data.AUTOTUNE

_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
_TAIL_BYTES = 4096
_MAX_LISTED = 10
_WRITER_THREADS = 4  # file creation dominates; threads overlap it with parsing


# ----------------------------------------------------------------------------------
# Loaders.


def from_tfds(
    name,
    split="train",
    image_size=None,
    batch_size=256,
    training=True,
    shuffle=None,
    seed=0,
    limit_images=None,
    data_dir=None,
    download=True,
    image_key="image",
    label_key="label",
    shuffle_buffer=10_000,
    interpolation="bilinear",
    crop_to_aspect_ratio=False,
):
    """Batches of uint8 images (and int32 labels) from a TensorFlow Datasets split.

    TFDS does the reading and decoding; files are shuffled with `seed` when
    shuffling, then examples go through a `shuffle_buffer`. TFDS has no
    stratified split: hold data back with split slicing (`"train[:90%]"`) or use
    the dataset's own validation split.

    Args:
        name: TFDS name, e.g. `"cifar10"`.
        split: TFDS split, slicing included (`"train[:10%]"`).
        image_size: `None` (the dataset's size, which must be fixed), an int, or
            `(height, width)`.
        batch_size: images per batch.
        training: `True` shuffles and drops the last partial batch.
        shuffle: overrides `training` for shuffling.
        seed: int seed of the file and example shuffles.
        limit_images: use only the first N examples, class-balanced (at most
            `ceil(N / num_classes)` per class); files are then read in order.
        data_dir: TFDS data directory.
        download: let TFDS download and prepare the dataset when it is missing.
        image_key, label_key: feature names; `label_key=None` yields images only.
        shuffle_buffer: examples in the shuffle buffer.
        interpolation: `tf.image.resize` method.
        crop_to_aspect_ratio: center-crop to the aspect ratio of `image_size`
            before resizing, instead of squashing.

    Returns:
        `tf.data.Dataset` of `(images, labels)`: uint8 `(B, H, W, 3)` and int32
        `(B,)`, or of images only. `dataset.class_names` lists the label names.

    Example:

    >>> dataset = from_tfds("cifar10", "train", batch_size=512)
    >>> images, labels = next(iter(dataset))  # (512, 32, 32, 3) uint8, (512,) int32
    """
    import tensorflow_datasets as tfds  # imported here: loading TFDS takes seconds

    image_size = _check_image_size(image_size)
    _check_positive_int("batch_size", batch_size)
    _check_limit(limit_images)
    _check_interpolation(interpolation)
    shuffle = training if shuffle is None else shuffle
    dataset, info = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        with_info=True,
        shuffle_files=shuffle and limit_images is None,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    image_feature, label_feature = _tfds_features(name, info, image_key, label_key)
    if image_size is None:
        image_size = _fixed_tfds_image_size(name, image_feature)

    count = int(dataset.cardinality())
    class_names = getattr(label_feature, "names", None)  # a ClassLabel has names
    if label_key is None:
        dataset = dataset.map(lambda example: example[image_key])
    else:
        dataset = dataset.map(lambda example: (example[image_key], example[label_key]))
    if limit_images is not None:
        dataset = _take_balanced_stream(dataset, limit_images, label_feature)
        count = min(count, limit_images) if count >= 0 else limit_images
    if count >= 0:
        _check_count(count, batch_size, training, f"TFDS {name}[{split}]")

    def prepare(image, label=None):
        image = _resize(_to_rgb(image), image_size, interpolation, crop_to_aspect_ratio)
        return image if label is None else (image, tf.cast(label, tf.int32))

    dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
    dataset.class_names = class_names
    return dataset


def from_image_folder(
    path,
    image_size=None,
    batch_size=256,
    training=None,
    shuffle=None,
    seed=0,
    labels="inferred",
    subset=None,
    val_fraction=None,
    val_count=None,
    limit_images=None,
    on_corrupt="raise",
    validate="header",
    cache_dir=None,
    interpolation="bilinear",
    crop_to_aspect_ratio=False,
    epochs=None,
    initial_epoch=0,
    steps_per_epoch=None,
    split_seed=None,
):
    """Batches of uint8 images (and int32 labels) from a folder of JPEG and PNG files.

    Layout: one sub-folder per class (`root/cat/1.jpg`, `root/dog/x/2.png`), class
    folders searched recursively, class names sorted and labelled 0, 1, ...
    `path` may also be a `.tar`, `.tar.gz` or `.tgz` archive of such a folder: it
    is extracted once into `cache_dir` (atomically, refusing members that would
    land outside it) and reused by later calls. When the folder holds only a
    single sub-folder of folders, like the `train/` of the shared CIFAR-10
    archive, that sub-folder is the root (see `image_root`).

    Files are chosen by extension (`.jpg`, `.jpeg`, `.png`, any case); hidden
    files and folders (starting with `.`) and other files are ignored.

    Corrupt files: before any batch is made, the chosen files are checked
    (`validate="header"`: JPEG/PNG signature and end marker, which catches
    empty, non-image and truncated files with two small reads a file; suspects are
    then decoded once by TensorFlow, so a file it can decode is never rejected;
    `validate="decode"`: every file is decoded once; `validate=None`: no check).
    With `on_corrupt="raise"` (default) a `ValueError` names the files and why;
    with `on_corrupt="skip"` they are left out and a warning gives their count and
    names, and a file that still fails to decode during training is skipped too
    (which would shorten an epoch, so `on_corrupt="skip"` is refused with
    `epochs`).

    Validation split: `subset="training"` or `"validation"` with `val_fraction` or
    `val_count` selects one side of `stratified_split(labels, ..., split_seed)`, so two
    calls with the same arguments give disjoint parts. The split is computed on
    all files, before `limit_images` and the corrupt-file check, so the held-back
    images do not depend on them.

    Args:
        path: folder or archive.
        image_size: `None` (the size of the first image), an int or
            `(height, width)`; images of another size are resized.
        batch_size: images per batch.
        training: `True` shuffles and drops the last partial batch. Default:
            `True` unless `subset="validation"`.
        shuffle: overrides `training` for shuffling.
        seed: int seed of the shuffle (and of the split, unless `split_seed`).
        labels: `"inferred"` (from the class folders) or `None` (all images found
            under `path`, no labels).
        subset: `None`, `"training"` or `"validation"`.
        val_fraction: fraction of the images held back for validation.
        val_count: number of images held back (instead of `val_fraction`).
        limit_images: use at most N images of the subset, class-balanced, the
            first ones in file order (see `balanced_subset`).
        on_corrupt: `"raise"` or `"skip"` (not with `epochs`).
        validate: `"header"`, `"decode"` or `None`.
        cache_dir: where archives are extracted. Default: `default_cache_dir()`.
        interpolation: `tf.image.resize` method.
        crop_to_aspect_ratio: center-crop to the aspect ratio of `image_size`
            before resizing, instead of squashing.
        epochs: `None` (one pass, reshuffled at every iteration) or the
            total number of epochs of training: the dataset then holds the
            batches of epochs `initial_epoch` to `epochs - 1`, each epoch in an
            order keyed by `(seed, epoch)` (see the module docstring). Needs
            `training=True`.
        initial_epoch: the first epoch to yield (with `epochs`), e.g. the
            completed epochs of a restored checkpoint.
        steps_per_epoch: batches per epoch (with `epochs`), at most and by
            default `images // batch_size`; each epoch uses the first ones of
            its order.
        split_seed: int seed of the validation split, default `seed`: fix it
            to hold back the same images whatever the shuffle seed.

    Returns:
        `tf.data.Dataset` of `(images, labels)`: uint8 `(B, H, W, 3)` and int32
        `(B,)` (images only with `labels=None`), with attributes `class_names`
        (sorted folder names, or `None`), `file_paths` (in the order of an
        unshuffled pass), `num_images` (their number) and `steps_per_epoch`
        (full batches per epoch, for `fit`; `None` when `training=False`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: no class folders, no images, corrupt files (with
            `on_corrupt="raise"`), no image left after the selection, or fewer
            images than `batch_size` while dropping the remainder;
            `on_corrupt="skip"` with `epochs`.

    Example:

    >>> train = from_image_folder("pets/", image_size=224, batch_size=64,
    ...                           subset="training", val_fraction=0.1)
    >>> train.class_names
    ['cat', 'dog']
    """
    image_size = _check_image_size(image_size)
    _check_positive_int("batch_size", batch_size)
    _check_limit(limit_images)
    _check_interpolation(interpolation)
    _check_choice("labels", labels, ("inferred", None))
    _check_choice("on_corrupt", on_corrupt, ("raise", "skip"))
    _check_choice("validate", validate, ("header", "decode", None))
    _check_subset(subset, val_fraction, val_count)
    training = subset != "validation" if training is None else training
    shuffle = training if shuffle is None else shuffle
    _check_epochs(epochs, initial_epoch, steps_per_epoch, training)
    if epochs is not None and on_corrupt == "skip":
        raise ValueError(
            "`on_corrupt='skip'` cannot be combined with `epochs`: an image that "
            "fails to decode during training would be dropped, the epoch would "
            "come up short and every later batch would straddle two epochs. Leave "
            "on_corrupt='raise' (it names the corrupt files, for you to remove), "
            "or pass epochs=None. Received: on_corrupt='skip', "
            f"epochs={epochs}"
        )

    root = image_root(path, cache_dir)
    names, paths, label_array = _list_images(root, labels)
    split_seed = seed if split_seed is None else split_seed
    indices = _select(
        label_array, subset, val_fraction, val_count, split_seed, limit_images
    )
    paths, label_array = paths[indices], label_array[indices]
    if validate is not None:
        paths, label_array = _drop_corrupt(
            paths, label_array, validate, on_corrupt, root
        )
    _check_count(len(paths), batch_size, training, root)
    if image_size is None:
        image_size = tuple(_decode(tf.io.read_file(paths[0])).shape[:2])

    def load(file_path, label=None):
        image = _decode(tf.io.read_file(file_path))
        image = _resize(image, image_size, interpolation, crop_to_aspect_ratio)
        return image if label is None else (image, label)

    elements = paths if labels is None else (paths, label_array)
    steps = _steps_per_epoch(len(paths), batch_size, training, steps_per_epoch)
    dataset = _ordered(
        elements, shuffle, seed, epochs, initial_epoch, steps and steps * batch_size
    )
    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE)
    if on_corrupt == "skip":
        dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
    dataset.class_names = names
    dataset.file_paths = [str(file_path) for file_path in paths]
    dataset.num_images = len(paths)
    dataset.steps_per_epoch = steps
    return dataset


def from_numpy(
    images,
    labels=None,
    image_size=None,
    batch_size=256,
    training=None,
    shuffle=None,
    seed=0,
    subset=None,
    val_fraction=None,
    val_count=None,
    limit_images=None,
    interpolation="bilinear",
    crop_to_aspect_ratio=False,
    epochs=None,
    initial_epoch=0,
    steps_per_epoch=None,
    split_seed=None,
):
    """Batches of uint8 images (and int32 labels) from arrays in memory.

    The arrays are held once as tensors; the pipeline shuffles and batches
    indices and gathers each batch, so memory is not duplicated in a shuffle
    buffer. `subset`, `val_fraction`, `val_count` and `limit_images` work as in
    `from_image_folder` (without labels, the split is a seeded random split).

    Args:
        images: uint8 array `(N, H, W, 3)`, `(N, H, W, 4)` (alpha is dropped),
            `(N, H, W, 1)` or `(N, H, W)` (gray, made RGB).
        labels: optional integer array `(N,)` or `(N, 1)`.
        image_size: `None` (keep the size), an int or `(height, width)`.
        batch_size: images per batch.
        training: `True` shuffles and drops the last partial batch. Default:
            `True` unless `subset="validation"`.
        shuffle: overrides `training` for shuffling.
        seed: int seed of the shuffle (and of the split, unless `split_seed`).
        subset, val_fraction, val_count, limit_images, split_seed: see
            `from_image_folder`.
        interpolation: `tf.image.resize` method.
        crop_to_aspect_ratio: center-crop to the aspect ratio of `image_size`.
        epochs, initial_epoch, steps_per_epoch: epochs keyed by their number,
            see `from_image_folder`.

    Returns:
        `tf.data.Dataset` of `(images, labels)`: uint8 `(B, H, W, 3)` and int32
        `(B,)`, or of images only when `labels` is `None`, with the attributes
        `num_images` and `steps_per_epoch` (see `from_image_folder`).

    Example:

    >>> (x, y), _ = keras.datasets.cifar10.load_data()
    >>> train = from_numpy(x, y, batch_size=256, subset="training", val_count=5000)
    """
    images = _check_numpy_images(images)
    label_array = _check_numpy_labels(labels, len(images))
    _check_positive_int("batch_size", batch_size)
    image_size = _check_image_size(image_size)
    _check_limit(limit_images)
    _check_interpolation(interpolation)
    _check_subset(subset, val_fraction, val_count)
    training = subset != "validation" if training is None else training
    shuffle = training if shuffle is None else shuffle
    _check_epochs(epochs, initial_epoch, steps_per_epoch, training)

    strata = np.zeros(len(images), np.int32) if label_array is None else label_array
    split_seed = seed if split_seed is None else split_seed
    indices = _select(strata, subset, val_fraction, val_count, split_seed, limit_images)
    _check_count(len(indices), batch_size, training, "the arrays")
    image_tensor = tf.convert_to_tensor(images)
    label_tensor = None if label_array is None else tf.convert_to_tensor(label_array)

    def gather(batch_indices):
        batch = _to_rgb(tf.gather(image_tensor, batch_indices))
        batch = _resize(batch, image_size, interpolation, crop_to_aspect_ratio)
        if label_tensor is None:
            return batch
        return batch, tf.gather(label_tensor, batch_indices)

    steps = _steps_per_epoch(len(indices), batch_size, training, steps_per_epoch)
    dataset = _ordered(
        indices, shuffle, seed, epochs, initial_epoch, steps and steps * batch_size
    )
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    dataset.num_images = len(indices)
    dataset.steps_per_epoch = steps
    return dataset


def _ordered(elements, shuffle, seed, epochs, initial_epoch, per_epoch):
    """The elements in training order, before batching.

    Without `epochs`: one pass, reshuffled at every iteration when `shuffle`.
    With `epochs`: the first `per_epoch` elements of each epoch from
    `initial_epoch` to `epochs - 1`, in an order keyed by `(seed, epoch)`. Each
    epoch holds whole batches, so no batch straddles two epochs.
    """
    if epochs is None:
        dataset = tf.data.Dataset.from_tensor_slices(elements)
        if shuffle:
            count = len(tf.nest.flatten(elements)[0])
            dataset = dataset.shuffle(count, seed, reshuffle_each_iteration=True)
        return dataset
    elements = tf.nest.map_structure(tf.convert_to_tensor, elements)
    count = len(tf.nest.flatten(elements)[0])

    def one_epoch(epoch):
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            # `Dataset.shuffle` takes no tensor seed: shuffle the indices instead.
            order = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]), alg="philox"
            )
        order = order[:per_epoch]
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda tensor: tf.gather(tensor, order), elements)
        )

    return tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)


# ----------------------------------------------------------------------------------
# Selection: validation split and limits, on label arrays.


def stratified_split(labels, val_fraction=None, val_count=None, seed=0):
    """Split indices into training and validation parts with the class proportions.

    Each class gives `floor` or `ceil` of its share of the validation images
    (largest remainders, so the total is exact), drawn at random with `seed`.
    The result depends only on the labels, the size and the seed.

    Args:
        labels: integer array `(N,)` or `(N, 1)`.
        val_fraction: fraction in (0, 1) of the images held back, rounded.
        val_count: number of images held back, in [1, N - 1] (instead of
            `val_fraction`).
        seed: int seed.

    Returns:
        `(train_indices, val_indices)`: sorted, disjoint int64 arrays that
        together hold `range(N)`.

    Example:

    >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], val_count=2)
    >>> len(val), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[val])
    (2, [0, 1])
    """
    labels = np.asarray(labels).reshape(-1)
    total = _validation_total(len(labels), val_fraction, val_count)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = _largest_remainder(counts, total)
    rng = np.random.default_rng(seed)
    members = _class_members(inverse.reshape(-1), counts)
    val = np.concatenate(
        [
            rng.permutation(group)[:quota]
            for group, quota in zip(members, quotas, strict=True)
        ]
    )
    val = np.sort(val).astype(np.int64)
    return np.setdiff1d(np.arange(len(labels), dtype=np.int64), val), val


def balanced_subset(labels, limit):
    """Indices of the first `limit` images, taken round-robin over the classes.

    The first image of every class, then the second of every class, and so on
    (classes in sorted order, images in index order), until `limit` are chosen:
    class counts differ by at most one unless a class runs out.

    Args:
        labels: integer array `(N,)`.
        limit: positive int.

    Returns:
        Sorted int64 array of `min(limit, N)` indices.

    Example:

    >>> balanced_subset([0, 0, 0, 1, 1, 1], 4)
    array([0, 1, 3, 4])
    """
    labels = np.asarray(labels).reshape(-1)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty(len(labels), np.int64)
    for group in _class_members(inverse.reshape(-1), counts):
        rank[group] = np.arange(len(group))
    order = np.lexsort((inverse.reshape(-1), rank))
    return np.sort(order[:limit]).astype(np.int64)


def _select(labels, subset, val_fraction, val_count, seed, limit):
    indices = np.arange(len(labels), dtype=np.int64)
    if subset is not None:
        train, val = stratified_split(labels, val_fraction, val_count, seed)
        indices = train if subset == "training" else val
    if limit is not None:
        indices = indices[balanced_subset(labels[indices], limit)]
    return indices


def _class_members(inverse, counts):
    """Indices of each class, in index order: a list of arrays."""
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


def _largest_remainder(counts, total):
    shares = counts * total / counts.sum()
    quotas = np.floor(shares).astype(np.int64)
    remainders = shares - quotas
    extra = np.argsort(-remainders, kind="stable")[: total - quotas.sum()]
    quotas[extra] += 1
    return quotas


def _validation_total(size, val_fraction, val_count):
    if (val_fraction is None) == (val_count is None):
        raise ValueError(
            "Pass exactly one of `val_fraction` and `val_count`. Received: "
            f"val_fraction={val_fraction}, val_count={val_count}"
        )
    if val_fraction is not None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(
                f"`val_fraction` must be between 0 and 1. Received: val_fraction="
                f"{val_fraction}"
            )
        val_count = round(val_fraction * size)
    if not 1 <= val_count <= size - 1:
        raise ValueError(
            f"The validation part must hold between 1 and {size - 1} of the {size} "
            f"images. Received: val_fraction={val_fraction}, val_count={val_count}. "
            "Use a larger fraction or more images."
        )
    return val_count


# ----------------------------------------------------------------------------------
# Folders and archives.


def default_cache_dir():
    """`$XDG_CACHE_HOME/keras_barlow`, else `~/.cache/keras_barlow`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "keras_barlow")


def image_root(path, cache_dir=None):
    """The folder that holds the class folders of `path` (a folder or an archive).

    Archives are extracted first (see `extract_archive`). When `path` holds a
    single sub-folder and that sub-folder holds folders but no images (e.g.
    `train/` in `train/cat/1.jpg`), the sub-folder is the root.

    Returns:
        str, path of a folder.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Image folder or archive not found: {path!r}. Check the path; relative "
            f"paths start at the current directory {os.getcwd()!r}."
        )
    if os.path.isfile(path):
        if not path.lower().endswith(ARCHIVE_EXTENSIONS):
            raise ValueError(
                "Expected a folder of images or an archive "
                f"({', '.join(ARCHIVE_EXTENSIONS)}). Received the file {path!r}."
            )
        path = extract_archive(path, cache_dir)
    entries = _visible_entries(path)
    if len(entries) == 1 and _is_wrapper(os.path.join(path, entries[0])):
        return os.path.join(path, entries[0])
    return path


def _is_wrapper(folder):
    """A folder of sub-folders and no images, like `train/` in `train/cat/1.jpg`."""
    if not os.path.isdir(folder):
        return False
    entries = [os.path.join(folder, entry) for entry in _visible_entries(folder)]
    return any(os.path.isdir(entry) for entry in entries) and not any(
        entry.lower().endswith(IMAGE_EXTENSIONS) for entry in entries
    )


def class_names(path, cache_dir=None):
    """Sorted class folder names of an image folder or archive; label i is name i.

    Example:

    >>> class_names("../shared/datasets/cifar10-jpeg-train.tar.gz")[:3]
    ['airplane', 'automobile', 'bird']
    """
    root = image_root(path, cache_dir)
    return [
        entry
        for entry in _visible_entries(root)
        if os.path.isdir(os.path.join(root, entry))
    ]


def extract_archive(path, cache_dir=None):
    """Extract a tar archive once into `cache_dir` and return the folder.

    The folder is named after the archive and a hash of its absolute path, size
    and modification time, so a changed archive is extracted again. Extraction
    goes to a temporary folder next to it that is renamed when complete: an
    interrupted run leaves no half-extracted folder, and of two processes
    extracting at once one result is kept. Only regular files and folders are
    written (links and devices are skipped with a warning); a member whose path
    is absolute or climbs out with `..` stops the extraction with an error.

    Args:
        path: `.tar`, `.tar.gz` or `.tgz` file.
        cache_dir: parent of the extracted folder. Default: `default_cache_dir()`.

    Returns:
        str, path of the extracted folder.
    """
    path = os.path.abspath(os.fspath(path))
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    stat = os.stat(path)
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    target = os.path.join(cache_dir, f"{_archive_stem(path)}-{key.hexdigest()[:12]}")
    if os.path.isdir(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".extracting-", dir=cache_dir)
    try:
        start = time.perf_counter()
        count = _extract_members(path, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):  # not another process finishing first
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info(
        "Extracted %d files from %s into %s in %.1f s.",
        count,
        path,
        target,
        time.perf_counter() - start,
    )
    return target


def _archive_stem(path):
    name = os.path.basename(path)
    for extension in sorted(ARCHIVE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return name


def _extract_members(archive, root):
    """Stream the archive once; writes run in threads, as file creation dominates."""
    made_dirs, skipped, pending, count = set(), [], collections.deque(), 0
    try:
        with (
            tarfile.open(archive, "r|*") as tar,
            futures.ThreadPoolExecutor(_WRITER_THREADS) as pool,
        ):
            for member in tar:
                target = _safe_target(root, member.name, archive)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                if not member.isfile():
                    skipped.append(member.name)
                    continue
                parent = os.path.dirname(target)
                if parent not in made_dirs:
                    os.makedirs(parent, exist_ok=True)
                    made_dirs.add(parent)
                contents = tar.extractfile(member).read()
                pending.append(pool.submit(_write, target, contents))
                count += 1
                while len(pending) > 256:  # bounds the memory of queued files
                    pending.popleft().result()
            for write in pending:
                write.result()
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ValueError(
            f"Could not extract {archive!r}: {error}. The archive may be truncated or "
            "corrupt; check its size and checksum."
        ) from error
    except OSError as error:
        raise OSError(
            f"Could not extract {archive!r} into {root!r}: {error}. Check that the "
            "archive is readable and that the cache folder is writable and has room, "
            "or pass another cache_dir."
        ) from error
    if skipped:
        logging.warning(
            "Skipped %d archive members that are not regular files or "
            "folders (links, devices), e.g. %s.",
            len(skipped),
            skipped[:3],
        )
    return count


def _safe_target(root, name, archive):
    parts = pathlib.PurePosixPath(name).parts
    target = os.path.normpath(os.path.join(root, *parts))
    if (
        name.startswith(("/", "\\"))
        or ".." in parts
        or not (target == root or target.startswith(root + os.sep))
    ):
        raise ValueError(
            f"Refusing to extract {archive!r}: the member {name!r} would be written "
            "outside the extraction folder (absolute path or '..'). The archive is "
            "unsafe; rebuild it with relative paths."
        )
    return target


def _write(path, contents):
    with open(path, "wb") as file:
        file.write(contents)


def _visible_entries(folder):
    return sorted(entry for entry in os.listdir(folder) if not entry.startswith("."))


def _list_images(root, labels):
    """Returns `(class_names or None, paths, labels)` as sorted arrays."""
    if labels is None:
        paths = _find_images(root)
        label_array = np.zeros(len(paths), np.int32)
        names = None
    else:
        names = class_names(root)
        if not names:
            raise ValueError(
                f"No class folders in {root!r}: expected one sub-folder per class "
                "(root/cat/1.jpg, root/dog/2.png). For images without labels pass "
                "labels=None."
            )
        per_class = [_find_images(os.path.join(root, name)) for name in names]
        empty = [
            name for name, files in zip(names, per_class, strict=True) if not files
        ]
        if empty and len(empty) < len(names):
            logging.warning("Class folders without images (labels kept): %s", empty)
        paths = [file for files in per_class for file in files]
        label_array = np.repeat(
            np.arange(len(names), dtype=np.int32), [len(files) for files in per_class]
        )
    if not paths:
        raise ValueError(
            f"No images found in {root!r}. Expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} (any case)"
            + ("" if labels is None else " inside the class folders")
            + "."
        )
    return names, np.array(paths), label_array


def _find_images(folder):
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(entry for entry in dirs if not entry.startswith("."))
        found.extend(
            os.path.join(parent, name)
            for name in sorted(files)
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


# ----------------------------------------------------------------------------------
# Corrupt files.


def find_corrupt_images(paths, validate="header"):
    """Image files that TensorFlow cannot decode, with the reason.

    `"header"` reads the first bytes and the last 4 KiB of each file: a JPEG
    must start with `FF D8 FF` and hold its end marker `FF D9`, a PNG must start
    with its signature and hold its `IEND` chunk. This catches empty, non-image
    and truncated files (the usual corruption: an interrupted copy or download)
    at the cost of two small reads a file. Suspects are decoded once by
    TensorFlow, and kept when that works. `"decode"` decodes every file once
    (exact, slower: ~1 ms for a small JPEG, more for large photos).

    Args:
        paths: sequence of file paths.
        validate: `"header"` or `"decode"`.

    Returns:
        List of `(path, reason)` in the order of `paths`.

    Example:

    >>> find_corrupt_images(["ok.png", "empty.jpg"])
    [('empty.jpg', 'empty file')]
    """
    _check_choice("validate", validate, ("header", "decode"))
    paths = [str(path) for path in paths]
    if validate == "header":
        reasons = [_header_problem(path) for path in paths]  # threads: slower here
        suspects = [
            (path, reason)
            for path, reason in zip(paths, reasons, strict=True)
            if reason
        ]
    else:
        decoded = set(_decodable_indices(paths))
        suspects = [
            (path, "TensorFlow cannot decode it")
            for index, path in enumerate(paths)
            if index not in decoded
        ]
    return [(path, reason) for path, reason in suspects if not _decodes(path)]


def _header_problem(path):
    """A reason string when the file does not look like a whole JPEG or PNG."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(_PNG_START))
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if size == 0:
        return "empty file"
    if head.startswith(_JPEG_START):
        return None if _JPEG_END in tail else "truncated JPEG (no end marker FF D9)"
    if head.startswith(_PNG_START):
        return None if _PNG_END in tail else "truncated PNG (no IEND chunk)"
    return f"not a JPEG or PNG file (starts with {head[:8]!r})"


def _decodable_indices(paths):
    def decode(index, path):
        return index, tf.shape(_decode(tf.io.read_file(path)))

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)
    return [int(index) for index, _ in dataset.ignore_errors().as_numpy_iterator()]


def _decodes(path):
    try:
        _decode(tf.io.read_file(path))
    except tf.errors.OpError:
        return False
    return True


def _drop_corrupt(paths, labels, validate, on_corrupt, root):
    corrupt = find_corrupt_images(paths, validate)
    if not corrupt:
        return paths, labels
    listing = "\n".join(f"  {path}: {reason}" for path, reason in corrupt[:_MAX_LISTED])
    more = len(corrupt) - _MAX_LISTED
    listing += f"\n  ... and {more} more" if more > 0 else ""
    if on_corrupt == "raise":
        raise ValueError(
            f"{len(corrupt)} of {len(paths)} image files in {root!r} cannot be decoded:"
            f"\n{listing}\nRemove or replace them, or pass on_corrupt='skip' to leave "
            "them out."
        )
    logging.warning(
        "Skipping %d of %d image files in %s that cannot be decoded:\n%s",
        len(corrupt),
        len(paths),
        root,
        listing,
    )
    keep = ~np.isin(paths, [path for path, _ in corrupt])
    return paths[keep], labels[keep]


# ----------------------------------------------------------------------------------
# Image ops (tf.data map functions).


def _decode(contents):
    """JPEG/PNG bytes -> uint8 `(H, W, 3)`: gray made RGB, alpha dropped."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _to_rgb(images):
    """uint8 `(..., H, W, C)` with C in {1, 3, 4} -> `(..., H, W, 3)`."""
    channels = images.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(images)
    return images[..., :3] if channels == 4 else images


def _resize(images, size, interpolation, crop_to_aspect_ratio):
    """uint8 `(..., H, W, 3)` -> `(..., size[0], size[1], 3)`, untouched if equal."""
    if size is None:
        return images
    if crop_to_aspect_ratio:
        images = _center_crop_to_aspect(images, size)

    def resize():
        resized = tf.image.resize(images, size, method=interpolation, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same = tf.reduce_all(tf.shape(images)[-3:-1] == tf.constant(size))
    result = tf.cond(same, lambda: images, resize)
    return tf.ensure_shape(result, images.shape[:-3].concatenate((*size, 3)))


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


def _take_balanced_stream(dataset, limit, label_feature):
    """The first `limit` elements with at most `ceil(limit / K)` of each class."""
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:  # no labels, or labels that are not a ClassLabel
        return dataset.take(limit)
    quota = -(-limit // num_classes)

    def count(counts, element):
        label = tf.cast(element[1], tf.int32)
        keep = counts[label] < quota
        counts = tf.tensor_scatter_nd_add(counts, [[label]], [tf.cast(keep, tf.int32)])
        return counts, (element, keep)

    initial = tf.zeros([num_classes], tf.int32)
    dataset = dataset.scan(initial, count).filter(lambda element, keep: keep)
    return dataset.map(lambda element, keep: element).take(limit)


# ----------------------------------------------------------------------------------
# Argument checks.


def _tfds_features(name, info, image_key, label_key):
    features = info.features
    for key in (image_key, label_key):
        if key is not None and key not in features:
            raise ValueError(
                f"TFDS dataset {name!r} has no feature {key!r}. Its features: "
                f"{sorted(features.keys())}. Pass image_key=... / label_key=... "
                "(label_key=None for images only)."
            )
    label_feature = features[label_key] if label_key is not None else None
    return features[image_key], label_feature


def _fixed_tfds_image_size(name, image_feature):
    height, width = image_feature.shape[:2]
    if height is None or width is None:
        raise ValueError(
            f"The images of TFDS dataset {name!r} vary in size (shape "
            f"{image_feature.shape}), so they cannot be batched as they are. Pass "
            "image_size, e.g. image_size=224."
        )
    return (height, width)


def _check_image_size(image_size):
    """None (the caller then uses the first image's size), or `(height, width)`."""
    if image_size is None:
        return None
    return augment.image_size_pair("image_size", image_size)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def _check_limit(limit_images):
    if limit_images is not None:
        _check_positive_int("limit_images", limit_images)


def _check_interpolation(interpolation):
    _check_choice("interpolation", interpolation, INTERPOLATIONS)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def _check_subset(subset, val_fraction, val_count):
    _check_choice("subset", subset, (None, *SUBSETS))
    held_back = val_fraction is not None or val_count is not None
    if (subset is None) == held_back:
        raise ValueError(
            "`subset` ('training' or 'validation') and `val_fraction` or `val_count` "
            f"go together. Received: subset={subset!r}, val_fraction={val_fraction}, "
            f"val_count={val_count}"
        )


def _check_count(count, batch_size, training, source):
    if count == 0:
        raise ValueError(
            f"No images left in {source} after the subset, limit and corrupt-file "
            "selection: the dataset would be empty."
        )
    if training and count < batch_size:
        raise ValueError(
            f"`batch_size`={batch_size} is larger than the {count} images of {source}. "
            "With training=True the last partial batch is dropped, so the dataset "
            "would be empty. Use a smaller batch_size, more images, or training=False."
        )


def _check_epochs(epochs, initial_epoch, steps_per_epoch, training):
    if epochs is None:
        if steps_per_epoch is not None:
            raise ValueError(
                "`steps_per_epoch` goes with `epochs` (epochs keyed by their "
                f"number). Received: steps_per_epoch={steps_per_epoch}, epochs=None. "
                "Pass epochs=..., or give steps_per_epoch to `fit` instead."
            )
        return
    _check_positive_int("epochs", epochs)
    if (
        isinstance(initial_epoch, bool)
        or not isinstance(initial_epoch, (int, np.integer))
        or not 0 <= initial_epoch < epochs
    ):
        raise ValueError(
            f"`initial_epoch` must be an int in [0, epochs) = [0, {epochs}). "
            f"Received: initial_epoch={initial_epoch!r}. A run restored after its "
            "last epoch has nothing left to train: skip `fit`."
        )
    if not training:
        raise ValueError(
            "`epochs` orders the batches of training epochs and needs "
            "training=True (full batches only). Received: training=False"
        )


def _steps_per_epoch(count, batch_size, training, steps_per_epoch):
    """Full batches per epoch (`steps_per_epoch` or all), or None without training."""
    if not training:
        return None
    available = count // batch_size
    if steps_per_epoch is None:
        return available
    _check_positive_int("steps_per_epoch", steps_per_epoch)
    if steps_per_epoch > available:
        raise ValueError(
            f"`steps_per_epoch`={steps_per_epoch} asks for more batches than the "
            f"{count} images hold ({available} full batches of {batch_size}). Use "
            f"steps_per_epoch <= {available}, or more epochs."
        )
    return steps_per_epoch


def _check_numpy_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            "`images` must be uint8 with values 0-255. "
            f"Received: dtype {images.dtype}. "
            "Convert floats in [0, 1] with `np.round(x * 255).astype('uint8')`, "
            "floats in [0, 255] with `np.round(x).astype('uint8')`."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or len(images) == 0:
        raise ValueError(
            "`images` must have shape (N, H, W, 3), (N, H, W, 4), (N, H, W, 1) or "
            f"(N, H, W) with N > 0. Received: shape {images.shape}"
        )
    return images


def _check_numpy_labels(labels, count):
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`labels` must be integers of shape ({count},) or ({count}, 1), one per "
            f"image. Received: shape {labels.shape}, dtype {labels.dtype}"
        )
    return labels.astype(np.int32)
