"""Tests of the Grain input pipeline of keras_barlow.data, without TensorFlow.

Runs where TensorFlow is absent: `KERAS_BACKEND=jax python -m pytest -q
tests/test_data_grain.py`. Images are written with Pillow from NumPy arrays, so
the references are the arrays themselves (PNG is lossless), Pillow's own
decoding (JPEG), NumPy formulas (resizing) and properties of the order (epoch
keys, shards); the tf.data comparison is in `test_data_pipelines.py`. The tests
parametrized with `PIPELINES` check tf.data against the same references too,
where TensorFlow is installed.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _data_helpers import collect_batches, encode_image, write_file
from conftest import logged_warnings
from PIL import Image

from keras_barlow import data
from keras_barlow.data import grain_pipeline, integrity

pytestmark = pytest.mark.core
GRAIN = {"pipeline": "grain", "shard_index": 0, "shard_count": 1}
# The same checks on both pipelines, where TensorFlow is installed.
PIPELINES = [
    pytest.param(GRAIN, id="grain"),
    pytest.param(
        {"pipeline": "tf.data"},
        id="tf.data",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("tensorflow") is None,
            reason="tf.data needs TensorFlow",
        ),
    ),
]


def _smooth(height, width):
    rows = np.linspace(0, 150, height)[:, None, None]
    cols = np.linspace(0, 50, width)[None, :, None]
    image = rows + cols + np.array([0, 20, 40])
    return np.broadcast_to(image, (height, width, 3)).astype(np.uint8)


@pytest.fixture
def png_folder(tmp_path):
    """Class folders of 8x8 PNGs in every layout, and the RGB each must decode to."""
    rng = np.random.default_rng(0)
    root, expected = tmp_path / "images", {}

    def add(relative, array, reference):
        write_file(root / relative, encode_image(array))
        expected[str(root / relative)] = reference

    for index in range(3):
        rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        add(f"cat/{index}.png", rgb, rgb)
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    add("cat/gray.png", gray, np.repeat(gray[..., None], 3, axis=-1))
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    add("dog/alpha.png", rgba, rgba[..., :3])
    deep = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    high_byte = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    add("dog/sixteen_bit.png", Image.fromarray(deep), high_byte)
    palette = Image.fromarray(rgb).quantize(16)
    add("dog/palette.png", palette, np.asarray(palette.convert("RGB")))
    add("emu/nested/deep.png", rgb, rgb)
    (root / "emu" / "notes.txt").write_text("not an image")
    return root, expected


def test_folder_pixels_labels_and_layouts(png_folder):
    root, expected = png_folder
    dataset, info = data.from_image_folder(
        root, batch_size=3, training=False, with_info=True, **GRAIN
    )
    images, labels = collect_batches(dataset)

    assert info.pipeline == "grain" and info.class_names == ["cat", "dog", "emu"]
    assert sorted(info.file_paths) == sorted(expected)
    assert images.dtype == np.uint8 and images.shape == (len(expected), 8, 8, 3)
    assert labels.dtype == np.int32
    for image, label, path in zip(images, labels, info.file_paths, strict=True):
        assert label == info.class_names.index(os.path.relpath(path, root)[:3])
        np.testing.assert_array_equal(image, expected[path], err_msg=path)


def test_jpeg_decodes_as_pillow_and_exif_orientation_is_not_applied(tmp_path):
    """JPEG pixels equal Pillow's (accurate DCT); the stored pixels, not rotated."""
    photo = _smooth(20, 40).copy()
    photo[:, :10] = 255  # a bright left band, which a rotation would move
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    contents = {
        "a/rgb.jpg": encode_image(photo, "JPEG", quality=90),
        "a/exif.jpg": encode_image(photo, "JPEG", quality=90, exif=exif.tobytes()),
        "a/gray.jpg": encode_image(photo[..., 0], "JPEG", quality=90),
        "a/cmyk.jpg": encode_image(Image.fromarray(photo).convert("CMYK"), "JPEG"),
    }
    for name, value in contents.items():
        write_file(tmp_path / name, value)
    dataset, info = data.from_image_folder(
        tmp_path, batch_size=4, training=False, with_info=True, **GRAIN
    )
    images, _ = collect_batches(dataset)

    for image, path in zip(images, info.file_paths, strict=True):
        decoded = Image.open(path)
        if decoded.mode == "CMYK":  # TensorFlow's conversion: channel times K
            inverted = 255 - np.asarray(decoded, np.int64)  # Adobe's inverted CMYK
            reference = inverted[..., :3] * inverted[..., 3:] // 255
        else:
            reference = np.asarray(decoded.convert("RGB"))
        np.testing.assert_array_equal(image, reference, err_msg=path)
    assert images.shape[1:3] == (20, 40)  # EXIF orientation 6 would give 40 x 20
    np.testing.assert_array_equal(images[1], images[3])  # exif.jpg == rgb.jpg


def _antialiased_bilinear(image, size):
    """Bilinear resizing to `size` with antialiasing, as a NumPy formula.

    Output pixel `o` samples input position `(o + 0.5) * scale - 0.5` with a
    triangle kernel widened by `scale` when shrinking; the weights of the pixels
    inside the image are normalized to sum to 1.
    """

    def weights(size_in, size_out):
        scale = size_in / size_out
        width = max(scale, 1.0)
        centers = (np.arange(size_out) + 0.5) * scale - 0.5
        distance = np.abs(np.arange(size_in)[None, :] - centers[:, None]) / width
        kernel = np.clip(1 - distance, 0, None)
        return kernel / kernel.sum(axis=1, keepdims=True)

    rows, cols = weights(image.shape[0], size[0]), weights(image.shape[1], size[1])
    return np.einsum("oh,hwc,pw->opc", rows, image.astype(np.float64), cols)


def test_resizing_is_antialiased_and_rounded(tmp_path):
    rng = np.random.default_rng(1)
    large = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_file(tmp_path / "a" / "large.png", encode_image(large))
    for interpolation, reference, tolerance in (
        ("area", large.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)), 0.501),
        ("bilinear", _antialiased_bilinear(large, (8, 8)), 1.0),
    ):
        dataset = data.from_image_folder(
            tmp_path,
            image_size=8,
            batch_size=1,
            training=False,
            interpolation=interpolation,
            **GRAIN,
        )
        images, _ = collect_batches(dataset)
        error = np.abs(images[0] - reference)
        assert error.max() <= tolerance, (interpolation, error.max())

    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        data.from_image_folder(
            tmp_path, image_size=8, interpolation="gaussian", **GRAIN
        )
    crop = data.from_image_folder(
        tmp_path,
        image_size=(4, 8),
        batch_size=1,
        training=False,
        crop_to_aspect_ratio=True,
        interpolation="area",
        **GRAIN,
    )
    cropped = collect_batches(crop)[0][0]  # rows 4..12 of 16, then halved
    reference = large[4:12].reshape(4, 2, 8, 2, 3).mean(axis=(1, 3))
    assert np.abs(cropped - reference).max() <= 0.501


def _numbered_images(count):
    """Images whose first pixel holds their index: the order is readable."""
    return np.arange(count, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )


def _numbers(batch):
    images = batch[0] if isinstance(batch, tuple) else batch
    return images[:, 0, 0, 0].tolist()


def test_training_order_is_seeded_reshuffled_and_drops_the_remainder():
    images = _numbered_images(10)
    dataset = data.from_numpy(images, batch_size=4, seed=7, **GRAIN)
    first = [_numbers(batch) for batch in dataset]
    second = [_numbers(batch) for batch in dataset]
    replay = [
        _numbers(b) for b in data.from_numpy(images, batch_size=4, seed=7, **GRAIN)
    ]

    assert [len(batch) for batch in first] == [4, 4]  # 10 images: 2 full batches
    assert len(set(sum(first, []))) == 8
    assert first == replay, "the same seed gives the same order"
    assert first != second, "each pass reshuffles"
    evaluation = data.from_numpy(images, batch_size=4, training=False, **GRAIN)
    assert [_numbers(batch) for batch in evaluation] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]


@pytest.mark.parametrize("source", ["numpy", "folder"])
def test_epochs_keyed_by_number_resume_exactly(source, tmp_path):
    images = _numbered_images(10)
    if source == "folder":
        for index, image in enumerate(images):
            write_file(tmp_path / f"c{index % 2}" / f"{index}.png", encode_image(image))

    def epochs_of(**kwargs):
        kwargs = {"batch_size": 3, "seed": 7, "epochs": 4, **kwargs, **GRAIN}
        if source == "numpy":
            dataset = data.from_numpy(images, np.arange(10) % 2, **kwargs)
        else:
            dataset = data.from_image_folder(tmp_path, **kwargs)
        flat = [_numbers(batch) for batch in dataset]
        steps = kwargs.get("steps_per_epoch", 3)
        return [flat[start : start + steps] for start in range(0, len(flat), steps)]

    epochs = epochs_of()
    assert len(epochs) == 4 and all(len(epoch) == 3 for epoch in epochs)
    for epoch in epochs:  # 9 distinct images of 10, in whole batches
        assert len(set(sum(epoch, []))) == 9
    assert len({str(epoch) for epoch in epochs}) == 4, "each epoch reshuffles"
    assert epochs_of() == epochs, "no state between iterations"
    assert epochs_of(initial_epoch=2) == epochs[2:], "a resumed run continues"
    assert epochs_of(epochs=6)[:4] == epochs, "epoch k depends on (seed, k) only"
    shorter = epochs_of(initial_epoch=1, steps_per_epoch=2)
    assert shorter == [epoch[:2] for epoch in epochs[1:]]
    assert epochs_of(seed=8) != epochs


def test_shards_together_are_the_one_process_batches():
    images, labels = _numbered_images(24), np.arange(24) % 3

    def batches(**shard):
        options = {"batch_size": 6, "seed": 3, "epochs": 2, "pipeline": "grain"}
        dataset = data.from_numpy(images, labels, **options, **shard)
        return [_numbers(batch) for batch in dataset]

    whole = batches(shard_index=0, shard_count=1)
    parts = [batches(shard_index=index, shard_count=3) for index in range(3)]
    assert [len(batch) for batch in parts[0]] == [2] * len(whole)
    for step, batch in enumerate(whole):
        assert sum((part[step] for part in parts), []) == batch

    with pytest.raises(ValueError, match="must split evenly over shard_count=4"):
        data.from_numpy(
            images, batch_size=6, pipeline="grain", shard_index=0, shard_count=4
        )
    with pytest.raises(ValueError, match="Pass both `shard_index` and `shard_count`"):
        data.from_numpy(images, batch_size=6, pipeline="grain", shard_count=2)
    with pytest.raises(ValueError, match=r"`shard_index` must be an int in \[0, 1\]"):
        data.from_numpy(
            images, batch_size=6, pipeline="grain", shard_index=2, shard_count=2
        )


@pytest.mark.slow
def test_worker_processes_keep_the_order():
    images = _numbered_images(24)
    options = {"batch_size": 4, "seed": 3, "epochs": 2, **GRAIN}
    threads = [_numbers(batch) for batch in data.from_numpy(images, **options)]
    workers = data.from_numpy(images, grain_workers=2, **options)
    assert [_numbers(batch) for batch in workers] == threads


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_from_numpy_split_resize_limit_and_layouts(pipeline):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 8, 8, 4), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10)
    val = data.from_numpy(
        images,
        labels,
        image_size=4,
        interpolation="area",
        batch_size=8,
        subset="validation",
        val_count=8,
        **pipeline,
    )
    val_images, val_labels = collect_batches(val)
    _, val_indices = data.stratified_split(labels, val_count=8, seed=0)
    np.testing.assert_array_equal(np.bincount(val_labels), [2, 2, 2, 2])
    np.testing.assert_array_equal(val_labels, labels[val_indices])
    assert val_images.shape == (8, 4, 4, 3)
    reference = images[val_indices, ..., :3].reshape(8, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    assert np.abs(val_images - reference).max() <= 0.501  # rounded, not truncated

    limited = data.from_numpy(
        images, labels, batch_size=6, training=False, limit_images=6, **pipeline
    )
    np.testing.assert_array_equal(collect_batches(limited)[1], [0, 0, 1, 1, 2, 3])

    gray = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    got = collect_batches(
        data.from_numpy(gray, batch_size=4, training=False, **pipeline)
    )
    np.testing.assert_array_equal(got, np.repeat(gray[..., None], 3, axis=-1))


@pytest.fixture
def folder_with_corrupt_files(tmp_path):
    rng = np.random.default_rng(1)
    good = []
    for name in ("a", "b"):
        for index in range(3):
            path = tmp_path / name / f"{index}.png"
            write_file(
                path, encode_image(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
            )
            good.append(str(path))
    jpeg = encode_image(_smooth(4, 4), "JPEG", quality=95)
    write_file(tmp_path / "a" / "trailer.jpg", jpeg + b"\x00" * 5000)  # decodable
    good.append(str(tmp_path / "a" / "trailer.jpg"))
    corrupt = {
        tmp_path / "a" / "text.jpg": b"hello, not an image",
        tmp_path / "a" / "empty.png": b"",
        tmp_path / "b" / "truncated.jpg": jpeg[:-2],
        tmp_path / "b" / "no_end.png": encode_image(np.zeros((4, 4, 3), np.uint8))[
            :-12
        ],
        tmp_path / "b" / "junk.jpg": b"\xff\xd8\xff" + b"junk" * 10,
    }
    for path, contents in corrupt.items():
        write_file(path, contents)
    return tmp_path, sorted(good), sorted(str(path) for path in corrupt)


@pytest.mark.parametrize("validate", ["header", "decode"])
def test_corrupt_files_found_raised_and_skipped(folder_with_corrupt_files, validate):
    root, good, corrupt = folder_with_corrupt_files
    found = data.find_corrupt_images([*good, *corrupt], validate, pipeline="grain")
    assert sorted(path for path, _ in found) == corrupt

    with pytest.raises(ValueError, match=f"{len(corrupt)} of 12 image files"):
        data.from_image_folder(root, validate=validate, **GRAIN)
    dataset, info = data.from_image_folder(
        root,
        image_size=4,
        batch_size=2,
        training=False,
        validate=validate,
        on_corrupt="skip",
        with_info=True,
        **GRAIN,
    )
    assert sorted(info.file_paths) == good
    assert len(collect_batches(dataset)[0]) == len(good)


def test_a_file_that_fails_while_reading_is_named_or_skipped(tmp_path, monkeypatch):
    for index in range(4):
        write_file(
            tmp_path / "a" / f"{index}.png",
            encode_image(np.full((4, 4, 3), index, "u1")),
        )
    write_file(tmp_path / "a" / "bad.png", b"\x89PNG\r\n\x1a\n" + b"x" * 40 + b"IEND")
    with pytest.raises(
        ValueError, match=r"Could not decode .*bad\.png.*on_corrupt='skip'"
    ):
        list(data.from_image_folder(tmp_path, batch_size=5, validate=None, **GRAIN))
    warnings = logged_warnings(monkeypatch, grain_pipeline)
    dataset = data.from_image_folder(
        tmp_path,
        batch_size=5,
        training=False,
        validate=None,
        on_corrupt="skip",
        **GRAIN,
    )
    images, _ = collect_batches(dataset)
    assert sorted(images[:, 0, 0, 0].tolist()) == [0, 1, 2, 3]
    assert len(warnings) == 1 and "bad.png, which cannot be decoded" in warnings[0]
    bad = [tmp_path / "a" / "bad.png"]  # it passes the header check, not decoding
    assert integrity.find_corrupt_images(bad, "header", pipeline="grain") == []
    assert integrity.find_corrupt_images(bad, "decode", pipeline="grain")


def test_keras_fit_takes_the_grain_dataset_every_epoch():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(24) % 3
    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keyed, info = data.from_numpy(
        images, labels, batch_size=8, epochs=3, with_info=True, **GRAIN
    )
    history = model.fit(
        keyed, epochs=3, steps_per_epoch=info.steps_per_epoch, verbose=0
    )
    assert len(history.history["loss"]) == 3
    passes = data.from_numpy(images, labels, batch_size=8, **GRAIN)
    history = model.fit(passes, epochs=2, verbose=0)  # a new pass every epoch
    assert len(history.history["loss"]) == 2


def test_the_grain_path_imports_no_tensorflow(tmp_path):
    write_file(tmp_path / "a" / "0.png", encode_image(np.zeros((4, 4, 3), np.uint8)))
    script = textwrap.dedent(
        f"""
        import sys
        from keras_barlow.data import from_image_folder
        dataset = from_image_folder({str(tmp_path)!r}, batch_size=1, pipeline="grain")
        list(dataset)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        """
    )
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_tfds_without_tensorflow_names_the_extra():
    if data.resolve_pipeline() == "tf.data":
        pytest.skip("TensorFlow is installed")
    with pytest.raises(ImportError, match=r"pip install keras-barlow\[cpu\]"):
        data.from_tfds("mnist")
    with pytest.raises(ImportError, match=r"pip install keras-barlow\[cpu\]"):
        data.from_numpy(np.zeros((4, 2, 2, 3), np.uint8), pipeline="tf.data")


@pytest.mark.jax_only
def test_evaluation_data_are_read_whole_by_every_process(monkeypatch):
    # Training data default to this process's shard; evaluation data to all of it
    # (kNN and probes would otherwise judge a part of the data per process).
    import jax

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    images = _numbered_images(8)
    evaluation = data.from_numpy(images, batch_size=4, training=False, pipeline="grain")
    assert sum((_numbers(batch) for batch in evaluation), []) == list(range(8))
    train = data.from_numpy(images, batch_size=4, seed=0, pipeline="grain")
    assert all(len(_numbers(batch)) == 2 for batch in train)  # half of each batch
