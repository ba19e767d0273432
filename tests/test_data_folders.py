"""Tests of keras_barlow.data on image folders and on archives of them.

The image folder is written here from NumPy arrays (PNG is lossless, so decoded
pixels must equal the arrays); archives are made with `tarfile`; the shared
CIFAR-10 archive is compared with Pillow's decoding. Also: corrupt files, the
metadata of `with_info` and the errors of a bad folder or option.
"""

import collections
import io
import os
import pathlib
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from _data_helpers import collect_batches, encode_image
from conftest import logged_warnings
from PIL import Image

from keras_barlow import data
from keras_barlow.data import folders, integrity

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
        add(f"cat/{index}.png", encode_image(rgb), rgb)
    gray = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    add("cat/gray.png", encode_image(gray), np.repeat(gray, 3, axis=-1))
    for index in range(2):
        rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        add(f"dog/{index}.png", encode_image(rgb), rgb)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    add("dog/alpha.png", encode_image(rgba), rgba[..., :3])
    add("dog/photo.JPG", _jpeg(_smooth(8, 8)), _smooth(8, 8), tolerance=4.0)
    large = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    add("emu/large.png", encode_image(large), _block_mean(large, 2), tolerance=0.501)
    add("emu/wide.jpeg", _jpeg(_smooth(16, 24)), None)  # size only
    nested = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    add("emu/extra/nested.png", encode_image(nested), nested)
    # Ignored: non-image files, hidden files and folders.
    (root / "README.txt").write_text("not a class")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(encode_image(nested))
    return root, expected


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
    images, labels = collect_batches(dataset)

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
    images, _ = collect_batches(dataset)
    assert images.shape[1:] == (8, 8, 3)  # cat/0.png comes first

    crop = data.from_image_folder(
        root, image_size=(4, 6), batch_size=3, training=False, crop_to_aspect_ratio=True
    )
    assert collect_batches(crop)[0].shape[1:] == (4, 6, 3)


def test_folder_training_shuffles_with_seed_and_drops_remainder(image_folder):
    root, expected = image_folder
    first = data.from_image_folder(root, image_size=8, batch_size=4, seed=3)
    second = data.from_image_folder(root, image_size=8, batch_size=4, seed=3)
    reference, _ = collect_batches(
        data.from_image_folder(root, image_size=8, batch_size=4, training=False)
    )
    epoch1, epoch2 = collect_batches(first)[0], collect_batches(first)[0]

    assert len(epoch1) == len(expected) // 4 * 4  # 11 images -> 2 full batches
    np.testing.assert_array_equal(epoch1, collect_batches(second)[0])
    assert not np.array_equal(epoch1, epoch2), "each epoch must reshuffle"
    reference_rows = {row.tobytes() for row in reference}
    assert {row.tobytes() for row in epoch1} <= reference_rows


def test_folder_unlabeled_finds_images_recursively(image_folder):
    root, expected = image_folder
    dataset, info = data.from_image_folder(
        root, image_size=8, labels=None, batch_size=5, training=False, with_info=True
    )
    images = collect_batches(dataset)
    assert info.class_names is None
    assert images.shape == (len(expected), 8, 8, 3)


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
    for got, want in zip(
        collect_batches(from_archive), collect_batches(from_folder), strict=True
    ):
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
        _add_member(tar, "good/1.png", encode_image(np.zeros((2, 2, 3), np.uint8)))
        _add_member(tar, name, b"x")

    with pytest.raises(ValueError, match="would be written outside"):
        data.from_image_folder(archive, cache_dir=cache)
    assert not escaped.exists()
    assert _extracted_dirs(cache) == []


def test_archive_links_and_devices_are_not_written(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    archive = tmp_path / "links.tar.gz"
    outside = tmp_path / "secret.png"
    outside.write_bytes(encode_image(np.zeros((2, 2, 3), np.uint8)))
    with tarfile.open(archive, "w:gz") as tar:
        _add_member(tar, "good/1.png", encode_image(np.zeros((2, 2, 3), np.uint8)))
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
            path.write_bytes(
                encode_image(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
            )
            good[str(path)] = name
    jpeg = _jpeg(_smooth(4, 4))
    # Decodable although the end marker is not in the last 4 KiB: must be kept.
    (tmp_path / "a" / "trailer.jpg").write_bytes(jpeg + b"\x00" * 5000)
    good[str(tmp_path / "a" / "trailer.jpg")] = "a"
    corrupt = {
        tmp_path / "a" / "text.jpg": b"hello, not an image",
        tmp_path / "a" / "empty.png": b"",
        tmp_path / "b" / "truncated.jpg": jpeg[:-2],
        tmp_path / "b" / "truncated.png": encode_image(np.zeros((4, 4, 3), np.uint8))[
            :-12
        ],
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
    images, labels = collect_batches(dataset)  # reads every file: no decode error

    assert sorted(info.file_paths) == sorted(good)
    assert len(images) == len(good)
    np.testing.assert_array_equal(
        labels, [info.class_names.index(good[path]) for path in info.file_paths]
    )
    assert len(warnings) == 1 and f"Skipping {len(corrupt)} of 11" in warnings[0]
    assert all(path in warnings[0] for path in corrupt)


def test_epochs_refuse_skipping_corrupt_files(folder_with_corrupt_files):
    # A skipped decode failure would shorten its epoch: batches across epochs.
    root, _, _ = folder_with_corrupt_files
    with pytest.raises(ValueError, match=r"on_corrupt='skip'.*epochs=3") as error:
        data.from_image_folder(
            root, image_size=4, batch_size=2, epochs=3, on_corrupt="skip"
        )
    assert "straddle" in str(error.value)


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
    images, labels = collect_batches(dataset)
    assert info.class_names == CIFAR10_CLASSES
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), per_class))
    for image, path in zip(images, info.file_paths, strict=True):
        name = "/".join(pathlib.Path(path).parts[-3:])
        # The accurate integer DCT, as Pillow (an independent decoder) decodes.
        reference = Image.open(io.BytesIO(originals[name])).convert("RGB")
        np.testing.assert_array_equal(image, np.asarray(reference))
