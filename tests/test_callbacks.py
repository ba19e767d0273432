"""Tests of keras_barlow.callbacks: what a short fit logs, and writes for TensorBoard.

The tests marked `core` run on both backends (`KERAS_BACKEND=jax python -m pytest
-m core tests/test_callbacks.py`); those that read TensorBoard event files need
TensorFlow.
"""

import glob

import keras
import numpy as np
import pytest
from conftest import tiny_encoder, to_numpy

import keras_barlow
from keras_barlow import batches, callbacks, image_ops

SIZE = 16


def read_events(log_dir):
    """{tag: {step: (plugin name, tensor value)}} from the event files of log_dir."""
    tf = pytest.importorskip("tensorflow")
    events = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                events.setdefault(value.tag, {})[event.step] = (
                    value.metadata.plugin_data.plugin_name,
                    tf.make_ndarray(value.tensor),
                )
    return events


class LogsSeen(keras.callbacks.Callback):
    """Records the epoch logs as a callback placed after the monitors sees them."""

    def __init__(self):
        super().__init__()
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


def tiny_model(augmenter="cifar"):
    model = keras_barlow.BarlowTwins(
        tiny_encoder(SIZE), projector_dims=(32, 24), augmenter=augmenter, seed=1
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def labelled_images(count=48):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, SIZE, SIZE, 3)).astype(np.uint8)
    return images, rng.integers(0, 3, count)


def on_canvases(images, labels, batch_size):
    """Full-resolution dict batches: the images at the top left of noisy canvases."""
    rng = np.random.default_rng(1)
    canvases = rng.integers(0, 256, size=(len(images), SIZE + 8, SIZE + 8, 3))
    canvases = canvases.astype(np.uint8)
    canvases[:, :SIZE, :SIZE] = images
    sizes = np.full((len(images), 2), SIZE, np.int32)
    return [
        batches.full_resolution_batch(
            canvases[start : start + batch_size],
            sizes[start : start + batch_size],
            labels[start : start + batch_size],
        )
        for start in range(0, len(images), batch_size)
    ]


def reference_knn(encoder, train, val, k):
    """kNN accuracy of features computed with a NumPy normalization."""
    features = []
    for images, _ in (train, val):
        unit = images / 255.0
        normalized = (unit - image_ops.IMAGENET_MEAN) / image_ops.IMAGENET_STD
        features.append(
            to_numpy(encoder(normalized.astype(np.float32), training=False))
        )
    return keras_barlow.evaluation.knn_accuracy(
        features[0], train[1], features[1], val[1], k=k
    )


def fixed_view_embeddings(model, images):
    views = model.make_views(images, keras.ops.convert_to_tensor([0, 0], "int32"))
    return [to_numpy(model(v, training=False)) for v in views]


def view_pairs_of(images):
    """Two ready views of the images, for a model without augmenter (fast to build)."""
    unit = images.astype(np.float32) / 255.0
    return unit, np.flip(unit, axis=2).copy()


@pytest.fixture(scope="module")
def short_fit():
    """A fit on arrays, on both backends: kNN on dict batches, collapse indicators."""
    images, labels = labelled_images()
    views = view_pairs_of(images)
    model = tiny_model(augmenter=None)
    # Issue 22, wrong answer 2: the training data of large images (dict batches)
    # as the kNN reference set.
    knn = callbacks.KNNMonitor(
        on_canvases(images[:32], labels[:32], 16), (images[32:], labels[32:]), k=5
    )
    fixed_views = tuple(view[:32] for view in views)
    collapse = callbacks.CollapseMonitor(fixed_views, every_n_epochs=2)
    seen = LogsSeen()
    history = model.fit(
        views, batch_size=16, epochs=2, verbose=0, callbacks=[knn, collapse, seen]
    )
    return {
        "model": model,
        "fixed_views": fixed_views,
        "images": images,
        "labels": labels,
        "history": history.history,
        "seen": seen.logs,
    }


@pytest.mark.core
def test_knn_monitor_logs_the_knn_accuracy_of_the_encoder(short_fit):
    history = short_fit["history"]
    assert len(history["knn_top1"]) == 2
    # The callback after the monitor (where keras.callbacks.TensorBoard would be)
    # sees the same value.
    assert [logs["knn_top1"] for logs in short_fit["seen"]] == history["knn_top1"]
    # Recomputed independently from the trained encoder after the last epoch.
    images, labels = short_fit["images"], short_fit["labels"]
    expected = reference_knn(
        short_fit["model"].encoder,
        (images[:32], labels[:32]),
        (images[32:], labels[32:]),
        k=5,
    )
    assert history["knn_top1"][1] == pytest.approx(expected["top1"])
    assert history["knn_top5"][1] == pytest.approx(expected["top5"])


@pytest.mark.core
def test_collapse_monitor_logs_every_n_epochs(short_fit):
    history = short_fit["history"]
    assert len(history["collapse_effective_rank"]) == 1  # every_n_epochs=2
    z1, _ = fixed_view_embeddings(short_fit["model"], short_fit["fixed_views"])
    singular_values = np.linalg.svd(z1, compute_uv=False)
    p = singular_values / singular_values.sum()
    expected_rank = np.exp(-np.sum(p * np.log(p)))
    assert history["collapse_effective_rank"][0] == pytest.approx(
        expected_rank, rel=1e-3
    )
    unit = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    assert history["collapse_embedding_std"][0] == pytest.approx(
        unit.std(axis=0).mean() * np.sqrt(24), rel=1e-3
    )
    assert 0 < history["collapse_off_diagonal"][0] < 1


@pytest.fixture(scope="module")
def tensorboard_fit(tmp_path_factory):
    """A fit on tf.data whose monitors write TensorBoard event files."""
    tf = pytest.importorskip("tensorflow")
    log_dir = str(tmp_path_factory.mktemp("logs"))
    images, labels = labelled_images()
    model = tiny_model()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.batch(16, drop_remainder=True)
    # Issue 22, wrong answer 2: a tf.data training dataset of dict batches failed
    # with "TypeError ... Preprocessing.call(). Expected any non-tensor type".
    canvases = on_canvases(images[:32], labels[:32], 32)[0]
    train_ds = tf.data.Dataset.from_tensor_slices(canvases).batch(16)
    val_ds = dataset.skip(2)
    knn = callbacks.KNNMonitor(train_ds, val_ds, k=5, log_dir=log_dir)
    image = callbacks.CrossCorrelationImage(log_dir, images[:32], max_dims=16)
    collapse = callbacks.CollapseMonitor(images[:32], every_n_epochs=2, log_dir=log_dir)
    history = model.fit(dataset, epochs=2, verbose=0, callbacks=[knn, image, collapse])
    return {
        "model": model,
        "images": images,
        "labels": labels,
        "history": history.history,
        "events": read_events(log_dir),
    }


@pytest.mark.tensorflow_only
def test_knn_monitor_writes_its_scalars(tensorboard_fit):
    history, events = tensorboard_fit["history"], tensorboard_fit["events"]
    plugin, value = events["knn_top1"][1]
    assert plugin == "scalars"
    assert float(value) == pytest.approx(history["knn_top1"][1])
    images, labels = tensorboard_fit["images"], tensorboard_fit["labels"]
    expected = reference_knn(
        tensorboard_fit["model"].encoder,
        (images[:32], labels[:32]),
        (images[32:], labels[32:]),
        k=5,
    )
    assert history["knn_top1"][1] == pytest.approx(expected["top1"])


@pytest.mark.tensorflow_only
def test_cross_correlation_image_writes_image_and_histograms(tensorboard_fit):
    tf = pytest.importorskip("tensorflow")
    events = tensorboard_fit["events"]
    assert sorted(events["cross_correlation"]) == [0, 1]
    plugin, value = events["cross_correlation"][1]
    assert plugin == "images"
    width, height, png = value
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (64, 64, 3) and (int(width), int(height)) == (64, 64)

    # The picture is the cross-correlation of the fixed views after the last epoch.
    z1, z2 = fixed_view_embeddings(
        tensorboard_fit["model"], tensorboard_fit["images"][:32]
    )
    c = to_numpy(keras_barlow.cross_correlation(z1, z2))
    np.testing.assert_array_equal(image, callbacks.correlation_image(c[:16, :16]))

    plugin, diagonal = events["cross_correlation/diagonal"][1]
    assert plugin == "histograms" and diagonal.shape == (50, 3)
    assert diagonal[:, 2].sum() == 24
    _, off_diagonal = events["cross_correlation/off_diagonal"][1]
    assert off_diagonal[:, 2].sum() == 24 * 23
    expected_counts, _ = np.histogram(
        c[~np.eye(24, dtype=bool)], bins=50, range=(-1, 1)
    )
    np.testing.assert_allclose(off_diagonal[:, 2], expected_counts, atol=2)


@pytest.mark.tensorflow_only
def test_collapse_monitor_writes_its_scalars_every_n_epochs(tensorboard_fit):
    history, events = tensorboard_fit["history"], tensorboard_fit["events"]
    assert sorted(events["collapse_effective_rank"]) == [1]
    _, value = events["collapse_effective_rank"][1]
    assert float(value) == pytest.approx(history["collapse_effective_rank"][0])


@pytest.mark.core
def test_correlation_image_colors():
    image = callbacks.correlation_image(
        np.array([[1.0, 0.0], [-1.0, 5.0]]), pixels_per_cell=3
    )
    assert image.shape == (6, 6, 3)
    np.testing.assert_array_equal(image[0, 0], [103, 0, 31])  # +1: dark red
    np.testing.assert_array_equal(image[0, 3], [247, 247, 247])  # 0: white
    np.testing.assert_array_equal(image[3, 0], [5, 48, 97])  # -1: dark blue
    np.testing.assert_array_equal(image[5, 5], [103, 0, 31])  # clipped to +1


@pytest.mark.core
def test_correlation_image_is_matplotlibs_rdbu_r():
    # The colors are copied so that training needs no matplotlib; they must stay
    # those of keras_barlow.plotting's colormap.
    matplotlib = pytest.importorskip("matplotlib")
    values = np.linspace(-1.0, 1.0, 101)[None, :]
    image = callbacks.correlation_image(values, max_dims=101, pixels_per_cell=1)[0]
    reference = matplotlib.colormaps["RdBu_r"]((values[0] + 1.0) / 2.0)[:, :3] * 255
    np.testing.assert_allclose(image, reference, atol=4)  # its 256-entry table


@pytest.mark.core
def test_nan_guard_is_keras_terminate_on_nan_raising_with_the_step():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    guard = callbacks.NaNGuard()
    assert isinstance(guard, keras.callbacks.TerminateOnNaN) and guard.raise_error
    guard.set_model(model)
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 1.5})  # finite: nothing happens
    # Keras routes on_train_batch_end to on_batch_end, which both override.
    with pytest.raises(FloatingPointError, match=r"loss is nan .*epoch 3, batch 5"):
        guard.on_train_batch_end(4, {"loss": float("nan")})
    with pytest.raises(FloatingPointError, match="The loss is inf"):
        model.fit(
            np.ones((4, 2)), np.full((4, 1), np.inf), verbose=0, callbacks=[guard]
        )


@pytest.mark.core
def test_callbacks_validate_arguments():
    with pytest.raises(ValueError, match="every_n_epochs"):
        callbacks.KNNMonitor(None, None, every_n_epochs=0)
    with pytest.raises(ValueError, match="temperature"):
        callbacks.KNNMonitor(None, None, temperature=-1)
    with pytest.raises(ValueError, match="max_dims"):
        callbacks.CrossCorrelationImage("logs", np.zeros((2, 8, 8, 3)), max_dims=0)
    images, labels = labelled_images(4)
    with pytest.raises(ValueError, match="`val_ds` is read at every evaluation"):
        callbacks.KNNMonitor((images, labels), (b for b in [(images, labels)]))
    with pytest.raises(ValueError, match="`train_ds` is empty"):
        callbacks.KNNMonitor([], (images, labels))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="encoder"):
        model.fit(
            np.zeros((4, 4)),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[callbacks.KNNMonitor((images, labels), (images, labels))],
        )


@pytest.mark.core
@pytest.mark.parametrize("unlabelled", ["train_ds", "val_ds"])
def test_knn_monitor_refuses_unlabelled_data_before_training(unlabelled):
    images, labels = labelled_images(16)
    data = {
        "train_ds": (images, labels),
        "val_ds": [(images[:8], labels[:8]), (images[8:], labels[8:])],
    }
    data[unlabelled] = images if unlabelled == "train_ds" else [images[:8]]
    model = tiny_model(augmenter=None)
    message = f"KNNMonitor needs labelled batches, but `{unlabelled}` yields"
    with pytest.raises(ValueError, match=message):
        model.fit(
            view_pairs_of(images),
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[callbacks.KNNMonitor(**data, k=3)],
        )
    assert int(to_numpy(model.optimizer.iterations)) == 0  # no step was lost


@pytest.mark.tensorflow_only
def test_keras_tensorboard_after_knn_monitor_writes_the_knn_scalar(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(16, 8, 8, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 2))
    dataset = dataset.batch(8, drop_remainder=True)
    model = keras_barlow.BarlowTwins(
        tiny_encoder(8, filters=0), projector_dims=(8,), augmenter="cifar"
    )
    model.compile(optimizer="sgd")
    model.fit(
        dataset,
        epochs=1,
        verbose=0,
        callbacks=[
            callbacks.KNNMonitor(dataset, dataset, k=3),
            keras.callbacks.TensorBoard(str(tmp_path)),
        ],
    )
    assert "epoch_knn_top1" in read_events(tmp_path / "train")
