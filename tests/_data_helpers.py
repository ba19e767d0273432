"""Helpers shared by the tests of keras_barlow.data: image files and batches.

Used by the test_data_*.py and test_full_resolution_training.py files
(`from _data_helpers import ...`; pytest puts tests/ on sys.path). They need no
TensorFlow: Pillow encodes, and a tf.data dataset is read through its own
`as_numpy_iterator`.
"""

import io

import numpy as np
from PIL import Image


def encode_image(image, format_="PNG", **options):
    """The bytes of an image file: a PIL image, or a uint8 or bool array
    `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)`; `options` go to Pillow."""
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        image = Image.fromarray(array[..., 0] if array.shape[-1:] == (1,) else array)
    buffer = io.BytesIO()
    image.save(buffer, format_, **options)
    return buffer.getvalue()


def write_file(path, contents):
    """Write `contents` (bytes) to `path`, making its folders first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contents)


def collect_batches(dataset):
    """All batches of a dataset concatenated: an array, a tuple or a dict of them.

    `dataset`: a tf.data dataset, or any iterable of NumPy batches (Grain).
    """
    iterator = getattr(dataset, "as_numpy_iterator", None)
    batches = list(iterator() if iterator else dataset)
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(part) for part in zip(*batches, strict=True))
    if isinstance(batches[0], dict):
        return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    return np.concatenate(batches)
