"""Input pipelines: image folders and archives, NumPy arrays, TFDS.

Every loader returns batches of uint8 images `(B, H, W, 3)`, or of
`(images, labels)` with int32 labels `(B,)` where there are labels; with
`with_info=True`, `(dataset, DatasetInfo)`: class names, number of images, full
batches per epoch, image size. The distortions happen in the model
(`keras_barlow.BarlowTwinsAugment`), not here.

Two pipelines build the batches, chosen by `pipeline=` (one of the `Options`):
tf.data (a `tf.data.Dataset`, when TensorFlow is installed) and Grain (a
`grain.IterDataset`, without TensorFlow: `pip install keras-barlow[jax]`).
Keras `fit` takes either on every backend. They select the same files, labels
and splits, and give the same batch format and pixels (JPEG and PNG decoded
identically; resizing within a level or so, see `Options.pipeline`).
`"auto"` (default) takes tf.data when TensorFlow is installed, Grain otherwise.
With several JAX processes, each reads its own part of every global batch
(`Options.shard_index`). TFDS (`from_tfds`) needs TensorFlow.

The loaders share one set of keyword arguments, `Options`. Training datasets
(`training=True`) are shuffled with a seed and drop the last partial batch, so
every step sees a full global batch; evaluation datasets keep every image in file
order. Images of another size are resized to `image_size` (bilinear,
antialiased), then rounded back to uint8; grayscale images become RGB and alpha
channels are dropped; EXIF orientation is not applied (as TensorFlow decodes).

Large images, full resolution. Training images larger than `image_size` (most
of them, read from the file headers; `full_resolution=True/False` overrides)
are not resized to it: each keeps its own pixels (shrunk only when its longer
side exceeds `max_side`, 512 by default), padded at the bottom and right to a
square canvas as large as the largest image (see `canvas`),
and the batches are dicts `{"images": uint8 (B, C, C, 3), "image_sizes": int32
(B, 2), "labels": int32 (B,)}` that `BarlowTwins.fit` takes as they are. The
model then draws each view's crop on the image's true size and resamples it
from the original pixels, as torchvision's `RandomResizedCrop` does, instead of
from a copy already shrunk to `image_size`. Evaluation data (`training=False`)
are resized to `image_size` as before.

Epochs keyed by their number (exact resumption). By default a training dataset
reshuffles at every pass, so the order of an epoch depends on how many passes
the process has made: a run restarted from a checkpoint sees other batches than
an uninterrupted one. `from_image_folder` and `from_numpy` with `epochs=E`
instead yield the batches of epochs `initial_epoch, ..., E - 1` one after the
other, epoch `e` in an order that depends only on `(seed, e)` (a stateless
shuffle; each pipeline has its own order), `steps_per_epoch` full batches each.
Built with the `initial_epoch` that
`keras_barlow.checkpoints.TrainingCheckpoint.restore` returns, it continues
exactly where the interrupted run was. Pass `steps_per_epoch` to `fit` with such
a dataset; a Grain dataset without `epochs` is one pass per `iter()`, so give it
to `fit` without `steps_per_epoch` (Keras then warns once that the data ran out at
the end of the first epoch, when it learns the epoch's length):

```python
initial_epoch = checkpoint.restore(model)
train, info = keras_barlow.data.from_image_folder(
    path, batch_size=256, labels=None, epochs=100, initial_epoch=initial_epoch,
    with_info=True)
model.fit(train, epochs=100, initial_epoch=initial_epoch,
          steps_per_epoch=info.steps_per_epoch, callbacks=[checkpoint])
```

Modules: `loaders` (folders, arrays), `tfds_loader`, `options` (with the choice
of pipeline), `canvas` (full resolution), `tf_pipeline`, `grain_pipeline`,
`images` (decoding and resizing in NumPy, for Grain), `selection` (splits and
class-balanced subsets), `folders` (class folders, archives, image sizes),
`integrity` (corrupt files).

Example:

```python
train, info = keras_barlow.data.from_image_folder(
    "cifar10-jpeg-train.tar.gz", batch_size=256, subset="training",
    val_count=5000, with_info=True)
val = keras_barlow.data.from_image_folder(
    "cifar10-jpeg-train.tar.gz", batch_size=256, subset="validation",
    val_count=5000)
info.class_names[:2]  # ['airplane', 'automobile']
```
"""

from keras_barlow.data.folders import (
    ARCHIVE_EXTENSIONS,
    IMAGE_EXTENSIONS,
    class_names,
    default_cache_dir,
    extract_archive,
    image_root,
)
from keras_barlow.data.integrity import find_corrupt_images
from keras_barlow.data.loaders import from_image_folder, from_numpy
from keras_barlow.data.options import (
    GRAIN_INTERPOLATIONS,
    INTERPOLATIONS,
    PIPELINES,
    DatasetInfo,
    Options,
    resolve_pipeline,
)
from keras_barlow.data.selection import (
    SUBSETS,
    apportion,
    balanced_subset,
    select_by_class,
    stratified_split,
)
from keras_barlow.data.tfds_loader import from_tfds


def __getattr__(name):
    if name == "AUTOTUNE":  # tf.data's: TensorFlow loads on first use only
        from keras_barlow.data.tf_pipeline import AUTOTUNE

        return AUTOTUNE
    raise AttributeError(f"module 'keras_barlow.data' has no attribute {name!r}")


__all__ = [
    "ARCHIVE_EXTENSIONS",
    "AUTOTUNE",
    "GRAIN_INTERPOLATIONS",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "PIPELINES",
    "SUBSETS",
    "DatasetInfo",
    "Options",
    "apportion",
    "balanced_subset",
    "class_names",
    "default_cache_dir",
    "extract_archive",
    "find_corrupt_images",
    "from_image_folder",
    "from_numpy",
    "from_tfds",
    "image_root",
    "resolve_pipeline",
    "select_by_class",
    "stratified_split",
]
