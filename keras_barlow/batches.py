"""The batch format: what one batch of images holds, everywhere in keras_barlow.

A batch given to `BarlowTwins.fit`, to the evaluation functions, or made by the
loaders of `keras_barlow.data` is one of:

* images: uint8 or float `(B, H, W, 3)` with pixel values in [0, 255];
* a tuple `(images, labels)` (Keras pads short tuples with None);
* a full-resolution batch, the dict `{"images", "image_sizes"[, "labels"]}`:
  images of different sizes, each at the top left of a square canvas padded with
  zeros, `images` uint8 `(B, S, S, 3)`, `image_sizes` int32 `(B, 2)` each image's
  true `(height, width)` on its canvas, `labels` int32 `(B,)`.

This module owns the keys, reads any of these forms (`unpack`), and checks the
images and sizes on every backend (`validate_images`, `check_image_sizes`). The
checks of the data given to `fit` (pixel range, batch split) are in
`keras_barlow.input_checks`.
"""

import collections

import numpy as np
from keras import backend, ops

IMAGES = "images"
IMAGE_SIZES = "image_sizes"
LABELS = "labels"
FULL_RESOLUTION_KEYS = (IMAGES, IMAGE_SIZES)

IMAGE_SIZE_RULE = (
    f"Every `{IMAGE_SIZES}` entry must be the (height, width) of its image, from "
    "(1, 1) to the canvas."
)
IMAGE_SIZE_ADVICE = (
    "Put each image at the top left of its canvas and give its own size, or "
    "load the images with `keras_barlow.data`."
)

Batch = collections.namedtuple("Batch", ["images", "image_sizes", "labels"])
Batch.__doc__ = "The parts of a batch: images, image sizes (or None), labels (or None)."


def full_resolution_batch(images, image_sizes, labels=None):
    """The dict `{"images", "image_sizes"[, "labels"]}` of a full-resolution batch.

    Args:
        images: uint8 `(B, S, S, 3)` canvases (or one `(S, S, 3)` before batching).
        image_sizes: int32 `(B, 2)` true `(height, width)` (or `(2,)`).
        labels: optional int32 `(B,)` (or a scalar).
    """
    batch = {IMAGES: images, IMAGE_SIZES: image_sizes}
    if labels is not None:
        batch[LABELS] = labels
    return batch


def is_full_resolution(data):
    """Whether `data` is a full-resolution batch (or the element spec of one)."""
    return isinstance(data, dict) and set(data) - {LABELS} == set(FULL_RESOLUTION_KEYS)


def unpack(data):
    """The `Batch(images, image_sizes, labels)` of a batch in any of the forms.

    Args:
        data: images, a tuple or list `(images, labels, ...)` whose None elements
            (Keras' padding) are dropped, or a full-resolution dict.

    Returns:
        A `Batch`; `image_sizes` is None unless the batch is full-resolution, and
        `labels` None when there are none.

    Raises:
        ValueError: on any other dict, or a tuple whose images are not first.
    """
    if is_full_resolution(data):
        return Batch(data[IMAGES], data[IMAGE_SIZES], data.get(LABELS))
    if isinstance(data, dict):
        raise ValueError(
            "Expected batches of images, of (images, labels), or full-resolution "
            f"dicts with keys {list(FULL_RESOLUTION_KEYS)} and optionally "
            f"'{LABELS}'. Received a dict with keys {sorted(data)}. Select the "
            "images first, e.g. `dataset.map(lambda example: example['image'])`."
        )
    if not isinstance(data, (tuple, list)):
        return Batch(data, None, None)
    elements = [element for element in data if element is not None]
    if not elements:
        raise ValueError("Received an empty batch: a tuple with no element.")
    if isinstance(elements[0], dict):
        return unpack(elements[0])  # `(batch,)`, as Keras wraps a dict batch
    ranks = [len(getattr(element, "shape", ())) for element in elements]
    if ranks[0] != 4 and 4 in ranks:
        shapes = [tuple(getattr(element, "shape", ())) for element in elements]
        raise ValueError(
            "The images must be the first element of each batch: (images, labels). "
            f"Received elements of shapes {shapes}, element {ranks.index(4)} looks "
            "like the images. Reorder them, e.g. "
            "`dataset.map(lambda labels, images: (images, labels))`."
        )
    labels = elements[1] if len(elements) > 1 else None
    return Batch(elements[0], None, labels)


def first_images(data):
    """The images of a batch in any of the forms (see `unpack`)."""
    return unpack(data).images


def images_shape(shape):
    """The images' shape from the shape of a batch: a tuple, or a dict of them."""
    return shape[IMAGES] if isinstance(shape, dict) else shape


def augmenter_input(data):
    """What an augmenter takes from a batch: the images, or a full-resolution dict.

    Labels are left out: the views do not depend on them.
    """
    images, image_sizes, _ = unpack(data)
    if image_sizes is None:
        return images
    return full_resolution_batch(images, image_sizes)


def ready_views(data):
    """The pair `(x1, x2)` of ready views of a batch, for a model without augmenter.

    Raises:
        ValueError: on images, a full-resolution dict, or not two views.
    """
    if isinstance(data, (tuple, list)):
        data = [element for element in data if element is not None]
        if len(data) == 1:
            data = data[0]  # `((x1, x2),)` from `fit(x=(x1, x2))` with arrays
    if isinstance(data, dict) or not isinstance(data, (tuple, list)):
        raise ValueError(
            "With `augmenter=None` the data must be pairs of views "
            "`(x1, x2)`. Received a batch of images or a full-resolution dict: "
            "give the model an augmenter (e.g. augmenter='imagenet') to make the "
            "views from images."
        )
    views = list(data)
    if len(views) != 2:
        raise ValueError(
            "With `augmenter=None` the data must be pairs of views "
            f"`(x1, x2)`. Received {len(views)} tensor(s) per batch; pass images "
            "to a model with an augmenter (e.g. augmenter='imagenet') instead."
        )
    return tuple(validate_images(view) for view in views)


def batch_size_of(data):
    """The static number of samples of a batch in any form, or None if unknown."""
    return first_images(data).shape[0]


def validate_images(images):
    """`images` as a tensor, checked by `check_image_format`.

    Args:
        images: a tensor or array.

    Returns:
        `images` as a tensor.
    """
    if not hasattr(images, "dtype"):
        images = ops.convert_to_tensor(images)
    check_image_format(images)
    return ops.convert_to_tensor(images)


def check_image_format(images):
    """Check that `images` is a `(B, H, W, 3)` batch of uint8 or float pixels.

    Reads the shape and dtype only: the host check of every batch on JAX, before
    the conversion to the device's types (int64 would become int32) hides them.

    Args:
        images: a tensor or array.

    Raises:
        ValueError: with what was received and what to do, on a wrong rank, a
            channel count other than 3 or a non-numeric dtype.
    """
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(
            "Expected a batch of images of shape (batch_size, height, width, 3). "
            f"Received: shape {shape}. Batch the dataset "
            "(`dataset.batch(n)`) or add the missing axis."
        )
    if shape[-1] != 3:
        raise ValueError(
            f"Expected 3 color channels (RGB). Received: {shape[-1]} channels "
            f"(shape {shape}). Convert grayscale images to RGB and drop alpha "
            "channels first."
        )
    dtype = backend.standardize_dtype(images.dtype)
    if not (dtype == "uint8" or backend.is_float_dtype(dtype)):
        raise ValueError(
            "Expected uint8 images or float images in [0, 255]. "
            f"Received: dtype {dtype}. Cast them to uint8 first."
        )


def concrete(value):
    """`value` as a NumPy array, or None when it is symbolic (traced, in a graph)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, NotImplementedError):
        return None


def check_image_sizes(image_sizes, canvas_shape):
    """Raise unless NumPy `image_sizes` fit their canvases (checked on the host).

    Args:
        image_sizes: int `(B, 2)` NumPy array of true `(height, width)`.
        canvas_shape: the images' shape `(B, S, S, 3)`.

    Raises:
        ValueError: on a shape other than `(B, 2)`, a non-integer dtype, a size
            below 1 or beyond the canvas.
    """
    sizes = np.asarray(image_sizes)
    batch, height, width = canvas_shape[0], canvas_shape[1], canvas_shape[2]
    if sizes.shape != (batch, 2) or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(
            f"`{IMAGE_SIZES}` must be integers of shape (batch_size, 2) = "
            f"({batch}, 2), each image's (height, width). Received: shape "
            f"{sizes.shape}, dtype {sizes.dtype}."
        )
    if sizes.size == 0:
        return
    too_small = (sizes < 1).any()
    too_large = (sizes[:, 0] > height).any() or (sizes[:, 1] > width).any()
    if too_small or too_large:
        raise ValueError(
            f"{IMAGE_SIZE_RULE} Received sizes from {sizes.min(axis=0).tolist()} "
            f"to {sizes.max(axis=0).tolist()} on a canvas of ({height}, {width}). "
            f"{IMAGE_SIZE_ADVICE}"
        )
