"""The Barlow Twins model: encoder, projector, and a train step exact on R devices."""

import inspect
import random
import warnings

import keras
import tensorflow as tf

from keras_barlow import augment as augment_lib
from keras_barlow import losses, validation


@keras.saving.register_keras_serializable(package="keras_barlow")
class Projector(keras.layers.Layer):
    """The projector MLP of the paper.

    `Dense(use_bias=False) -> BatchNormalization -> ReLU` for every layer but the
    last, then `Dense(use_bias=False)`. The batch normalization is synchronized
    across replicas (and matches PyTorch's `BatchNorm1d`: epsilon 1e-5, momentum
    0.1), so the projector computes the same function on R devices as on one.

    Args:
        units: sizes of the layers, e.g. `(8192, 8192, 8192)`.

    Input shape: `(B, F)`. Output shape: `(B, units[-1])`.
    """

    def __init__(self, units=(8192, 8192, 8192), **kwargs):
        super().__init__(**kwargs)
        units = tuple(int(size) for size in units)
        if not units or min(units) < 1:
            raise ValueError(
                "`units` must be a non-empty sequence of positive sizes. "
                f"Received: units={units}"
            )
        self.units = units
        self.blocks = []
        for index, size in enumerate(units):
            self.blocks.append(
                keras.layers.Dense(size, use_bias=False, name=f"dense_{index}")
            )
            if index < len(units) - 1:
                self.blocks.append(
                    keras.layers.BatchNormalization(
                        momentum=0.9,
                        epsilon=1e-5,
                        synchronized=True,
                        name=f"bn_{index}",
                    )
                )
                self.blocks.append(keras.layers.ReLU(name=f"relu_{index}"))

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
            input_shape = block.compute_output_shape(input_shape)

    def call(self, features, training=None):
        for block in self.blocks:
            features = block(features, training=training)
        return features

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_barlow")
class BarlowTwins(keras.Model):
    """Barlow Twins self-supervised pre-training (Zbontar et al., 2021).

    Two distorted views of each image go through the same encoder and projector;
    the loss makes the cross-correlation matrix of the two batches of embeddings
    close to the identity (see `keras_barlow.losses`).

    `model(images)` returns the projector embeddings; `model.encoder` is the
    network to keep after pre-training.

    Under a `tf.distribute` strategy (`MirroredStrategy`,
    `MultiWorkerMirroredStrategy`) the loss is that of the global batch (global
    batch statistics, global cross-correlation; see `keras_barlow.losses` for
    which reduction is used when), the train step divides it by the number of
    replicas R before the optimizer sums their gradients, and the projector's
    batch normalization is synchronized, so training on R replicas with a global
    batch of N gives the same updates as one device with a batch of N. An encoder
    of your own stays exact if its batch normalization is synchronized too
    (`keras_barlow.backbones` does it under a strategy). Augmentation draws differ
    across replicas and steps. The global batch must split into equal
    per-replica batches of at least 2: batch the dataset with
    `drop_remainder=True` and a multiple of R. `fit` and `evaluate` check a
    static batch size at once; a batch size known only at run time is checked
    by the step, before any weight changes (not under `jit_compile=True`, where
    TensorFlow drops run-time assertions).

    Args:
        encoder: a `keras.Model` mapping normalized float images `(B, H, W, 3)` to
            features `(B, F)`, e.g. `keras_barlow.backbones.ResNet50(...)`.
        projector_dims: sizes of the projector layers; the last is the
            embedding dimension D.
        lambd: weight of the off-diagonal (redundancy reduction) term.
        scale_loss: overall factor of the loss.
        augmenter: how views are made from the input images: a layer whose
            `call(images, seed=None)` returns `(view1, view2)` drawn from `seed`
            (int32 `(2,)`, given by the train step) such as `BarlowTwinsAugment`,
            a preset name (`"imagenet"` or `"cifar"`) for a `BarlowTwinsAugment`
            of the encoder's input size, or `None` when the dataset yields
            pre-made view pairs `(x1, x2)`.
        correlation_method: `"auto"`, `"cross_correlation"` or `"gram"`; see
            `keras_barlow.losses.barlow_twins_terms`.
        seed: int seed of the augmentation draws, which depend on it, the train
            step count (`model.train_step_count`, saved with the weights) and the
            replica only, so a resumed run draws what an uninterrupted one would.

    Data for `fit` / `evaluate`: a `tf.data.Dataset` (or array) of uint8 or float
    images in [0, 255] of shape `(B, H, W, 3)`, or of `(images, labels)` with the
    labels ignored; with `augmenter=None`, of pairs `(x1, x2)` of ready views.

    Example:

    ```python
    encoder = keras_barlow.backbones.ResNet18((32, 32, 3), stem="cifar")
    model = keras_barlow.BarlowTwins(encoder, projector_dims=(2048, 2048, 2048),
                                     augmenter="cifar")
    model.compile(optimizer=keras_barlow.optimizers.LARS(0.3))
    model.fit(images_dataset, epochs=10)
    ```
    """

    def __init__(
        self,
        encoder,
        projector_dims=(8192, 8192, 8192),
        lambd=losses.DEFAULT_LAMBD,
        scale_loss=1.0,
        augmenter="imagenet",
        correlation_method="auto",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.Model):
            raise TypeError(
                "`encoder` must be a keras.Model mapping images to features. "
                f"Received: {type(encoder).__name__}"
            )
        if correlation_method not in losses.METHODS:
            raise ValueError(
                f"`correlation_method` must be one of {losses.METHODS}. "
                f"Received: correlation_method={correlation_method!r}"
            )
        self.encoder = encoder
        self.projector = Projector(projector_dims, name="projector")
        self.projector_dims = self.projector.units
        self.lambd = float(lambd)
        self.scale_loss = float(scale_loss)
        self.augmenter = _make_augmenter(augmenter, encoder)
        self.correlation_method = correlation_method
        if seed is None and _on_several_workers(tf.distribute.get_strategy()):
            raise ValueError(
                "Under MultiWorkerMirroredStrategy every worker must draw from the "
                "same augmentation seed. Received: seed=None, which draws a "
                "different one in each process. Pass seed=<int>, the same on every "
                "worker."
            )
        self.seed = random.randrange(2**31 - 1) if seed is None else int(seed)
        # Counts train steps to seed the augmentation. Not the optimizer's
        # `iterations`, which a LossScaleOptimizer does not advance on a skipped
        # step: the next step would repeat its views.
        self.train_step_count = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="train_step_count",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.on_diag_tracker = keras.metrics.Mean(name="on_diag")
        self.off_diag_tracker = keras.metrics.Mean(name="off_diag")
        self.std_tracker = keras.metrics.Mean(name="embedding_std")

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.on_diag_tracker,
            self.off_diag_tracker,
            self.std_tracker,
        ]

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if not self.projector.built:
            self.projector.build(self.encoder.compute_output_shape(input_shape))

    def call(self, images, training=None):
        """Projector embeddings `(B, D)` of normalized float images `(B, H, W, 3)`."""
        return self.projector(
            self.encoder(images, training=training), training=training
        )

    def compile(self, *args, jit_compile="auto", **kwargs):
        """Keras' `compile`; `jit_compile` says whether the steps run under XLA.

        On one device the whole train step compiles, augmentation included.
        `"auto"` keeps Keras' rule, which matches what was measured for this
        model (`benchmarks/xla.py`): XLA off on a CPU-only machine, where it made
        the train step slower, on for a single GPU (not measured here), off under
        a `tf.distribute` strategy. `True` with more than one replica falls back
        to `False` with a warning: Keras compiles the step of all replicas as one
        XLA program, which cannot reach the other devices' variables
        (keras-team/keras#19005).

        XLA draws other random numbers than TensorFlow's kernels from the same
        seed: the views of a step, equally distributed, differ between
        `jit_compile=True` and `False`, so resume a run with the setting it
        started with to see the same views. XLA also drops the run-time input
        checks of `keras_barlow.validation`.
        """
        replicas = self.distribute_strategy.num_replicas_in_sync
        if jit_compile is True and replicas > 1:
            warnings.warn(
                f"jit_compile=True does not work with {replicas} replicas in Keras "
                "(keras-team/keras#19005). Proceeding with jit_compile=False.",
                stacklevel=2,
            )
            jit_compile = False
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        # Keras does not restore the compile state of a model that overrides
        # `compile`; this one only adjusts `jit_compile`, so restore it as usual.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, *args, **kwargs):
        # Static facts are checked at once, before Keras reads any data.
        replicas = self.distribute_strategy.num_replicas_in_sync
        validation.check_global_batch(x, replicas)
        validation.check_global_batch(kwargs.get("validation_data"), replicas)
        validation.check_not_empty(x)
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # Keras would warn that it ignores it
        steps_before = int(self.train_step_count.numpy())
        history = super().fit(x, *args, **kwargs)
        if history.epoch and int(self.train_step_count.numpy()) == steps_before:
            # Data of unknown size that turned out empty: Keras only warns.
            raise ValueError(validation.EMPTY_DATA_MESSAGE)
        return history

    def evaluate(self, x=None, *args, **kwargs):
        validation.check_global_batch(x, self.distribute_strategy.num_replicas_in_sync)
        return super().evaluate(x, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras averages the first batch over all replicas here only to learn its
        # shapes. Under MultiWorkerMirroredStrategy that reduce fails on a tuple of
        # tensors (keras-team/keras#20585), and on any strategy it fails obscurely
        # on an uneven split; one replica's share has the shapes and needs no
        # communication (the train step then checks the split).
        if self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        local_results = self.distribute_strategy.experimental_local_results
        for _, _, batches in iterator or ():
            try:
                first = next(batches)
            except StopIteration:
                raise ValueError(validation.EMPTY_DATA_MESSAGE) from None
            data_batch = tf.nest.map_structure(
                lambda value: local_results(value)[0], first
            )
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def train_step(self, data):
        view1, view2 = self.make_views(data, self._step_seed(self.train_step_count))
        with tf.GradientTape() as tape:
            loss, on_diag, off_diag, z1 = self._loss_terms(view1, view2, training=True)
            # Every replica holds the loss of the whole global batch and the
            # optimizer sums gradients over replicas: divide by R so that the update
            # is the single-device update on the same global batch.
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            replica_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        with tf.control_dependencies([loss]):  # after the input checks
            self.train_step_count.assign_add(1)
        return self._update_metrics(loss, on_diag, off_diag, z1)

    def test_step(self, data):
        # A fixed seed: the validation loss of one epoch compares with the next.
        view1, view2 = self.make_views(data, self._step_seed(-1))
        return self._update_metrics(*self._loss_terms(view1, view2, training=False))

    def make_views(self, data, seed):
        """The two views of a batch as given to `fit`: see the class docstring.

        Args:
            data: images, `(images, labels)`, or with `augmenter=None` `(x1, x2)`.
            seed: int32 `(2,)` stateless seed of the augmentation draws.

        Returns:
            `(view1, view2)`, float `(B, H, W, 3)` each.
        """
        if self.augmenter is None:
            views = (
                [view for view in data if view is not None]
                if isinstance(data, (tuple, list))
                else [data]
            )
            if len(views) != 2:
                raise ValueError(
                    "With `augmenter=None` the dataset must yield pairs of views "
                    f"`(x1, x2)`. Received {len(views)} tensor(s) per batch; pass "
                    "images to a model with an augmenter (e.g. augmenter='imagenet') "
                    "instead."
                )
            return tuple(validation.validate_images(view) for view in views)
        images = validation.checked_pixel_range(validation.images_of(data))
        return self.augmenter(images, seed=seed)

    def _step_seed(self, step):
        """The augmentation seed of (model seed, step, replica): int32 `(2,)`."""
        seed = tf.constant([self.seed, 0], tf.int32)
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int64))
        return augment_lib.fold_in_replica_id(seed)

    def _loss_terms(self, view1, view2, training):
        view1, view2 = validation.checked_replica_batch(view1, view2)
        z1 = self(view1, training=training)
        z2 = self(view2, training=training)
        on_diag, off_diag = losses.barlow_twins_terms(
            z1, z2, method=self.correlation_method
        )
        loss = self.scale_loss * (on_diag + self.lambd * off_diag)
        return loss, on_diag, off_diag, z1

    def _update_metrics(self, loss, on_diag, off_diag, z1):
        self.loss_tracker.update_state(loss)
        self.on_diag_tracker.update_state(on_diag)
        self.off_diag_tracker.update_state(off_diag)
        self.std_tracker.update_state(embedding_std(z1))
        logs = {metric.name: metric.result() for metric in self.metrics}
        if _on_several_workers(tf.distribute.get_strategy()):
            # Keras averages the step outputs of several workers with
            # `strategy.reduce("MEAN", value, axis=0)`, which needs an axis
            # (keras-team/keras#20585); the result is a scalar again.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "projector_dims": self.projector_dims,
            "lambd": self.lambd,
            "scale_loss": self.scale_loss,
            "augmenter": keras.saving.serialize_keras_object(self.augmenter),
            "correlation_method": self.correlation_method,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if isinstance(config["augmenter"], dict):
            config["augmenter"] = keras.saving.deserialize_keras_object(
                config["augmenter"]
            )
        return cls(**config)


def embedding_std(z):
    """Collapse indicator: std of the L2-normalized embeddings, times sqrt(D).

    About 1 for embeddings spread evenly over the sphere, 0 when they collapse to a
    point (Chen & He, 2021).

    Args:
        z: `(N, D)` embeddings, any float dtype.

    Returns:
        float32 scalar.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    dim = tf.cast(tf.shape(z)[-1], tf.float32)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0)) * tf.sqrt(dim)


def _on_several_workers(strategy):
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def _make_augmenter(augmenter, encoder):
    if augmenter is None:
        return None
    if isinstance(augmenter, keras.layers.Layer):
        if "seed" not in inspect.signature(augmenter.call).parameters:
            raise TypeError(
                "An augmenter layer must accept the step's seed: "
                "`call(images, seed=None)` returning (view1, view2), with its random "
                "draws taken from `seed` (an int32 tensor of shape (2,)) when given. "
                f"Received: {type(augmenter).__name__}, whose call has no `seed`."
            )
        return augmenter
    if isinstance(augmenter, str):
        image_size = validation.encoder_image_size(encoder)
        if image_size is None:
            raise ValueError(
                f"augmenter={augmenter!r} needs the encoder's input size, but the "
                "encoder has no fixed (height, width) input. Pass "
                "`augmenter=keras_barlow.BarlowTwinsAugment(image_size, preset)`."
            )
        return augment_lib.BarlowTwinsAugment(image_size, preset=augmenter)
    raise TypeError(
        "`augmenter` must be a layer returning (view1, view2), a preset name "
        f"or None. Received: {augmenter!r}"
    )
