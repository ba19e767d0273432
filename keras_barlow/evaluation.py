"""Evaluation of a pre-trained encoder: kNN, linear probe, semi-supervised fine-tuning.

The protocols of the self-supervised literature, as the Barlow Twins paper ran them:

* `knn_accuracy`: the weighted k-nearest-neighbour classifier of InstDisc (Wu et
  al., 2018) on cosine similarity, computed in chunks on the device so that
  50,000 x 10,000 features fit in memory. Needs no training: the usual way to
  follow a run (see `keras_barlow.callbacks.KNNMonitor`).
* `linear_probe`: a linear classifier on the frozen encoder, trained as in the
  paper's `evaluate.py` (SGD with momentum 0.9, cosine schedule, weight decay 1e-6,
  random resized crops and horizontal flips); `linear_probe_on_features` is the
  fast variant on cached features, without augmentation.
* `fine_tune` on a class-balanced subset from `labeled_subset`: the paper's
  semi-supervised setting (1% or 10% of the labels).

Images and preprocessing: datasets yield uint8 or float images in [0, 255], as
for `BarlowTwins.fit`, and the evaluation transform turns them into the encoder's
input (normalized float images). Every function takes `preprocess`:

* `"auto"` (the default): `keras_barlow.Preprocess(image_size)`, the encoder's input
  size, no crop (the CIFAR case: normalization only);
* a layer or callable, e.g. `keras_barlow.Preprocess(224, crop_fraction=0.875)` for
  the ImageNet resize-256 / center-crop-224 transform;
* `None`: the images are already preprocessed and go to the encoder unchanged.

Accuracies are fractions in [0, 1].
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_barlow import augment, validation

# Bound of the (test chunk x train) similarity block of `knn_accuracy`, in floats.
KNN_BLOCK_ELEMENTS = 2**25


# ----------------------------------------------------------------------------------
# Features.


def extract_features(encoder, dataset, preprocess="auto", batch_size=256):
    """Run the encoder over a dataset, batched on the device, in inference mode.

    Args:
        encoder: a `keras.Model` mapping normalized images `(B, H, W, 3)` to
            features `(B, F)`.
        dataset: a batched `tf.data.Dataset` of images or of `(images, labels)`,
            or a NumPy array of images (batched here with `batch_size`).
        preprocess: `"auto"`, a callable or `None`; see the module docstring.
        batch_size: batch size for NumPy input.

    Returns:
        `(features, labels)`: float32 NumPy `(N, F)` and int64 NumPy `(N,)`, or
        `None` for the labels when the dataset yields images only.

    Example:

    ```python
    features, labels = extract_features(model.encoder, test_ds)
    ```
    """
    return collect_features(feature_function(encoder, preprocess), dataset, batch_size)


def feature_function(encoder, preprocess="auto"):
    """A compiled function `images -> features` of the encoder in inference mode.

    Build it once and reuse it with `collect_features` when features are extracted
    repeatedly (as `KNNMonitor` does every epoch): each new function traces again.

    Args:
        encoder: see `extract_features`.
        preprocess: `"auto"`, a callable or `None`; see the module docstring.

    Returns:
        A `tf.function` mapping an image batch `(B, H, W, 3)` to float32 `(B, F)`.
    """
    transform = resolve_preprocess(encoder, preprocess)

    @tf.function(reduce_retracing=True)
    def features_of(images):
        features = encoder(transform(images), training=False)
        if features.shape.rank != 2:
            raise ValueError(
                "The encoder must return features of shape (batch_size, features). "
                f"Received: shape {features.shape}. End the encoder with a pooling "
                "layer such as keras.layers.GlobalAveragePooling2D."
            )
        return tf.cast(features, tf.float32)

    return features_of


def collect_features(features_of, dataset, batch_size=256):
    """Apply `features_of` (see `feature_function`) to every batch of `dataset`.

    Returns:
        `(features, labels)` as in `extract_features`.
    """
    features, labels = [], []
    for element in _as_dataset(dataset, batch_size):
        images, batch_labels = _split_element(element)
        features.append(features_of(images).numpy())
        if batch_labels is not None:
            labels.append(np.reshape(batch_labels.numpy(), (-1,)).astype(np.int64))
    if not features:
        raise ValueError("The dataset is empty: no features to extract.")
    return np.concatenate(features), (np.concatenate(labels) if labels else None)


def resolve_preprocess(encoder, preprocess="auto"):
    """The transform applied to images before the encoder (see the module docstring)."""
    if preprocess is None:
        return tf.identity
    if isinstance(preprocess, str):
        if preprocess != "auto":
            raise ValueError(
                "`preprocess` must be 'auto', a callable or None. "
                f"Received: preprocess={preprocess!r}"
            )
        return augment.Preprocess(_encoder_image_size(encoder))
    if not callable(preprocess):
        raise TypeError(
            f"`preprocess` must be 'auto', a callable or None. Received: {preprocess!r}"
        )
    return preprocess


# ----------------------------------------------------------------------------------
# Weighted kNN.


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k=200,
    temperature=0.1,
    num_classes=None,
    chunk_size=None,
):
    """Accuracy of the weighted kNN classifier on cosine similarity (InstDisc).

    For each test sample, the `k` training samples of highest cosine similarity
    `s` vote for their class with weight `exp(s / temperature)`; the class with the
    largest total weight is the prediction (Wu et al., 2018, the protocol of most
    self-supervised papers). Test samples are processed in chunks, so memory grows
    with `chunk_size x len(train)`, not `len(test) x len(train)`; the training
    features are held on the device whole (50,000 x 2,048 floats: 400 MB).

    Args:
        train_features: `(N, F)` features of the labelled reference set.
        train_labels: `(N,)` integer labels.
        test_features: `(M, F)` features to classify.
        test_labels: `(M,)` integer labels.
        k: neighbours per test sample (capped at `N`).
        temperature: softness of the vote, > 0.
        num_classes: number of classes; by default the largest label plus one.
        chunk_size: test samples per step; by default as many as keep the
            similarity block under 2**25 floats (128 MB).

    Returns:
        `{"top1": float, "top5": float}`, fractions of correctly classified test
        samples (top-5: the label is among the five classes of highest weight).

    Example:

    >>> train = np.random.normal(size=(100, 8))
    >>> labels = (train[:, 0] > 0).astype(int)
    >>> knn_accuracy(train, labels, train, labels, k=5)["top1"] > 0.8
    True
    """
    train_features, train_labels, test_features, test_labels = _train_and_test_arrays(
        train_features, train_labels, test_features, test_labels
    )
    if k < 1:
        raise ValueError(f"`k` must be at least 1. Received: k={k}")
    if temperature <= 0:
        raise ValueError(
            f"`temperature` must be > 0. Received: temperature={temperature}"
        )
    num_classes = _num_classes(num_classes, train_labels, test_labels)
    k = min(int(k), len(train_features))
    if chunk_size is None:
        chunk_size = max(1, KNN_BLOCK_ELEMENTS // len(train_features))

    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    train_labels = tf.constant(train_labels, tf.int32)
    correct_top1 = correct_top5 = 0
    for start in range(0, len(test_features), chunk_size):
        test = tf.math.l2_normalize(
            tf.constant(test_features[start : start + chunk_size], tf.float32), axis=1
        )
        scores = _knn_class_scores(
            test, train, train_labels, k, temperature, num_classes
        )
        labels = test_labels[start : start + chunk_size]
        top1, top5 = _correct_in_top_k(scores, labels)
        correct_top1, correct_top5 = correct_top1 + top1, correct_top5 + top5
    return {
        "top1": correct_top1 / len(test_features),
        "top5": correct_top5 / len(test_features),
    }


def _knn_class_scores(test, train, train_labels, k, temperature, num_classes):
    similarity = tf.matmul(test, train, transpose_b=True)  # chunk x N
    top_similarity, top_index = tf.math.top_k(similarity, k=k)  # chunk x k
    # Subtracting each row's best similarity rescales the row's weights by one
    # constant (same vote) and keeps exp() finite for small temperatures.
    weights = tf.exp((top_similarity - top_similarity[:, :1]) / temperature)
    neighbour_labels = tf.gather(train_labels, top_index)  # chunk x k
    rows = tf.range(tf.shape(test)[0])[:, None]
    scores = tf.math.unsorted_segment_sum(
        weights, rows * num_classes + neighbour_labels, tf.shape(test)[0] * num_classes
    )
    return tf.reshape(scores, (-1, num_classes))  # chunk x C


def _correct_in_top_k(scores, labels):
    """Counts of samples whose label is the best class, and among the best five."""
    _, best = tf.math.top_k(scores, k=min(5, scores.shape[-1]))
    hits = best.numpy() == np.asarray(labels)[:, None]
    return int(hits[:, 0].sum()), int(hits.any(axis=1).sum())


# ----------------------------------------------------------------------------------
# Collapse and redundancy indicators.


def effective_rank(embeddings):
    """Effective rank of a batch of embeddings (Roy & Vetterli, 2007).

    `exp(H(p))` with `p = sigma / sum(sigma)` the normalized singular values of the
    `(N, D)` embedding matrix, uncentered as in RankMe (Garrido et al., 2023). It
    lies between 1 (all embeddings on one line: collapse) and `min(N, D)` (all
    singular values equal).

    Args:
        embeddings: `(N, D)` tensor or array, any float dtype.

    Returns:
        float32 scalar tensor.

    Example:

    >>> float(effective_rank(np.eye(4)))  # doctest: +ELLIPSIS
    4.0...
    """
    singular_values = tf.linalg.svd(tf.cast(embeddings, tf.float32), compute_uv=False)
    p = singular_values / tf.maximum(tf.reduce_sum(singular_values), 1e-12)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(p), p))
    return tf.exp(entropy)


def mean_abs_off_diagonal(c):
    """Mean absolute value of the off-diagonal entries of a square matrix.

    On the cross-correlation matrix of the Barlow Twins loss it measures the
    redundancy left between embedding dimensions (0 when decorrelated).

    Args:
        c: `(D, D)` tensor or array with D >= 2.

    Returns:
        float32 scalar tensor.
    """
    c = tf.abs(tf.cast(c, tf.float32))
    dim = tf.cast(tf.shape(c)[0], tf.float32)
    off_diagonal_sum = tf.reduce_sum(c) - tf.reduce_sum(tf.linalg.diag_part(c))
    return off_diagonal_sum / (dim * dim - dim)


# ----------------------------------------------------------------------------------
# Linear probe and fine-tuning.


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


def linear_probe(
    encoder,
    train_ds,
    test_ds,
    num_classes=None,
    epochs=100,
    learning_rate=0.3,
    momentum=0.9,
    weight_decay=1e-6,
    preprocess="auto",
    train_augment="auto",
    seed=0,
    verbose=0,
):
    """Train and test a linear classifier on the frozen encoder.

    The paper's linear evaluation (`evaluate.py --lr-classifier 0.3`): a `Dense`
    layer initialized with N(0, 0.01) weights and zero bias, trained with SGD
    (momentum 0.9, weight decay 1e-6 added to the gradient as in PyTorch) and a
    cosine learning-rate decay to zero over `epochs`, on random resized crops
    (scale 0.08-1) with horizontal flips. The encoder runs in inference mode and
    is not changed. Tested on `preprocess`-ed images (no augmentation).

    Args:
        encoder: a `keras.Model` mapping normalized images to features `(B, F)`.
        train_ds: a batched `tf.data.Dataset` of `(images, labels)`, images uint8
            or float in [0, 255] with a fixed size, integer labels. The paper
            uses batches of 256.
        test_ds: the same for testing.
        num_classes: number of classes; by default found by reading the labels of
            `train_ds` once.
        epochs: training epochs.
        learning_rate: initial learning rate (0.3 in the paper for batch 256).
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the classifier.
        preprocess: the test transform: `"auto"`, a callable or `None` (see the
            module docstring).
        train_augment: the training transform: `"auto"` for random resized crops
            and flips at the encoder's input size (from [0, 255] images to
            normalized ones; with `preprocess=None`, inputs that are ready are
            not augmented), `None` to train on `preprocess`-ed images, or a
            callable.
        seed: seed of the classifier's initialization and the augmentation.
        verbose: verbosity of `fit`.

    Returns:
        A `ProbeResult` with test `top1` and `top5` accuracies.

    Example:

    ```python
    result = keras_barlow.evaluation.linear_probe(model.encoder, train_ds, test_ds,
                                                  num_classes=10)
    print(result.top1, result.top5)
    ```
    """
    classifier = _classifier_for_encoder(
        encoder,
        train_ds,
        num_classes,
        preprocess,
        train_augment,
        seed,
        weight_decay,
        backbone_ratio=None,
    )
    return _train_and_test(
        classifier, train_ds, test_ds, epochs, learning_rate, momentum, verbose
    )


def linear_probe_on_features(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes=None,
    epochs=100,
    batch_size=256,
    learning_rate=0.3,
    momentum=0.9,
    weight_decay=1e-6,
    seed=0,
    verbose=0,
):
    """The linear probe on cached features: fast, without augmentation.

    Same classifier and optimizer as `linear_probe`, trained on fixed features
    (e.g. from `extract_features`), so each epoch costs a few matrix products.
    Without augmentation it usually scores a little below `linear_probe`.

    Args:
        train_features, test_features: `(N, F)` and `(M, F)` float arrays.
        train_labels, test_labels: `(N,)` and `(M,)` integer arrays.
        num_classes: number of classes; by default the largest label plus one.
        epochs, learning_rate, momentum, weight_decay, seed, verbose: see
            `linear_probe`.
        batch_size: training batch size.

    Returns:
        A `ProbeResult`; its classifier maps features to logits.

    Example:

    ```python
    train = extract_features(encoder, train_ds)
    test = extract_features(encoder, test_ds)
    result = linear_probe_on_features(*train, *test)
    ```
    """
    train_features, train_labels, test_features, test_labels = _train_and_test_arrays(
        train_features, train_labels, test_features, test_labels
    )
    num_classes = _num_classes(num_classes, train_labels, test_labels)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((train_features, train_labels))
        .shuffle(len(train_labels), seed=seed)
        .batch(batch_size)
    )
    test_ds = tf.data.Dataset.from_tensor_slices((test_features, test_labels)).batch(
        batch_size
    )
    classifier = Classifier(num_classes, weight_decay=weight_decay, seed=seed)
    return _train_and_test(
        classifier, train_ds, test_ds, epochs, learning_rate, momentum, verbose
    )


def fine_tune(
    encoder,
    labeled_ds,
    test_ds=None,
    num_classes=None,
    epochs=20,
    backbone_learning_rate=0.005,
    classifier_learning_rate=0.5,
    momentum=0.9,
    weight_decay=0.0,
    preprocess="auto",
    train_augment="auto",
    seed=0,
    verbose=0,
):
    """Fine-tune the encoder with a linear classifier on labelled data.

    The paper's semi-supervised evaluation (`evaluate.py --weights finetune
    --epochs 20 --lr-backbone 0.005 --lr-classifier 0.5 --weight-decay 0`), usually
    on 1% or 10% of the labels (see `labeled_subset`): SGD with momentum 0.9, one
    learning rate for the encoder and another for the classifier, both decayed to
    zero with a cosine, random resized crops and flips; the encoder trains with
    its batch normalization in training mode.

    The encoder's weights are updated in place: keep a copy of the pre-trained
    weights (`encoder.get_weights()`) if you need them again.

    Args:
        encoder: a `keras.Model` mapping normalized images to features `(B, F)`.
        labeled_ds: a batched `tf.data.Dataset` of `(images, labels)` (see
            `linear_probe`), e.g. `dataset.take` of the `labeled_subset` indices.
        test_ds: optional dataset to report accuracies on.
        num_classes: see `linear_probe`.
        epochs: training epochs.
        backbone_learning_rate: initial learning rate of the encoder.
        classifier_learning_rate: initial learning rate of the linear layer.
        momentum, weight_decay, preprocess, train_augment, seed, verbose: see
            `linear_probe`.

    Returns:
        A `ProbeResult`; `top1`/`top5` are `None` without `test_ds`.

    Example:

    ```python
    indices = labeled_subset(labels, fraction=0.01, seed=0)
    subset = tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
    result = fine_tune(model.encoder, subset.shuffle(10_000).batch(256), test_ds)
    ```
    """
    if classifier_learning_rate <= 0:
        raise ValueError(
            "`classifier_learning_rate` must be > 0. Received: "
            f"classifier_learning_rate={classifier_learning_rate}"
        )
    ratio = backbone_learning_rate / classifier_learning_rate
    classifier = _classifier_for_encoder(
        encoder,
        labeled_ds,
        num_classes,
        preprocess,
        train_augment,
        seed,
        weight_decay,
        backbone_ratio=ratio,
    )
    return _train_and_test(
        classifier,
        labeled_ds,
        test_ds,
        epochs,
        classifier_learning_rate,
        momentum,
        verbose,
    )


def labeled_subset(labels, fraction, seed=0):
    """Indices of a class-balanced random subset of the labelled data.

    Every class keeps `round(fraction * count)` of its samples (at least one),
    drawn without replacement with a NumPy generator of the given seed, so the
    same labels, fraction and seed always give the same subset. The paper's
    semi-supervised setting uses `fraction=0.01` and `0.1`.

    Args:
        labels: `(N,)` integer labels.
        fraction: share of each class to keep, in (0, 1].
        seed: int seed.

    Returns:
        Sorted int64 NumPy array of indices into `labels`.

    Example:

    >>> labels = np.repeat(np.arange(10), 100)
    >>> len(labeled_subset(labels, 0.1, seed=0))
    100
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1]. Received: fraction={fraction}")
    labels = np.asarray(labels).reshape(-1)
    generator = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(fraction * len(members)))
        chosen.append(generator.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


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
        if num_classes < 2:
            raise ValueError(
                f"`num_classes` must be at least 2. Received: num_classes={num_classes}"
            )
        self.num_classes = num_classes
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
            "keras_barlow.augment.Preprocess or keras_barlow.evaluation.CropAndFlip),"
            " or save its weights with `save_weights`."
        )
    return keras.saving.serialize_keras_object(transform)


def _classifier_for_encoder(
    encoder,
    train_ds,
    num_classes,
    preprocess,
    train_augment,
    seed,
    weight_decay,
    backbone_ratio,
):
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            "`encoder` must be a keras.Model mapping images to features. "
            f"Received: {type(encoder).__name__}"
        )
    if num_classes is None:
        num_classes = _num_classes_in_dataset(train_ds)
    test_transform = resolve_preprocess(encoder, preprocess)
    if isinstance(train_augment, str) and train_augment != "auto":
        raise ValueError(
            "`train_augment` must be 'auto', a callable or None. "
            f"Received: train_augment={train_augment!r}"
        )
    if train_augment == "auto" and preprocess is None:
        train_augment = None  # ready inputs are not [0, 255] images to crop
    if train_augment == "auto":
        image_size = getattr(test_transform, "image_size", None)
        image_size = image_size or _encoder_image_size(encoder)
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


def _train_and_test(
    classifier, train_ds, test_ds, epochs, learning_rate, momentum, verbose
):
    for name, value in (("epochs", epochs), ("learning_rate", learning_rate)):
        if value <= 0:
            raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")
    steps = epochs * _steps_per_epoch(train_ds)
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
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.seed = seed
        self.crop = augment.RandomResizedCrop(
            self.size, flip_probability=0.5, seed=seed
        )

    def build(self, input_shape):
        self.crop.build(input_shape)

    def call(self, images):
        images = augment.to_unit_range(validation.validate_images(images))
        return augment.normalize(self.crop(images))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "seed": self.seed}


# ----------------------------------------------------------------------------------
# Helpers.


def _as_dataset(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        return data
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def _split_element(element):
    if isinstance(element, (tuple, list)):
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


def _encoder_image_size(encoder):
    size = validation.encoder_image_size(encoder)
    if size is None:
        raise ValueError(
            "preprocess='auto' needs the encoder's input size, but the encoder has "
            "no fixed (height, width) input. Pass "
            "`preprocess=keras_barlow.Preprocess(image_size)` (or `None` for "
            "images that are already normalized)."
        )
    return size


def _train_and_test_arrays(train_features, train_labels, test_features, test_labels):
    train_features, train_labels = _features_and_labels(
        train_features, train_labels, "train"
    )
    test_features, test_labels = _features_and_labels(
        test_features, test_labels, "test"
    )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            "Train and test features must have the same dimension. Received: "
            f"{train_features.shape[1]} and {test_features.shape[1]}."
        )
    return train_features, train_labels, test_features, test_labels


def _features_and_labels(features, labels, name):
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if features.ndim != 2:
        raise ValueError(
            f"`{name}_features` must have shape (N, F). "
            f"Received: shape {features.shape}"
        )
    if len(labels) != len(features):
        raise ValueError(
            f"`{name}_labels` must have one label per feature vector. Received: "
            f"{len(labels)} labels for {len(features)} features."
        )
    if len(labels) == 0:
        raise ValueError(f"`{name}_features` is empty.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(
            f"`{name}_labels` must be non-negative integers. "
            f"Received: dtype {labels.dtype}, minimum {labels.min()}"
        )
    return features, labels.astype(np.int64)


def _num_classes(num_classes, *label_arrays):
    largest = max(int(labels.max()) for labels in label_arrays)
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(
            f"Labels must be below `num_classes`. Received: label "
            f"{largest} with num_classes={num_classes}"
        )
    return int(num_classes)


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


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    if steps < 0:
        raise ValueError(
            "The training dataset must have a known, finite number of batches for "
            "the cosine schedule. Received a dataset of unknown or infinite "
            "cardinality; use `dataset.apply(tf.data.experimental.assert_cardinality"
            "(n))` or avoid `filter`/`repeat()`."
        )
    return max(1, steps)
