"""Training pairs/s from ~500 x 375 JPEGs: resize-first against full resolution.

Writes `--images` JPEGs of 500 x 375 and 375 x 500 pixels (random smooth content
plus fine noise, about the size of ImageNet photos) into a temporary folder, then
measures, for both paths of `keras_barlow.data.from_image_folder` at
`--image_size`:

* `resize_first` (`full_resolution=False`, the only path before): every image
  resized to `image_size` in the input pipeline, the crop cut from that copy;
* `full_resolution` (the default for such data): every image on a 512 x 512
  canvas with its true size, the crop cut from the original pixels in the model.

For each path three numbers, each in its own JSON line:

* `pipeline`: images/s of iterating the dataset alone (decode, resize or pad,
  batch), no model;
* `step`: image pairs/s of the train step alone, on one batch held in memory
  (augmentation of both views + a small encoder + projector + loss + SGD);
* `fit`: image pairs/s of `model.fit` on the loader, both together.

The encoder is deliberately small (the step is then mostly the augmentation, the
part that changes); with a ResNet-50 the step, not the input, dominates.

Usage:

    python benchmarks/full_resolution.py                      # 224 px, batch 32
    python benchmarks/full_resolution.py --images 64 --steps 2 --batch_size 8
"""

import statistics  # noqa: I001 (_common sets the environment before TensorFlow loads)
import tempfile
import time
import pathlib

from _common import StepTimer, emit, log, new_parser

import keras
import numpy as np
import tensorflow as tf

import keras_barlow
from keras_barlow import data

PATHS = {"resize_first": False, "full_resolution": None}


def make_flags(argv=None):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256, help="JPEGs written")
    parser.add_argument("--batch_size", type=int, default=32, help="image pairs")
    parser.add_argument("--steps", type=int, default=6, help="timed steps / batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first ones")
    parser.add_argument("--preset", default="imagenet")
    parser.add_argument("--max_side", type=int, default=512)
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds, the two paths alternating"
    )
    return parser.parse_args(argv)


def write_jpegs(folder, count, seed=0):
    """`count` JPEGs, alternately 375 x 500 and 500 x 375, quality 90."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = (375, 500) if index % 2 == 0 else (500, 375)
        coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3))
        smooth = tf.image.resize(coarse[None], (height, width), "bicubic")[0].numpy()
        image = np.clip(smooth + rng.normal(0, 12, (height, width, 3)), 0, 255)
        contents = tf.io.encode_jpeg(image.astype(np.uint8), quality=90).numpy()
        (folder / f"{index:05d}.jpg").write_bytes(contents)


def build_model(image_size, preset):
    encoder = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(16, 7, strides=4, activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    model = keras_barlow.BarlowTwins(
        encoder, projector_dims=(256, 256), augmenter=preset, seed=0
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def loader(folder, flags, full_resolution, epochs=None):
    return data.from_image_folder(
        folder,
        labels=None,
        image_size=flags.image_size,
        batch_size=flags.batch_size,
        full_resolution=full_resolution,
        max_side=flags.max_side,
        validate=None,
        seed=0,
        epochs=epochs,
    )


def time_pipeline(dataset, flags):
    """Images/s of iterating the dataset alone, after `warmup` batches."""
    iterator = iter(dataset.repeat())
    for _ in range(flags.warmup):
        next(iterator)
    seconds = []
    for _ in range(flags.steps):
        start = time.perf_counter()
        batch = next(iterator)
        tf.nest.map_structure(lambda tensor: tensor.numpy(), batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_fit(model, dataset, flags):
    """Seconds of each timed `fit` step on `dataset`."""
    timer = StepTimer()
    model.fit(
        dataset.repeat(),
        epochs=1,
        steps_per_epoch=flags.warmup + flags.steps,
        callbacks=[timer],
        verbose=0,
    )
    return timer.seconds[flags.warmup :]


def record(flags, path, stage, seconds, per_batch, unit, extra):
    median = statistics.median(seconds)
    emit(
        "full_resolution",
        flags,
        path=path,
        stage=stage,
        median_s_per_batch=median,
        min_s_per_batch=min(seconds),
        **{unit: per_batch / median},
        **extra,
    )


def main(argv=None):
    flags = make_flags(argv)
    with tempfile.TemporaryDirectory() as temporary:
        folder = pathlib.Path(temporary) / "jpegs"
        log(f"writing {flags.images} JPEGs to {folder}")
        write_jpegs(folder, flags.images)
        # Rounds alternate the paths, so that the load of a shared machine falls
        # on both alike.
        for round_index in range(flags.rounds):
            for path, full_resolution in PATHS.items():
                measure(folder, flags, path, full_resolution, round_index)


def measure(folder, flags, path, full_resolution, round_index):
    dataset = loader(folder, flags, full_resolution)
    spec = tf.nest.map_structure(
        lambda s: [list(s.shape), s.dtype.name], dataset.element_spec
    )
    log(f"round {round_index} {path}: batches {spec}")
    batch = flags.batch_size
    extra = {"round": round_index, "batch": spec}
    seconds = time_pipeline(dataset, flags)
    record(flags, path, "pipeline", seconds, batch, "images_per_s", extra)

    model = build_model(flags.image_size, flags.preset)
    held = dataset.take(1).cache().repeat()
    seconds = time_fit(model, held, flags)
    record(flags, path, "step", seconds, batch, "pairs_per_s", extra)
    seconds = time_fit(model, dataset, flags)
    record(flags, path, "fit", seconds, batch, "pairs_per_s", extra)


if __name__ == "__main__":
    main()
