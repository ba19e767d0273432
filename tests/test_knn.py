"""The weighted kNN of keras_barlow.evaluation against NumPy, on both backends.

The reference is InstDisc's rule written out one test sample at a time in
float64. It was checked once against the TensorFlow implementation of the first
releases (`tf.math.top_k` and `tf.math.unsorted_segment_sum`): the same ranked
classes on every sample of these tests. The tests require the same ranked
classes, and so the same accuracies, exactly.
"""

import numpy as np
import pytest

from keras_barlow import evaluation
from keras_barlow.evaluation import knn

pytestmark = pytest.mark.core


def numpy_ranked_classes(train, train_labels, test, k, temperature, num_classes):
    """InstDisc's weighted kNN: each test sample's classes by total vote, best first.

    The weights `exp(s / T)` are taken relative to the best neighbour's, and
    those below float32's smallest normal number count as 0, as in float32
    (with T = 0.005 the far neighbours' weights underflow; classes with no
    weight then rank by index).
    """
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    ranked = []
    for sample in test:
        similarity = train @ sample
        neighbours = np.argsort(-similarity, kind="stable")[:k]
        scores = np.zeros(num_classes)
        best = similarity[neighbours[0]]
        for index in neighbours:
            weight = np.exp((similarity[index] - best) / temperature)
            if weight >= np.finfo(np.float32).tiny:
                scores[train_labels[index]] += weight
        ranked.append(np.argsort(-scores, kind="stable")[: min(5, num_classes)])
    return np.array(ranked)


def clustered_data(rng, centers, count, noise):
    labels = rng.integers(0, len(centers), count)
    return centers[labels] + noise * rng.normal(size=(count, centers.shape[1])), labels


def knn_problem(seed=0, num_classes=8):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, 12))
    train, train_labels = clustered_data(rng, centers, 300, noise=1.5)
    test, test_labels = clustered_data(rng, centers, 101, noise=1.5)
    train[:, 0] += 0.3  # features that are not centered, as after a ReLU
    return train, train_labels, test, test_labels


@pytest.mark.parametrize(
    "k, temperature, chunk_size",
    [
        (20, 0.07, 16),  # several chunks, the last one partial
        (1, 0.1, None),
        (500, 1.0, 7),  # k above the number of training samples
        (50, 0.005, None),  # exp(1 / 0.005) overflows float32 without care
        (200, 0.1, None),  # the paper's setting
    ],
)
def test_knn_ranks_the_classes_of_the_numpy_reference_exactly(
    k, temperature, chunk_size
):
    train, train_labels, test, test_labels = knn_problem()
    expected = numpy_ranked_classes(
        train, train_labels, test, min(k, 300), temperature, 8
    )
    top1 = np.mean(expected[:, 0] == test_labels)
    assert 0.2 < top1 < 0.9  # neither trivial nor chance: errors would show
    settings = {"k": k, "temperature": temperature, "chunk_size": chunk_size}

    ranked = evaluation.knn_predict(train, train_labels, test, **settings)
    np.testing.assert_array_equal(ranked, expected)
    assert ranked.dtype == np.int64

    result = evaluation.knn_accuracy(train, train_labels, test, test_labels, **settings)
    assert result["top1"] == top1
    assert result["top5"] == np.mean((expected == test_labels[:, None]).any(axis=1))


def test_knn_in_small_blocks_equals_one_block(monkeypatch):
    train, train_labels, test, test_labels = knn_problem(seed=1)
    whole = evaluation.knn_predict(train, train_labels, test, k=30)
    # A block of 3 x 300 similarities: 34 chunks, as a large training set gets.
    monkeypatch.setattr(knn, "KNN_BLOCK_ELEMENTS", 3 * 300)
    np.testing.assert_array_equal(
        evaluation.knn_predict(train, train_labels, test, k=30), whole
    )


def test_knn_counts_classes_of_the_test_labels_too():
    # Test labels above every training label: a class that no neighbour votes
    # for, still a column of the ranking, as in the first releases.
    train, train_labels, test, test_labels = knn_problem(seed=2, num_classes=3)
    test_labels = test_labels.copy()
    test_labels[:5] = 6
    expected = numpy_ranked_classes(train, train_labels, test, 200, 0.1, 7)
    result = evaluation.knn_accuracy(train, train_labels, test, test_labels)
    assert result["top5"] == np.mean((expected == test_labels[:, None]).any(axis=1))


def test_knn_accuracy_validates_arguments():
    features, labels = np.ones((4, 3)), np.arange(4)
    with pytest.raises(ValueError, match="temperature"):
        evaluation.knn_accuracy(features, labels, features, labels, temperature=0)
    with pytest.raises(ValueError, match="one label per feature"):
        evaluation.knn_accuracy(features, labels[:3], features, labels)
    with pytest.raises(ValueError, match="same dimension"):
        evaluation.knn_accuracy(features, labels, np.ones((4, 5)), labels)
    with pytest.raises(ValueError, match="below `num_classes`"):
        evaluation.knn_accuracy(features, labels, features, labels, num_classes=2)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluation.knn_predict(features, labels, features, chunk_size=0)
    with pytest.raises(ValueError, match="shape \\(N, F\\)"):
        evaluation.knn_predict(features, labels, np.ones(3))
