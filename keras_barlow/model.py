"""The Barlow Twins model: encoder, projector, and a train step exact on R devices."""

import math
import random
import warnings

import keras
from keras import ops

from keras_barlow import (
    _backend,
    backbones,
    batches,
    fit_data,
    image_ops,
    input_checks,
    losses,
)
from keras_barlow import _checks as checks
from keras_barlow import augment as augment_lib
from keras_barlow._train_step import TrainStep
from keras_barlow.metrics import embedding_std


@keras.saving.register_keras_serializable(package="keras_barlow")
class Projector(keras.layers.Layer):
    """The projector MLP of the paper.

    `Dense(use_bias=False) -> BatchNormalization -> ReLU` for every layer but the
    last, then `Dense(use_bias=False)`. The batch normalization matches PyTorch's
    `BatchNorm1d` (epsilon 1e-5, momentum 0.1) and uses the statistics of the
    global batch, so the projector computes the same function on R devices as on
    one: synchronized across `tf.distribute` replicas on TensorFlow; on JAX,
    `DataParallel` runs one program on the global batch, where Keras' synchronized
    batch normalization does not exist and is not needed.

    Args:
        units: sizes of the layers, e.g. `(8192, 8192, 8192)`.

    Input shape: `(B, F)`. Output shape: `(B, units[-1])`.
    """

    def __init__(self, units=(8192, 8192, 8192), **kwargs):
        super().__init__(**kwargs)
        units = tuple(units)
        if not units:
            raise ValueError(
                "`units` must be a non-empty sequence of sizes. "
                f"Received: units={units}"
            )
        self.units = tuple(checks.positive_int("units", size) for size in units)
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
                        synchronized=_backend.BACKEND == "tensorflow",
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
class BarlowTwins(TrainStep, keras.Model):
    """Barlow Twins self-supervised pre-training (Zbontar et al., 2021).

    Two distorted views of each image go through the same encoder and projector;
    the loss makes the cross-correlation matrix of the two batches of embeddings
    close to the identity (see `keras_barlow.losses`).

    `model(images)` returns the projector embeddings; `model.encoder` is the
    network to keep after pre-training.

    It trains on Keras' TensorFlow and JAX backends. On R devices a step is the
    single-device step on the same global batch (global batch statistics, global
    cross-correlation, batch normalization of the global batch):

    * TensorFlow, under `MirroredStrategy` or `MultiWorkerMirroredStrategy`: the
      statistics and C are reduced across replicas, the train step divides the
      loss by R before the optimizer sums the replicas' gradients, and the
      projector's batch normalization is synchronized. An encoder of your own
      stays exact if its batch normalization is synchronized too
      (`keras_barlow.backbones` does it under a strategy). The global batch must
      split into equal per-replica batches of at least 2: batch the dataset with
      `drop_remainder=True` and a multiple of R.
    * JAX, under `keras.distribution.DataParallel`: one program runs on the
      global batch sharded over the devices; nothing else is needed.

    Augmentation draws depend on the seed, the step and (on TensorFlow) the
    replica, and differ between backends for the same seed.

    Args:
        encoder: a `keras.Model` mapping normalized float images `(B, H, W, 3)` to
            features `(B, F)`, e.g. `keras_barlow.backbones.ResNet50(...)`.
        projector_dims: sizes of the projector layers; the last is the
            embedding dimension D.
        lambd: weight of the off-diagonal (redundancy reduction) term, >= 0.
        scale_loss: overall factor of the loss, > 0 and finite.
        augmenter: how views are made from the input images: a layer whose
            `call(images, seed=None)` returns `(view1, view2)` drawn from `seed`
            (int32 `(2,)`, given by the train step) such as `BarlowTwinsAugment`,
            a preset name (`"imagenet"` or `"cifar"`) for a `BarlowTwinsAugment`
            of the encoder's input size, or `None` when the dataset yields
            pre-made view pairs `(x1, x2)`.
        correlation_method: `"auto"`, `"cross_correlation"` or `"gram"`; see
            `keras_barlow.losses.barlow_twins_terms`.
        seed: int seed of the augmentation draws. It initializes the variable
            `augment_seed`; the draws of a step depend on it, the step count
            (`train_step_count`) and the replica only, both saved with the
            weights, so a resumed run draws what an uninterrupted one would.

    Data for `fit` / `evaluate`: batches in a form of `keras_barlow.batches`:
    uint8 or float images in [0, 255] of shape `(B, H, W, 3)`, `(images,
    labels)` with the labels ignored, or the loaders' full-resolution dicts
    `{"images", "image_sizes"[, "labels"]}`; with `augmenter=None`, pairs
    `(x1, x2)` of ready views. They may come as NumPy arrays with `batch_size`,
    a `tf.data.Dataset`, a `keras.utils.PyDataset`, a Grain dataset, or (on
    JAX) any other iterable of batches such as a generator or a torch
    `DataLoader`; a generator, which is read once, for one epoch only. A batch
    that breaks the input rules (`keras_barlow.input_checks`) stops training
    before its step; a short last batch that does not split across replicas or
    devices is skipped with a warning, except from a `PyDataset`, where it
    stops (`keras_barlow.fit_data`).

    Example:

    ```python
    encoder = keras_barlow.backbones.ResNet18((32, 32, 3), stem="cifar")
    model = keras_barlow.BarlowTwins(encoder, projector_dims=(2048, 2048, 2048),
                                     augmenter="cifar")
    model.compile(optimizer=keras_barlow.optimizers.LARS(0.3))
    model.fit(images, batch_size=256, epochs=10)
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
        self.encoder = encoder
        self.projector = Projector(projector_dims, name="projector")
        self.projector_dims = self.projector.units
        self.lambd = float(checks.number("lambd", lambd, 0, math.inf, high_open=True))
        self.scale_loss = float(
            checks.number("scale_loss", scale_loss, 0, math.inf, True, high_open=True)
        )
        self.augmenter = augment_lib.make_augmenter(augmenter, encoder)
        self.correlation_method = checks.choice(
            "correlation_method", correlation_method, losses.METHODS
        )
        if seed is None and _backend.on_several_workers():
            raise ValueError(
                "Under MultiWorkerMirroredStrategy every worker must draw from the "
                "same augmentation seed. Received: seed=None, which draws a "
                "different one in each process. Pass seed=<int>, the same on every "
                "worker."
            )
        self._seed = random.randrange(2**31 - 1) if seed is None else int(seed)
        # The augmentation seed and step count are state, saved with the weights:
        # a restored model draws on without retracing. The count is not the
        # optimizer's `iterations`, which a LossScaleOptimizer does not advance on
        # a skipped step: the next step would repeat its views.
        self.augment_seed = None
        if self.augmenter is not None:
            self.augment_seed = self.add_weight(
                shape=(),
                dtype="int32",
                initializer=keras.initializers.Constant(self._seed),
                trainable=False,
                aggregation="only_first_replica",
                name="augment_seed",
            )
        self.train_step_count = self.add_weight(
            shape=(),
            dtype=_backend.COUNTER_DTYPE,
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="train_step_count",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.on_diag_tracker = keras.metrics.Mean(name="on_diag")
        self.off_diag_tracker = keras.metrics.Mean(name="off_diag")
        self.std_tracker = keras.metrics.Mean(name="embedding_std")
        encoder_shape = backbones.encoder_input_shape(encoder)
        if isinstance(encoder_shape, tuple) and len(encoder_shape) == 4:
            # Built now, from the encoder's input: Keras would otherwise build
            # the model from the first batch, whose images (before the crops) or
            # view pairs are not what the encoder takes.
            self.build(encoder_shape)
            if self.augmenter is not None and not self.augmenter.built:
                self.augmenter.build(encoder_shape)
        self._skipped_small_batch = False

    @property
    def seed(self):
        """int, the augmentation seed: the value of `augment_seed` when augmenting."""
        if self.augment_seed is None:
            return self._seed
        return int(ops.convert_to_numpy(self.augment_seed.value))

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.on_diag_tracker,
            self.off_diag_tracker,
            self.std_tracker,
        ]

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            # A full-resolution batch (a canvas): the encoder sees the views.
            input_shape = self.augmenter.compute_output_shape(input_shape)[0]
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if not self.projector.built:
            self.projector.build(self.encoder.compute_output_shape(input_shape))

    def call(self, images, training=None):
        """Projector embeddings `(B, D)` of normalized float images `(B, H, W, 3)`.

        A full-resolution batch (see `keras_barlow.batches`; Keras builds a model
        by calling it on the first batch) is embedded as each image's true
        region resized to the views' size.
        """
        if batches.is_full_resolution(images):
            size = self.augmenter.compute_output_shape(images)[0][1:3]
            images = image_ops.resized_true_regions(
                images[batches.IMAGES], images[batches.IMAGE_SIZES], size
            )
        return self.projector(
            self.encoder(images, training=training), training=training
        )

    def compile(self, *args, jit_compile="auto", **kwargs):
        """Keras' `compile`; `jit_compile` says whether the steps run under XLA.

        On one device the whole train step compiles, augmentation included, with
        any optimizer (it is built before the first step, which XLA could not
        compile). `"auto"` keeps Keras' rule: on TensorFlow XLA is off on a
        CPU-only machine, on for a single GPU, off under a `tf.distribute`
        strategy; on JAX the step is always compiled. `True` with more than one
        TensorFlow replica falls back to `False` with a warning: Keras compiles
        the step of all replicas as one XLA program, which cannot reach the other
        devices' variables (keras-team/keras#19005).

        XLA draws other random numbers than TensorFlow's kernels from the same
        seed: the views of a step, equally distributed, differ between
        `jit_compile=True` and `False`, so resume a run with the setting it
        started with to see the same views. On TensorFlow XLA also drops the
        run-time input checks of `keras_barlow.input_checks`.
        """
        replicas = self._replicas()
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
        input_checks.check_global_batch(x, self._replicas())
        input_checks.check_global_batch(kwargs.get("validation_data"), self._replicas())
        input_checks.check_not_empty(x)
        epochs = kwargs.get("epochs", args[2] if len(args) > 2 else 1)
        if epochs - kwargs.get("initial_epoch", 0) > 1 and not kwargs.get(
            "steps_per_epoch"
        ):
            input_checks.check_reiterable(x, "x", "at every epoch")
        if not fit_data.shuffled_by_keras(x):
            kwargs.setdefault("shuffle", False)  # Keras would warn that it ignores it
        skips = input_checks.is_tf_dataset(x) and not input_checks.static_batch_size(x)
        batch_size = kwargs.get("batch_size", args[1] if len(args) > 1 else None)
        x = self._prepared(x, batch_size, kwargs.get("shuffle", True))
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._prepared(
                kwargs["validation_data"],
                kwargs.get("validation_batch_size") or batch_size,
            )
        self._build_optimizer()
        steps_before = self._step_count()
        self._skipped_small_batch = False
        empty = input_checks.NO_SPLITTABLE_BATCH_MESSAGE if skips else None
        with warnings.catch_warnings():
            if kwargs.get("steps_per_epoch") is None:
                # Data of a size unknown until it ends (a dataset that skips
                # batches, a Grain dataset, an iterable) ends the first epoch
                # by running out, and Keras warns at that.
                warnings.filterwarnings("ignore", "Your input ran out of data")
            try:
                history = super().fit(x, *args, **kwargs)
            except ValueError as error:
                if empty and str(error) == input_checks.EMPTY_DATA_MESSAGE:
                    raise ValueError(empty) from None
                raise
        if history.epoch and self._step_count() == steps_before:
            # No step was taken: data of unknown size that turned out empty
            # (Keras only warns), or only batches too small to train on.
            if self._skipped_small_batch:
                raise ValueError(input_checks.TOO_SMALL_BATCHES_MESSAGE)
            raise ValueError(empty or input_checks.EMPTY_DATA_MESSAGE)
        return history

    def evaluate(self, x=None, *args, **kwargs):
        input_checks.check_global_batch(x, self._replicas())
        batch_size = kwargs.get("batch_size", args[1] if len(args) > 1 else None)
        return super().evaluate(self._prepared(x, batch_size), *args, **kwargs)

    def _prepared(self, x, batch_size=None, shuffle=False):
        """`x` made ready for a step: see `keras_barlow.fit_data.prepared`."""
        return fit_data.prepared(
            x,
            self._replicas(),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=self._seed,
            host_checks=self.augmenter is not None,
        )

    def _replicas(self):
        """Replicas of the strategy the model was built in (1 on JAX)."""
        if _backend.BACKEND != "tensorflow":
            return 1
        return _backend.num_replicas(self.distribute_strategy)

    def _build_optimizer(self):
        """Build the optimizer's variables now, in the model's strategy.

        Keras builds them in the first step, which a step compiled by XLA
        (`jit_compile=True`) cannot do: TensorFlow fails to lift the variable
        creation out of the compiled function.
        """
        if not self.built or getattr(self, "optimizer", None) is None:
            return
        if self.optimizer.built:
            return
        if _backend.BACKEND == "tensorflow":
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        else:
            self.optimizer.build(self.trainable_variables)

    def _step_count(self):
        return int(ops.convert_to_numpy(self.train_step_count.value))

    def make_views(self, data, seed):
        """The two views of a batch as given to `fit`: see the class docstring.

        Args:
            data: a batch in a form of `keras_barlow.batches` (images,
                `(images, labels)` or a full-resolution dict), or with
                `augmenter=None` a pair of views `(x1, x2)`.
            seed: int32 `(2,)` stateless seed of the augmentation draws.

        Returns:
            `(view1, view2)`, float `(B, H, W, 3)` each.
        """
        if self.augmenter is None:
            return batches.ready_views(data)
        images, image_sizes, _ = batches.unpack(data)
        images = input_checks.checked_pixel_range(images)
        if image_sizes is None:
            return self.augmenter(images, seed=seed)
        if not isinstance(self.augmenter, augment_lib.BarlowTwinsAugment):
            raise ValueError(
                "Full-resolution batches (images padded to a canvas, with "
                f"'{batches.IMAGE_SIZES}') need an augmenter that crops each "
                f"image's true region. Received: {type(self.augmenter).__name__}. "
                "Use keras_barlow.BarlowTwinsAugment (or a subclass), or load "
                "the data with `full_resolution=False`."
            )
        return self.augmenter(
            batches.full_resolution_batch(images, image_sizes), seed=seed
        )

    def _step_seed(self, step):
        """The augmentation seed of (model seed, step, replica): int32 `(2,)`.

        None without an augmenter, which draws nothing.
        """
        if self.augment_seed is None:
            return None
        seed = ops.stack([ops.cast(self.augment_seed, "int32"), 0])
        return _backend.fold_in_replica_id(_backend.fold_in(seed, step))

    def _loss_terms(self, view1, view2, training):
        """`(loss, on_diag, off_diag, z1)` of a pair of views `(n, H, W, 3)`."""
        view1, view2 = input_checks.checked_replica_batch(view1, view2)
        z1 = self(view1, training=training)
        z2 = self(view2, training=training)
        on_diag, off_diag = losses.barlow_twins_terms(
            z1, z2, method=self.correlation_method
        )
        loss = self.scale_loss * (on_diag + self.lambd * off_diag)
        return loss, on_diag, off_diag, z1

    def _update_metrics(self, loss, on_diag, off_diag, z1):
        """Update the trackers and return the logs of the step."""
        self.loss_tracker.update_state(loss)
        self.on_diag_tracker.update_state(on_diag)
        self.off_diag_tracker.update_state(off_diag)
        self.std_tracker.update_state(embedding_std(z1))
        logs = {metric.name: metric.result() for metric in self.metrics}
        if _backend.on_several_workers():
            # Keras averages the step outputs of several workers with
            # `strategy.reduce("MEAN", value, axis=0)`, which needs an axis
            # (keras-team/keras#20585); the result is a scalar again.
            logs = {name: ops.reshape(value, [1]) for name, value in logs.items()}
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
