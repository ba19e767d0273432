"""TensorBoard event files written with `tf.summary`, for `keras_barlow.callbacks`.

The only part of the callbacks that needs TensorFlow, imported on first use:
`require_tensorflow` raises a clear ImportError without it. `correlation_image`
draws with NumPy alone.
"""

import os

import numpy as np

from keras_barlow import _backend

HISTOGRAM_BINS = 50
# matplotlib's "RdBu_r" (ColorBrewer RdBu, reversed), as the 8-bit colors of its 11
# anchors on [-1, 1]. Copied, not imported: matplotlib is an optional dependency
# (`keras_barlow.plotting`) and this picture is drawn during training, where it
# may be missing. tests/test_callbacks.py checks the copy against matplotlib.
_RDBU_R_ANCHORS = np.linspace(-1.0, 1.0, 11)
_RDBU_R_COLORS = np.array(
    [
        (5, 48, 97),
        (33, 102, 172),
        (67, 147, 195),
        (146, 197, 222),
        (209, 229, 240),
        (247, 247, 247),
        (253, 219, 199),
        (244, 165, 130),
        (214, 96, 77),
        (178, 24, 43),
        (103, 0, 31),
    ],
    dtype=np.float64,
)


def correlation_image(c, max_dims=64, pixels_per_cell=4):
    """An RGB picture of the top-left block of a correlation matrix.

    Values are clipped to [-1, 1] and colored with matplotlib's diverging map
    "RdBu_r", as `keras_barlow.plotting.plot_cross_correlation` draws them: blue
    for -1, white for 0, red for +1, so the identity the loss aims for is a red
    diagonal on white. Each entry becomes a `pixels_per_cell`-wide square.

    Args:
        c: `(D, D)` tensor or array.
        max_dims: size of the block shown, `min(D, max_dims)`.
        pixels_per_cell: upscaling factor, so that TensorBoard shows it readably.

    Returns:
        uint8 NumPy array `(S, S, 3)` with `S = min(D, max_dims) * pixels_per_cell`.
    """
    block = np.clip(np.asarray(c, np.float64)[:max_dims, :max_dims], -1.0, 1.0)
    rgb = np.stack(
        [
            np.interp(block, _RDBU_R_ANCHORS, _RDBU_R_COLORS[:, channel])
            for channel in range(3)
        ],
        axis=-1,
    )
    rgb = np.repeat(np.repeat(rgb, pixels_per_cell, axis=0), pixels_per_cell, axis=1)
    return np.round(rgb).astype(np.uint8)


def require_tensorflow(what):
    """The `tensorflow` module, or an ImportError that says what to install.

    Args:
        what: what needs it, for the message, e.g. "KNNMonitor(log_dir=...)".
    """
    return _backend.import_tensorflow(
        f"{what}, which writes TensorBoard event files with tf.summary,",
        instead="Or leave `log_dir` out: the values still go into the epoch logs, "
        "which keras.callbacks.TensorBoard writes.",
    )


class SummaryWriter:
    """Writes scalars, an image and histograms to `log_dir` at a given step.

    The TensorFlow file writer is created on first use and closed by `close`.

    Args:
        log_dir: directory of the event files.
        what: what writes, for the ImportError without TensorFlow.
    """

    def __init__(self, log_dir, what):
        self.log_dir = os.fspath(log_dir)
        self._tf = require_tensorflow(what)
        self._writer = None

    def scalars(self, values, step):
        """Writes `{name: number}` as TensorBoard scalars."""
        with self._at(step):
            for name, value in values.items():
                self._tf.summary.scalar(name, float(value))

    def image(self, tag, image, step):
        """Writes a uint8 `(H, W, 3)` image."""
        with self._at(step):
            self._tf.summary.image(tag, image[None])

    def histograms(self, tagged_counts, step):
        """Writes `{tag: counts}`, counts of `histogram_counts`, as histograms.

        Not `tf.summary.histogram`: it bins over the values' own range, through a
        one-hot float64 matrix of values x bins (1.6 GB for a 2048 x 2048
        cross-correlation, 27 GB at 8192). The same `(bins, 3)` tensor of left
        edge, right edge and count is written here, with TensorBoard's histogram
        metadata.
        """
        from tensorboard.plugins.histogram import metadata

        edges = np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)
        with self._at(step):
            for tag, counts in tagged_counts.items():
                buckets = np.stack(
                    [edges[:-1], edges[1:], np.asarray(counts, np.float64)], axis=1
                )
                summary_metadata = metadata.create_summary_metadata(None, None)
                self._tf.summary.write(tag, buckets, metadata=summary_metadata)

    def histogram_counts(self, values):
        """Counts of `values` in `HISTOGRAM_BINS` equal bins on [-1, 1]."""
        counts = self._tf.histogram_fixed_width(
            np.reshape(np.asarray(values, np.float32), [-1]),
            [-1.0, 1.0],
            nbins=HISTOGRAM_BINS,
        )
        return counts.numpy()

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _at(self, step):
        if self._writer is None:
            self._writer = self._tf.summary.create_file_writer(self.log_dir)
        return self._writer.as_default(step=step)
