"""Features of a frozen encoder, and the checks of feature and label arrays."""

import sys

import keras
import numpy as np

from keras_barlow import backbones, batches, image_ops, input_checks, preprocessing
from keras_barlow.evaluation import inputs as inputs_lib


def extract_features(encoder, dataset, preprocess="auto", batch_size=256):
    """Run the encoder over a dataset, batched on the device, in inference mode.

    Full-resolution batches (dicts of images on a canvas, as the training loaders
    of `keras_barlow.data` make them) are embedded whole: each image's true
    region resized to the encoder's input size and normalized
    (`keras_barlow.image_ops.resized_true_regions`), whatever `preprocess` is.

    Args:
        encoder: a `keras.Model` mapping normalized images `(B, H, W, 3)` to
            features `(B, F)`.
        dataset: batches of images, of `(images, labels)` or full-resolution
            dicts, in any form of `keras_barlow.evaluation.inputs`: a batched
            `tf.data.Dataset`, NumPy arrays (batched here with `batch_size`), or
            any iterable of batches (a list, a generator, a
            `keras.utils.PyDataset`, a Grain dataset, a torch `DataLoader`).
        preprocess: `"auto"`, a callable or `None`; see `keras_barlow.evaluation`.
        batch_size: batch size for arrays.

    Returns:
        `(features, labels)`: float32 NumPy `(N, F)` and int64 NumPy `(N,)`, or
        `None` for the labels when the batches have none.

    Raises:
        ValueError: on empty data, or an encoder whose output is not `(B, F)`.

    Example:

    ```python
    features, labels = extract_features(model.encoder, (images, labels))
    ```
    """
    return collect_features(feature_function(encoder, preprocess), dataset, batch_size)


def feature_function(encoder, preprocess="auto"):
    """A compiled function from a batch's inputs to the encoder's features.

    Build it once and reuse it with `collect_features` when features are extracted
    repeatedly (as `KNNMonitor` does every epoch): each new function compiles
    again. The function reads the encoder's current weights at every call.

    Args:
        encoder: see `extract_features`.
        preprocess: `"auto"`, a callable or `None`; see `keras_barlow.evaluation`.

    Returns:
        A function mapping images `(B, H, W, 3)` or a full-resolution dict
        `{"images", "image_sizes"}` to float32 NumPy features `(B, F)`, with the
        encoder in inference mode. Pixels the library normalizes (`"auto"`, a
        `Preprocessing`, full-resolution batches) must follow the pixel rule of
        training (`keras_barlow.input_checks`): a `ValueError` otherwise.
    """
    transform = resolve_preprocess(encoder, preprocess)

    def embed(inputs, call_encoder):
        return call_encoder(encoder_inputs(inputs, transform, encoder))

    compiled = _compile(encoder, embed)
    library_pixels = isinstance(transform, preprocessing.Preprocessing)

    def features_of(inputs):
        images, image_sizes, _ = batches.unpack(inputs)
        if library_pixels or image_sizes is not None:
            # The library normalizes these pixels: the rule of training applies.
            input_checks.check_pixel_range(images)
        features = compiled(inputs)
        if features.ndim != 2:
            raise ValueError(
                "The encoder must return features of shape (batch_size, features). "
                f"Received: shape {features.shape}. End the encoder with a pooling "
                "layer such as keras.layers.GlobalAveragePooling2D."
            )
        return features.astype(np.float32)

    return features_of


def collect_features(features_of, dataset, batch_size=256):
    """Apply `features_of` (see `feature_function`) to every batch of `dataset`.

    Returns:
        `(features, labels)` as in `extract_features`.
    """
    features, labels = [], []
    for batch in inputs_lib.iterate_batches(dataset, batch_size):
        features.append(features_of(inputs_lib.model_inputs(batch)))
        if batch.labels is not None:
            labels.append(batch.labels.astype(np.int64))
    if not features:
        raise ValueError("The dataset is empty: no features to extract.")
    features = np.concatenate(features)
    labels = np.concatenate(labels) if labels else None
    if labels is not None and len(labels) != len(features):
        raise ValueError(
            f"Some batches have labels and others not: {len(labels)} labels for "
            f"{len(features)} images. Give labels with every batch or with none."
        )
    return features, labels


def encoder_inputs(inputs, transform, encoder):
    """What the encoder takes: `transform(images)`, or a full-resolution batch resized.

    Args:
        inputs: images `(B, H, W, 3)`, or a full-resolution dict.
        transform: the evaluation transform of images (see `resolve_preprocess`).
        encoder: the encoder, whose input size a full-resolution batch is
            resized to.

    Returns:
        float32 `(B, H', W', 3)`.
    """
    images, image_sizes, _ = batches.unpack(inputs)
    if image_sizes is None:
        return transform(images)
    size = getattr(transform, "image_size", None) or encoder_image_size(encoder)
    return image_ops.resized_true_regions(images, image_sizes, size)


def resolve_preprocess(encoder, preprocess="auto"):
    """The transform applied to images before the encoder (see the package docs)."""
    if preprocess is None:
        return identity
    if isinstance(preprocess, str):
        if preprocess != "auto":
            raise ValueError(
                "`preprocess` must be 'auto', a callable or None. "
                f"Received: preprocess={preprocess!r}"
            )
        return preprocessing.Preprocessing(encoder_image_size(encoder))
    if not callable(preprocess):
        raise TypeError(
            f"`preprocess` must be 'auto', a callable or None. Received: {preprocess!r}"
        )
    return preprocess


def identity(inputs):
    """The transform of inputs that are ready for the encoder."""
    return inputs


def encoder_image_size(encoder):
    """The encoder's fixed `(height, width)`, which `preprocess="auto"` needs."""
    size = backbones.encoder_image_size(encoder)
    if size is None:
        raise ValueError(
            "preprocess='auto' and full-resolution batches need the encoder's input "
            "size, but the encoder has no fixed (height, width) input. Pass "
            "`preprocess=keras_barlow.Preprocessing(image_size)` (or `None` for "
            "images that are already normalized)."
        )
    return size


def _compile(encoder, embed):
    """`embed(inputs, call_encoder)` compiled, with the encoder in inference mode.

    TensorFlow: a `tf.function`, as the first releases ran it. JAX: a jitted
    function of the encoder's current variables, which it takes as arguments
    (variables read inside a jitted function would be frozen into it).

    Returns:
        A function of the inputs that returns a NumPy array.
    """
    if keras.backend.backend() != "jax":
        tf = sys.modules["tensorflow"]  # the backend's own
        step = tf.function(
            lambda inputs: embed(inputs, lambda x: encoder(x, training=False)),
            reduce_retracing=True,
        )
        return lambda inputs: step(inputs).numpy()

    import jax

    @jax.jit
    def step(trainable, non_trainable, inputs):
        def call_encoder(x):
            features, _ = encoder.stateless_call(
                trainable, non_trainable, x, training=False
            )
            return features

        return embed(inputs, call_encoder)

    def run(inputs):
        if not encoder.built:  # a subclassed encoder never called: build it here
            features = embed(inputs, lambda x: encoder(x, training=False))
            return keras.ops.convert_to_numpy(features)
        trainable = [v.value for v in encoder.trainable_variables]
        non_trainable = [v.value for v in encoder.non_trainable_variables]
        return np.asarray(step(trainable, non_trainable, inputs))

    return run


# ----------------------------------------------------------------------------------
# Checks of feature and label arrays (kNN, probe on features).


def train_and_test_arrays(train_features, train_labels, test_features, test_labels):
    """The four arrays as float32 features `(N, F)` and int64 labels `(N,)`."""
    train_features, train_labels = features_and_labels(
        train_features, train_labels, "train"
    )
    test_features, test_labels = features_and_labels(test_features, test_labels, "test")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            "Train and test features must have the same dimension. Received: "
            f"{train_features.shape[1]} and {test_features.shape[1]}."
        )
    return train_features, train_labels, test_features, test_labels


def features_and_labels(features, labels, name):
    """Checked float32 features `(N, F)` and int64 labels `(N,)` of `name`."""
    features = features_array(features, name)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(features):
        raise ValueError(
            f"`{name}_labels` must have one label per feature vector. Received: "
            f"{len(labels)} labels for {len(features)} features."
        )
    return features, class_labels(labels, f"`{name}_labels`")


def class_labels(labels, what):
    """`labels` as int64 `(N,)`, checked to be class indices: integers >= 0.

    Args:
        labels: `(N,)` array of any dtype, N >= 1.
        what: what the labels are, for the message, e.g. "`train_labels`".
    """
    labels = np.asarray(labels).reshape(-1)
    integers = np.issubdtype(labels.dtype, np.integer)
    if not integers or labels.min() < 0:
        smallest = f", minimum {labels.min()}" if integers else ""
        raise ValueError(
            f"{what} must be class indices: integers from 0. "
            f"Received: dtype {labels.dtype}{smallest}. Map class names or other "
            "values to indices 0 to C-1, and cast whole-number labels to int."
        )
    return labels.astype(np.int64)


def features_array(features, name):
    """Checked non-empty float32 features `(N, F)` of `name`."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(
            f"`{name}_features` must have shape (N, F). "
            f"Received: shape {features.shape}"
        )
    if len(features) == 0:
        raise ValueError(f"`{name}_features` is empty.")
    if not np.isfinite(features).all():
        raise ValueError(
            f"`{name}_features` hold NaN or Inf ({np.sum(~np.isfinite(features))} "
            "values): check the encoder's weights and its input pixels."
        )
    return features


def num_classes_of(num_classes, *label_arrays):
    """`num_classes`, checked against the labels, or the largest label plus one."""
    largest = max(int(labels.max()) for labels in label_arrays)
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(
            f"Labels must be below `num_classes`. Received: label {largest} with "
            f"num_classes={num_classes}. Pass num_classes={largest + 1} or more, "
            "or None to count the classes from the labels."
        )
    return int(num_classes)
