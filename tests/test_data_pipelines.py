"""The Grain pipeline against the tf.data pipeline, on the same files.

Both pipelines must select the same files, labels and splits, and give the same
batch format. Pixels: decoding is identical (JPEG with the accurate integer
DCT, CMYK, gray, alpha, palette and 16-bit PNG); resizing differs by Pillow's
and TensorFlow's arithmetic only, within the tolerances below (measured: at most
1 level for bilinear and area, 3 for bicubic, 6 for lanczos3 here and 7 on noise,
none for nearest). Skipped without TensorFlow.
"""

import collections
import io
import pathlib
import tarfile

import numpy as np
import pytest
from PIL import Image

from keras_barlow import data

tf = pytest.importorskip("tensorflow")
from keras_barlow.data import images, tf_pipeline  # noqa: E402

pytestmark = pytest.mark.core
SHARED_ARCHIVE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "cifar10-jpeg-train.tar.gz"
)
ONE_PROCESS = {"shard_index": 0, "shard_count": 1}
# Largest difference of a resized pixel (0-255) between the pipelines.
RESIZE_TOLERANCE = {"bilinear": 1, "area": 1, "nearest": 0, "bicubic": 3, "lanczos3": 7}


def _encode(image, format_="PNG", **kwargs):
    buffer = io.BytesIO()
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(buffer, format_, **kwargs)
    return buffer.getvalue()


def _photo(height, width, seed):
    """Smooth content plus fine noise, like a photo: JPEG keeps detail to decode."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    smooth = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), 3)
    noisy = np.asarray(smooth, np.float64) + rng.normal(0, 12, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Class folders of JPEG and PNG files in every layout, of several sizes."""
    root = tmp_path_factory.mktemp("mixed")
    files = {}
    for index, (height, width) in enumerate([(30, 40), (40, 30), (64, 48), (24, 24)]):
        photo = _photo(height, width, index)
        files[f"a/photo{index}.jpg"] = _encode(photo, "JPEG", quality=85)
        files[f"b/photo{index}.png"] = _encode(photo)
    photo = _photo(36, 28, 9)
    files["a/gray.jpg"] = _encode(photo[..., 0], "JPEG", quality=90)
    files["a/cmyk.jpg"] = _encode(Image.fromarray(photo).convert("CMYK"), "JPEG")
    files["a/progressive.jpg"] = _encode(photo, "JPEG", progressive=True)
    files["b/gray.png"] = _encode(photo[..., 1])
    files["b/alpha.png"] = _encode(np.dstack([photo, photo[..., :1]]))
    files["b/palette.png"] = _encode(Image.fromarray(photo).quantize(32))
    files["b/sixteen_bit.png"] = _encode(
        Image.fromarray(photo[..., 2].astype(np.uint16) * 257)
    )
    files["c/nested/deep.jpg"] = _encode(_photo(50, 20, 11), "JPEG")
    for name, contents in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(contents)
    return root


def _both(root, **options):
    """`{pipeline: (batches, info)}` of the same call on both pipelines."""
    loaded = {}
    for pipeline in ("tf.data", "grain"):
        dataset, info = data.from_image_folder(
            root, pipeline=pipeline, with_info=True, **ONE_PROCESS, **options
        )
        loaded[pipeline] = ([_numpy(batch) for batch in dataset], info)
    return loaded


def _numpy(batch):
    if isinstance(batch, dict):
        return {key: np.asarray(value) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(np.asarray(part) for part in batch)
    return np.asarray(batch)


def test_decoded_pixels_are_identical(mixed_folder):
    paths = sorted(str(path) for path in mixed_folder.rglob("*.*"))
    assert len(paths) == 16
    for path in paths:
        tf_image = tf_pipeline.decode(tf.io.read_file(path)).numpy()
        np.testing.assert_array_equal(
            images.decode(images.read(path)), tf_image, err_msg=path
        )


@pytest.mark.parametrize(
    "interpolation, crop_to_aspect_ratio",
    [*((name, False) for name in sorted(RESIZE_TOLERANCE)), ("bilinear", True)],
)
def test_resized_pixels_within_tolerance(
    mixed_folder, interpolation, crop_to_aspect_ratio
):
    loaded = _both(
        mixed_folder,
        image_size=(10, 30) if crop_to_aspect_ratio else (20, 26),  # cropped: 1:3
        batch_size=5,
        training=False,
        interpolation=interpolation,
        crop_to_aspect_ratio=crop_to_aspect_ratio,
    )
    (tf_batches, tf_info), (grain_batches, grain_info) = loaded.values()
    assert tf_info.file_paths == grain_info.file_paths
    for (tf_images, tf_labels), (grain_images, grain_labels) in zip(
        tf_batches, grain_batches, strict=True
    ):
        np.testing.assert_array_equal(tf_labels, grain_labels)
        assert tf_images.shape == grain_images.shape and tf_images.dtype == np.uint8
        error = np.abs(tf_images.astype(int) - grain_images)
        assert error.max() <= RESIZE_TOLERANCE[interpolation], error.max()


def test_full_resolution_canvases_are_the_same(mixed_folder):
    # max_side=48 shrinks the 64 x 48 and 50 x 20 images (bicubic), not the others.
    options = dict(image_size=16, batch_size=4, shuffle=False, max_side=48)
    loaded = _both(mixed_folder, **options)
    (tf_batches, tf_info), (grain_batches, grain_info) = loaded.values()
    assert tf_info.full_resolution and grain_info.full_resolution
    assert tf_info.image_size == grain_info.image_size == (48, 48)
    assert len(tf_batches) == len(grain_batches) == 4
    for tf_batch, grain_batch in zip(tf_batches, grain_batches, strict=True):
        assert set(tf_batch) == set(grain_batch) == {"images", "image_sizes", "labels"}
        for key, value in tf_batch.items():
            assert grain_batch[key].dtype == value.dtype, key
        np.testing.assert_array_equal(tf_batch["labels"], grain_batch["labels"])
        sizes = tf_batch["image_sizes"]
        np.testing.assert_array_equal(sizes, grain_batch["image_sizes"])
        error = np.abs(tf_batch["images"].astype(int) - grain_batch["images"])
        shrunk = sizes.max(axis=1) == 48
        assert not error[~shrunk].any()
        assert np.all(error[shrunk] <= RESIZE_TOLERANCE["bicubic"])
    assert (
        sum(int((batch["image_sizes"].max(axis=1) == 48).sum()) for batch in tf_batches)
        == 3
    )


def _small_cifar_archive(tmp_path, per_class):
    """The first `per_class` images of each class of the shared archive, re-packed."""
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"shared data set absent: {SHARED_ARCHIVE} (see shared/datasets)")
    kept, small = collections.Counter(), tmp_path / "cifar10-small.tar.gz"
    with (
        tarfile.open(SHARED_ARCHIVE, "r|gz") as source,
        tarfile.open(small, "w:gz") as target,
    ):
        for member in source:
            class_name = pathlib.PurePosixPath(member.name).parent.name
            if member.isfile() and kept[class_name] < per_class:
                kept[class_name] += 1
                target.addfile(member, source.extractfile(member))
    return small


@pytest.mark.shared_data
def test_same_files_labels_and_splits_on_the_cifar10_archive(tmp_path):
    archive = _small_cifar_archive(tmp_path, per_class=12)
    cache = tmp_path / "cache"
    for options in (
        dict(subset="training", val_count=30),
        dict(subset="validation", val_fraction=0.25, split_seed=4),
        dict(subset="training", val_count=30, limit_images=50),
        dict(limit_images=33),
        dict(labels=None, subset="validation", val_count=17),
    ):
        listed = {}
        for pipeline in ("tf.data", "grain"):
            dataset, info = data.from_image_folder(
                archive,
                cache_dir=cache,
                batch_size=8,
                training=False,
                pipeline=pipeline,
                with_info=True,
                **ONE_PROCESS,
                **options,
            )
            batches = [_numpy(batch) for batch in dataset]
            labels = None
            if options.get("labels", "inferred") is not None:
                labels = np.concatenate([labels for _, labels in batches])
                images = np.concatenate([images for images, _ in batches])
            else:
                images = np.concatenate(batches)
            listed[pipeline] = (info.file_paths, labels, info.class_names, images)
        (tf_paths, tf_labels, tf_names, tf_images) = listed["tf.data"]
        (grain_paths, grain_labels, grain_names, grain_images) = listed["grain"]
        assert tf_paths == grain_paths, options
        assert tf_names == grain_names
        np.testing.assert_array_equal(tf_labels, grain_labels)
        np.testing.assert_array_equal(tf_images, grain_images)  # identical decoding


def test_from_numpy_is_the_same_on_both_pipelines():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (30, 12, 10, 4), dtype=np.uint8)
    labels = np.arange(30) % 3
    for options in (
        dict(subset="validation", val_count=9),
        dict(image_size=(6, 5), interpolation="area", limit_images=20),
    ):
        got = {}
        for pipeline in ("tf.data", "grain"):
            dataset = data.from_numpy(
                images,
                labels,
                batch_size=7,
                training=False,
                pipeline=pipeline,
                **ONE_PROCESS,
                **options,
            )
            got[pipeline] = [_numpy(batch) for batch in dataset]
        for (tf_images, tf_labels), (grain_images, grain_labels) in zip(
            got["tf.data"], got["grain"], strict=True
        ):
            np.testing.assert_array_equal(tf_labels, grain_labels)
            assert np.abs(tf_images.astype(int) - grain_images).max() <= 1


def test_the_choice_of_pipeline():
    assert data.resolve_pipeline() == "tf.data"  # TensorFlow is installed here
    assert data.resolve_pipeline("auto", shard_count=2) == "grain"
    images = np.zeros((8, 2, 2, 3), np.uint8)
    _, info = data.from_numpy(images, batch_size=4, with_info=True)
    assert info.pipeline == "tf.data"
    with pytest.raises(ValueError, match="`pipeline` must be one of"):
        data.from_numpy(images, pipeline="torch")
    with pytest.raises(ValueError, match="apply to the Grain pipeline only"):
        data.from_numpy(images, pipeline="tf.data", shard_index=0, shard_count=2)
    with pytest.raises(ValueError, match="apply to the Grain pipeline only"):
        data.from_numpy(images, pipeline="tf.data", grain_workers=2)
    with pytest.raises(ValueError, match="takes pipeline='tf.data' only"):
        data.from_tfds("mnist", pipeline="grain")
