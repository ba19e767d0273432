"""Full resolution: whether images keep their own pixels, and the canvas they go on.

The rules every loader and both pipelines (tf.data and Grain) follow:

* The decision (`full_resolution=None`): training data, an `image_size`, and
  more than half of the images taller or wider than it. When the images are
  mixed (more than `MIXED_FRACTION` on the other side), a warning says so and how
  to choose.
* The longest side an image keeps is `max(max_side, *image_size)`; a longer
  image is shrunk to it (`shrunk_size`, rounding half up).
* The canvas is square, as large as the largest image after that shrink (the
  data decide, not `max_side`), and refused when a batch of canvases would take
  more than `MAX_CANVAS_BYTES`.

The size formulas are written with `+`, `*`, `//` and the `minimum`/`maximum`
given, so one formula serves Python ints and TensorFlow int64 tensors.
"""

import dataclasses

import numpy as np
from absl import logging

# uint8 canvases of one batch; the model holds float32 copies (4x) on top.
MAX_CANVAS_BYTES = 4 * 2**30
# Fraction of images on the minority side above which the decision is announced.
MIXED_FRACTION = 0.1


def shrunk_size(height, width, longest, maximum=max):
    """`(height, width)` scaled so that the longer side is `longest`, at least 1.

    Rounds half up in integer arithmetic (exact, the same on every backend).
    Call it only for images whose longer side exceeds `longest`.

    Args:
        height, width: the image's size (Python ints or int64 tensors).
        longest: the longer side after shrinking.
        maximum: `max`, or e.g. `tf.maximum` for tensors.

    Returns:
        `(new_height, new_width)`.

    Example:

    >>> shrunk_size(100, 20, 64)
    (64, 13)
    """
    longer = maximum(height, width)
    return tuple(
        maximum((2 * side * longest + longer) // (2 * longer), 1)
        for side in (height, width)
    )


def center_crop_box(height, width, target, minimum=min, maximum=max):
    """The central `(top, left, crop_height, crop_width)` with `target`'s aspect ratio.

    Args:
        height, width: the image's size (Python ints or int64 tensors).
        target: `(height, width)` whose aspect ratio the crop takes.
        minimum, maximum: `min`/`max`, or `tf.minimum`/`tf.maximum`.

    Example:

    >>> center_crop_box(100, 200, (4, 6))
    (0, 25, 100, 150)
    """
    target_height, target_width = target
    crop_height = minimum(
        height,
        maximum((2 * width * target_height + target_width) // (2 * target_width), 1),
    )
    crop_width = minimum(
        width,
        maximum((2 * height * target_width + target_height) // (2 * target_height), 1),
    )
    return (
        (height - crop_height) // 2,
        (width - crop_width) // 2,
        crop_height,
        crop_width,
    )


def longest_side(options):
    """The longest side a full-resolution image keeps: `max(max_side, *image_size)`."""
    return max(options.max_side, *(options.image_size or (0,)))


def needs_sizes(options):
    """Whether `resolve` will read the images' sizes for these options."""
    if options.full_resolution is False or options.image_size is None:
        return bool(options.full_resolution)
    return options.training


def resolve(options, image_sizes, *, every_image=True):
    """`options` with `full_resolution` decided (a bool) and the size yielded.

    Args:
        options: the loader's `Options`, with `image_size` set.
        image_sizes: a callable returning an int array `(N, 2)` of the images'
            `(height, width)`: of every image (`every_image=True`) or of a sample
            (e.g. a stream's first image); called only when `needs_sizes`.
        every_image: whether `image_sizes` covers every image. Otherwise the
            canvas has the longest side an image may keep, since a larger image
            may come later.

    Returns:
        `(options, yielded_size)`: `yielded_size` is the `(height, width)` of
        the images yielded, the canvas when full resolution.

    Raises:
        ValueError: when a batch of canvases would exceed `MAX_CANVAS_BYTES`.
    """
    if not needs_sizes(options):
        options = dataclasses.replace(options, full_resolution=False)
        return options, options.image_size
    sizes = np.asarray(image_sizes(), np.int64).reshape(-1, 2)
    full = options.full_resolution
    if full is None:
        full = _decide(sizes, options.image_size, every_image)
    options = dataclasses.replace(options, full_resolution=full)
    if not full:
        return options, options.image_size
    side = longest_side(options)
    if every_image:
        side = min(side, int(sizes.max()))
    check_canvas_bytes(side, options)
    return options, (side, side)


def _decide(sizes, image_size, every_image):
    larger = (sizes[:, 0] > image_size[0]) | (sizes[:, 1] > image_size[1])
    full = 2 * int(larger.sum()) > len(sizes)
    minority = len(sizes) - int(larger.sum()) if full else int(larger.sum())
    if every_image and minority > MIXED_FRACTION * len(sizes):
        logging.warning(
            "%d of %d training images are taller or wider than image_size=%s: "
            "full_resolution=%s (each image keeps its pixels on a canvas when most "
            "are larger, all are resized to image_size otherwise). Pass "
            "full_resolution=True or False to choose.",
            int(larger.sum()),
            len(sizes),
            image_size,
            full,
        )
    return full


def check_canvas_bytes(side, options):
    """Refuse canvases whose batch would exceed `MAX_CANVAS_BYTES` (uint8)."""
    batch = options.batch_size // options.shard_count
    size = batch * side * side * 3
    if size > MAX_CANVAS_BYTES:
        raise ValueError(
            f"Full-resolution batches would be too large: the largest image keeps "
            f"a side of {side} (max_side={options.max_side}), so a batch of {batch} "
            f"canvases of {side} x {side} x 3 takes {size / 2**30:.1f} GiB as uint8 "
            f"(4x that as float32 in the model; the limit is "
            f"{MAX_CANVAS_BYTES / 2**30:.0f} GiB). Lower max_side (e.g. 512) or "
            "batch_size, or pass full_resolution=False to resize to image_size."
        )
