"""Test session set-up, for Keras' TensorFlow backend (the default) or JAX.

TensorFlow: two logical CPU devices are configured before anything else touches
TensorFlow, so that `tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])` can run in
any test while single-device tests keep using CPU:0 as usual.

JAX (`KERAS_BACKEND=jax`): XLA exposes two CPU devices, for
`keras.distribution.DataParallel`; only the tests marked `core` run (the training
core, which must work on both backends); the others are skipped.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BACKEND = os.environ["KERAS_BACKEND"]

if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    # Processes side by side: one TensorFlow thread each (10% faster on 2 cores).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
else:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    # XLA's compilations, shared by the test processes and their subprocesses:
    # JAX's persistent cache, one per run, removed by the process that made it.
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = tempfile.mkdtemp(prefix="keras_barlow_tests_jax_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

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
    # Without TensorFlow, test modules that import it at the top cannot import.
    if BACKEND == "tensorflow" or _has_tensorflow():
        return None
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test"):
        return None
    lines = collection_path.read_text().splitlines()
    return any(
        line.startswith(("import tensorflow", "from tensorflow")) for line in lines
    )


def _has_tensorflow():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


@pytest.fixture(autouse=True)
def _fresh_global_settings():
    """Undo the process-wide settings a test may leave (the example sets both)."""
    yield
    import keras

    keras.mixed_precision.set_dtype_policy("float32")
    if BACKEND == "jax":
        keras.distribution.set_distribution(None)


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


def weights_of(model):
    """NumPy copies of all of `model`'s weights, trainable or not."""
    return [to_numpy(weight) for weight in model.weights]


def uint8_images(count, size=16, seed=0):
    """Random uint8 images `(count, size, size, 3)`."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def unit_images(count, size=8, seed=0):
    """Random float32 images `(count, size, size, 3)` in [0, 1] (distortion input)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(count, size, size, 3)).astype(np.float32)


def view_pairs(count, size=8, seed=0):
    """`(x1, x2)`: float32 `(count, size, size, 3)` views, the second a noisy first."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(count, size, size, 3)).astype(np.float32)
    return x1, (x1 + 0.5 * rng.normal(size=x1.shape)).astype(np.float32)


def tiny_model(augmenter="cifar", optimizer="sgd", *, size=8, filters=4):
    """A compiled `BarlowTwins` small enough for a test.

    `tiny_encoder(size, filters, use_bias=False, batch_norm=True)`, projector
    (16, 16), `seed=0`; built from the encoder's input at construction.
    """
    import keras_barlow

    model = keras_barlow.BarlowTwins(
        tiny_encoder(size, filters, use_bias=False, batch_norm=True),
        projector_dims=(16, 16),
        augmenter=augmenter,
        seed=0,
    )
    model.compile(optimizer=optimizer)
    return model


def numpy_barlow_twins_terms(z1, z2, eps=1e-5):
    """`(C, on_diag, off_diag)` of the paper's pseudo-code, in float64 NumPy.

    The embeddings `(N, D)` are normalized along the batch (biased variance,
    `eps`), `C = z1n^T z2n / N`; `on_diag = sum_i (1 - C_ii)^2` and
    `off_diag = sum_{i != j} C_ij^2`.
    """
    z1, z2 = (np.asarray(z, np.float64) for z in (z1, z2))
    z1 = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
    z2 = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    c = z1.T @ z2 / len(z1)
    on_diag = ((1.0 - np.diag(c)) ** 2).sum()
    off_diag = (c**2).sum() - (np.diag(c) ** 2).sum()
    return c, on_diag, off_diag


def numpy_barlow_twins_loss(z1, z2, lambd=0.0051, eps=1e-5):
    """The paper's loss `on_diag + lambd * off_diag` of `(N, D)` embeddings, NumPy."""
    _, on_diag, off_diag = numpy_barlow_twins_terms(z1, z2, eps)
    return on_diag + lambd * off_diag


def ops_barlow_twins_loss(z1, z2, lambd=0.0051, eps=1e-5):
    """`numpy_barlow_twins_loss` in `keras.ops`, for gradients: float32 `()`.

    Written from the paper, not from `keras_barlow.losses`.
    """
    ops = keras.ops

    def normalized(z):
        z = ops.cast(z, "float32")
        return (z - ops.mean(z, axis=0)) / ops.sqrt(ops.var(z, axis=0) + eps)

    c = ops.matmul(ops.transpose(normalized(z1)), normalized(z2))
    c = c / ops.cast(ops.shape(z1)[0], "float32")
    diagonal = ops.diagonal(c)
    off_diag = ops.sum(ops.square(c)) - ops.sum(ops.square(diagonal))
    return ops.sum(ops.square(1.0 - diagonal)) + lambd * off_diag


def sgd_step(model, batch, learning_rate):
    """`model`'s trainable weights after one plain SGD step on `batch`, as NumPy.

    `w - learning_rate * dL/dw`, with L the paper's loss (`ops_barlow_twins_loss`,
    times `scale_loss`) of the model's embeddings in training mode of the views
    of its next step (those of its `train_step_count`). Leaves the model's
    weights as they were.
    """
    weights = model.get_weights()
    step = int(to_numpy(model.train_step_count))
    views = model.make_views(batch, model._step_seed(step))
    variables = model.trainable_variables

    def loss_fn():
        z1, z2 = (model(view, training=True) for view in views)
        return model.scale_loss * ops_barlow_twins_loss(z1, z2, model.lambd)

    _, gradients = value_and_gradients(loss_fn, variables)
    updated = [
        to_numpy(variable) - learning_rate * to_numpy(gradient)
        for variable, gradient in zip(variables, gradients, strict=True)
    ]
    model.set_weights(weights)
    return updated


def numpy_step_loss(model, batch):
    """The loss that `model`'s next train step must log on `batch`, from NumPy.

    The views of the step (those of the model's `train_step_count`, which the
    step's seed comes from), the model's embeddings of them in training mode,
    and the paper's loss of those in NumPy, times `scale_loss`. Leaves the
    model's weights as they were.
    """
    weights = model.get_weights()
    step = int(to_numpy(model.train_step_count))
    views = model.make_views(batch, model._step_seed(step))
    z1, z2 = (to_numpy(model(view, training=True)) for view in views)
    model.set_weights(weights)  # the batch-norm statistics of the two calls
    return model.scale_loss * numpy_barlow_twins_loss(z1, z2, model.lambd)


class StepLosses(keras.callbacks.Callback):
    """The loss of every step of a `fit` (Keras logs the running mean of an epoch).

    With `weights=True`, also `weights`: the model's weights before every step,
    for references computed afterwards (see `numpy_step_loss`).
    """

    def __init__(self, weights=False):
        super().__init__()
        self.record_weights = weights

    def on_train_begin(self, logs=None):
        self.losses = []
        self.weights = []

    def on_epoch_begin(self, epoch, logs=None):
        self.total = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        # Kept at the end of the batch only: a dataset of unknown size begins
        # one more batch than it has, when it runs out.
        if self.record_weights:
            self.weights_before = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        total = float(logs["loss"]) * (batch + 1)
        self.losses.append(total - self.total)
        self.total = total
        if self.record_weights:
            self.weights.append(self.weights_before)

    def on_train_end(self, logs=None):
        if self.record_weights:
            self.final_weights = self.model.get_weights()

    def numpy_losses(self, model, step_batches):
        """`numpy_step_loss` of each recorded step, on its batch of `step_batches`."""
        assert len(self.weights) == len(step_batches), (
            len(self.weights),
            len(step_batches),
        )
        final = model.get_weights()
        expected = []
        for weights, batch in zip(self.weights, step_batches, strict=True):
            model.set_weights(weights)
            expected.append(numpy_step_loss(model, batch))
        model.set_weights(final)
        return np.array(expected)

    def assert_sgd_steps(self, model, step_batches, learning_rate, rtol=1e-3):
        """Each recorded step changed the trainable weights as `sgd_step` says.

        Compares each variable's update with the reference's, relative to the
        reference's norm.
        """
        after = [*self.weights[1:], self.final_weights]
        assert len(after) == len(step_batches)
        for step, batch in enumerate(step_batches):
            model.set_weights(self.weights[step])
            before = [to_numpy(variable) for variable in model.trainable_variables]
            expected = sgd_step(model, batch, learning_rate)
            model.set_weights(after[step])
            actual = [to_numpy(variable) for variable in model.trainable_variables]
            for start, got, reference in zip(before, actual, expected, strict=True):
                update = reference - start
                error = np.linalg.norm((got - start) - update)
                assert error <= rtol * np.linalg.norm(update), (step, error)
        model.set_weights(self.final_weights)


def assert_same_updates(initial, expected, actual, rtol=1e-2):
    """Each weight moved from `initial` to `actual` as it did to `expected`.

    Lists of NumPy arrays, one per weight. The difference of the updates must be
    within `rtol` of the norm of the expected update; a weight that `expected`
    left unchanged must be exactly `expected`.
    """
    for start, reference, got in zip(initial, expected, actual, strict=True):
        update = reference - start
        if not np.any(update):
            np.testing.assert_array_equal(got, reference)
            continue
        error = np.linalg.norm((got - start) - update) / np.linalg.norm(update)
        assert error < rtol, error


def logged_warnings(monkeypatch, module):
    """The messages logged with `module.logging.warning` from now on.

    A list that grows as they come, each message formatted with its arguments.
    `module.logging` is a shared module (absl's): the list gets the warnings of
    every module that logs through it.
    """
    messages = []
    monkeypatch.setattr(
        module.logging,
        "warning",
        lambda message, *args: messages.append(message % args),
    )
    return messages


def read_weights(path):
    """Every array of a Keras `.weights.h5` file, by its path in the file."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: arrays.update(
                {name: item[()]} if isinstance(item, h5py.Dataset) else {}
            )
        )
    return arrays


def complete_checkpoints(directory):
    """Sorted names of the `epoch-*` checkpoints that have checkpoint.json."""
    from pathlib import Path

    return sorted(
        path.name
        for path in Path(directory).glob("epoch-*")
        if (path / "checkpoint.json").exists()
    )


@pytest.fixture(scope="module")
def example_archive(tmp_path_factory):
    """A .tar.gz of 3 class folders of 16 random 16x16 JPEGs, for the example."""
    import tarfile

    image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(16):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
    path = root / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
    return path


def example_subsets(archive, *, image_size, val_count, split_seed):
    """`[training, validation]` images of `archive` as the example splits them.

    Independent of the example's code: `data.from_image_folder` in file order,
    batches of 64 `(uint8 (n, image_size, image_size, 3), int32 labels (n,))`.
    """
    from keras_barlow import data

    return [
        data.from_image_folder(
            archive,
            image_size=image_size,
            batch_size=64,
            training=False,
            subset=subset,
            val_count=val_count,
            split_seed=split_seed,
        )
        for subset in ("training", "validation")
    ]


@pytest.fixture
def run_example(tmp_path, monkeypatch):
    """Runs examples/cifar10_barlow.py in-process, its flags parsed as typed."""
    import pathlib

    from absl import flags

    examples = pathlib.Path(__file__).resolve().parents[1] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import cifar10_barlow

    def run(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["cifar10_barlow.py", *args])
        return cifar10_barlow.run()

    yield run
    flags.FLAGS.unparse_flags()
