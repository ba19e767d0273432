"""Tests of keras_barlow.data.selection: one class-balanced selector and rounding."""

import numpy as np
import pytest

from keras_barlow import data, evaluation


def _round_robin_reference(labels, limit):
    queues = {
        label: [i for i, value in enumerate(labels) if value == label]
        for label in sorted(set(labels))
    }
    chosen = []
    while len(chosen) < limit and any(queues.values()):
        for label in sorted(queues):
            if queues[label] and len(chosen) < limit:
                chosen.append(queues[label].pop(0))
    return sorted(chosen)


def test_stratified_split_is_stratified_disjoint_and_seeded():
    rng = np.random.default_rng(2)
    labels = rng.permutation(np.repeat([3, 7, 11, 20], [50, 30, 17, 3]))
    train, val = data.stratified_split(labels, val_fraction=0.2, seed=1)

    assert len(val) == round(0.2 * len(labels))
    assert not set(train) & set(val)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train, val])), np.arange(len(labels))
    )
    for label in np.unique(labels):
        share = 0.2 * np.sum(labels == label)
        assert abs(np.sum(labels[val] == label) - share) < 1.0, label

    again_train, again_val = data.stratified_split(labels, val_fraction=0.2, seed=1)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    _, other_val = data.stratified_split(labels, val_fraction=0.2, seed=2)
    assert not np.array_equal(val, other_val)
    _, counted = data.stratified_split(labels[:, None], val_count=7, seed=1)
    assert len(counted) == 7


def test_stratified_split_draws_as_the_first_release():
    # A changed draw would move the held-back images of runs that resume. Shares
    # 2.5, 1.5, 1.0 of 5: floors 2, 1, 1 and the one left to the first tie.
    labels = np.repeat([0, 1, 2], [5, 3, 2])
    rng = np.random.default_rng(4)
    expected = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels == label))[:quota]
                for label, quota in zip((0, 1, 2), (3, 1, 1), strict=True)
            ]
        )
    )
    np.testing.assert_array_equal(
        data.stratified_split(labels, val_count=5, seed=4)[1], expected
    )


def test_balanced_subset_is_round_robin():
    labels = [2, 0, 0, 2, 1, 0, 0, 2, 0]
    for limit in (1, 4, 5, 7, 20):
        np.testing.assert_array_equal(
            data.balanced_subset(labels, limit), _round_robin_reference(labels, limit)
        )


@pytest.mark.parametrize(
    "total, weights, capacity, expected",
    [
        (5, [1, 1, 1], [1, 9, 9], [1, 2, 2]),  # a full class: the rest shared again
        (7, [1, 1, 1], [9, 9, 9], [3, 2, 2]),  # ties go to the lower class
        (8, [400, 100, 250], [400, 100, 250], [4, 1, 3]),  # largest remainders
        (3, [5, 3, 2], [5, 3, 2], [1, 1, 1]),  # shares 1.5, 0.9, 0.6
        (10, [5, 3, 2], [5, 3, 2], [5, 3, 2]),
    ],
)
def test_apportion_is_exact_by_largest_remainders(total, weights, capacity, expected):
    quotas = data.apportion(total, np.array(weights), np.array(capacity))
    np.testing.assert_array_equal(quotas, expected)
    assert quotas.sum() == total


def test_select_by_class_takes_the_first_or_a_seeded_draw():
    labels = np.array([1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(data.select_by_class(labels, [2, 1]), [0, 1, 3])
    drawn = data.select_by_class(labels, [1, 3], seed=0)
    assert list(np.bincount(labels[drawn])) == [1, 3]
    np.testing.assert_array_equal(drawn, data.select_by_class(labels, [1, 3], seed=0))


def test_labeled_subset_is_class_balanced_and_deterministic():
    counts = [400, 100, 250]
    labels = np.random.default_rng(3).permutation(np.repeat([0, 1, 2], counts))
    subset = evaluation.labeled_subset(labels, 0.1, seed=7)
    np.testing.assert_array_equal(np.bincount(labels[subset]), [40, 10, 25])
    assert len(np.unique(subset)) == len(subset)
    same_seed = evaluation.labeled_subset(labels, 0.1, seed=7)
    np.testing.assert_array_equal(subset, same_seed)
    assert not np.array_equal(subset, evaluation.labeled_subset(labels, 0.1, seed=8))
    # 1% of 750 is 8 (7.5 rounded to even): exact, with stratified_split's rounding.
    np.testing.assert_array_equal(
        np.bincount(labels[evaluation.labeled_subset(labels, 0.01)]), [4, 1, 3]
    )
    # A class too small for its share still keeps one example.
    few = np.repeat([0, 1], [990, 10])
    np.testing.assert_array_equal(
        np.bincount(few[evaluation.labeled_subset(few, 0.01)]), [10, 1]
    )
    with pytest.raises(ValueError, match="fraction"):
        evaluation.labeled_subset(labels, 0.0)


def test_labeled_subset_and_stratified_split_share_the_selector():
    labels = np.random.default_rng(5).permutation(np.repeat([0, 1, 2], [40, 25, 10]))
    _, val = data.stratified_split(labels, val_count=15, seed=3)
    np.testing.assert_array_equal(evaluation.labeled_subset(labels, 0.2, seed=3), val)
