"""The options every loader shares, checked once, and what a loader reports back.

`Options` also owns the choice of the input pipeline (`pipeline`: tf.data or
Grain) and of the part of each batch this process reads (`shard_index`,
`shard_count`).
"""

import dataclasses
import importlib
import importlib.util
import os

from keras import backend

from keras_barlow import _checks as checks
from keras_barlow.data import selection

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
PIPELINES = ("auto", "tf.data", "grain")
# The interpolations that Grain's resizing (Pillow, NumPy for "area") has.
GRAIN_INTERPOLATIONS = ("area", "bicubic", "bilinear", "lanczos3", "nearest")
_PIPELINE_MODULES = {
    "tf.data": "keras_barlow.data.tf_pipeline",
    "grain": "keras_barlow.data.grain_pipeline",
}


@dataclasses.dataclass(frozen=True)
class Options:
    """How a loader turns images into batches: the keyword arguments of every loader.

    Checked when made; `training`, `shuffle`, `split_seed`, `pipeline`,
    `shard_index`, `shard_count` and `grain_threads` are resolved from their
    defaults then, so a loader reads plain values.

    Attributes:
        image_size: `None` (the images' own size, which must then be the same
            for all; the first image's for a folder), an int or `(height, width)`;
            images of another size are resized.
        batch_size: images per batch.
        training: `True` shuffles and drops the last partial batch. Default:
            `True` unless `subset="validation"`.
        shuffle: overrides `training` for shuffling.
        seed: int seed of the shuffle (and of the split, unless `split_seed`).
        subset: `None`, `"training"` or `"validation"`: one side of
            `stratified_split(labels, val_fraction, val_count, split_seed)`, so two
            calls with the same arguments give disjoint parts (not for TFDS,
            which slices its splits: `"train[:90%]"`).
        val_fraction: fraction of the images held back for validation.
        val_count: number of images held back (instead of `val_fraction`).
        split_seed: int seed of the validation split, default `seed`: fix it to
            hold back the same images whatever the shuffle seed.
        limit_images: use at most N images of the subset, class-balanced (see
            `balanced_subset`).
        interpolation: `tf.image.resize` method.
        crop_to_aspect_ratio: center-crop to the aspect ratio of `image_size`
            before resizing, instead of squashing.
        epochs: `None` (one pass, reshuffled at every iteration) or the total
            number of epochs of training: the dataset then holds the batches of
            epochs `initial_epoch` to `epochs - 1`, each epoch in an order keyed
            by `(seed, epoch)` (see `keras_barlow.data`). Needs `training=True`.
        initial_epoch: the first epoch to yield (with `epochs`), e.g. the
            completed epochs of a restored checkpoint.
        steps_per_epoch: batches per epoch (with `epochs`), at most and by
            default `images // batch_size`; each epoch uses the first ones of its
            order.
        full_resolution: `None` (decided from the data: on when training and
            more than half of the images are taller or wider than `image_size`;
            a warning says so when the images are mixed), `True` or `False`.
            Training images are then not resized to `image_size`: each keeps
            its own size (shrunk, bicubic and antialiased, only when its longer
            side exceeds `max(max_side, *image_size)`), padded at the bottom and
            right to a square canvas as large as the largest image, in batches
            `{"images": uint8 (B, C, C, 3), "image_sizes": int32 (B, 2),
            "labels": int32 (B,)}` (true height and width; labels where there
            are labels). `BarlowTwins` cuts each view's crop out of the true
            region, as torchvision's `RandomResizedCrop` cuts it from the decoded
            image, instead of out of a copy already shrunk to `image_size`.
            Evaluation data (`training=False`) are always resized to
            `image_size`. Image folders and TFDS only (see `canvas`).
        max_side: the longest side a full-resolution image keeps, 512 by
            default (ImageNet's typical 500 x 375 images keep every pixel). A
            canvas whose batch would exceed `canvas.MAX_CANVAS_BYTES` is refused.
        pipeline: `"auto"` (tf.data when TensorFlow is installed, Grain
            otherwise or when several JAX processes each read a shard),
            `"tf.data"` or `"grain"`. Both give the same files, labels, split and
            batch format; Grain decodes JPEG with libjpeg-turbo (simplejpeg) and
            PNG with Pillow, pixel for pixel as tf.data does, and resizes with
            the same kernels (measured: identical for `"nearest"`, within 1 level
            of 255 for `"bilinear"` and `"area"`, 3 for `"bicubic"`, 7 for
            `"lanczos3"`; Grain has only these, `GRAIN_INTERPOLATIONS`).
        shard_index, shard_count: this process reads part `shard_index` of
            `shard_count` of every batch (Grain only): `batch_size` is the
            global batch, each process yields `batch_size // shard_count` images
            of it, and the processes' batches, concatenated in `shard_index`
            order, are the one-process batch. Default, for training data on the
            JAX backend: `jax.process_index()` and `jax.process_count()` (call
            `jax.distributed.initialize` first); else 0 and 1: evaluation data
            are read whole by every process.
        grain_threads: threads that read and decode batches in each Grain
            process. Default: the CPU count, at most 8.
        grain_workers: Grain worker processes (`mp_prefetch`); 0 (default)
            reads in this process's threads only.
    """

    image_size: object = None
    batch_size: int = 256
    training: bool | None = None
    shuffle: bool | None = None
    seed: int = 0
    subset: str | None = None
    val_fraction: float | None = None
    val_count: int | None = None
    split_seed: int | None = None
    limit_images: int | None = None
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    epochs: int | None = None
    initial_epoch: int = 0
    steps_per_epoch: int | None = None
    full_resolution: bool | None = None
    max_side: int = 512
    pipeline: str = "auto"
    shard_index: int | None = None
    shard_count: int | None = None
    grain_threads: int | None = None
    grain_workers: int = 0

    def __post_init__(self):
        resolved = {}
        checks.choice("full_resolution", self.full_resolution, (None, True, False))
        checks.positive_int("max_side", self.max_side)
        if self.image_size is not None:
            resolved["image_size"] = checks.image_size("image_size", self.image_size)
        checks.positive_int("batch_size", self.batch_size)
        if self.limit_images is not None:
            checks.positive_int("limit_images", self.limit_images)
        checks.choice("interpolation", self.interpolation, INTERPOLATIONS)
        selection.check_subset(self.subset, self.val_fraction, self.val_count)
        if self.training is None:
            resolved["training"] = self.subset != "validation"
        training = resolved.get("training", self.training)
        if self.shuffle is None:
            resolved["shuffle"] = training
        if self.split_seed is None:
            resolved["split_seed"] = self.seed
        _check_epochs(self.epochs, self.initial_epoch, self.steps_per_epoch, training)
        if self.full_resolution and not training:
            raise ValueError(
                "`full_resolution=True` is for training data (the crops are cut in "
                "the model); evaluation data are resized to `image_size`. "
                "Received: full_resolution=True, training=False"
            )
        resolved.update(_resolve_reading(self, training))
        for name, value in resolved.items():
            object.__setattr__(self, name, value)


def pipeline_module(name):
    """The module that builds the batches of pipeline `name` (`Options.pipeline`).

    Both modules offer `file_batches`, `array_batches` and `decodable`.

    Raises:
        ImportError: naming the extra to install when the pipeline's packages
            are missing.
    """
    try:
        return importlib.import_module(_PIPELINE_MODULES[name])
    except ModuleNotFoundError as error:
        extra, packages = (
            ("cpu", "TensorFlow")
            if name == "tf.data"
            else ("jax", "grain, Pillow and simplejpeg")
        )
        other = "grain" if name == "tf.data" else "tf.data"
        raise ImportError(
            f"The {name} input pipeline needs {packages} (missing: {error.name}). "
            f"Install them with `pip install keras-barlow[{extra}]`, or choose the "
            f"other pipeline with pipeline={other!r}."
        ) from error


def resolve_pipeline(pipeline="auto", shard_count=1):
    """The input pipeline `"tf.data"` or `"grain"` that `pipeline` names.

    `"auto"` is tf.data when TensorFlow is installed and one process reads the
    whole batch, Grain otherwise (tf.data cannot read one JAX process's shard).

    Example:

    >>> resolve_pipeline("auto")  # without TensorFlow installed
    'grain'
    """
    checks.choice("pipeline", pipeline, PIPELINES)
    if pipeline != "auto":
        return pipeline
    return "tf.data" if shard_count == 1 and _has_tensorflow() else "grain"


def _resolve_reading(options, training):
    """The pipeline, this process's shard and Grain's parallelism, resolved."""
    shard_index, shard_count = _shard(
        options.shard_index, options.shard_count, training
    )
    pipeline = resolve_pipeline(options.pipeline, shard_count)
    if training and options.batch_size % shard_count:
        raise ValueError(
            f"`batch_size`={options.batch_size} is the global batch and must split "
            f"evenly over shard_count={shard_count} processes. Use a multiple of "
            f"{shard_count}."
        )
    threads = options.grain_threads
    if pipeline == "tf.data":
        _refuse_for_tf_data(options, shard_count)
    else:
        checks.choice("interpolation", options.interpolation, GRAIN_INTERPOLATIONS)
        if threads is None:
            threads = min(8, os.cpu_count() or 1)
        checks.positive_int("grain_threads", threads)
        checks.non_negative_int("grain_workers", options.grain_workers)
    return {
        "pipeline": pipeline,
        "shard_index": shard_index,
        "shard_count": shard_count,
        "grain_threads": threads,
    }


def _shard(index, count, training):
    if index is None and count is None:
        if backend.backend() != "jax" or not training:
            return 0, 1
        import jax

        return jax.process_index(), jax.process_count()
    if index is None or count is None:
        raise ValueError(
            "Pass both `shard_index` and `shard_count`, or neither (the JAX process "
            f"index and count). Received: shard_index={index}, shard_count={count}"
        )
    count = checks.positive_int("shard_count", count)
    return checks.integer("shard_index", index, low=0, high=count - 1), count


def _refuse_for_tf_data(options, shard_count):
    grain_only = {
        "shard_count": shard_count if shard_count > 1 else None,
        "grain_threads": options.grain_threads,
        "grain_workers": options.grain_workers or None,
    }
    given = {name: value for name, value in grain_only.items() if value is not None}
    if given:
        raise ValueError(
            f"{given} apply to the Grain pipeline only (tf.data tunes its own "
            "parallelism, and tf.distribute shards a tf.data dataset itself). Pass "
            "pipeline='grain', or leave them out."
        )


def _has_tensorflow():
    return importlib.util.find_spec("tensorflow") is not None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a loader knows about the dataset it built (`with_info=True`).

    A separate object, so it stays true whatever is mapped over the dataset.

    Attributes:
        class_names: label names, label i is name i, or `None`.
        num_images: images selected, or `None` when the source does not say.
        steps_per_epoch: full batches per epoch, for `fit`; `None` when
            `training=False` or the number of images is unknown.
        image_size: `(height, width)` of the images yielded (with
            `full_resolution`, of the canvas).
        file_paths: image files in the order of an unshuffled pass (folders
            only), or `None`.
        full_resolution: whether batches are full-resolution dicts
            `{"images", "image_sizes"[, "labels"]}` (see `Options`).
        pipeline: `"tf.data"` (a `tf.data.Dataset`) or `"grain"` (a
            `grain.IterDataset`).
    """

    class_names: list | None
    num_images: int | None
    steps_per_epoch: int | None
    image_size: tuple
    file_paths: list | None = dataclasses.field(default=None, repr=False)
    full_resolution: bool = False
    pipeline: str = "tf.data"


def full_batches_per_epoch(count, options):
    """Batches per training epoch (`options.steps_per_epoch` or all), or None."""
    if not options.training or count is None:
        return None
    available = count // options.batch_size
    if options.steps_per_epoch is None:
        return available
    if options.steps_per_epoch > available:
        raise ValueError(
            f"`steps_per_epoch`={options.steps_per_epoch} asks for more batches than "
            f"the {count} images hold ({available} full batches of "
            f"{options.batch_size}). Use steps_per_epoch <= {available}, or more "
            "epochs."
        )
    return options.steps_per_epoch


def check_count(count, options, source):
    """The selection left images, and enough for one full batch when training."""
    if count == 0:
        raise ValueError(
            f"No images left in {source} after the subset, limit and corrupt-file "
            "selection: the dataset would be empty."
        )
    if options.training and count < options.batch_size:
        raise ValueError(
            f"`batch_size`={options.batch_size} is larger than the {count} images of "
            f"{source}. With training=True the last partial batch is dropped, so the "
            "dataset would be empty. Use a smaller batch_size, more images, or "
            "training=False."
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
    checks.positive_int("epochs", epochs)
    if steps_per_epoch is not None:
        checks.positive_int("steps_per_epoch", steps_per_epoch)
    try:
        checks.integer("initial_epoch", initial_epoch, low=0, high=epochs - 1)
    except ValueError:
        raise ValueError(
            f"`initial_epoch` must be an int in [0, epochs) = [0, {epochs}). "
            f"Received: initial_epoch={initial_epoch!r}. A run restored after its "
            "last epoch has nothing left to train: skip `fit`."
        ) from None
    if not training:
        raise ValueError(
            "`epochs` orders the batches of training epochs and needs "
            "training=True (full batches only). Received: training=False"
        )


def loader_result(dataset, info, with_info):
    """What a loader returns: the dataset, or `(dataset, info)` with `with_info`."""
    return (dataset, info) if with_info else dataset
