"""Features of a frozen encoder, and the checks of feature and label arrays."""

import numpy as np
import tensorflow as tf

from keras_barlow import input_checks, preprocessing


def extract_features(encoder, dataset, preprocess="auto", batch_size=256):
    """Run the encoder over a dataset, batched on the device, in inference mode.

    Args:
        encoder: a `keras.Model` mapping normalized images `(B, H, W, 3)` to
            features `(B, F)`.
        dataset: a batched `tf.data.Dataset` of images or of `(images, labels)`,
            or a NumPy array of images (batched here with `batch_size`).
        preprocess: `"auto"`, a callable or `None`; see `keras_barlow.evaluation`.
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
        preprocess: `"auto"`, a callable or `None`; see `keras_barlow.evaluation`.

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
        images, batch_labels = _images_and_labels(element)
        features.append(features_of(images).numpy())
        if batch_labels is not None:
            labels.append(np.reshape(batch_labels.numpy(), (-1,)).astype(np.int64))
    if not features:
        raise ValueError("The dataset is empty: no features to extract.")
    return np.concatenate(features), (np.concatenate(labels) if labels else None)


def resolve_preprocess(encoder, preprocess="auto"):
    """The transform applied to images before the encoder (see the package docs)."""
    if preprocess is None:
        return tf.identity
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


def encoder_image_size(encoder):
    """The encoder's fixed `(height, width)`, which `preprocess="auto"` needs."""
    size = input_checks.encoder_image_size(encoder)
    if size is None:
        raise ValueError(
            "preprocess='auto' needs the encoder's input size, but the encoder has "
            "no fixed (height, width) input. Pass "
            "`preprocess=keras_barlow.Preprocessing(image_size)` (or `None` for "
            "images that are already normalized)."
        )
    return size


def _as_dataset(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        return data
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def _images_and_labels(element):
    if isinstance(element, (tuple, list)):
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


# ----------------------------------------------------------------------------------
# Checks of feature and label arrays (kNN, probe on features).


def train_and_test_arrays(train_features, train_labels, test_features, test_labels):
    """The four arrays as float32 features `(N, F)` and int64 labels `(N,)`."""
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


def num_classes_of(num_classes, *label_arrays):
    """`num_classes`, checked against the labels, or the largest label plus one."""
    largest = max(int(labels.max()) for labels in label_arrays)
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(
            f"Labels must be below `num_classes`. Received: label "
            f"{largest} with num_classes={num_classes}"
        )
    return int(num_classes)
