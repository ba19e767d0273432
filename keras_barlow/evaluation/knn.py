"""The weighted k-nearest-neighbour classifier of InstDisc (Wu et al., 2018)."""

import numpy as np
from keras import ops

from keras_barlow import _checks as checks
from keras_barlow.evaluation import features as features_lib

# Bound of the (test chunk x train) similarity block of `knn_accuracy`, in floats:
# 128 MiB, which also suits a GPU next to a large training set on it.
KNN_BLOCK_ELEMENTS = 2**25


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
    self-supervised papers). Computed with `keras.ops` on the backend's device
    (a GPU where there is one), test samples in chunks, so memory grows with
    `chunk_size x len(train)`, not `len(test) x len(train)`; the training
    features are held on the device whole.

    Args:
        train_features: `(N, F)` features of the labelled reference set.
        train_labels: `(N,)` integer labels.
        test_features: `(M, F)` features to classify.
        test_labels: `(M,)` integer labels.
        k: neighbours per test sample, a positive int (capped at `N`).
        temperature: softness of the vote, > 0.
        num_classes: number of classes; by default the largest label plus one.
        chunk_size: test samples per step; by default as many as keep the
            similarity block (and the class scores) under `KNN_BLOCK_ELEMENTS`
            floats.

    Returns:
        `{"top1": float, "top5": float}`, fractions of correctly classified test
        samples (top-5: the label is among the five classes of highest weight).

    Example:

    >>> train = np.random.normal(size=(100, 8))
    >>> labels = (train[:, 0] > 0).astype(int)
    >>> knn_accuracy(train, labels, train, labels, k=5)["top1"] > 0.8
    True
    """
    train_features, train_labels, test_features, test_labels = (
        features_lib.train_and_test_arrays(
            train_features, train_labels, test_features, test_labels
        )
    )
    ranked = knn_predict(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=features_lib.num_classes_of(num_classes, train_labels, test_labels),
        chunk_size=chunk_size,
    )
    hits = ranked == test_labels[:, None]
    return {
        "top1": int(hits[:, 0].sum()) / len(test_labels),
        "top5": int(hits.any(axis=1).sum()) / len(test_labels),
    }


def knn_predict(
    train_features,
    train_labels,
    test_features,
    k=200,
    temperature=0.1,
    num_classes=None,
    chunk_size=None,
):
    """The classes of the weighted kNN classifier, best first (see `knn_accuracy`).

    Args:
        train_features, train_labels, test_features, k, temperature, num_classes,
        chunk_size: see `knn_accuracy`; `num_classes` defaults to the largest
            training label plus one.

    Returns:
        int64 NumPy `(M, min(5, num_classes))`: for each test sample, the classes
        of largest total vote weight, in decreasing order (ties: lower class
        first).

    Example:

    >>> train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_predict(train, [0, 0, 1], np.array([[1.0, 0.05]]), k=2)[:, 0]
    array([0])
    """
    train_features, train_labels = features_lib.features_and_labels(
        train_features, train_labels, "train"
    )
    test_features = features_lib.features_array(test_features, "test")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            "Train and test features must have the same dimension. Received: "
            f"{train_features.shape[1]} and {test_features.shape[1]}."
        )
    k, temperature = check_knn_settings(k, temperature)
    num_classes = features_lib.num_classes_of(num_classes, train_labels)
    k = min(k, len(train_features))
    if chunk_size is None:
        block = max(len(train_features), num_classes)
        chunk_size = max(1, KNN_BLOCK_ELEMENTS // block)
    chunk_size = checks.positive_int("chunk_size", chunk_size)

    # F x N, on the device whole; transposed once, not at every chunk.
    train = ops.transpose(_l2_normalize(train_features))
    train_labels = ops.convert_to_tensor(train_labels, "int32")
    ranked = []
    for start in range(0, len(test_features), chunk_size):
        test = _l2_normalize(test_features[start : start + chunk_size])
        scores = _knn_class_scores(
            test, train, train_labels, k, temperature, num_classes
        )
        _, best = ops.top_k(scores, k=min(5, num_classes))
        ranked.append(ops.convert_to_numpy(best).astype(np.int64))
    return np.concatenate(ranked)


def check_knn_settings(k, temperature):
    """`(k, temperature)` checked: a positive int and a number > 0."""
    return checks.positive_int("k", k), checks.positive("temperature", temperature)


def _l2_normalize(features):
    """Rows scaled to unit length, as `tf.math.l2_normalize` computes them."""
    features = ops.convert_to_tensor(features, "float32")
    squared_norm = ops.sum(ops.square(features), axis=1, keepdims=True)
    return features * ops.rsqrt(ops.maximum(squared_norm, 1e-12))


def _knn_class_scores(test, train, train_labels, k, temperature, num_classes):
    """float32 `(chunk, num_classes)` total vote weight of each class.

    `test` is `(chunk, F)`, `train` the transposed training features `(F, N)`.
    """
    similarity = ops.matmul(test, train)  # chunk x N
    top_similarity, top_index = ops.top_k(similarity, k=k)  # chunk x k
    # Subtracting each row's best similarity rescales the row's weights by one
    # constant (same vote) and keeps exp() finite for small temperatures.
    weights = ops.exp((top_similarity - top_similarity[:, :1]) / temperature)
    neighbour_labels = ops.take(train_labels, top_index)  # chunk x k
    rows = test.shape[0]
    segments = ops.arange(rows, dtype="int32")[:, None] * num_classes
    scores = ops.segment_sum(
        ops.reshape(weights, (-1,)),
        ops.reshape(segments + neighbour_labels, (-1,)),
        num_segments=rows * num_classes,
    )
    return ops.reshape(scores, (rows, num_classes))
