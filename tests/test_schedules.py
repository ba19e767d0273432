"""WarmupCosine against the formula of the paper's code."""

import math

import numpy as np
import pytest
from conftest import round_trip

from keras_barlow.schedules import WarmupCosine

pytestmark = pytest.mark.core


def reference_learning_rate(step, base, total_steps, warmup_steps, end_factor):
    """facebookresearch/barlowtwins main.py adjust_learning_rate, one group."""
    if step < warmup_steps:
        return base * step / warmup_steps
    step -= warmup_steps
    max_steps = total_steps - warmup_steps
    q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
    end_lr = base * end_factor
    return base * q + end_lr * (1 - q)


# The paper at batch 2048: 625 steps per epoch, 1000 epochs, 10 warm-up epochs.
BASE, TOTAL, WARMUP = 0.2 * 2048 / 256, 1000 * 625, 10 * 625


@pytest.mark.parametrize(
    "step",
    [
        0,  # start of the warm-up
        WARMUP // 2,  # mid warm-up
        WARMUP - 1,  # last warm-up step
        WARMUP,  # end of the warm-up: the peak
        (WARMUP + TOTAL) // 2,  # middle of the cosine
        TOTAL - 1,
        TOTAL,  # end
    ],
)
def test_matches_reference(step):
    schedule = WarmupCosine(BASE, TOTAL, WARMUP, end_factor=0.001)
    expected = reference_learning_rate(step, BASE, TOTAL, WARMUP, 0.001)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-7)


def test_landmarks():
    schedule = WarmupCosine(1.0, total_steps=300, warmup_steps=100, end_factor=0.01)
    np.testing.assert_allclose(
        [float(schedule(step)) for step in (0, 50, 100, 200, 300, 10_000)],
        [0.0, 0.5, 1.0, (1.0 + 0.01) / 2, 0.01, 0.01],
        rtol=1e-6,
        atol=1e-7,
    )


def test_without_warmup_starts_at_the_peak():
    schedule = WarmupCosine(0.3, total_steps=10, warmup_steps=0, end_factor=0.0)
    assert float(schedule(0)) == pytest.approx(0.3)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)


def test_serialization_round_trip():
    schedule = WarmupCosine(0.3, total_steps=1000, warmup_steps=100, end_factor=0.0)
    restored = round_trip(schedule)
    assert type(restored) is WarmupCosine
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(base_learning_rate=0.0), "base_learning_rate"),
        (dict(total_steps=0), "total_steps"),
        (dict(total_steps=10.5), "total_steps"),
        (dict(warmup_steps=100), "warmup_steps"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(end_factor=1.5), "end_factor"),
    ],
)
def test_invalid_arguments(kwargs, message):
    arguments = {
        **dict(base_learning_rate=0.1, total_steps=100, warmup_steps=10),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        WarmupCosine(**arguments)
