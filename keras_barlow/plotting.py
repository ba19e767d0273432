"""Figures with matplotlib, an optional dependency (`pip install keras-barlow[plot]`).

`import keras_barlow` does not import matplotlib; this module imports it when a
figure is drawn. Without a display, set `MPLBACKEND=Agg`.
"""

import os

import numpy as np

from keras_barlow import _checks as checks


def plot_cross_correlation(c, path=None, max_dims=64, title=None, ax=None):
    """Draw the top-left block of a cross-correlation matrix, and save it as PNG.

    Values are shown on a fixed diverging scale from -1 (blue) through 0 (white)
    to +1 (red), so pictures from different runs or epochs compare directly: the
    Barlow Twins loss turns the matrix into a red diagonal on white.

    Args:
        c: `(D, D)` array or tensor, e.g. `keras_barlow.cross_correlation(z1, z2)`.
        path: optional file to save the figure to (PNG by its extension).
        max_dims: size of the block shown, `min(D, max_dims)`.
        title: optional axes title.
        ax: optional matplotlib `Axes` to draw in (for figures with several
            panels); by default a new figure.

    Returns:
        The matplotlib `Figure`.

    Example:

    ```python
    c = keras_barlow.cross_correlation(model(view1), model(view2))
    keras_barlow.plotting.plot_cross_correlation(c, "cross_correlation.png")
    ```
    """
    plt = _pyplot()
    c = np.asarray(c, dtype=np.float32)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"`c` must be a square matrix. Received: shape {c.shape}")
    checks.positive_int("max_dims", max_dims)
    block = c[:max_dims, :max_dims]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    picture = ax.imshow(
        block, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest"
    )
    ax.figure.colorbar(picture, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("dimension of view 2")
    ax.set_ylabel("dimension of view 1")
    if title is not None:
        ax.set_title(title)
    if path is not None:
        ax.figure.savefig(os.fspath(path), dpi=100, bbox_inches="tight")
    return ax.figure


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "keras_barlow.plotting needs matplotlib. Install it with "
            "`pip install keras-barlow[plot]` (or `pip install matplotlib`)."
        ) from error
    return plt
