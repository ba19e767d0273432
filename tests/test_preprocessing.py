"""The evaluation transform `keras_barlow.preprocessing.Preprocessing`."""

import numpy as np
import pytest
from conftest import to_numpy

from keras_barlow import preprocessing

pytestmark = pytest.mark.core

# Written out from torchvision's ImageNet normalization, not read from image_ops.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def test_preprocess_resizes_center_crops_and_normalizes():
    images = np.zeros((2, 40, 60, 3), np.uint8)
    images[:, :, 20:40] = 255  # a white vertical band in the middle third
    out = to_numpy(preprocessing.Preprocessing(16, crop_fraction=0.8)(images))
    assert out.shape == (2, 16, 16, 3)
    unit = out * IMAGENET_STD + IMAGENET_MEAN
    # Resized to 20 x 30 then center-cropped to 16: the band (cols 10-20) maps to 3-13.
    np.testing.assert_allclose(unit[:, 8, 5:11], 1.0, atol=1e-4)
    np.testing.assert_allclose(unit[:, 8, 0], 0.0, atol=1e-4)
    same_size = to_numpy(
        preprocessing.Preprocessing(40)(np.full((1, 40, 40, 3), 255, np.uint8))
    )
    np.testing.assert_allclose(
        same_size[0, 0, 0], (1 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-5
    )


@pytest.mark.parametrize(
    "factory, message",
    [
        (
            lambda: preprocessing.Preprocessing((32, 32, 3)),
            r"Received: image_size=\(32, 32, 3\)",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
