"""Batches from TensorFlow Datasets, failing fast when a download cannot happen.

TFDS reads through tf.data: this loader needs TensorFlow (`pip install
keras-barlow[cpu]`), which it imports when called, so `keras_barlow.data`
imports without it.
"""

import dataclasses
import importlib
import socket
import urllib.parse

import numpy as np

from keras_barlow.data import canvas
from keras_barlow.data import options as options_lib

# Options that need the whole label array, which a TFDS stream does not give.
_UNSUPPORTED = (
    "subset",
    "val_fraction",
    "val_count",
    "split_seed",
    "epochs",
    "initial_epoch",
    "steps_per_epoch",
)
# Seconds to wait for each download host before declaring the network unreachable.
CONNECT_TIMEOUT = 10


def from_tfds(
    name,
    split="train",
    *,
    data_dir=None,
    download=True,
    image_key="image",
    label_key="label",
    shuffle_buffer=10_000,
    with_info=False,
    **options,
):
    """Batches of uint8 images (and int32 labels) from a TensorFlow Datasets split.

    TFDS does the reading and decoding; files are shuffled with `seed` when
    shuffling, then examples go through a `shuffle_buffer`. TFDS has no
    stratified split: hold data back with split slicing (`"train[:90%]"`) or use
    the dataset's own validation split. `limit_images=N` takes the first N
    examples with at most `ceil(N / num_classes)` of each class (files then read
    in order).

    A dataset that is not prepared in `data_dir` is downloaded when `download`;
    when its download hosts cannot be reached, a `ConnectionError` says so within
    `CONNECT_TIMEOUT` seconds a host, instead of TFDS retrying for minutes.

    Args:
        name: TFDS name, e.g. `"cifar10"`.
        split: TFDS split, slicing included (`"train[:10%]"`).
        data_dir: TFDS data directory.
        download: let TFDS download and prepare the dataset when it is missing.
        image_key, label_key: feature names; `label_key=None` yields images only.
        shuffle_buffer: examples in the shuffle buffer.
        with_info: also return a `DatasetInfo`.
        **options: the `Options` of every loader but `subset`, `val_fraction`,
            `val_count`, `split_seed`, `epochs`, `initial_epoch` and
            `steps_per_epoch`; `image_size=None` needs images of a fixed size.

    Returns:
        `tf.data.Dataset` of `(images, labels)`: uint8 `(B, H, W, 3)` and int32
        `(B,)`, or of images only; with `with_info`, `(dataset, DatasetInfo)`.
        Training images larger than `image_size` come at full resolution
        instead, as dicts `{"images", "image_sizes"[, "labels"]}` (see
        `Options.full_resolution`): decided by the image feature's shape, on a
        canvas of that size, when it is fixed; by the first image, on a canvas
        of `max(max_side, *image_size)`, when the images vary (a stream is not
        scanned).

    Raises:
        ConnectionError: the dataset is missing and cannot be downloaded.
        ImportError: TensorFlow or TFDS is not installed (`pip install
            keras-barlow[cpu]`).

    Example:

    >>> dataset = from_tfds("cifar10", "train", batch_size=512)
    >>> images, labels = next(iter(dataset))  # (512, 32, 32, 3) uint8, (512,) int32
    """
    tfds, tf_pipeline = _tfds_and_pipeline()
    unsupported = sorted(set(options) & set(_UNSUPPORTED))
    if unsupported:
        raise ValueError(
            f"from_tfds does not take {unsupported}: TFDS streams its examples. Hold "
            "images back with split slicing (split='train[:90%]' and "
            "'train[90%:]'), or read the split into arrays and use from_numpy."
        )
    options = options_lib.Options(**{"pipeline": "tf.data", **options})
    if options.pipeline != "tf.data":
        raise ValueError(
            "from_tfds reads through tf.data and takes pipeline='tf.data' only. "
            f"Received: pipeline={options.pipeline!r}. For Grain, write the images "
            "to a folder (or arrays) and use from_image_folder or from_numpy."
        )
    if download:
        _check_download_possible(tfds.builder(name, data_dir=data_dir), name)
    dataset, info = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        with_info=True,
        shuffle_files=options.shuffle and options.limit_images is None,
        read_config=tfds.ReadConfig(shuffle_seed=options.seed),
    )
    image_feature, label_feature = _tfds_features(name, info, image_key, label_key)
    if options.image_size is None:
        size = _fixed_tfds_image_size(name, image_feature)
        options = dataclasses.replace(options, image_size=size)

    fixed = None not in image_feature.shape[:2]

    def image_sizes():  # every image's when the feature's shape is fixed
        if fixed:
            return np.array([image_feature.shape[:2]])
        return np.array([next(iter(dataset.take(1)))[image_key].shape[:2]])

    options, yielded_size = canvas.resolve(options, image_sizes, every_image=fixed)

    count = int(dataset.cardinality())
    if label_key is None:
        dataset = dataset.map(lambda example: example[image_key])
    else:
        dataset = dataset.map(lambda example: (example[image_key], example[label_key]))
    if options.limit_images is not None:
        dataset = _take_class_capped(dataset, options.limit_images, label_feature)
        count = min(count, options.limit_images) if count >= 0 else options.limit_images
    count = count if count >= 0 else None
    if count is not None:
        options_lib.check_count(count, options, f"TFDS {name}[{split}]")
    if options.shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer, options.seed, reshuffle_each_iteration=True
        )
    dataset = tf_pipeline.build_batches(
        dataset,
        _image_and_label,
        options,
        canvas_side=yielded_size[0] if options.full_resolution else None,
    )
    dataset_info = options_lib.DatasetInfo(
        class_names=getattr(label_feature, "names", None),  # a ClassLabel has names
        num_images=count,
        steps_per_epoch=options_lib.full_batches_per_epoch(count, options),
        image_size=yielded_size,
        full_resolution=options.full_resolution,
        pipeline=options.pipeline,
    )
    return options_lib.loader_result(dataset, dataset_info, with_info)


def _tfds_and_pipeline():
    """`(tensorflow_datasets, tf_pipeline)`, or an ImportError naming the extra."""
    try:
        # Imported here: TFDS takes seconds to load, and needs TensorFlow.
        tfds = importlib.import_module("tensorflow_datasets")
        tf_pipeline = importlib.import_module("keras_barlow.data.tf_pipeline")
    except ModuleNotFoundError as error:
        raise ImportError(
            "from_tfds needs TensorFlow and TensorFlow Datasets (missing: "
            f"{error.name}). Install them with `pip install keras-barlow[cpu]` (or "
            "[gpu]); without TensorFlow, load image folders and arrays with "
            "from_image_folder and from_numpy (Grain)."
        ) from error
    return tfds, tf_pipeline


def _image_and_label(image, label=None):
    return image if label is None else (image, label)


def _check_download_possible(builder, name):
    """Raise at once when the dataset is missing and its hosts cannot be reached.

    TFDS retries a failed download ten times with a growing back-off (minutes);
    one connection attempt per host, with `CONNECT_TIMEOUT`, tells sooner. The
    hosts are those of the builder's recorded download URLs; a builder without
    any is left to TFDS.
    """
    if builder.is_prepared() or _download_is_mocked(builder):
        return
    hosts = set()
    for url in builder.url_infos or ():
        parts = urllib.parse.urlsplit(url)
        if parts.hostname:
            hosts.add((parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)))
    for host, port in sorted(hosts, key=str):
        try:
            socket.create_connection((host, port or 443), CONNECT_TIMEOUT).close()
        except OSError as error:
            raise ConnectionError(
                f"TFDS dataset {name!r} is not prepared in "
                f"{builder.data_dir!r} and cannot be downloaded: {host}:{port} is "
                f"unreachable ({error}). Pass a local path instead: an image folder "
                "or archive to keras_barlow.data.from_image_folder (the example's "
                "--data PATH), or arrays to from_numpy; or prepare the dataset with "
                "TFDS on a machine with network access and pass its data_dir."
            ) from error


_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def _download_is_mocked(builder):
    """Under `tfds.testing.mock_data` the download is a no-op: nothing to reach."""
    method = type(builder).download_and_prepare
    return getattr(method, "__module__", "").startswith("tensorflow_datasets.testing")


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


def _take_class_capped(dataset, limit, label_feature):
    """The first `limit` elements with at most `ceil(limit / K)` of each class.

    A stream has no class counts, so the quota is fixed in advance (unlike
    `balanced_subset`, which sees every label).
    """
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:  # no labels, or labels that are not a ClassLabel
        return dataset.take(limit)
    import tensorflow as tf  # only reached from from_tfds, which has TensorFlow

    quota = -(-limit // num_classes)

    def count(counts, element):
        label = tf.cast(element[1], tf.int32)
        keep = counts[label] < quota
        counts = tf.tensor_scatter_nd_add(counts, [[label]], [tf.cast(keep, tf.int32)])
        return counts, (element, keep)

    initial = tf.zeros([num_classes], tf.int32)
    dataset = dataset.scan(initial, count).filter(lambda element, keep: keep)
    return dataset.map(lambda element, keep: element).take(limit)
