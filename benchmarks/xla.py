"""Barlow Twins train steps with and without XLA (`jit_compile`), in one run.

Two identical models (same backbone, projector, optimizer and initial weights)
are compiled with `jit_compile=False` and `jit_compile=True` and trained with
`fit` on the same batch, one step per call, alternating between the two settings
so that the load of a shared machine affects both alike. A callback times each
step from `on_train_batch_begin` until its loss is available (`fit`'s own set-up
is not counted); augmentation is part of the step unless `--augmenter none`.

The script prints one JSON line per setting with the time of the first step
(tracing and, for XLA, compilation) and the median of the timed steps; the XLA
line carries `speedup`, the median step time without XLA divided by that with it
(> 1: XLA is faster).

Usage:

    python benchmarks/xla.py                       # ResNet-18, CIFAR stem, 32 px
    python benchmarks/xla.py --backbone ResNet50 --stem imagenet --image_size 224 \\
        --batch_size 64 --projector 8192 8192 8192
"""

# _common sets the environment before TensorFlow loads.
from _common import (  # noqa: I001
    MIXED_PRECISION_POLICIES,
    StepTimer,
    emit,
    log,
    new_parser,
    set_mixed_precision,
    summary,
)

import keras
import numpy as np
import tensorflow as tf

import keras_barlow
from keras_barlow import backbones


def make_flags(argv=None):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--backbone", choices=("ResNet18", "ResNet34", "ResNet50"), default="ResNet18"
    )
    parser.add_argument("--stem", choices=sorted(backbones.STEMS), default="cifar")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--projector", type=int, nargs="+", default=[2048, 2048, 2048])
    parser.add_argument(
        "--augmenter",
        choices=("cifar", "imagenet", "none"),
        default="cifar",
        help="'none' feeds pre-made views and times the network alone",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed steps per setting after the first one",
    )
    parser.add_argument(
        "--mixed_precision", choices=MIXED_PRECISION_POLICIES, default="float32"
    )
    return parser.parse_args(argv)


def make_model(flags, jit_compile):
    keras.utils.set_random_seed(0)  # the same initial weights for both settings
    encoder = getattr(backbones, flags.backbone)(
        (flags.image_size, flags.image_size, 3), stem=flags.stem
    )
    augmenter = None if flags.augmenter == "none" else flags.augmenter
    model = keras_barlow.BarlowTwins(
        encoder, projector_dims=flags.projector, augmenter=augmenter, seed=0
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile
    )
    return model


def make_dataset(flags):
    """One fixed batch, repeated: uint8 images, or with `--augmenter none` views."""
    rng = np.random.default_rng(0)
    shape = (flags.batch_size, flags.image_size, flags.image_size, 3)
    if flags.augmenter == "none":
        batch = tuple(rng.normal(size=shape).astype(np.float32) for _ in range(2))
    else:
        batch = rng.integers(0, 256, shape, dtype=np.uint8)
    return tf.data.Dataset.from_tensors(batch).repeat()


def run_step(model, dataset, timer):
    """Seconds of one train step of `model`, timed by `timer`."""
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds[-1]


def main(argv=None):
    flags = make_flags(argv)
    set_mixed_precision(flags.mixed_precision)
    dataset = make_dataset(flags)
    settings = (False, True)
    models = {jit: make_model(flags, jit) for jit in settings}
    timer = StepTimer()
    first_step_s = {}
    for jit in settings:
        first_step_s[jit] = run_step(models[jit], dataset, timer)
        log(f"jit_compile={jit}: first step {first_step_s[jit]:.1f} s")
    for _ in range(flags.warmup):
        for jit in settings:
            run_step(models[jit], dataset, timer)
    durations = {jit: [] for jit in settings}
    for _ in range(flags.steps):
        for jit in settings:
            durations[jit].append(run_step(models[jit], dataset, timer))

    medians = {jit: summary(times)["median_s"] for jit, times in durations.items()}
    for jit, times in durations.items():
        extra = {"speedup": medians[False] / medians[True]} if jit else {}
        emit(
            "xla",
            flags,
            jit_compile=jit,
            first_step_s=first_step_s[jit],
            images_per_s=flags.batch_size / medians[jit],
            **summary(times),
            **extra,
        )


if __name__ == "__main__":
    main()
