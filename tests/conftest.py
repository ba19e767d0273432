"""Test session set-up, for Keras' TensorFlow backend (the default) or JAX.

TensorFlow: two logical CPU devices are configured before anything else touches
TensorFlow, so that `tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])` can run in
any test while single-device tests keep using CPU:0 as usual.

JAX (`KERAS_BACKEND=jax`): XLA exposes two CPU devices, for
`keras.distribution.DataParallel`; only the tests marked `core` run (the training
core, which must work on both backends); the others are skipped.
"""

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BACKEND = os.environ["KERAS_BACKEND"]

if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
else:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BACKEND != "tensorflow" and "core" not in item.keywords:
            item.add_marker(pytest.mark.skip(reason="TensorFlow backend only"))
        if BACKEND == "tensorflow" and "jax_only" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="JAX backend only"))
        if BACKEND != "tensorflow" and "tensorflow_only" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="TensorFlow backend only"))


def pytest_ignore_collect(collection_path, config):
    # Without TensorFlow, test modules of TensorFlow-only features cannot import.
    if BACKEND == "tensorflow" or _has_tensorflow():
        return None
    return collection_path.name not in _NO_TENSORFLOW_FILES and (
        collection_path.suffix == ".py"
    )


_NO_TENSORFLOW_FILES = {"conftest.py", "test_jax.py"}


def _has_tensorflow():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


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
