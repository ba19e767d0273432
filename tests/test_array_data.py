"""Tests of `keras_barlow.array_data`: what counts as arrays, and their batches."""

import keras
import numpy as np
import pytest

from keras_barlow import array_data, batches


def _images(count):
    return np.arange(count * 2 * 2 * 3, dtype=np.float32).reshape(count, 2, 2, 3)


@pytest.mark.core
@pytest.mark.parametrize(
    "data, expected",
    [
        (np.zeros((4, 2, 2, 3)), True),
        ((np.zeros((4, 2, 2, 3)), np.zeros(4)), True),
        ((np.zeros((4, 2, 2, 3)), None), True),
        (batches.full_resolution_batch(np.zeros((4, 2, 2, 3)), np.ones((4, 2))), True),
        ([np.zeros((4, 2, 2, 3))], False),  # a list of batches
        ([(np.zeros((4, 2, 2, 3)), np.zeros(4))], False),
        ((np.zeros((4, 2, 2, 3)), [1, 2, 3, 4]), False),
        ("images", False),
    ],
)
def test_is_arrays(data, expected):
    assert array_data.is_arrays(data) is expected


@pytest.mark.core
def test_tensors_of_other_frameworks_are_arrays():
    assert array_data.is_array(keras.ops.zeros((2, 3)))


@pytest.mark.core
def test_arrays_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match=r"lengths \[3, 4\]"):
        array_data.num_samples((_images(4), np.zeros(3)))


@pytest.mark.core
def test_batches_in_order_keep_every_sample_and_the_remainder():
    images, labels = _images(5), np.arange(5)
    got = list(array_data.ArrayBatches((images, labels), 2))
    assert [len(part[1]) for part in got] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), labels)
    assert np.shares_memory(got[0][0], images)  # a view, no copy


@pytest.mark.core
def test_drop_remainder_leaves_out_the_short_batch():
    got = list(array_data.ArrayBatches(_images(5), 2, drop_remainder=True))
    assert [len(batch) for batch in got] == [2, 2]
    with pytest.raises(IndexError):
        array_data.ArrayBatches(_images(5), 2, drop_remainder=True)[2]


@pytest.mark.core
def test_shuffled_batches_pair_rows_and_change_order_each_epoch():
    labels = np.arange(64)
    images = np.broadcast_to(labels[:, None, None, None], (64, 1, 1, 3)).copy()
    data = {"images": images, "image_sizes": np.ones((64, 2), np.int32)}
    data["labels"] = labels
    loader = array_data.ArrayBatches(data, 16, seed=0)
    orders = []
    for _ in range(2):
        seen = [batch for batch in loader]
        order = np.concatenate([batch["labels"] for batch in seen])
        for batch in seen:  # images and labels stay paired
            np.testing.assert_array_equal(batch["images"][:, 0, 0, 0], batch["labels"])
        assert sorted(order) == list(labels)
        orders.append(order)
        loader.on_epoch_end()
    assert not np.array_equal(orders[0], labels)
    assert not np.array_equal(orders[0], orders[1])


@pytest.mark.core
def test_a_shared_generator_gives_a_new_order_to_each_instance():
    rng = np.random.default_rng(0)
    first, second = (
        np.concatenate(list(array_data.ArrayBatches(np.arange(32), 8, seed=rng)))
        for _ in range(2)
    )
    assert sorted(first) == sorted(second) == list(range(32))
    assert not np.array_equal(first, second)
