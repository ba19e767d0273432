"""Batches from a folder of images (or an archive of one) and from NumPy arrays.

The selection (files, labels, split, corrupt files) and the sizes (full
resolution, canvas) are decided here, once, for either pipeline; the chosen
pipeline (`Options.pipeline`) then builds the batches.
"""

import dataclasses

import numpy as np

from keras_barlow import _checks as checks
from keras_barlow.data import canvas, folders, integrity, selection
from keras_barlow.data import options as options_lib


def from_image_folder(
    path,
    *,
    labels="inferred",
    on_corrupt="raise",
    validate="header",
    cache_dir=None,
    with_info=False,
    **options,
):
    """Batches of uint8 images (and int32 labels) from a folder of JPEG and PNG files.

    Layout: one sub-folder per class (`root/cat/1.jpg`, `root/dog/x/2.png`), class
    folders searched recursively, class names sorted and labelled 0, 1, ...
    `path` may also be a `.tar`, `.tar.gz` or `.tgz` archive of such a folder: it
    is extracted once into `cache_dir` (atomically, refusing members that would
    land outside it) and reused by later calls. When the folder holds only a
    single sub-folder of folders (`train/` in `train/cat/1.jpg`), that sub-folder
    is the root (see `image_root`).

    Files are chosen by extension (`.jpg`, `.jpeg`, `.png`, any case); hidden
    files and folders (starting with `.`) and other files are ignored.

    Corrupt files: before any batch is made, the chosen files are checked
    (`validate="header"`: JPEG/PNG signature and end marker, which catches
    empty, non-image and truncated files with two small reads a file; suspects are
    then decoded once by the pipeline's decoder, so a file it can decode is never
    rejected; `validate="decode"`: every file is decoded once; `validate=None`: no
    check). With `on_corrupt="raise"` (default) a `ValueError` names the files and
    why; with `on_corrupt="skip"` they are left out and a warning gives their
    count and names, and a file that still fails to decode during training is
    skipped too (which would shorten an epoch, so `on_corrupt="skip"` is refused
    with `epochs`; on Grain, the batch that held it comes out shorter).

    The validation split (`subset`) is computed on all files, before
    `limit_images` and the corrupt-file check, so the held-back images do not
    depend on them. Both pipelines (`pipeline=`) select the same files, labels and
    splits; whether training batches come at full resolution, and the canvas
    size, are decided from the headers of the selected files (see `canvas`).

    Args:
        path: folder or archive.
        labels: `"inferred"` (from the class folders) or `None` (all images found
            under `path`, no labels).
        on_corrupt: `"raise"` or `"skip"` (not with `epochs`).
        validate: `"header"`, `"decode"` or `None`.
        cache_dir: where archives are extracted. Default: `default_cache_dir()`.
        with_info: also return a `DatasetInfo`.
        **options: the `Options` of every loader (`image_size`, `batch_size`,
            `training`, `seed`, `subset`, `val_fraction`, `limit_images`, `epochs`,
            `full_resolution`, `max_side`, `pipeline`, ...). `image_size=None`
            takes the size of the first image.

    Returns:
        A `tf.data.Dataset` (`pipeline="tf.data"`) or a `grain.IterDataset`
        (`"grain"`) of `(images, labels)`: uint8 `(B, H, W, 3)` and int32 `(B,)`
        (images only with `labels=None`); with `with_info`,
        `(dataset, DatasetInfo)`. Training images mostly larger than
        `image_size` come at full resolution instead, as dicts
        `{"images", "image_sizes"[, "labels"]}` (see `Options.full_resolution`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: no class folders, no images, corrupt files (with
            `on_corrupt="raise"`), no image left after the selection, or fewer
            images than `batch_size` while dropping the remainder;
            `on_corrupt="skip"` with `epochs`; full-resolution batches too large
            (see `canvas`).
        ImportError: the pipeline's packages are missing (naming the extra).

    Example:

    >>> train, info = from_image_folder("pets/", image_size=224, batch_size=64,
    ...     subset="training", val_fraction=0.1, with_info=True)
    >>> info.class_names
    ['cat', 'dog']

    Without TensorFlow (or with `pipeline="grain"`) the same call gives a
    `grain.IterDataset`; with several JAX processes each reads its part of every
    batch of 64 (`shard_index`, `shard_count`, from `jax.process_index()` and
    `jax.process_count()` by default).
    """
    options = options_lib.Options(**options)
    pipeline = options_lib.pipeline_module(options.pipeline)
    checks.choice("labels", labels, ("inferred", None))
    checks.choice("on_corrupt", on_corrupt, ("raise", "skip"))
    checks.choice("validate", validate, ("header", "decode", None))
    if options.epochs is not None and on_corrupt == "skip":
        raise ValueError(
            "`on_corrupt='skip'` cannot be combined with `epochs`: an image that "
            "fails to decode during training would be dropped, the epoch would "
            "come up short and every later batch would straddle two epochs. Leave "
            "on_corrupt='raise' (it names the corrupt files, for you to remove), "
            "or pass epochs=None. Received: on_corrupt='skip', "
            f"epochs={options.epochs}"
        )

    root = folders.image_root(path, cache_dir)
    names, paths, label_array = folders.list_images(root, labels)
    indices = _selected_indices(label_array, options)
    paths, label_array = paths[indices], label_array[indices]
    if validate is not None:
        paths, label_array = integrity.drop_corrupt(
            paths, label_array, validate, on_corrupt, root, pipeline.decodable
        )
    options_lib.check_count(len(paths), options, root)
    options, yielded_size = canvas.resolve(options, lambda: folders.image_sizes(paths))
    if yielded_size is None:  # image_size=None: the first image's size
        options = dataclasses.replace(options, image_size=folders.image_size(paths[0]))
        yielded_size = options.image_size

    dataset = pipeline.file_batches(
        paths,
        None if labels is None else label_array,
        options,
        canvas_side=yielded_size[0] if options.full_resolution else None,
        skip_errors=on_corrupt == "skip",
    )
    info = options_lib.DatasetInfo(
        class_names=names,
        num_images=len(paths),
        steps_per_epoch=options_lib.full_batches_per_epoch(len(paths), options),
        image_size=yielded_size,
        file_paths=[str(file_path) for file_path in paths],
        full_resolution=options.full_resolution,
        pipeline=options.pipeline,
    )
    return options_lib.loader_result(dataset, info, with_info)


def from_numpy(images, labels=None, *, with_info=False, **options):
    """Batches of uint8 images (and int32 labels) from arrays in memory.

    The arrays are held once; the pipeline shuffles and batches indices and
    gathers each batch, so memory is not duplicated in a shuffle buffer. The
    options work as in `from_image_folder` (without labels, the split is a
    seeded random split).

    Args:
        images: uint8 array `(N, H, W, 3)`, `(N, H, W, 4)` (alpha is dropped),
            `(N, H, W, 1)` or `(N, H, W)` (gray, made RGB).
        labels: optional integer array `(N,)` or `(N, 1)`.
        with_info: also return a `DatasetInfo`.
        **options: the `Options` of every loader; `image_size=None` keeps the
            arrays' size.

    Returns:
        A `tf.data.Dataset` or `grain.IterDataset` (see `Options.pipeline`) of
        `(images, labels)`: uint8 `(B, H, W, 3)` and int32 `(B,)`, or of images
        only when `labels` is `None`; with `with_info`, `(dataset, DatasetInfo)`.

    Example:

    >>> (x, y), _ = keras.datasets.cifar10.load_data()
    >>> train = from_numpy(x, y, batch_size=256, subset="training", val_count=5000)
    """
    images = _check_numpy_images(images)
    label_array = _check_numpy_labels(labels, len(images))
    options = options_lib.Options(**options)
    pipeline = options_lib.pipeline_module(options.pipeline)
    if options.full_resolution:
        raise ValueError(
            "from_numpy does not take full_resolution=True: arrays all have one "
            "size. Pass image_size=None to keep it, and the model crops from the "
            "whole array. Received: full_resolution=True"
        )
    options = dataclasses.replace(options, full_resolution=False)

    strata = np.zeros(len(images), np.int32) if label_array is None else label_array
    indices = _selected_indices(strata, options)
    options_lib.check_count(len(indices), options, "the arrays")
    dataset = pipeline.array_batches(images, label_array, indices, options)
    info = options_lib.DatasetInfo(
        class_names=None,
        num_images=len(indices),
        steps_per_epoch=options_lib.full_batches_per_epoch(len(indices), options),
        image_size=options.image_size or tuple(images.shape[1:3]),
        pipeline=options.pipeline,
    )
    return options_lib.loader_result(dataset, info, with_info)


def _selected_indices(labels, options):
    return selection.split_and_limit(
        labels,
        options.subset,
        options.val_fraction,
        options.val_count,
        options.split_seed,
        options.limit_images,
    )


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
