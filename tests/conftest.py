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


# ---- helpers shared by the tests: `from conftest import tiny_encoder, round_trip` ----
# (pytest puts tests/ on sys.path.) Keras only, so that they run on every backend.

import keras  # noqa: E402
import numpy as np  # noqa: E402


def tiny_encoder(
    size=16,
    filters=8,
    *,
    strides=1,
    use_bias=True,
    batch_norm=False,
    relu=True,
    dropout=0.0,
):
    """A small encoder of `size` x `size` RGB images (`size=None`: any size).

    Conv2D(`filters`, 3, `strides`, `use_bias`), named "conv" -> BatchNormalization
    if `batch_norm` -> ReLU if `relu` -> Dropout(`dropout`) if `dropout` ->
    GlobalAveragePooling2D. With `filters=0`, the pooling alone.
    """
    layers = [keras.Input((size, size, 3))]
    if filters:
        layers.append(
            keras.layers.Conv2D(
                filters, 3, strides=strides, use_bias=use_bias, name="conv"
            )
        )
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        if relu:
            layers.append(keras.layers.ReLU())
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.GlobalAveragePooling2D())
    return keras.Sequential(layers)


def round_trip(obj, path=None):
    """`obj` serialized and deserialized again, as Keras saves it.

    Without `path`, through `keras.saving.serialize_keras_object` and
    `deserialize_keras_object` (layers, models, optimizers, schedules: their config
    and registration). With `path` (a `.keras` file), the model saved there with
    `model.save` and loaded back with `keras.saving.load_model` (weights and
    optimizer state too).
    """
    if path is None:
        return keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(obj)
        )
    obj.save(path)
    return keras.saving.load_model(path)


def value_and_gradients(loss_fn, variables):
    """`loss_fn()` and its gradients with respect to the Keras `variables`.

    `tf.GradientTape` on TensorFlow; on JAX `jax.value_and_grad` of the loss with
    the variables' values fed through a `keras.StatelessScope`.
    """
    if BACKEND == "jax":
        import jax

        def loss_of_values(values):
            mapping = list(zip(variables, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn()

        return jax.value_and_grad(loss_of_values)([v.value for v in variables])
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return loss, tape.gradient(loss, variables)


def to_numpy(x):
    """A tensor of either backend (or a NumPy value) as a NumPy array."""
    return keras.ops.convert_to_numpy(x)


def uint8_images(count, size=16, seed=0):
    """Random uint8 images `(count, size, size, 3)`."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


class StepLosses(keras.callbacks.Callback):
    """The loss of every step of a `fit` (Keras logs the running mean of an epoch)."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_epoch_begin(self, epoch, logs=None):
        self.total = 0.0

    def on_train_batch_end(self, batch, logs=None):
        total = float(logs["loss"]) * (batch + 1)
        self.losses.append(total - self.total)
        self.total = total
