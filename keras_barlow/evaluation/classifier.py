"""The linear classifier of the probe and of fine-tuning, its transforms and training.

`Classifier` is a linear layer on an optional encoder with the paper's SGD step;
`linear_probe` and `fine_tune` build one with `classifier_for_encoder` and train it
with `train_and_test`.
"""

import dataclasses

import keras
import tensorflow as tf

from keras_barlow import _checks as checks
from keras_barlow import augment, image_ops, input_checks
from keras_barlow.evaluation import features


@dataclasses.dataclass
class ProbeResult:
    """What `linear_probe`, `linear_probe_on_features` and `fine_tune` return.

    Attributes:
        top1: test top-1 accuracy (a fraction), `None` without a test set.
        top5: test top-5 accuracy, `None` without a test set.
        classifier: the trained `keras.Model`; it maps what the datasets yield
            (raw images, or features for `linear_probe_on_features`) to logits.
        history: `History.history` of the training.
    """

    top1: float | None
    top5: float | None
    classifier: keras.Model = dataclasses.field(repr=False)
    history: dict = dataclasses.field(repr=False)


@keras.saving.register_keras_serializable(package="keras_barlow")
class Classifier(keras.Model):
    """A linear classifier, optionally on an encoder, with the paper's SGD step.

    `call(x, training)`: the training or test transform, the encoder (frozen and
    in inference mode, or fine-tuned), then `Dense(num_classes)` in float32.
    `train_step` adds `wd * w` to the gradients (PyTorch's SGD weight decay) and
    multiplies the encoder's gradients by `backbone_ratio`: with SGD this
    is exactly a learning rate of `backbone_ratio * lr` for the encoder (the
    momentum buffer scales alike), which Keras optimizers have no option for.

    Args:
        num_classes: number of classes.
        encoder: optional `keras.Model` producing features `(B, F)`.
        train_transform: applied to the inputs when training (default: none).
        test_transform: applied to the inputs otherwise (default: none).
        backbone_ratio: `None` to freeze the encoder, else the ratio of its
            learning rate to the classifier's.
        weight_decay: L2 weight decay of every trained weight.
        seed: seed of the classifier's initialization.

    Input: what the datasets yield. Output: float32 logits `(B, num_classes)`.

    Saves to `.keras` when the transforms are Keras layers or `None` (as
    `linear_probe` and `fine_tune` make them).
    """

    def __init__(
        self,
        num_classes,
        encoder=None,
        train_transform=None,
        test_transform=None,
        backbone_ratio=None,
        weight_decay=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = checks.integer("num_classes", num_classes, low=2)
        self.encoder = encoder
        identity = tf.identity
        self.train_transform = identity if train_transform is None else train_transform
        self.test_transform = identity if test_transform is None else test_transform
        self.backbone_ratio = backbone_ratio
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.head = keras.layers.Dense(
            num_classes,
            dtype="float32",
            name="linear",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=seed),
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.top1 = keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")
        self.top5 = keras.metrics.SparseTopKCategoricalAccuracy(
            k=min(5, num_classes), name="top5"
        )

    @property
    def metrics(self):
        return [self.loss_tracker, self.top1, self.top5]

    def build(self, input_shape):
        shape = input_shape
        if self.encoder is not None:
            if hasattr(self.test_transform, "compute_output_shape"):
                shape = self.test_transform.compute_output_shape(shape)
            shape = self.encoder.compute_output_shape(shape)
        self.head.build(shape)

    def call(self, inputs, training=False):
        transform = self.train_transform if training else self.test_transform
        features = transform(inputs)
        if self.encoder is not None:
            fine_tuning = training and self.backbone_ratio is not None
            features = self.encoder(features, training=fine_tuning)
            if not fine_tuning:
                features = tf.stop_gradient(features)
        return self.head(features)

    def train_step(self, data):
        inputs, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            logits = self(inputs, training=True)
            # Read after the call, which builds the head on the first step.
            variables = self._trained_variables()
            per_sample = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            # Both terms are divided by the number of replicas, whose gradients
            # the optimizer sums. The gradient of the decay term is wd * w.
            loss = tf.nn.compute_average_loss(per_sample)
            loss += tf.nn.scale_regularization_loss(
                self.weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in variables])
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        head_count = len(self.head.trainable_variables)
        gradients = gradients[:head_count] + [
            gradient * self.backbone_ratio for gradient in gradients[head_count:]
        ]
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(per_sample, labels, logits)

    def test_step(self, data):
        inputs, labels = data[0], data[1]
        logits = self(inputs, training=False)
        per_sample = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True
        )
        return self._update_metrics(per_sample, labels, logits)

    def _trained_variables(self):
        """The head's variables, then the encoder's when it is fine-tuned."""
        if self.encoder is None or self.backbone_ratio is None:
            return self.head.trainable_variables
        return self.head.trainable_variables + self.encoder.trainable_variables

    def compile_from_config(self, config):
        # Keras would build the optimizer on every trainable variable, a frozen
        # encoder's too, and then fail to match the saved optimizer state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self._trained_variables())

    def _update_metrics(self, per_sample, labels, logits):
        self.loss_tracker.update_state(per_sample)
        self.top1.update_state(labels, logits)
        self.top5.update_state(labels, logits)
        return {metric.name: metric.result() for metric in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "train_transform": _serialized_transform(self.train_transform, "train"),
            "test_transform": _serialized_transform(self.test_transform, "test"),
            "backbone_ratio": self.backbone_ratio,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "train_transform", "test_transform"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _serialized_transform(transform, name):
    if transform is tf.identity:
        return None
    if not isinstance(transform, keras.layers.Layer):
        raise TypeError(
            f"The {name} transform of this Classifier is a "
            f"{type(transform).__name__}, which cannot be saved. To save the "
            "classifier, make its transforms Keras layers (e.g. "
            "keras_barlow.Preprocessing or keras_barlow.evaluation.CropAndFlip),"
            " or save its weights with `save_weights`."
        )
    return keras.saving.serialize_keras_object(transform)


def classifier_for_encoder(
    encoder,
    train_ds,
    num_classes,
    preprocess,
    train_augment,
    seed,
    weight_decay,
    backbone_ratio,
):
    """A `Classifier` on `encoder` with the transforms that the arguments ask for."""
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            "`encoder` must be a keras.Model mapping images to features. "
            f"Received: {type(encoder).__name__}"
        )
    if num_classes is None:
        num_classes = _num_classes_in_dataset(train_ds)
    test_transform = features.resolve_preprocess(encoder, preprocess)
    if isinstance(train_augment, str) and train_augment != "auto":
        raise ValueError(
            "`train_augment` must be 'auto', a callable or None. "
            f"Received: train_augment={train_augment!r}"
        )
    if train_augment == "auto" and preprocess is None:
        train_augment = None  # ready inputs are not [0, 255] images to crop
    if train_augment == "auto":
        image_size = getattr(test_transform, "image_size", None)
        image_size = image_size or features.encoder_image_size(encoder)
        train_augment = CropAndFlip(image_size, seed=seed)
    if train_augment is None:
        train_augment = test_transform
    return Classifier(
        num_classes,
        encoder,
        train_transform=train_augment,
        test_transform=test_transform,
        backbone_ratio=backbone_ratio,
        weight_decay=weight_decay,
        seed=seed,
    )


def train_and_test(
    classifier, train_ds, test_ds, epochs, learning_rate, momentum, verbose
):
    """Compile with SGD and a cosine decay over `epochs`, fit, then test."""
    checks.positive_int("epochs", epochs)
    checks.positive("learning_rate", learning_rate)
    steps = epochs * _batches_per_pass(train_ds)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    classifier.compile(optimizer=keras.optimizers.SGD(schedule, momentum=momentum))
    history = classifier.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False)
    top1 = top5 = None
    if test_ds is not None:
        scores = classifier.evaluate(test_ds, verbose=verbose, return_dict=True)
        top1, top5 = float(scores["top1"]), float(scores["top5"])
    return ProbeResult(top1, top5, classifier, history.history)


@keras.saving.register_keras_serializable(package="keras_barlow")
class CropAndFlip(keras.layers.Layer):
    """The training transform of the linear evaluation, from [0, 255] images.

    `RandomResizedCrop(size)` (scale 0.08-1, bicubic) and a horizontal flip with
    probability 0.5, then ImageNet normalization: torchvision's
    `RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize(...)`.

    Args:
        size: output height and width, int or `(height, width)`.
        seed: int seed of the random draws.

    Input shape: `(B, H, W, 3)` uint8 or float in [0, 255].
    Output shape: `(B, size[0], size[1], 3)` float32, normalized.
    """

    def __init__(self, size, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = checks.image_size("size", size)
        self.seed = seed
        self.crop = augment.RandomResizedCrop(
            self.size, flip_probability=0.5, seed=seed
        )

    def build(self, input_shape):
        self.crop.build(input_shape)

    def call(self, images):
        images = image_ops.to_unit_range(input_checks.validate_images(images))
        return image_ops.normalize(self.crop(images))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "seed": self.seed}


def _num_classes_in_dataset(dataset):
    labels = dataset.map(lambda *element: tf.reduce_max(element[1]))
    return (
        int(
            labels.reduce(
                tf.constant(0, tf.int64),
                lambda a, b: tf.maximum(a, tf.cast(b, tf.int64)),
            )
        )
        + 1
    )


def _batches_per_pass(dataset):
    steps = int(dataset.cardinality())
    if steps < 0:
        raise ValueError(
            "The training dataset must have a known, finite number of batches for "
            "the cosine schedule. Received a dataset of unknown or infinite "
            "cardinality; use `dataset.apply(tf.data.experimental.assert_cardinality"
            "(n))` or avoid `filter`/`repeat()`."
        )
    return max(1, steps)
