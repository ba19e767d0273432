"""Images as NumPy arrays, without TensorFlow: decode, make RGB, resize, shrink.

What the Grain pipeline does to each image, matching the tf.data pipeline:

* Decoding gives TensorFlow's pixels exactly: JPEG through libjpeg-turbo
  (simplejpeg) with the accurate integer DCT, CMYK/YCCK JPEG converted as
  TensorFlow converts it, PNG through Pillow (16-bit samples keep their high
  byte). EXIF orientation is not applied, as in TensorFlow: the stored pixels.
* Gray becomes RGB and alpha is dropped.
* Resizing is antialiased with Pillow's filters, which have TensorFlow's kernels
  (within 1 level for bilinear, 3 for bicubic, 7 for lanczos3, after rounding);
  `"area"` is exact box averaging and `"nearest"` TensorFlow's float32
  sampling, in NumPy.
"""

import functools
import io

import numpy as np
import simplejpeg
from PIL import Image

from keras_barlow.data import canvas

_JPEG_START = b"\xff\xd8\xff"
_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos3": Image.Resampling.LANCZOS,
}
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")


def read(path):
    """The bytes of the file at `path`."""
    with open(path, "rb") as file:
        return file.read()


def decode(contents):
    """JPEG or PNG bytes -> uint8 `(H, W, 3)`: gray made RGB, alpha dropped.

    Raises:
        ValueError or OSError: the bytes are not a decodable JPEG or PNG.
    """
    if contents.startswith(_JPEG_START):
        return _decode_jpeg(contents)
    with Image.open(io.BytesIO(contents), formats=("PNG", "JPEG")) as image:
        if image.mode in _SIXTEEN_BIT_MODES:  # TensorFlow keeps the high byte
            return to_rgb((np.asarray(image, np.uint32) >> 8).astype(np.uint8))
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _decode_jpeg(contents):
    colorspace = simplejpeg.decode_jpeg_header(contents)[2]
    if colorspace not in ("CMYK", "YCCK"):
        return simplejpeg.decode_jpeg(contents, colorspace="RGB")
    # TensorFlow's conversion of (Adobe, inverted) CMYK: each channel times K.
    cmyk = simplejpeg.decode_jpeg(contents, colorspace="CMYK").astype(np.uint16)
    return (cmyk[..., :3] * cmyk[..., 3:] // 255).astype(np.uint8)


def decodes(path):
    """Whether the file decodes, as strictly as TensorFlow decodes it.

    A PNG must also hold its end chunk and correct checksums (Pillow alone would
    decode a PNG cut after its pixel data, TensorFlow does not).
    """
    try:
        contents = read(path)
        if not contents.startswith(_JPEG_START):
            with Image.open(io.BytesIO(contents), formats=("PNG",)) as image:
                image.verify()
        decode(contents)
    except (OSError, ValueError, SyntaxError):  # Pillow raises all three
        return False
    return True


def to_rgb(images):
    """uint8 `(..., H, W, C)` with C in {1, 3, 4}, or `(H, W)` -> `(..., H, W, 3)`."""
    if images.ndim == 2:
        images = images[..., None]
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3] if images.shape[-1] == 4 else images


def resize(image, size, interpolation, crop_to_aspect_ratio=False):
    """uint8 `(H, W, 3)` -> `(*size, 3)`, antialiased and rounded; untouched if equal.

    Args:
        image: uint8 `(H, W, 3)`.
        size: `(height, width)`.
        interpolation: one of `options.GRAIN_INTERPOLATIONS`.
        crop_to_aspect_ratio: center-crop to `size`'s aspect ratio first.
    """
    if crop_to_aspect_ratio:
        top, left, height, width = canvas.center_crop_box(*image.shape[:2], size)
        image = image[top : top + height, left : left + width]
    if image.shape[:2] == tuple(size):
        return image
    if interpolation == "area":
        return _area_resize(image, size)
    if interpolation == "nearest":
        rows = _nearest_indices(image.shape[0], size[0])
        cols = _nearest_indices(image.shape[1], size[1])
        return image[rows[:, None], cols[None, :]]
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        size[::-1], _PIL_FILTERS[interpolation]
    )
    return np.asarray(resized)


def shrink(image, longest):
    """uint8 `(H, W, 3)` shrunk (bicubic) to a longer side of `longest`, if longer."""
    height, width = image.shape[:2]
    if max(height, width) <= longest:
        return image
    return resize(image, canvas.shrunk_size(height, width, longest), "bicubic")


def _area_resize(image, size):
    rows = _area_weights(image.shape[0], size[0])
    cols = _area_weights(image.shape[1], size[1])
    resized = np.einsum("oh,hwc->owc", rows, image.astype(np.float32))
    resized = np.einsum("owc,pw->opc", resized, cols)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _nearest_indices(size_in, size_out):
    """TensorFlow's half-pixel nearest sampling, in its float32 arithmetic.

    The arithmetic decides the ties: (o + 0.5) * scale can land on an integer.
    """
    scale = np.float32(size_in) / np.float32(size_out)
    centers = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(centers).astype(np.int64), size_in - 1)


@functools.lru_cache(maxsize=64)
def _area_weights(size_in, size_out):
    """`(size_out, size_in)` float32: the overlap of each output pixel's footprint."""
    scale = size_in / size_out
    edges = np.arange(size_out + 1) * scale
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size_in)[None, :]
    overlap = np.clip(
        np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0, None
    )
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
