"""Tests of keras_barlow.data.from_tfds.

TFDS runs on `tfds.testing.mock_data` (offline, real TFDS code paths) and is
compared with a plain `tfds.load`; with the network cut off, it must fail fast
with a hint.
"""

import time

import numpy as np
import pytest
from _data_helpers import collect_batches

from keras_barlow import data
from keras_barlow.data import tfds_loader


def test_from_tfds_matches_tfds_load(tfds):
    with tfds.testing.mock_data(num_examples=20):
        dataset, info = data.from_tfds(
            "cifar10", "train", batch_size=8, training=False, with_info=True
        )
        images, labels = collect_batches(dataset)
        reference = list(tfds.load("cifar10", split="train", shuffle_files=False))
        names = tfds.builder("cifar10").info.features["label"].names
        training = data.from_tfds("cifar10", "train", batch_size=8, seed=1)
        train_images, _ = collect_batches(training)
        limited = data.from_tfds(
            "cifar10", "train", batch_size=5, training=False, limit_images=5
        )
        _, limited_labels = collect_batches(limited)

    np.testing.assert_array_equal(images, [example["image"] for example in reference])
    np.testing.assert_array_equal(labels, [example["label"] for example in reference])
    assert labels.dtype == np.int32 and images.dtype == np.uint8
    assert info.class_names == names and len(names) == 10
    assert (info.num_images, info.steps_per_epoch, info.image_size) == (
        20,
        None,
        (32, 32),
    )
    assert train_images.shape == (16, 32, 32, 3)  # 20 examples, drop_remainder
    reference_labels = [int(example["label"]) for example in reference]
    first_of_each = sorted(
        {
            label: index for index, label in reversed(list(enumerate(reference_labels)))
        }.values()
    )
    np.testing.assert_array_equal(
        limited_labels, [reference_labels[i] for i in first_of_each[:5]]
    )


def test_from_tfds_grayscale_becomes_rgb_and_resizes(tfds):
    with tfds.testing.mock_data(num_examples=6):
        images, _ = collect_batches(
            data.from_tfds("mnist", "test", batch_size=6, training=False)
        )
        resized, _ = collect_batches(
            data.from_tfds(
                "mnist", "test", image_size=(8, 8), batch_size=3, full_resolution=False
            )
        )
        with pytest.raises(ValueError, match="has no feature 'caption'"):
            data.from_tfds("mnist", "test", label_key="caption")
        with pytest.raises(ValueError, match="batch_size`=64 is larger than the 6"):
            data.from_tfds("mnist", "test", batch_size=64)

    assert images.shape == (6, 28, 28, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert resized.shape == (6, 8, 8, 3)


def test_from_tfds_refuses_the_options_of_whole_label_arrays(tfds):
    with pytest.raises(ValueError, match=r"does not take \['subset', 'val_count'\]"):
        data.from_tfds("mnist", "test", subset="training", val_count=10)


def test_tfds_builder_reaches_its_download_urls():
    # The download path imports `importlib_resources` (tfds 4.9 does not declare
    # it): a missing package fails here with ModuleNotFoundError.
    tfds = pytest.importorskip("tensorflow_datasets")
    urls = tfds.builder("cifar10").url_infos
    assert any("cifar-10" in url for url in urls)


def test_from_tfds_offline_fails_fast_with_the_local_path_hint(
    tfds, tmp_path, monkeypatch
):
    def no_network(address, *args, **kwargs):
        raise OSError(f"[Errno 101] Network is unreachable: {address}")

    def no_download(*args, **kwargs):
        raise AssertionError("TFDS started a download: it retries for minutes")

    monkeypatch.setattr(tfds_loader.socket, "create_connection", no_network)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="Pass a local path instead") as error:
        data.from_tfds("cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - start < 60
    assert "www.cs.toronto.edu" in str(error.value)
    assert "--data PATH" in str(error.value)
