"""The weighted k-nearest-neighbour classifier of InstDisc (Wu et al., 2018)."""

import numpy as np
import tensorflow as tf

from keras_barlow import _checks as checks
from keras_barlow.evaluation import features as features_lib

# Bound of the (test chunk x train) similarity block of `knn_accuracy`, in floats.
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
    self-supervised papers). Test samples are processed in chunks, so memory grows
    with `chunk_size x len(train)`, not `len(test) x len(train)`; the training
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
            similarity block under `KNN_BLOCK_ELEMENTS` floats.

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
    k, temperature = check_knn_settings(k, temperature)
    num_classes = features_lib.num_classes_of(num_classes, train_labels, test_labels)
    k = min(k, len(train_features))
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


def check_knn_settings(k, temperature):
    """`(k, temperature)` checked: a positive int and a number > 0."""
    return checks.positive_int("k", k), checks.positive("temperature", temperature)


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
