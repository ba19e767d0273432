"""Tests of which images keras_barlow.data's loaders yield, and in what order.

Subsets and the split seed, NumPy arrays in order and shuffled each epoch, epochs
keyed by their number (a resumed run sees the order of an unbroken one) and the
options every loader shares. References: the arrays themselves, PNG files written
from them (lossless) and `data.stratified_split`.
"""

import numpy as np
import pytest
from _data_helpers import collect_batches, encode_image

from keras_barlow import data

# ----------------------------------------------------------------------------------
# Subsets and splits.


def test_folder_subsets_are_disjoint_stratified_and_limited(tmp_path):
    counts = {"a": 12, "b": 8, "c": 4}
    for name, count in counts.items():
        (tmp_path / name).mkdir()
        for index in range(count):
            (tmp_path / name / f"{index:02d}.png").write_bytes(
                encode_image(np.full((4, 4, 3), index, np.uint8))
            )
    kwargs = dict(val_fraction=0.25, seed=5, batch_size=2, with_info=True)
    _, train_info = data.from_image_folder(tmp_path, subset="training", **kwargs)
    val, val_info = data.from_image_folder(tmp_path, subset="validation", **kwargs)

    assert not set(train_info.file_paths) & set(val_info.file_paths)
    assert len(train_info.file_paths) + len(val_info.file_paths) == sum(counts.values())
    _, val_labels = collect_batches(val)  # evaluation mode: nothing dropped, in order
    np.testing.assert_array_equal(np.bincount(val_labels), [3, 2, 1])

    limited, limited_info = data.from_image_folder(
        tmp_path, subset="training", limit_images=7, training=False, **kwargs
    )
    _, limited_labels = collect_batches(limited)
    np.testing.assert_array_equal(np.bincount(limited_labels), [3, 2, 2])
    assert set(limited_info.file_paths) <= set(train_info.file_paths)


def test_split_seed_fixes_the_held_back_images_whatever_the_shuffle_seed():
    images = np.arange(40, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    labels = np.repeat(np.arange(4), 10)

    def held_back(**kwargs):
        val = data.from_numpy(
            images, labels, batch_size=8, subset="validation", val_count=8, **kwargs
        )
        return collect_batches(val)[0][:, 0, 0, 0]

    for seed in (1, 2):
        np.testing.assert_array_equal(
            held_back(seed=seed, split_seed=0),
            data.stratified_split(labels, val_count=8)[1],
        )
        np.testing.assert_array_equal(
            held_back(seed=seed),
            data.stratified_split(labels, val_count=8, seed=seed)[1],
        )


# ----------------------------------------------------------------------------------
# NumPy arrays.


def test_from_numpy_order_labels_and_gray():
    images = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 3, 3), np.uint8)
    labels = (np.arange(10) % 3)[:, None]
    dataset = data.from_numpy(images, labels, batch_size=4, training=False)
    got_images, got_labels = collect_batches(dataset)

    np.testing.assert_array_equal(got_images, np.repeat(images[..., None], 3, axis=-1))
    np.testing.assert_array_equal(got_labels, labels[:, 0])
    assert got_labels.dtype == np.int32


def test_from_numpy_training_shuffles_each_epoch_and_drops_remainder():
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    dataset = data.from_numpy(images, batch_size=4, seed=7)
    epoch1, epoch2 = (
        collect_batches(dataset)[:, 0, 0, 0],
        collect_batches(dataset)[:, 0, 0, 0],
    )
    replay = collect_batches(data.from_numpy(images, batch_size=4, seed=7))[:, 0, 0, 0]

    assert len(epoch1) == 8 and len(set(epoch1)) == 8
    np.testing.assert_array_equal(epoch1, replay)
    assert not np.array_equal(epoch1, epoch2)


def test_loaders_share_one_set_of_options():
    images = np.zeros((8, 2, 2, 3), np.uint8)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        data.from_numpy(images, batchsize=4)
    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        data.Options(interpolation="cubic")
    options = data.Options(subset="validation", val_count=2, seed=5)
    assert (options.training, options.shuffle, options.split_seed) == (False, False, 5)
    assert data.Options(image_size=4).image_size == (4, 4)


# ----------------------------------------------------------------------------------
# Epochs keyed by their number.


def _epoch_batches(dataset, steps_per_epoch):
    """Image batches of a dataset keyed by epoch, grouped by epoch: [epoch][batch]."""
    batches = [
        element[0] if isinstance(element, tuple) else element
        for element in dataset.as_numpy_iterator()
    ]
    return [
        batches[start : start + steps_per_epoch]
        for start in range(0, len(batches), steps_per_epoch)
    ]


@pytest.mark.parametrize("source", ["numpy", "folder"])
def test_epochs_keyed_by_number_resume_in_the_uninterrupted_order(source, tmp_path):
    """A dataset rebuilt with initial_epoch=k yields what an unbroken run yields."""
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    if source == "folder":
        for index, image in enumerate(images):
            (tmp_path / f"class{index % 2}").mkdir(exist_ok=True)
            (tmp_path / f"class{index % 2}" / f"{index}.png").write_bytes(
                encode_image(image)
            )

    def build(**kwargs):
        kwargs = {"batch_size": 3, "seed": 7, "epochs": 4, **kwargs}
        if source == "numpy":
            return data.from_numpy(images, np.arange(10) % 2, **kwargs)
        return data.from_image_folder(tmp_path, **kwargs)

    unbroken, info = build(with_info=True)
    assert info.num_images == 10
    assert info.steps_per_epoch == 3  # 10 images, batches of 3: 9 used per epoch
    epochs = _epoch_batches(unbroken, 3)
    values = [np.concatenate(epoch)[:, 0, 0, 0] for epoch in epochs]
    assert len(epochs) == 4
    for epoch_values in values:  # 9 distinct images, whole batches only
        assert len(set(epoch_values)) == 9 and set(epoch_values) <= set(range(10))
    assert len({tuple(epoch_values) for epoch_values in values}) == 4, "reshuffle"
    np.testing.assert_array_equal(_epoch_batches(unbroken, 3), epochs)  # no state

    resumed = build(initial_epoch=2)
    np.testing.assert_array_equal(_epoch_batches(resumed, 3), epochs[2:])
    shorter = build(initial_epoch=1, steps_per_epoch=2)  # the first 2 of each epoch
    np.testing.assert_array_equal(
        _epoch_batches(shorter, 2), [epoch[:2] for epoch in epochs[1:]]
    )
    other_seed = _epoch_batches(build(seed=8), 3)
    assert not np.array_equal(other_seed, epochs)


def test_epochs_keyed_by_number_errors():
    images = np.zeros((10, 2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match=r"initial_epoch.*\[0, 3\).*initial_epoch=3"):
        data.from_numpy(images, batch_size=2, epochs=3, initial_epoch=3)
    with pytest.raises(ValueError, match="needs training=True"):
        data.from_numpy(images, batch_size=2, epochs=3, training=False)
    with pytest.raises(ValueError, match="5 full batches of 2"):
        data.from_numpy(images, batch_size=2, epochs=3, steps_per_epoch=6)
    with pytest.raises(ValueError, match="goes with `epochs`"):
        data.from_numpy(images, batch_size=2, steps_per_epoch=2)
