"""Tests of keras_barlow.data against references built in the tests.

The image folder is written here from NumPy arrays (PNG is lossless, so decoded
pixels must equal the arrays); archives are made with `tarfile`; TFDS runs on
`tfds.testing.mock_data` and is compared with a plain `tfds.load`.
"""

import collections
import io
import os
import pathlib
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import logged_warnings
from PIL import Image

from keras_barlow import data
from keras_barlow.data import folders, integrity, tfds_loader

SHARED_ARCHIVE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "cifar10-jpeg-train.tar.gz"
)
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# ----------------------------------------------------------------------------------
# Helpers and fixtures.


def _png(array):
    return tf.io.encode_png(array).numpy()


def _jpeg(array):
    return tf.io.encode_jpeg(array, quality=95).numpy()


def _smooth(height, width):
    """A gradient image: JPEG keeps it within a few levels."""
    rows = np.linspace(0, 150, height)[:, None, None]
    cols = np.linspace(0, 50, width)[None, :, None]
    return np.broadcast_to(
        rows + cols + np.array([0, 20, 40]), (height, width, 3)
    ).astype(np.uint8)


def _block_mean(array, factor):
    height, width, channels = array.shape
    blocks = array.reshape(height // factor, factor, width // factor, factor, channels)
    return blocks.astype(np.float64).mean(axis=(1, 3))


@pytest.fixture
def image_folder(tmp_path):
    """A class folder tree and, per file, the expected 8x8 RGB image and tolerance.

    PNGs of 8x8 must come back exactly; the 16x16 PNG is compared with its 2x2
    block means (area resize); JPEGs with a mean tolerance.
    """
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    expected = {}

    def add(relative, contents, reference, tolerance=0.0):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents)
        expected[str(path)] = (reference, tolerance)

    for index in range(3):
        rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        add(f"cat/{index}.png", _png(rgb), rgb)
    gray = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    add("cat/gray.png", _png(gray), np.repeat(gray, 3, axis=-1))
    for index in range(2):
        rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        add(f"dog/{index}.png", _png(rgb), rgb)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    add("dog/alpha.png", _png(rgba), rgba[..., :3])
    add("dog/photo.JPG", _jpeg(_smooth(8, 8)), _smooth(8, 8), tolerance=4.0)
    large = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    add("emu/large.png", _png(large), _block_mean(large, 2), tolerance=0.501)
    add("emu/wide.jpeg", _jpeg(_smooth(16, 24)), None)  # size only
    nested = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    add("emu/extra/nested.png", _png(nested), nested)
    # Ignored: non-image files, hidden files and folders.
    (root / "README.txt").write_text("not a class")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(_png(nested))
    return root, expected


def _collect(dataset):
    batches = list(dataset.as_numpy_iterator())
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(part) for part in zip(*batches, strict=True))
    return np.concatenate(batches)


def _make_archive(archive, folder, arcname):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def _add_member(tar, name, contents):
    info = tarfile.TarInfo(name)
    info.size = len(contents)
    tar.addfile(info, io.BytesIO(contents))


def _extracted_dirs(cache):
    return sorted(entry for entry in os.listdir(cache)) if cache.exists() else []


# ----------------------------------------------------------------------------------
# Image folders.


def test_folder_pixels_labels_and_conversions(image_folder):
    root, expected = image_folder
    dataset, info = data.from_image_folder(
        root,
        image_size=8,
        batch_size=4,
        training=False,
        interpolation="area",
        with_info=True,
    )
    images, labels = _collect(dataset)

    assert info.class_names == ["cat", "dog", "emu"]
    assert sorted(info.file_paths) == sorted(expected)
    assert images.dtype == np.uint8 and images.shape == (len(expected), 8, 8, 3)
    assert labels.dtype == np.int32
    for image, label, path in zip(images, labels, info.file_paths, strict=True):
        class_name = pathlib.Path(path).relative_to(root).parts[0]
        assert label == info.class_names.index(class_name)
        reference, tolerance = expected[path]
        if reference is None:
            continue
        error = np.abs(image.astype(np.float64) - reference)
        if tolerance == 0.0:  # lossless PNG at the target size: exact
            np.testing.assert_array_equal(image, reference, err_msg=path)
        elif path.endswith(".png"):  # area resize: block mean, rounded
            assert error.max() <= tolerance, path
        else:  # JPEG
            assert error.mean() <= tolerance, path


def test_folder_keeps_first_image_size_and_resizes_the_others(image_folder):
    root, _ = image_folder
    dataset = data.from_image_folder(root, batch_size=3, training=False)
    images, _ = _collect(dataset)
    assert images.shape[1:] == (8, 8, 3)  # cat/0.png comes first

    crop = data.from_image_folder(
        root, image_size=(4, 6), batch_size=3, training=False, crop_to_aspect_ratio=True
    )
    assert _collect(crop)[0].shape[1:] == (4, 6, 3)


def test_folder_training_shuffles_with_seed_and_drops_remainder(image_folder):
    root, expected = image_folder
    first = data.from_image_folder(root, image_size=8, batch_size=4, seed=3)
    second = data.from_image_folder(root, image_size=8, batch_size=4, seed=3)
    reference, _ = _collect(
        data.from_image_folder(root, image_size=8, batch_size=4, training=False)
    )
    epoch1, epoch2 = _collect(first)[0], _collect(first)[0]

    assert len(epoch1) == len(expected) // 4 * 4  # 11 images -> 2 full batches
    np.testing.assert_array_equal(epoch1, _collect(second)[0])
    assert not np.array_equal(epoch1, epoch2), "each epoch must reshuffle"
    reference_rows = {row.tobytes() for row in reference}
    assert {row.tobytes() for row in epoch1} <= reference_rows


def test_folder_unlabeled_finds_images_recursively(image_folder):
    root, expected = image_folder
    dataset, info = data.from_image_folder(
        root, image_size=8, labels=None, batch_size=5, training=False, with_info=True
    )
    images = _collect(dataset)
    assert info.class_names is None
    assert images.shape == (len(expected), 8, 8, 3)


def test_folder_subsets_are_disjoint_stratified_and_limited(tmp_path):
    counts = {"a": 12, "b": 8, "c": 4}
    for name, count in counts.items():
        (tmp_path / name).mkdir()
        for index in range(count):
            (tmp_path / name / f"{index:02d}.png").write_bytes(
                _png(np.full((4, 4, 3), index, np.uint8))
            )
    kwargs = dict(val_fraction=0.25, seed=5, batch_size=2, with_info=True)
    _, train_info = data.from_image_folder(tmp_path, subset="training", **kwargs)
    val, val_info = data.from_image_folder(tmp_path, subset="validation", **kwargs)

    assert not set(train_info.file_paths) & set(val_info.file_paths)
    assert len(train_info.file_paths) + len(val_info.file_paths) == sum(counts.values())
    _, val_labels = _collect(val)  # evaluation mode: nothing dropped, in order
    np.testing.assert_array_equal(np.bincount(val_labels), [3, 2, 1])

    limited, limited_info = data.from_image_folder(
        tmp_path, subset="training", limit_images=7, training=False, **kwargs
    )
    _, limited_labels = _collect(limited)
    np.testing.assert_array_equal(np.bincount(limited_labels), [3, 2, 2])
    assert set(limited_info.file_paths) <= set(train_info.file_paths)


# ----------------------------------------------------------------------------------
# Archives.


def test_archive_matches_folder_and_is_extracted_once(
    image_folder, tmp_path, monkeypatch
):
    root, _ = image_folder
    archive = _make_archive(tmp_path / "pets.tgz", root, arcname="train")
    cache = tmp_path / "cache"
    kwargs = dict(image_size=8, batch_size=4, training=False)
    from_archive = data.from_image_folder(archive, cache_dir=cache, **kwargs)
    from_folder = data.from_image_folder(root, **kwargs)

    assert data.class_names(archive, cache_dir=cache) == data.class_names(root)
    for got, want in zip(_collect(from_archive), _collect(from_folder), strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(_extracted_dirs(cache)) == 1  # no staging folder left behind

    def fail(*args):
        raise AssertionError("the archive was extracted a second time")

    monkeypatch.setattr(folders, "_extract_members", fail)
    assert data.class_names(archive, cache_dir=cache) == ["cat", "dog", "emu"]


@pytest.mark.parametrize("relative", [True, False])
def test_archive_with_path_traversal_is_refused(tmp_path, relative):
    cache = tmp_path / "cache"
    escaped = cache / "escaped.png"  # where "../escaped.png" would land
    name = "../escaped.png" if relative else str(escaped)
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add_member(tar, "good/1.png", _png(np.zeros((2, 2, 3), np.uint8)))
        _add_member(tar, name, b"x")

    with pytest.raises(ValueError, match="would be written outside"):
        data.from_image_folder(archive, cache_dir=cache)
    assert not escaped.exists()
    assert _extracted_dirs(cache) == []


def test_archive_links_and_devices_are_not_written(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    archive = tmp_path / "links.tar.gz"
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(np.zeros((2, 2, 3), np.uint8)))
    with tarfile.open(archive, "w:gz") as tar:
        _add_member(tar, "good/1.png", _png(np.zeros((2, 2, 3), np.uint8)))
        for name, kind, target in (
            ("good/outside.png", tarfile.SYMTYPE, str(outside)),
            ("good/climb.png", tarfile.SYMTYPE, "../../secret.png"),
            ("good/hard.png", tarfile.LNKTYPE, "good/1.png"),
            ("good/device.png", tarfile.CHRTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    warnings = logged_warnings(monkeypatch, folders)

    _, info = data.from_image_folder(
        archive, cache_dir=cache, batch_size=1, training=False, with_info=True
    )

    written = [
        os.path.join(parent, name)
        for parent, _, files in os.walk(cache)
        for name in files
    ]
    assert [os.path.basename(path) for path in written] == ["1.png"]
    assert not any(os.path.islink(path) for path in written)
    assert info.num_images == 1
    assert len(warnings) == 1 and "Skipped 4 archive members" in warnings[0]


def test_archive_truncated_leaves_nothing_and_a_good_copy_works(image_folder, tmp_path):
    root, _ = image_folder
    archive = _make_archive(tmp_path / "pets.tar.gz", root, arcname="pets")
    contents = archive.read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(contents[: len(contents) // 2])
    cache = tmp_path / "cache"

    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.from_image_folder(broken, cache_dir=cache)
    assert _extracted_dirs(cache) == []
    assert data.class_names(archive, cache_dir=cache) == ["cat", "dog", "emu"]


# ----------------------------------------------------------------------------------
# Corrupt files.


@pytest.fixture
def folder_with_corrupt_files(tmp_path):
    rng = np.random.default_rng(1)
    good = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            path = tmp_path / name / f"{index}.png"
            path.write_bytes(_png(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)))
            good[str(path)] = name
    jpeg = _jpeg(_smooth(4, 4))
    # Decodable although the end marker is not in the last 4 KiB: must be kept.
    (tmp_path / "a" / "trailer.jpg").write_bytes(jpeg + b"\x00" * 5000)
    good[str(tmp_path / "a" / "trailer.jpg")] = "a"
    corrupt = {
        tmp_path / "a" / "text.jpg": b"hello, not an image",
        tmp_path / "a" / "empty.png": b"",
        tmp_path / "b" / "truncated.jpg": jpeg[:-2],
        tmp_path / "b" / "truncated.png": _png(np.zeros((4, 4, 3), np.uint8))[:-12],
    }
    for path, contents in corrupt.items():
        path.write_bytes(contents)
    return tmp_path, good, sorted(str(path) for path in corrupt)


@pytest.mark.parametrize("validate", ["header", "decode"])
def test_find_corrupt_images(folder_with_corrupt_files, validate):
    root, good, corrupt = folder_with_corrupt_files
    found = data.find_corrupt_images(sorted([*good, *corrupt]), validate=validate)
    assert sorted(path for path, _ in found) == corrupt
    if validate == "header":
        reasons = dict(found)
        assert reasons[str(root / "a" / "empty.png")] == "empty file"
        assert "not a JPEG or PNG" in reasons[str(root / "a" / "text.jpg")]
        assert "truncated JPEG" in reasons[str(root / "b" / "truncated.jpg")]
        assert "truncated PNG" in reasons[str(root / "b" / "truncated.png")]


def test_corrupt_files_raise_by_default_naming_each_file(folder_with_corrupt_files):
    root, _, corrupt = folder_with_corrupt_files
    with pytest.raises(ValueError, match="on_corrupt='skip'") as error:
        data.from_image_folder(root, image_size=4, batch_size=2)
    message = str(error.value)
    assert f"{len(corrupt)} of 11 image files" in message
    for path in corrupt:
        assert path in message


def test_corrupt_files_skipped_with_a_warning(folder_with_corrupt_files, monkeypatch):
    root, good, corrupt = folder_with_corrupt_files
    warnings = logged_warnings(monkeypatch, integrity)
    dataset, info = data.from_image_folder(
        root,
        image_size=4,
        batch_size=2,
        training=False,
        on_corrupt="skip",
        with_info=True,
    )
    images, labels = _collect(dataset)  # reads every file: no decode error

    assert sorted(info.file_paths) == sorted(good)
    assert len(images) == len(good)
    np.testing.assert_array_equal(
        labels, [info.class_names.index(good[path]) for path in info.file_paths]
    )
    assert len(warnings) == 1 and f"Skipping {len(corrupt)} of 11" in warnings[0]
    assert all(path in warnings[0] for path in corrupt)


# ----------------------------------------------------------------------------------
# NumPy arrays.


def test_from_numpy_order_labels_and_gray():
    images = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 3, 3), np.uint8)
    labels = (np.arange(10) % 3)[:, None]
    dataset = data.from_numpy(images, labels, batch_size=4, training=False)
    got_images, got_labels = _collect(dataset)

    np.testing.assert_array_equal(got_images, np.repeat(images[..., None], 3, axis=-1))
    np.testing.assert_array_equal(got_labels, labels[:, 0])
    assert got_labels.dtype == np.int32


def test_from_numpy_training_shuffles_each_epoch_and_drops_remainder():
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    dataset = data.from_numpy(images, batch_size=4, seed=7)
    epoch1, epoch2 = _collect(dataset)[:, 0, 0, 0], _collect(dataset)[:, 0, 0, 0]
    replay = _collect(data.from_numpy(images, batch_size=4, seed=7))[:, 0, 0, 0]

    assert len(epoch1) == 8 and len(set(epoch1)) == 8
    np.testing.assert_array_equal(epoch1, replay)
    assert not np.array_equal(epoch1, epoch2)


def test_with_info_returns_metadata_that_survives_map(image_folder):
    root, expected = image_folder
    dataset, info = data.from_image_folder(
        root, image_size=8, batch_size=4, with_info=True
    )
    mapped = dataset.map(lambda images, labels: (images, labels + 1))
    assert info.class_names == ["cat", "dog", "emu"]
    assert info.num_images == len(expected)
    assert info.steps_per_epoch == len(expected) // 4
    assert info.image_size == (8, 8)
    assert sorted(info.file_paths) == sorted(expected)
    assert len(list(mapped)) == info.steps_per_epoch

    images = np.zeros((10, 3, 5), np.uint8)
    _, array_info = data.from_numpy(
        images, batch_size=4, training=False, with_info=True
    )
    assert (array_info.num_images, array_info.steps_per_epoch) == (10, None)
    assert array_info.image_size == (3, 5) and array_info.class_names is None


def test_loaders_share_one_set_of_options():
    images = np.zeros((8, 2, 2, 3), np.uint8)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        data.from_numpy(images, batchsize=4)
    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        data.Options(interpolation="cubic")
    options = data.Options(subset="validation", val_count=2, seed=5)
    assert (options.training, options.shuffle, options.split_seed) == (False, False, 5)
    assert data.Options(image_size=4).image_size == (4, 4)


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
            (tmp_path / f"class{index % 2}" / f"{index}.png").write_bytes(_png(image))

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


def test_split_seed_fixes_the_held_back_images_whatever_the_shuffle_seed():
    images = np.arange(40, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    labels = np.repeat(np.arange(4), 10)

    def held_back(**kwargs):
        val = data.from_numpy(
            images, labels, batch_size=8, subset="validation", val_count=8, **kwargs
        )
        return _collect(val)[0][:, 0, 0, 0]

    for seed in (1, 2):
        np.testing.assert_array_equal(
            held_back(seed=seed, split_seed=0),
            data.stratified_split(labels, val_count=8)[1],
        )
        np.testing.assert_array_equal(
            held_back(seed=seed),
            data.stratified_split(labels, val_count=8, seed=seed)[1],
        )


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


def test_epochs_refuse_skipping_corrupt_files(folder_with_corrupt_files):
    # A skipped decode failure would shorten its epoch: batches across epochs.
    root, _, _ = folder_with_corrupt_files
    with pytest.raises(ValueError, match=r"on_corrupt='skip'.*epochs=3") as error:
        data.from_image_folder(
            root, image_size=4, batch_size=2, epochs=3, on_corrupt="skip"
        )
    assert "straddle" in str(error.value)


# ----------------------------------------------------------------------------------
# TFDS (mock data: offline, real TFDS code paths).


def test_from_tfds_matches_tfds_load(tfds):
    with tfds.testing.mock_data(num_examples=20):
        dataset, info = data.from_tfds(
            "cifar10", "train", batch_size=8, training=False, with_info=True
        )
        images, labels = _collect(dataset)
        reference = list(tfds.load("cifar10", split="train", shuffle_files=False))
        names = tfds.builder("cifar10").info.features["label"].names
        training = data.from_tfds("cifar10", "train", batch_size=8, seed=1)
        train_images, _ = _collect(training)
        limited = data.from_tfds(
            "cifar10", "train", batch_size=5, training=False, limit_images=5
        )
        _, limited_labels = _collect(limited)

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
        images, _ = _collect(
            data.from_tfds("mnist", "test", batch_size=6, training=False)
        )
        resized, _ = _collect(
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


# ----------------------------------------------------------------------------------
# Errors.


def test_clear_errors(tmp_path, image_folder):
    root, _ = image_folder
    with pytest.raises(FileNotFoundError, match="not found"):
        data.from_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No class folders"):
        data.from_image_folder(tmp_path / "empty")
    (tmp_path / "no_images" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="No images found"):
        data.from_image_folder(tmp_path / "no_images")
    (tmp_path / "file.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="Received the file"):
        data.from_image_folder(tmp_path / "file.zip")
    for size in (0, -3, (8,), (8, 0), "8", 2.5, True):
        with pytest.raises(ValueError, match="`image_size` must be"):
            data.from_image_folder(root, image_size=size)
    with pytest.raises(ValueError, match="would be empty"):
        data.from_image_folder(root, batch_size=64)
    with pytest.raises(ValueError, match="go together"):
        data.from_image_folder(root, subset="training")
    with pytest.raises(ValueError, match="`on_corrupt` must be one of"):
        data.from_image_folder(root, on_corrupt="ignore")
    with pytest.raises(ValueError, match="between 1 and"):
        data.stratified_split(np.zeros(3), val_fraction=0.1)
    with pytest.raises(ValueError, match="must be uint8"):
        data.from_numpy(np.zeros((4, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        data.from_numpy(np.zeros((4, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"labels` must be integers of shape \(4,\)"):
        data.from_numpy(np.zeros((4, 2, 2, 3), np.uint8), labels=np.zeros(3, int))


# ----------------------------------------------------------------------------------
# The shared CIFAR-10 archive: read only the first images of each class.


@pytest.mark.shared_data
def test_shared_cifar10_archive(tmp_path):
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"shared data set absent: {SHARED_ARCHIVE} (see shared/datasets)")
    per_class, originals, kept = 2, {}, collections.Counter()
    small = tmp_path / "cifar10-small.tar.gz"
    with (
        tarfile.open(SHARED_ARCHIVE, "r|gz") as source,
        tarfile.open(small, "w:gz") as target,
    ):
        for member in source:  # reads headers, and the files kept
            class_name = pathlib.PurePosixPath(member.name).parent.name
            if member.isfile() and kept[class_name] < per_class:
                kept[class_name] += 1
                originals[member.name] = source.extractfile(member).read()
                _add_member(target, member.name, originals[member.name])
    assert sorted({name.split("/")[1] for name in originals}) == CIFAR10_CLASSES

    dataset, info = data.from_image_folder(
        small,
        cache_dir=tmp_path / "cache",
        batch_size=len(originals),
        training=False,
        with_info=True,
    )
    images, labels = _collect(dataset)
    assert info.class_names == CIFAR10_CLASSES
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), per_class))
    for image, path in zip(images, info.file_paths, strict=True):
        name = "/".join(pathlib.Path(path).parts[-3:])
        # The accurate integer DCT, as Pillow (an independent decoder) decodes.
        reference = Image.open(io.BytesIO(originals[name])).convert("RGB")
        np.testing.assert_array_equal(image, np.asarray(reference))
