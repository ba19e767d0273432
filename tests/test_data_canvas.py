"""Tests of the full-resolution rules and the archive cache, on every pipeline.

The rules (`keras_barlow.data.canvas`) are decided once for both pipelines: each
test runs on Grain, and on tf.data where TensorFlow is installed. References are
the images written (their sizes and pixels) and integer formulas.
"""

import importlib.util
import logging
import os
import tarfile

import numpy as np
import pytest
from _data_helpers import encode_image

from keras_barlow import data
from keras_barlow.data import canvas, folders

pytestmark = pytest.mark.core
PIPELINES = ["grain"]
if importlib.util.find_spec("tensorflow") is not None:
    PIPELINES.append("tf.data")


def _folder(root, shapes, seed=0):
    """PNGs `root/c/<index>.png` of the given `(height, width)`, and their arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for index, (height, width) in enumerate(shapes):
        path = root / "c" / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays[str(path)] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path.write_bytes(encode_image(arrays[str(path)]))
    return arrays


def _load(root, pipeline, **options):
    options = {"batch_size": 2, "shard_index": 0, "shard_count": 1, **options}
    return data.from_image_folder(root, pipeline=pipeline, with_info=True, **options)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_canvas_is_as_large_as_the_largest_image(tmp_path, pipeline):
    # 40 x 40 images at image_size=32 went on 512 x 512 canvases (max_side).
    arrays = _folder(tmp_path, [(40, 40), (36, 40), (40, 38), (40, 40)])
    dataset, info = _load(tmp_path, pipeline, image_size=32, training=True, seed=1)

    assert info.full_resolution and info.image_size == (40, 40)
    seen = 0
    for batch in dataset:
        assert batch["images"].shape == (2, 40, 40, 3)
        for image, (height, width) in zip(
            np.asarray(batch["images"]), np.asarray(batch["image_sizes"]), strict=True
        ):
            matches = [
                array
                for array in arrays.values()
                if array.shape[:2] == (height, width)
                and np.array_equal(array, image[:height, :width])
            ]
            assert matches and not image[height:].any() and not image[:, width:].any()
            seen += 1
    assert seen == 4


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_data_decide_full_resolution_not_the_first_file(tmp_path, pipeline, caplog):
    # A small first file and large others: full resolution, with a warning.
    _folder(tmp_path / "mostly_large", [(16, 16), (64, 48), (48, 64), (64, 64)])
    with caplog.at_level(logging.WARNING):
        _, info = _load(tmp_path / "mostly_large", pipeline, image_size=32)
    assert info.full_resolution and info.image_size == (64, 64)
    assert "3 of 4 training images are taller or wider" in caplog.text
    assert "full_resolution=True or False" in caplog.text

    # A large first file and small others: resized to image_size.
    _folder(tmp_path / "mostly_small", [(64, 64), (16, 16), (20, 16), (16, 24)])
    _, info = _load(tmp_path / "mostly_small", pipeline, image_size=32)
    assert not info.full_resolution and info.image_size == (32, 32)
    _, forced = _load(
        tmp_path / "mostly_small", pipeline, image_size=32, full_resolution=True
    )
    assert forced.full_resolution and forced.image_size == (64, 64)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_huge_canvas_is_refused_with_its_size(tmp_path, pipeline):
    # Only the headers are read: 32 copies of one 8000 x 8000 bilevel PNG.
    contents = encode_image(np.zeros((8000, 8000), bool))
    (tmp_path / "c").mkdir()
    for index in range(32):
        (tmp_path / "c" / f"{index}.png").write_bytes(contents)
    options = {"image_size": 224, "batch_size": 32}
    with pytest.raises(ValueError, match=r"8000 x 8000 x 3 takes 5\.7 GiB") as error:
        _load(tmp_path, pipeline, max_side=100_000, **options)
    assert "max_side=100000" in str(error.value)
    _, info = _load(tmp_path, pipeline, **options)  # default max_side=512
    assert info.image_size == (512, 512)  # 32 x 512 x 512 x 3 = 24 MiB


def test_the_size_formulas_round_half_up_in_integers():
    rng = np.random.default_rng(0)
    for height, width, longest in rng.integers(1, 3000, (500, 3)):
        if max(height, width) <= longest:
            continue
        scale = longest / max(height, width)
        expected = tuple(
            max(1, int(np.floor(side * scale + 0.5))) for side in (height, width)
        )
        # Exact ties are rare; float64 rounds them the same way here.
        assert canvas.shrunk_size(int(height), int(width), int(longest)) == expected
    assert canvas.shrunk_size(500, 375, 200) == (200, 150)
    assert canvas.shrunk_size(1000, 1, 10) == (10, 1)  # never 0
    assert canvas.center_crop_box(100, 200, (4, 6)) == (0, 25, 100, 150)
    assert canvas.center_crop_box(200, 100, (4, 6)) == (66, 0, 67, 100)


def test_an_archive_through_a_link_is_extracted_once(tmp_path, monkeypatch):
    _folder(tmp_path / "images", [(4, 4), (4, 4)])
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "images", arcname="train")
    link = tmp_path / "elsewhere" / "renamed.tgz"
    link.parent.mkdir()
    os.symlink(archive, link)
    cache = tmp_path / "cache"

    first = folders.extract_archive(archive, cache)

    def fail(*args):
        raise AssertionError("the archive was extracted a second time")

    monkeypatch.setattr(folders, "_extract_members", fail)
    assert folders.extract_archive(link, cache) == first
    assert data.class_names(link, cache_dir=cache) == ["c"]
    assert len(os.listdir(cache)) == 1
