"""Input pipelines: TFDS, image folders and archives, NumPy arrays.

Every loader returns a `tf.data.Dataset` of uint8 images `(B, H, W, 3)`, or of
`(images, labels)` with int32 labels `(B,)` where there are labels; with
`with_info=True`, `(dataset, DatasetInfo)`: class names, number of images, full
batches per epoch, image size. Decoding and resizing run on the CPU inside
tf.data (parallel map, AUTOTUNE); the distortions happen in the model
(`keras_barlow.BarlowTwinsAugment`), not here.

The loaders share one set of keyword arguments, `Options`, and one pipeline
(`pipeline.build_batches`). Training datasets (`training=True`) are shuffled
with a seed and drop the last partial batch, so every step sees a full global
batch; evaluation datasets keep every image in file order. Images of another
size are resized to `image_size` (bilinear, antialiased), then rounded back to
uint8; grayscale images become RGB and alpha channels are dropped.

Large images, full resolution. Training images larger than `image_size` (the
first image decides; `full_resolution=True/False` overrides) are not resized
to it: each keeps its own pixels (shrunk only when its longer side exceeds
`max_side`, 512 by default), padded at the bottom and right to a square canvas,
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
shuffle), `steps_per_epoch` full batches each. Built with the `initial_epoch`
that `keras_barlow.checkpoints.TrainingCheckpoint.restore` returns, it continues
exactly where the interrupted run was:

```python
initial_epoch = checkpoint.restore(model)
train, info = keras_barlow.data.from_image_folder(
    path, batch_size=256, labels=None, epochs=100, initial_epoch=initial_epoch,
    with_info=True)
model.fit(train, epochs=100, initial_epoch=initial_epoch,
          steps_per_epoch=info.steps_per_epoch, callbacks=[checkpoint])
```

Modules: `loaders` (folders, arrays), `tfds_loader`, `options`, `pipeline`,
`selection` (splits and class-balanced subsets), `folders` (class folders and
archives), `integrity` (corrupt files).

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
from keras_barlow.data.options import INTERPOLATIONS, DatasetInfo, Options
from keras_barlow.data.pipeline import AUTOTUNE
from keras_barlow.data.selection import (
    SUBSETS,
    apportion,
    balanced_subset,
    select_by_class,
    stratified_split,
)
from keras_barlow.data.tfds_loader import from_tfds

__all__ = [
    "ARCHIVE_EXTENSIONS",
    "AUTOTUNE",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
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
    "select_by_class",
    "stratified_split",
]
