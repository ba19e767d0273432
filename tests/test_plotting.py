"""Tests of keras_barlow.plotting (matplotlib optional)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_barlow import plotting


def test_plot_cross_correlation_saves_the_top_left_block(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    c = np.random.default_rng(0).uniform(-1, 1, size=(100, 100))
    path = tmp_path / "c.png"
    figure = plotting.plot_cross_correlation(c, path, max_dims=64, title="after")

    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    picture = figure.axes[0].images[0]
    np.testing.assert_allclose(picture.get_array(), c[:64, :64], rtol=1e-6)
    assert picture.get_clim() == (-1.0, 1.0)  # a fixed scale, comparable across runs
    assert picture.get_cmap().name == "RdBu_r"
    assert figure.axes[0].get_title() == "after"
    plt.close(figure)


def test_plot_cross_correlation_validates_its_input():
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="square"):
        plotting.plot_cross_correlation(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"`max_dims` must be .*Received: max_dims=0"):
        plotting.plot_cross_correlation(np.eye(3), max_dims=0)


def test_missing_matplotlib_raises_an_import_error_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"keras-barlow\[plot\]"):
        plotting.plot_cross_correlation(np.eye(3))


def test_keras_barlow_works_without_matplotlib():
    # Keras imports matplotlib when it is installed, so the check is that nothing
    # of keras_barlow but the figures needs it: block it in a fresh interpreter.
    code = (
        "import sys; sys.modules['matplotlib'] = None;"
        "import numpy, keras_barlow, keras_barlow.plotting;"
        "from keras_barlow import callbacks, evaluation;"
        "callbacks.correlation_image(numpy.eye(4))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
