"""The learning-rate schedule of the Barlow Twins recipe."""

import math

import keras
from keras import ops

from keras_barlow import _checks as checks


@keras.saving.register_keras_serializable(package="keras_barlow")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0, then cosine decay to `end_factor * base_learning_rate`.

    The schedule of the paper's code (facebookresearch/barlowtwins `main.py`,
    `adjust_learning_rate`), per step:

        step < warmup_steps:  lr = base * step / warmup_steps
        otherwise:            t = (step - warmup_steps) / (total_steps - warmup_steps)
                              q = 0.5 * (1 + cos(pi * t))
                              lr = base * q + base * end_factor * (1 - q)

    After `total_steps` the learning rate stays at `base * end_factor`.

    Args:
        base_learning_rate: float > 0, the peak learning rate, reached at the end
            of the warm-up (the paper: 0.2 * batch_size / 256 for the weights).
        total_steps: int > 0, number of training steps (epochs * steps per epoch).
        warmup_steps: int in [0, total_steps), number of warm-up steps.
        end_factor: float in [0, 1], final learning rate as a fraction of the base.

    Call arguments:
        step: int or float scalar, the optimizer's iteration count.

    Returns:
        float32 scalar, the learning rate at `step`.

    Example:

    >>> schedule = WarmupCosine(0.5, total_steps=1000, warmup_steps=100)
    >>> float(schedule(50))
    0.25
    """

    def __init__(self, base_learning_rate, total_steps, warmup_steps, end_factor=0.001):
        checks.positive("base_learning_rate", base_learning_rate)
        checks.positive_int("total_steps", total_steps)
        if not checks.non_negative_int("warmup_steps", warmup_steps) < total_steps:
            raise ValueError(
                "`warmup_steps` must be an integer in [0, total_steps). Received: "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        checks.probability("end_factor", end_factor)
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.end_factor = float(end_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        base = self.base_learning_rate
        warmup = ops.cast(self.warmup_steps, "float32")
        warmup_rate = base * step / max(self.warmup_steps, 1)
        progress = (step - warmup) / (self.total_steps - self.warmup_steps)
        q = 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(progress, 1.0)))
        cosine_rate = base * q + base * self.end_factor * (1.0 - q)
        return ops.where(step < warmup, warmup_rate, cosine_rate)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "end_factor": self.end_factor,
        }
