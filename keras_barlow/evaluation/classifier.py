"""The linear classifier of the probe and of fine-tuning, and its training transform.

`Classifier` is a linear layer on an optional encoder with the paper's SGD step;
`CropAndFlip` is the augmentation it trains with. `linear_probe` and `fine_tune`
build and train one (`training.py`).
"""

import keras
from keras import ops

from keras_barlow import _checks as checks
from keras_barlow import batches, distortions, image_ops
from keras_barlow.evaluation import features as features_lib
from keras_barlow.evaluation import inputs as inputs_lib


@keras.saving.register_keras_serializable(package="keras_barlow")
class Classifier(keras.Model):
    """A linear classifier, optionally on an encoder, with the paper's SGD step.

    `call(inputs, training)`: the training or test transform, the encoder (frozen
    and in inference mode, or fine-tuned), then `Dense(num_classes)` in float32.
    The loss is the cross-entropy plus `weight_decay / 2 * |w|^2`, whose gradient
    `wd * w` is PyTorch's SGD weight decay. The encoder's gradients are
    multiplied by `backbone_ratio`: with SGD this is exactly a learning rate of
    `backbone_ratio * lr` for the encoder (the momentum buffer scales alike),
    which Keras optimizers have no option for. A frozen encoder's weights are
    not trained variables of the classifier: the optimizer holds no state for
    them.

    Batches may be in any form of `keras_barlow.batches` with labels: `(images,
    labels)`, or full-resolution dicts `{"images", "image_sizes", "labels"}`. A
    `CropAndFlip` transform crops those within each image's true size; for any
    other transform they are resized whole to the encoder's input, as
    `keras_barlow.evaluation.extract_features` does.

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

    `compile` defaults to the sparse cross-entropy on logits and the metrics
    `top1` and `top5`. Saves to `.keras` when the transforms are Keras layers or
    `None` (as `linear_probe` and `fine_tune` make them).

    Example:

    ```python
    classifier = Classifier(10, encoder, test_transform=keras_barlow.Preprocessing(32))
    classifier.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    classifier.fit(images, labels, batch_size=256, epochs=10)
    ```
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
        identity = features_lib.identity
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

    def compile(self, optimizer="sgd", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile`, by default with the loss and metrics above."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = [
                keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(
                    k=min(5, self.num_classes), name="top5"
                ),
            ]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        _check_labels(y)
        return super().compute_loss(x, y, y_pred, sample_weight, **kwargs)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        _check_labels(y)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def build(self, input_shape):
        shape = input_shape
        if self.encoder is not None:
            if batches.is_full_resolution(shape):
                shape = (None, *features_lib.encoder_image_size(self.encoder), 3)
            elif hasattr(self.test_transform, "compute_output_shape"):
                shape = self.test_transform.compute_output_shape(shape)
            shape = self.encoder.compute_output_shape(shape)
        self.head.build(shape)

    def call(self, inputs, training=False):
        transform = self.train_transform if training else self.test_transform
        if isinstance(transform, CropAndFlip):  # crops full-resolution batches too
            features = transform(inputs)
        else:
            features = features_lib.encoder_inputs(inputs, transform, self.encoder)
        if self.encoder is not None:
            fine_tuning = self._fine_tuning(training)
            features = self.encoder(features, training=fine_tuning)
            if fine_tuning:
                features = _scale_gradient(features, self.backbone_ratio)
            else:
                features = ops.stop_gradient(features)
        logits = self.head(features)
        if training and self.weight_decay:
            self.add_loss(self._weight_decay_loss())
        return logits

    def _weight_decay_loss(self):
        """`wd / 2 * |w|^2`; the encoder's term also scaled by the ratio."""
        loss = _squared_norm(self.head.trainable_variables)
        if self._fine_tuning(True):
            ratio = self.backbone_ratio
            loss += ratio * _squared_norm(self.encoder.trainable_variables)
        return 0.5 * self.weight_decay * loss

    def _fine_tuning(self, training):
        return training and self.encoder is not None and self.backbone_ratio is not None

    # A frozen encoder's trainable weights count as non-trainable here, without
    # changing the encoder's own flags: Keras would otherwise build optimizer
    # state for them, and compute their (zero) gradients on JAX.
    @property
    def trainable_variables(self):
        return self._trained(super().trainable_variables)

    @property
    def trainable_weights(self):
        return self._trained(super().trainable_weights)

    @property
    def non_trainable_variables(self):
        return self._not_trained(self.variables, super().non_trainable_variables)

    @property
    def non_trainable_weights(self):
        return self._not_trained(self.weights, super().non_trainable_weights)

    def _frozen(self):
        """The ids of a frozen encoder's trainable variables."""
        if self.encoder is None or self.backbone_ratio is not None:
            return set()
        return {id(variable) for variable in self.encoder.trainable_variables}

    def _trained(self, trainable):
        frozen = self._frozen()
        return [variable for variable in trainable if id(variable) not in frozen]

    def _not_trained(self, everything, non_trainable):
        kept = self._frozen() | {id(variable) for variable in non_trainable}
        return [variable for variable in everything if id(variable) in kept]

    # Keras' own steps, on batches of any form: its TensorFlow steps take
    # `(data)`, its JAX steps `(state, data)`.
    def train_step(self, *state_and_data):
        *state, data = state_and_data
        return super().train_step(*state, _inputs_and_labels(data))

    def test_step(self, *state_and_data):
        *state, data = state_and_data
        return super().test_step(*state, _inputs_and_labels(data))

    def predict_step(self, *state_and_data):
        *state, data = state_and_data
        inputs, _ = _inputs_and_labels(data)
        return super().predict_step(*state, (inputs,))

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


def _check_labels(labels):
    if labels is None:
        raise ValueError(
            "The classifier trains and tests on labelled batches: (images, "
            f"labels) or full-resolution dicts with '{batches.LABELS}'. Received "
            "batches without labels."
        )


def _scale_gradient(x, factor):
    """`x` in value (exactly), with its gradient multiplied by `factor`."""
    constant = ops.stop_gradient(x)
    return constant + factor * (x - constant)


def _squared_norm(variables):
    return sum(ops.sum(ops.square(variable)) for variable in variables)


def _inputs_and_labels(data):
    """`(inputs, labels)` of a batch in any form; a lone `(x,)` is unwrapped.

    Also takes `(full-resolution dict, labels)`, as `fit(x=dict, y=labels)` and
    `training.keras_data` give them.
    """
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    if isinstance(data, (tuple, list)) and batches.is_full_resolution(data[0]):
        images, image_sizes, labels = batches.unpack(data[0])
        labels = data[1] if len(data) > 1 and data[1] is not None else labels
        data = batches.full_resolution_batch(images, image_sizes, labels)
    batch = batches.unpack(data)
    return inputs_lib.model_inputs(batch), batch.labels


def _serialized_transform(transform, name):
    if transform is features_lib.identity:
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


@keras.saving.register_keras_serializable(package="keras_barlow")
class CropAndFlip(keras.layers.Layer):
    """The training transform of the linear evaluation, from [0, 255] images.

    `RandomResizedCrop(size)` (scale 0.08-1, bicubic) and a horizontal flip with
    probability 0.5, then ImageNet normalization: torchvision's
    `RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize(...)`.

    Args:
        size: output height and width, int or `(height, width)`.
        seed: int seed of the random draws.

    Input shape: `(B, H, W, 3)` uint8 or float in [0, 255], or a full-resolution
    dict `{"images", "image_sizes"}` (see `keras_barlow.batches`), whose crops
    are drawn within each image's true size.
    Output shape: `(B, size[0], size[1], 3)` float32, normalized.
    """

    def __init__(self, size, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = checks.image_size("size", size)
        self.seed = seed
        self.crop = distortions.RandomResizedCrop(
            self.size, flip_probability=0.5, seed=seed
        )

    def build(self, input_shape):
        self.crop.build(batches.images_shape(input_shape))

    def call(self, inputs):
        images, image_sizes, _ = batches.unpack(inputs)
        images = image_ops.to_unit_range(batches.validate_images(images))
        if image_sizes is not None:
            images = batches.full_resolution_batch(images, image_sizes)
        return image_ops.normalize(self.crop(images))

    def compute_output_shape(self, input_shape):
        return (batches.images_shape(input_shape)[0], *self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "seed": self.seed}
