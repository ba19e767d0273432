"""Test session set-up.

Two logical CPU devices are configured before anything else touches TensorFlow, so
that `tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])` can run in any test while
single-device tests keep using CPU:0 as usual.
"""

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mirrored_strategy():
    """The one MirroredStrategy over the two logical CPUs that all tests share.

    Every MirroredStrategy of a process numbers its collective operations from the
    same start, so once one has run collectives, those of a second one fail
    ("Collective instance N expected type ...", tensorflow#62790). A program
    creates one strategy; the tests do the same.
    """
    return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])


@pytest.fixture
def tfds(tmp_path, monkeypatch):
    """tensorflow_datasets, with the temporary folders of its mock data in `tmp_path`.

    `tfds.testing.mock_data` makes folders with `tempfile` and leaves them behind.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return pytest.importorskip("tensorflow_datasets")
