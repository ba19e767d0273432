"""Keras callbacks to watch Barlow Twins pre-training while it runs.

* `KNNMonitor`: weighted kNN accuracy of the encoder's features (see
  `keras_barlow.evaluation.knn_accuracy`), the usual health check of a
  self-supervised run.
* `CrossCorrelationImage`: the cross-correlation matrix of a fixed batch as a
  TensorBoard image, with histograms of its diagonal and off-diagonal values.
* `CollapseMonitor`: collapse and redundancy indicators of a fixed batch: embedding
  standard deviation, mean |off-diagonal| of the cross-correlation, effective rank.
* `NaNGuard`: stops at the first non-finite loss, naming the step.

Metrics go into the epoch `logs`, so they appear in `History` and, when the
callback comes *before* `keras.callbacks.TensorBoard` in the `callbacks` list, in
TensorBoard as `epoch_<name>`. With `log_dir`, a callback also writes its values to
TensorBoard event files itself, with `tf.summary`.

All of them run on Keras' TensorFlow and JAX backends; TensorFlow is needed only
to write event files (`log_dir`, and `CrossCorrelationImage`) and to read a
`tf.data.Dataset`.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_barlow import _checks as checks
from keras_barlow import (
    _tensorboard,
    array_data,
    batches,
    input_checks,
    losses,
    metrics,
)
from keras_barlow._tensorboard import HISTOGRAM_BINS, correlation_image
from keras_barlow.checkpoints import NON_FINITE_CAUSES
from keras_barlow.evaluation import features, inputs, knn

__all__ = [
    "HISTOGRAM_BINS",
    "NON_FINITE_CAUSES",
    "CollapseMonitor",
    "CrossCorrelationImage",
    "KNNMonitor",
    "NaNGuard",
    "correlation_image",
]


# ----------------------------------------------------------------------------------
# Shared pieces of the callbacks.


class _EpochCallback(keras.callbacks.Callback):
    """Runs `measure(epoch, logs)` every `every_n_epochs` epochs (counted from 1).

    With a `log_dir`, `self.writer` (a `_tensorboard.SummaryWriter`, which needs
    TensorFlow: checked here, before training) writes there; it is flushed after
    each measurement and closed at the end of `fit`.
    """

    def __init__(self, every_n_epochs=1, log_dir=None):
        super().__init__()
        self.every_n_epochs = checks.positive_int("every_n_epochs", every_n_epochs)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.writer = None
        if log_dir is not None:
            what = f"{type(self).__name__}(log_dir=...)"
            self.writer = _tensorboard.SummaryWriter(log_dir, what)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            self.measure(epoch, logs if logs is not None else {})
            if self.writer is not None:
                self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()

    def measure(self, epoch, logs):
        raise NotImplementedError

    def _log_scalars(self, values, epoch, logs):
        values = {name: float(value) for name, value in values.items()}
        logs.update(values)
        if self.writer is not None:
            self.writer.scalars(values, epoch)


def _encoder_of(model):
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, keras.Model):
        raise ValueError(
            "This callback needs a model with an `encoder` attribute, such as "
            f"keras_barlow.BarlowTwins. Received: {type(model).__name__}"
        )
    return encoder


# ----------------------------------------------------------------------------------
# Callbacks that watch training: accuracy, cross-correlation, collapse.


class KNNMonitor(_EpochCallback):
    """Weighted kNN accuracy of the encoder's features, logged during `fit`.

    Every `every_n_epochs` epochs, the features of `train_ds` (the labelled
    reference set) and `val_ds` are extracted with `model.encoder` in inference
    mode and `val_ds` is classified by `keras_barlow.evaluation.knn_accuracy`.
    `"knn_top1"` and `"knn_top5"` are added to the epoch logs: they appear in the
    `History`, in the progress bar and, when this callback comes before
    `keras.callbacks.TensorBoard` in the callbacks list, in TensorBoard as
    `epoch_knn_top1` (callbacks run in list order and share the logs). With
    `log_dir` it writes the scalars `knn_top1` and `knn_top5` there itself.

    Both datasets are read entirely at each evaluation: use a subset (e.g. 10,000
    training images) for large data sets. Their first batches are read when the
    callback is made, so that data without labels is refused before training.

    Args:
        train_ds: labelled batches, `(images, labels)` with images uint8 or
            float in [0, 255], or full-resolution dicts with labels (as the
            training loaders make them): a batched `tf.data.Dataset`, a tuple of
            NumPy arrays, or any iterable of batches that can be read again at
            every evaluation (a list, a `keras.utils.PyDataset`, a Grain
            dataset, a torch `DataLoader`; not a generator). See
            `keras_barlow.evaluation.inputs`.
        val_ds: the same, the samples to classify.
        every_n_epochs: evaluate after every n-th epoch.
        k: neighbours (200 in InstDisc).
        temperature: temperature of the vote weights (0.1 in InstDisc).
        num_classes: number of classes; by default the largest label plus one.
        preprocess: `"auto"` (normalization at the encoder's input size), a
            callable, or `None`; see `keras_barlow.evaluation`.
        log_dir: optional directory to write TensorBoard scalars to (needs
            TensorFlow).

    Example:

    ```python
    callbacks = [
        keras_barlow.callbacks.KNNMonitor(train_subset, val_ds, every_n_epochs=5),
        keras.callbacks.TensorBoard("logs"),  # after KNNMonitor
    ]
    model.fit(images, epochs=100, callbacks=callbacks)
    ```
    """

    def __init__(
        self,
        train_ds,
        val_ds,
        every_n_epochs=1,
        k=200,
        temperature=0.1,
        num_classes=None,
        preprocess="auto",
        log_dir=None,
    ):
        super().__init__(every_n_epochs, log_dir)
        # Checked now, not after the first epoch, by knn_accuracy's own rule.
        self.k, self.temperature = knn.check_knn_settings(k, temperature)
        for name, data in (("train_ds", train_ds), ("val_ds", val_ds)):
            input_checks.check_reiterable(data, name, "at every evaluation")
            _check_labelled(data, name)
        self.train_ds, self.val_ds = train_ds, val_ds
        self.num_classes = num_classes
        self.preprocess = preprocess
        self._features_of = None

    def on_train_begin(self, logs=None):
        # One compiled feature function for the whole run: no retracing per epoch.
        self._features_of = features.feature_function(
            _encoder_of(self.model), self.preprocess
        )

    def measure(self, epoch, logs):
        # On JAX, reading `self.model` brings the variables of the step back
        # into the model (Keras holds them apart during an epoch).
        _encoder_of(self.model)
        train = features.collect_features(self._features_of, self.train_ds)
        val = features.collect_features(self._features_of, self.val_ds)
        accuracy = knn.knn_accuracy(
            *train,
            *val,
            k=self.k,
            temperature=self.temperature,
            num_classes=self.num_classes,
        )
        self._log_scalars(
            {"knn_top1": accuracy["top1"], "knn_top5": accuracy["top5"]}, epoch, logs
        )


def _check_labelled(data, name):
    """Raise unless the first batch of `data` has labels.

    Read when `KNNMonitor` is made, so that unlabelled data fails before
    training, not at the first evaluation. `data` is not a one-shot iterator
    (checked before): reading one batch consumes nothing.
    """
    batch = next(inputs.iterate_batches(data, batch_size=1), None)
    if batch is None:
        raise ValueError(f"`{name}` is empty: KNNMonitor needs labelled samples.")
    if batch.labels is None:
        raise ValueError(
            f"KNNMonitor needs labelled batches, but `{name}` yields batches "
            "without labels. Give batches of (images, labels), or full-resolution "
            f"dicts with '{batches.LABELS}'."
        )


class _FixedBatchCallback(_EpochCallback):
    """Embeds the same two views of a fixed batch at every measurement.

    The views are made once, at the start of training, by the model's
    `make_views` with a fixed seed, so that epochs compare like with like.
    """

    def __init__(self, images, every_n_epochs=1, log_dir=None, seed=0):
        super().__init__(every_n_epochs, log_dir)
        if not array_data.is_arrays(images) and not isinstance(images, (tuple, list)):
            images = inputs.first_batch(images)  # of a dataset
        self.images = images
        self.seed = int(seed)
        self._views = None

    def on_train_begin(self, logs=None):
        seed = ops.convert_to_tensor([self.seed, 0], "int32")
        self._views = self.model.make_views(self.images, seed)

    def embeddings(self):
        """`(z1, z2)`: embeddings `(N, D)` of the two views, in inference mode."""
        return tuple(self.model(view, training=False) for view in self._views)


class CrossCorrelationImage(_FixedBatchCallback):
    """Writes the cross-correlation matrix of a fixed batch to TensorBoard.

    Every `every_n_epochs` epochs, the two views of `images` go through the model
    (inference mode) and `keras_barlow.losses.cross_correlation` of their
    embeddings is written to `log_dir`:

    * image `cross_correlation`: the top-left `max_dims x max_dims` block, blue
      (-1) / white (0) / red (+1) (see `correlation_image`): training draws a red
      diagonal on a white background;
    * histograms `cross_correlation/diagonal` (should move to 1) and
      `cross_correlation/off_diagonal` (should gather around 0), 50 bins on
      [-1, 1].

    Args:
        log_dir: directory of the TensorBoard event files.
        images: one batch as `fit` receives it: uint8 or float `(N, H, W, 3)`
            images in [0, 255] (views are made by the model's augmenter), or a
            pair of pre-made views for a model with `augmenter=None`; a dataset's
            first batch is taken. N >= 2; a few hundred give a stable picture.
        max_dims: size of the block shown.
        every_n_epochs: write after every n-th epoch.
        seed: seed of the fixed views.

    Example:

    ```python
    model.fit(dataset, epochs=100, callbacks=[
        keras_barlow.callbacks.CrossCorrelationImage("logs/xcorr", val_images[:256]),
    ])
    ```
    """

    def __init__(self, log_dir, images, max_dims=64, every_n_epochs=1, seed=0):
        max_dims = checks.positive_int("max_dims", max_dims)
        super().__init__(images, every_n_epochs, log_dir, seed)
        self.max_dims = max_dims

    def measure(self, epoch, logs):
        c = ops.convert_to_numpy(losses.cross_correlation(*self.embeddings()))
        self.writer.image(
            "cross_correlation", correlation_image(c, self.max_dims), epoch
        )
        diagonal = self.writer.histogram_counts(np.diagonal(c))
        off_diagonal = self.writer.histogram_counts(c) - diagonal
        self.writer.histograms(
            {
                "cross_correlation/diagonal": diagonal,
                "cross_correlation/off_diagonal": off_diagonal,
            },
            epoch,
        )


class CollapseMonitor(_FixedBatchCallback):
    """Logs collapse and redundancy indicators of a fixed batch during `fit`.

    Every `every_n_epochs` epochs, on the embeddings of the two fixed views of
    `images`:

    * `collapse_embedding_std`: `keras_barlow.metrics.embedding_std` of the first
      view: about 1 for spread-out embeddings, 0 for a collapse to a point;
    * `collapse_off_diagonal`: mean |C_ij|, i != j, of the cross-correlation:
      the redundancy left between dimensions;
    * `collapse_effective_rank`: `keras_barlow.metrics.effective_rank` of the
      first view's embeddings: how many dimensions are in use, at most
      `min(N, D)`.

    They go into the epoch logs (History, progress bar, and TensorBoard when this
    callback precedes `keras.callbacks.TensorBoard`) and, with `log_dir`, to
    TensorBoard scalars written by the callback itself.

    Args:
        images: a fixed batch, as for `CrossCorrelationImage`.
        every_n_epochs: measure after every n-th epoch.
        log_dir: optional directory to write TensorBoard scalars to.
        seed: seed of the fixed views.
    """

    def measure(self, epoch, logs):
        z1, z2 = self.embeddings()
        c = losses.cross_correlation(z1, z2)
        self._log_scalars(
            {
                "collapse_embedding_std": metrics.embedding_std(z1),
                "collapse_off_diagonal": metrics.mean_abs_off_diagonal(c),
                "collapse_effective_rank": metrics.effective_rank(z1),
            },
            epoch,
            logs,
        )


# ----------------------------------------------------------------------------------
# Reliability.


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """Stop training at the first NaN or Inf loss, naming the step and likely causes.

    `keras.callbacks.TerminateOnNaN(raise_error=True)`, extended: after every batch
    the logged `monitor` value (the running mean of the epoch's loss, so one
    non-finite step makes it non-finite at once) is checked, and a non-finite one
    raises `FloatingPointError` with the optimizer step, epoch, batch and likely
    causes. It raises rather than setting `model.stop_training` (Keras' default):
    a stop still ends the epoch, and `on_epoch_end` callbacks such as
    `keras_barlow.checkpoints.TrainingCheckpoint` would save the broken weights.
    Reading the loss costs nothing more: with TensorFlow, Keras converts the logs
    to Python numbers after every batch anyway.

    Args:
        monitor: the logged value to check.

    Example:

    ```python
    model.fit(dataset, epochs=100, callbacks=[
        keras_barlow.callbacks.NaNGuard(),
        keras_barlow.checkpoints.TrainingCheckpoint("runs/barlow"),
    ])
    ```
    """

    def __init__(self, monitor="loss"):
        super().__init__(raise_error=True)
        self.monitor = monitor
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or np.isfinite(value):
            return
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        raise FloatingPointError(
            f"The {self.monitor} is {float(value)} at optimizer step {step} "
            f"(epoch {self._epoch + 1}, batch {batch + 1}; counted from 1). Training "
            "stopped; the weights of this step are not saved. " + NON_FINITE_CAUSES
        )
