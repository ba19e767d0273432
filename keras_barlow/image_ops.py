"""Pure image functions of the augmentation, in `keras.ops` (any Keras backend).

Resampling and blurring are batched matrix products (`rows @ image @ cols^T` with
one `(out, in)` matrix per sample and axis): bicubic resizing of a different crop
box per sample, the horizontal flip and a separable Gaussian blur of a different
sigma per sample each become one einsum, and the color adjustments are
per-sample 3 x 3 color matrices. All of it runs on CPU, GPU and TPU and compiles
under XLA.

Unless said otherwise, images are float32 in [0, 1] of shape `(B, H, W, 3)` with a
static height and width.
"""

import math
import numbers

from keras import ops

from keras_barlow import _backend

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)
# The color matrix (rows: input channels) that makes every channel the gray.
TO_GRAY_MATRIX = tuple((weight,) * 3 for weight in GRAYSCALE_WEIGHTS)


def to_unit_range(images):
    """uint8 or float images in [0, 255] -> float32 in [0, 1], same shape."""
    return ops.cast(images, "float32") / 255.0


def rgb_to_grayscale(images):
    """ITU-R 601 luma of `(B, H, W, 3)` images, shape `(B, H, W, 1)`."""
    # Three slices, not a reduction over the channel axis: several times faster on
    # CPU, and the same sum.
    red, green, blue = ops.split(images, 3, axis=-1)
    weights = GRAYSCALE_WEIGHTS
    return red * weights[0] + green * weights[1] + blue * weights[2]


def apply_color_matrices(images, matrices, offsets=None):
    """Map the RGB of every pixel by a per-sample 3 x 3 matrix and offset.

    `output[b, y, x] = images[b, y, x] @ matrices[b] + offsets[b]`. Brightness,
    saturation, contrast (with its mean as offset), grayscale and the identity
    are all such maps; one batched matrix product applies them much faster on
    CPU than broadcasting per-sample factors over the pixels.

    Args:
        images: float32 `(B, H, W, 3)`.
        matrices: float32 `(B, 3, 3)`, rows are input channels.
        offsets: float32 `(B, 3)`, `(B, 1)` (the same for all channels) or None.

    Returns:
        float32 `(B, H, W, 3)`.
    """
    _, height, width, _ = images.shape
    pixels = ops.reshape(images, (-1, height * width, 3))
    mapped = ops.matmul(pixels, ops.cast(matrices, "float32"))
    if offsets is not None:
        mapped += offsets[:, None, :]
    return ops.reshape(mapped, (-1, height, width, 3))


def adjust_hue(images, delta):
    """Rotate the hue by a per-sample `delta` of shape `(B,)`, in turns."""
    hsv = ops.image.rgb_to_hsv(images, data_format="channels_last")
    hue = ops.mod(hsv[..., :1] + delta[:, None, None, None], 1.0)
    return ops.image.hsv_to_rgb(
        ops.concatenate([hue, hsv[..., 1:]], axis=-1), data_format="channels_last"
    )


def solarize(images, threshold=0.5):
    """Invert the pixels at or above `threshold` (PIL's solarize at 128/255)."""
    return ops.where(images < threshold, images, 1.0 - images)


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Subtract the per-channel mean and divide by the standard deviation."""
    # As a product with a diagonal matrix plus a bias: fast kernels, where
    # broadcasting along the channel axis is several times slower on CPU.
    _, height, width, _ = images.shape
    scale = 1.0 / ops.convert_to_tensor(std, "float32")
    bias = -ops.convert_to_tensor(mean, "float32") * scale
    pixels = ops.matmul(ops.reshape(images, (-1, 3)), ops.diag(scale)) + bias
    return ops.reshape(pixels, (-1, height, width, 3))


def apply_separable(images, rows, cols):
    """Apply per-sample linear maps along the height and the width.

    Args:
        images: float32 `(B, H, W, C)`.
        rows: float32 `(B, H_out, H)`.
        cols: float32 `(B, W_out, W)`.

    Returns:
        float32 `(B, H_out, W_out, C)`: `rows[b] @ images[b] @ cols[b]^T` per channel.
    """
    resized = ops.einsum("boh,bhwc->bowc", rows, images)
    return ops.einsum("bpw,bowc->bopc", cols, resized)


def cubic_kernel(x, a=-0.5):
    """Keys' cubic convolution kernel (PIL's bicubic uses a = -0.5), support [-2, 2]."""
    x = ops.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return ops.where(x < 1.0, near, ops.where(x < 2.0, far, ops.zeros_like(x)))


def resize_matrices(in_size, out_size, start, length):
    """Bicubic, antialiased resampling of a per-sample window to `out_size` pixels.

    Matches PIL's `crop(box).resize(size, BICUBIC)` along one axis: when shrinking,
    the kernel is stretched by the scale factor (antialiasing); input pixels outside
    the window are not used and each row of weights sums to one.

    Args:
        in_size: int, pixels along the axis.
        out_size: int, pixels of the output.
        start: float32 `(B,)`, first pixel of the window.
        length: float32 `(B,)`, pixels in the window.

    Returns:
        float32 `(B, out_size, in_size)`.
    """
    scale = (length / out_size)[:, None, None]
    support_scale = ops.maximum(scale, 1.0)
    start = start[:, None, None]
    centers = start + (ops.arange(out_size, dtype="float32")[:, None] + 0.5) * scale
    pixels = ops.arange(in_size, dtype="float32")[None, :] + 0.5  # pixel centers
    weights = cubic_kernel((pixels - centers) / support_scale)
    inside = (pixels >= start) & (pixels < start + length[:, None, None])
    weights = ops.where(inside, weights, 0.0)
    return weights / ops.sum(weights, axis=-1, keepdims=True)


def gaussian_matrices(size, sigma):
    """Per-sample Gaussian blur along one axis as `(B, size, size)` matrices.

    The kernel is not truncated; near the border it is renormalized over the pixels
    inside the image.

    Args:
        size: int, pixels along the axis.
        sigma: float32 `(B,)`, standard deviation in pixels.
    """
    positions = ops.arange(size, dtype="float32")
    distance = positions[None, :, None] - positions[None, None, :]
    weights = ops.exp(-0.5 * ops.square(distance / sigma[:, None, None]))
    return weights / ops.sum(weights, axis=-1, keepdims=True)


def sample_crop_boxes(seed, batch_size, height, width, scale, ratio, attempts=10):
    """torchvision's `RandomResizedCrop.get_params`, drawn for every sample at once.

    Up to `attempts` candidate boxes of area `U(scale) * H * W` and aspect ratio
    `exp(U(log ratio))` are drawn per sample; the first that fits is used, else the
    whole image is cropped to the nearest allowed aspect ratio (centered).

    The image size is either static (ints: every sample has it) or per sample
    (float32 or int `(B,)` tensors: each sample's true size, e.g. of images padded
    to a common canvas); the draws are the same numbers in both cases.

    Args:
        seed: int32 `(2,)` stateless seed.
        batch_size: int or scalar tensor.
        height, width: ints, or `(B,)` tensors of each sample's size.
        scale, ratio: `(min, max)` floats.

    Returns:
        `(top, left, box_height, box_width)`, float32 `(B,)` each, integer valued.

    Example:

    >>> sizes = ops.convert_to_tensor([[375.0, 500.0], [500.0, 375.0]])
    >>> top, left, h, w = sample_crop_boxes(
    ...     (1, 2), 2, sizes[:, 0], sizes[:, 1], (0.08, 1.0), (3 / 4, 4 / 3))
    """
    area_seed, ratio_seed, top_seed, left_seed = _backend.split(seed, 4)
    shape = (batch_size, attempts)
    static = _is_number(height) and _is_number(width)
    if static:
        sample_height, sample_width = height, width
    else:
        height = ops.cast(height, "float32")
        width = ops.cast(width, "float32")
        sample_height, sample_width = height[:, None], width[:, None]
    area = sample_height * sample_width * _backend.uniform(area_seed, shape, *scale)
    log_ratio = _backend.uniform(
        ratio_seed, shape, math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = ops.exp(log_ratio)
    box_width = ops.round(ops.sqrt(area * aspect))
    box_height = ops.round(ops.sqrt(area / aspect))
    fits = (
        (box_width > 0)
        & (box_width <= sample_width)
        & (box_height > 0)
        & (box_height <= sample_height)
    )
    first_fit = ops.argmax(ops.cast(fits, "int32"), axis=1)[:, None]
    any_fit = ops.any(fits, axis=1)
    box_height = ops.take_along_axis(box_height, first_fit, axis=1)[:, 0]
    box_width = ops.take_along_axis(box_width, first_fit, axis=1)[:, 0]

    if static:
        fallback_height, fallback_width = _fallback_box(height, width, ratio)
        fallback_top = float((height - fallback_height) // 2)
        fallback_left = float((width - fallback_width) // 2)
    else:
        fallback_height, fallback_width = _fallback_boxes(height, width, ratio)
        fallback_top = ops.floor((height - fallback_height) / 2.0)
        fallback_left = ops.floor((width - fallback_width) / 2.0)
    box_height = ops.where(any_fit, box_height, fallback_height)
    box_width = ops.where(any_fit, box_width, fallback_width)
    top = ops.floor(
        _backend.uniform(top_seed, (batch_size,)) * (height - box_height + 1)
    )
    left = ops.floor(
        _backend.uniform(left_seed, (batch_size,)) * (width - box_width + 1)
    )
    top = ops.where(any_fit, top, fallback_top)
    left = ops.where(any_fit, left, fallback_left)
    return top, left, box_height, box_width


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fallback_box(height, width, ratio):
    in_ratio = width / height
    if in_ratio < min(ratio):
        return float(round(width / min(ratio))), float(width)
    if in_ratio > max(ratio):
        return float(height), float(round(height * max(ratio)))
    return float(height), float(width)


def _fallback_boxes(height, width, ratio):
    """`_fallback_box` of float32 `(B,)` sizes: the whole image at the nearest ratio."""
    in_ratio = width / height
    too_tall = in_ratio < min(ratio)
    too_wide = in_ratio > max(ratio)
    box_height = ops.where(too_tall, ops.round(width / min(ratio)), height)
    box_width = ops.where(too_wide, ops.round(height * max(ratio)), width)
    return box_height, box_width


def blend_at(images, order, position, factors):
    """Apply each sample's brightness, contrast or saturation at `position`.

    Args:
        images: float32 `(B, H, W, 3)`.
        order: int32 `(B, 4)`, the adjustment at each position (0 brightness,
            1 contrast, 2 saturation, 3 hue).
        position: int32 `(B,)`; outside [0, 4) the sample is left unchanged.
        factors: float32 `(B, 3)`, the brightness, contrast and saturation factors.

    Returns:
        float32 `(B, H, W, 3)` in [0, 1].
    """
    inside = (position >= 0) & (position < 4)
    adjustment = _take_per_sample(order, ops.clip(position, 0, 3))
    adjustment = ops.where(inside, adjustment, -1)  # -1: leave unchanged
    factor = _take_per_sample(factors, ops.clip(adjustment, 0, 2))
    factor = ops.where(adjustment >= 0, factor, 1.0)
    # f * x + (1 - f) * other, where other is 0 (brightness), the mean gray
    # (contrast: an offset) or the gray of each pixel (saturation: a matrix). Idle
    # samples get the identity, which leaves them unchanged to the bit.
    is_contrast = ops.cast(adjustment == 1, "float32")
    is_saturation = ops.cast(adjustment == 2, "float32")
    matrices = factor[:, None, None] * ops.eye(3) + ((1.0 - factor) * is_saturation)[
        :, None, None
    ] * ops.convert_to_tensor(TO_GRAY_MATRIX, "float32")
    mean_rgb = ops.mean(images, axis=(1, 2))
    mean_gray = ops.sum(mean_rgb * ops.convert_to_tensor(GRAYSCALE_WEIGHTS), axis=-1)
    offsets = ((1.0 - factor) * is_contrast * mean_gray)[:, None]  # same for R, G, B
    return ops.clip(apply_color_matrices(images, matrices, offsets), 0.0, 1.0)


def _take_per_sample(values, index):
    """`values[b, index[b]]` for `(B, K)` values and `(B,)` indices."""
    return ops.take_along_axis(values, ops.cast(index, "int32")[:, None], axis=1)[:, 0]


def batch_height_width(images):
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(
            "Image height and width must be known when the graph is built. "
            f"Received: shape {images.shape}. Resize images to a fixed size in the "
            "input pipeline (see keras_barlow.data)."
        )
    return ops.shape(images)[0], height, width


def true_height_width(image_sizes, height, width):
    """Float32 `(B,)` heights and widths from `(B, 2)` sizes, within the canvas."""
    sizes = ops.cast(image_sizes, "float32")
    return (
        ops.clip(sizes[:, 0], 1.0, float(height)),
        ops.clip(sizes[:, 1], 1.0, float(width)),
    )


def resized_true_regions(images, image_sizes, size):
    """Each image's true region resized (bicubic, antialiased) and normalized.

    The deterministic counterpart of the crop for full-resolution batches: no
    random box, the whole `(height, width)` of each image on its canvas.

    Args:
        images: uint8 or float `(B, H, W, 3)` in [0, 255], padded canvases.
        image_sizes: int `(B, 2)`, each image's true `(height, width)`.
        size: `(height, width)` of the output.

    Returns:
        float32 `(B, size[0], size[1], 3)`, normalized with the ImageNet statistics.
    """
    unit = to_unit_range(images)
    _, height, width = batch_height_width(unit)
    true_height, true_width = true_height_width(image_sizes, height, width)
    zeros = ops.zeros_like(true_height)
    rows = resize_matrices(height, size[0], zeros, true_height)
    cols = resize_matrices(width, size[1], zeros, true_width)
    return normalize(ops.clip(apply_separable(unit, rows, cols), 0.0, 1.0))
