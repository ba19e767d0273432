"""The batch format (`keras_barlow.batches`): its forms, keys and checks."""

import numpy as np
import pytest

from keras_barlow import batches

pytestmark = pytest.mark.core

IMAGES = np.zeros((2, 8, 8, 3), np.uint8)
LABELS = np.array([0, 1], np.int32)
SIZES = np.array([[8, 4], [3, 8]], np.int32)


@pytest.mark.parametrize(
    "data, expected",
    [
        (IMAGES, (IMAGES, None, None)),
        ((IMAGES,), (IMAGES, None, None)),
        ((IMAGES, LABELS), (IMAGES, None, LABELS)),
        ((IMAGES, None, None), (IMAGES, None, None)),  # Keras' padding
        ({"images": IMAGES, "image_sizes": SIZES}, (IMAGES, SIZES, None)),
        (
            {"images": IMAGES, "image_sizes": SIZES, "labels": LABELS},
            (IMAGES, SIZES, LABELS),
        ),
    ],
)
def test_unpack_reads_every_form(data, expected):
    unpacked = batches.unpack(data)
    for part, value in zip(unpacked, expected, strict=True):
        assert part is value
    assert batches.first_images(data) is IMAGES


def test_full_resolution_batch_uses_the_keys_that_unpack_reads():
    batch = batches.full_resolution_batch(IMAGES, SIZES, LABELS)
    assert batches.is_full_resolution(batch)
    assert set(batch) == {batches.IMAGES, batches.IMAGE_SIZES, batches.LABELS}
    assert batches.unpack(batch) == (IMAGES, SIZES, LABELS)
    assert batches.LABELS not in batches.full_resolution_batch(IMAGES, SIZES)
    assert not batches.is_full_resolution({"images": IMAGES})


def test_the_augmenter_gets_images_or_a_dict_without_labels():
    assert batches.augmenter_input((IMAGES, LABELS)) is IMAGES
    given = batches.augmenter_input(
        batches.full_resolution_batch(IMAGES, SIZES, LABELS)
    )
    assert set(given) == {batches.IMAGES, batches.IMAGE_SIZES}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"image": IMAGES}, r"Received a dict with keys \['image'\]"),
        ({"images": IMAGES, "image_sizes": SIZES, "extra": 1}, "'extra'"),
        ((LABELS, IMAGES), "element 1 looks like the images"),
        ((None,), "empty batch"),
    ],
)
def test_other_forms_are_refused_with_what_to_do(data, message):
    with pytest.raises(ValueError, match=message):
        batches.unpack(data)


@pytest.mark.parametrize(
    "sizes",
    [
        [[0, 0], [3, 8]],  # empty image
        [[-2, 4], [3, 8]],  # negative
        [[9, 4], [3, 8]],  # taller than the canvas
        [[8, 4], [3, 9]],  # wider than the canvas
    ],
)
def test_image_sizes_outside_the_canvas_are_refused(sizes):
    with pytest.raises(ValueError, match=r"from \(1, 1\) to the canvas") as error:
        batches.check_image_sizes(np.array(sizes), IMAGES.shape)
    assert "(8, 8)" in str(error.value)


@pytest.mark.parametrize("sizes", [SIZES[:1], SIZES.astype(np.float32), SIZES[:, :1]])
def test_image_sizes_of_the_wrong_shape_or_dtype_are_refused(sizes):
    with pytest.raises(ValueError, match=r"shape \(batch_size, 2\) = \(2, 2\)"):
        batches.check_image_sizes(sizes, IMAGES.shape)


def test_valid_image_sizes_pass():
    batches.check_image_sizes(np.array([[1, 1], [8, 8]]), IMAGES.shape)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((8, 8, 3), np.uint8), r"Received: shape \(8, 8, 3\)"),
        (np.zeros((2, 8, 8, 1), np.uint8), "Received: 1 channels"),
        (np.zeros((2, 8, 8, 3), bool), "Received: dtype bool"),
    ],
)
def test_validate_images_names_what_was_wrong(images, message):
    with pytest.raises(ValueError, match=message):
        batches.validate_images(images)
