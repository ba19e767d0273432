"""Tests of keras_barlow.callbacks: a short fit writes what TensorBoard shows."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_encoder

import keras_barlow
from keras_barlow import augment, callbacks


def read_events(log_dir):
    """{tag: {step: (plugin name, tensor value)}} from the event files of log_dir."""
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


@pytest.fixture(scope="module")
def short_fit(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("logs"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 16, 16, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, 48)
    model = keras_barlow.BarlowTwins(
        tiny_encoder(16), projector_dims=(32, 24), augmenter="cifar", seed=1
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    train_ds = dataset.take(2)
    val_ds = dataset.skip(2)
    knn = callbacks.KNNMonitor(train_ds, val_ds, k=5, log_dir=log_dir)
    image = callbacks.CrossCorrelationImage(log_dir, images[:32], max_dims=16)
    collapse = callbacks.CollapseMonitor(images[:32], every_n_epochs=2, log_dir=log_dir)
    seen = LogsSeen()
    history = model.fit(
        dataset, epochs=2, verbose=0, callbacks=[knn, image, collapse, seen]
    )
    return {
        "model": model,
        "images": images,
        "labels": labels,
        "log_dir": log_dir,
        "history": history.history,
        "seen": seen.logs,
        "events": read_events(log_dir),
        "train_ds": train_ds,
        "val_ds": val_ds,
    }


def test_knn_monitor_logs_the_knn_accuracy_of_the_encoder(short_fit):
    history, events = short_fit["history"], short_fit["events"]
    assert len(history["knn_top1"]) == 2
    # The callback after the monitor (where keras.callbacks.TensorBoard would be)
    # sees the same value.
    assert [logs["knn_top1"] for logs in short_fit["seen"]] == history["knn_top1"]
    plugin, value = events["knn_top1"][1]
    assert plugin == "scalars"
    assert float(value) == pytest.approx(history["knn_top1"][1])
    # Recomputed independently from the trained encoder after the last epoch.
    encoder = short_fit["model"].encoder
    features, labels = [], []
    for dataset in (short_fit["train_ds"], short_fit["val_ds"]):
        batches = list(dataset)
        images = np.concatenate([b[0].numpy() for b in batches]) / 255.0
        normalized = (images - augment.IMAGENET_MEAN) / augment.IMAGENET_STD
        features.append(encoder(normalized.astype(np.float32), training=False).numpy())
        labels.append(np.concatenate([b[1].numpy() for b in batches]))
    expected = keras_barlow.evaluation.knn_accuracy(
        features[0], labels[0], features[1], labels[1], k=5
    )
    assert history["knn_top1"][1] == pytest.approx(expected["top1"])


def test_cross_correlation_image_writes_image_and_histograms(short_fit):
    events = short_fit["events"]
    assert sorted(events["cross_correlation"]) == [0, 1]
    plugin, value = events["cross_correlation"][1]
    assert plugin == "images"
    width, height, png = value
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (64, 64, 3) and (int(width), int(height)) == (64, 64)

    # The picture is the cross-correlation of the fixed views after the last epoch.
    model = short_fit["model"]
    views = model.make_views(short_fit["images"][:32], tf.constant([0, 0]))
    c = keras_barlow.cross_correlation(*(model(v, training=False) for v in views))
    c = c.numpy()
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


def test_collapse_monitor_logs_every_n_epochs(short_fit):
    history, events = short_fit["history"], short_fit["events"]
    assert len(history["collapse_effective_rank"]) == 1  # every_n_epochs=2
    assert sorted(events["collapse_effective_rank"]) == [1]
    model = short_fit["model"]
    views = model.make_views(short_fit["images"][:32], tf.constant([0, 0]))
    z1, z2 = (model(v, training=False).numpy() for v in views)
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


def test_correlation_image_colors():
    image = callbacks.correlation_image(
        np.array([[1.0, 0.0], [-1.0, 5.0]]), pixels_per_cell=3
    )
    assert image.shape == (6, 6, 3)
    np.testing.assert_array_equal(image[0, 0], [103, 0, 31])  # +1: dark red
    np.testing.assert_array_equal(image[0, 3], [247, 247, 247])  # 0: white
    np.testing.assert_array_equal(image[3, 0], [5, 48, 97])  # -1: dark blue
    np.testing.assert_array_equal(image[5, 5], [103, 0, 31])  # clipped to +1


def test_correlation_image_is_matplotlibs_rdbu_r():
    # The colors are copied so that training needs no matplotlib; they must stay
    # those of keras_barlow.plotting's colormap.
    matplotlib = pytest.importorskip("matplotlib")
    values = np.linspace(-1.0, 1.0, 101)[None, :]
    image = callbacks.correlation_image(values, max_dims=101, pixels_per_cell=1)[0]
    reference = matplotlib.colormaps["RdBu_r"]((values[0] + 1.0) / 2.0)[:, :3] * 255
    np.testing.assert_allclose(image, reference, atol=4)  # its 256-entry table


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


def test_callbacks_validate_arguments():
    with pytest.raises(ValueError, match="every_n_epochs"):
        callbacks.KNNMonitor(None, None, every_n_epochs=0)
    with pytest.raises(ValueError, match="temperature"):
        callbacks.KNNMonitor(None, None, temperature=-1)
    with pytest.raises(ValueError, match="max_dims"):
        callbacks.CrossCorrelationImage("logs", np.zeros((2, 8, 8, 3)), max_dims=0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="encoder"):
        model.fit(
            np.zeros((4, 4)),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[callbacks.KNNMonitor(None, None)],
        )


def test_keras_tensorboard_after_knn_monitor_writes_the_knn_scalar(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(16, 8, 8, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 2)).batch(8)
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
