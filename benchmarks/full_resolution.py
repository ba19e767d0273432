"""Full-resolution crops against resize-first: the input pipeline and the step.

Writes `--images` JPEGs of 500 x 375 and 375 x 500 pixels (smooth random content
plus noise, about the size of ImageNet photos) and loads them with
`keras_barlow.data.from_image_folder` at `--image_size` both ways:

* `resize_first` (`full_resolution=False`): every image resized to `image_size`
  in the input pipeline, the crop cut from that copy;
* `full_resolution`: every image on a `--max_side` canvas with its true size,
  each view's crop resampled from the original pixels in the train step.

Three lines, each timing both paths: `pipeline` (images/s of iterating the
loader alone: decode, resize or pad, batch) and `step` (image pairs/s of the
library's train step on one batch of the loader held on the device: augmentation
of both views, encoder, projector, loss, SGD), both in interleaved rounds of one
`fit` call each; and `fit` (image pairs/s of one `fit` over `--fit_steps` steps
fed by the loader, each step timed by a callback, the first left out: what a
training run sees, with no cost per `fit` call counted). The encoder
is `--backbone`: the tiny `convnet` makes the step mostly augmentation (the part
that changes), `ResNet50` shows the share in a real step.

Usage:

    python benchmarks/full_resolution.py                    # convnet, 224 px, batch 32
    python benchmarks/full_resolution.py --backbone ResNet50 --projector 2048 \\
        --batch_size 8 --images 64
"""

import pathlib
import sys
import tempfile
import time

import harness
import keras
import numpy as np
import workloads
from PIL import Image

from keras_barlow import data

PATHS = {"resize_first": False, "full_resolution": True}
SMOKE = {
    "image_size": 32,
    "images": 8,
    "batch_size": 4,
    "max_side": 64,
    "projector": [32],
    "rounds": 1,
    "round_s": 0.1,
    "fit_steps": 3,
}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--images", type=int, default=128, help="JPEGs written")
    parser.add_argument("--batch_size", type=int, default=32, help="image pairs")
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--projector", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--max_side", type=int, default=512)
    parser.add_argument("--fit_steps", type=int, default=12, help="of the fit line")
    return harness.parse(parser, argv, SMOKE)


def write_jpegs(folder, count, seed=0):
    """`count` JPEGs, alternately 375 x 500 and 500 x 375, quality 90."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = (375, 500) if index % 2 == 0 else (500, 375)
        coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3))
        smooth = Image.fromarray(coarse.astype(np.uint8)).resize(
            (width, height), Image.BICUBIC
        )
        noisy = np.asarray(smooth, np.float64) + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        image.save(folder / f"{index:05d}.jpg", quality=90)


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
        with_info=epochs is not None,
    )


def pipeline_run(dataset):
    """`run(steps)`: the next `steps` batches of the loader, on the host."""
    batches = iter(_forever(dataset))

    def run(steps):
        return [
            keras.tree.map_structure(np.asarray, next(batches)) for _ in range(steps)
        ]

    return run


def _forever(dataset):
    while True:
        yield from dataset


def step_run(dataset, flags, full_resolution):
    """`run(steps)`: train steps on the loader's first batch, held on the device."""
    batch = keras.tree.map_structure(keras.ops.convert_to_tensor, next(iter(dataset)))
    return workloads.fit_steps(
        model_for(flags, full_resolution),
        batch if isinstance(batch, dict) else (batch,),
    )


class _StepTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def fit_step_seconds(folder, flags, full_resolution):
    """The seconds of each step but the first of one `fit` fed by the loader."""
    probe = loader(folder, flags, full_resolution, epochs=1)[1]
    epochs = -(-(flags.fit_steps + 1) // probe.steps_per_epoch)
    dataset, info = loader(folder, flags, full_resolution, epochs=epochs)
    times = _StepTimes()
    model_for(flags, full_resolution).fit(
        dataset,
        epochs=1,
        steps_per_epoch=flags.fit_steps + 1,
        shuffle=False,
        verbose=0,
        callbacks=[times],
    )
    return times.seconds[1:]


def model_for(flags, full_resolution):
    input_size = flags.max_side if full_resolution else flags.image_size
    config = workloads.Config(
        flags.backbone,
        "imagenet",
        flags.image_size,
        input_size,
        tuple(flags.projector),
        "imagenet",
    )
    return workloads.make_model("barlow_twins", config)


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "full_resolution")
    with tempfile.TemporaryDirectory() as temporary:
        folder = pathlib.Path(temporary) / "jpegs"
        write_jpegs(folder, flags.images)
        datasets = {path: loader(folder, flags, full) for path, full in PATHS.items()}
        for stage, make_run, unit in (
            ("pipeline", lambda path: pipeline_run(datasets[path]), "images"),
            (
                "step",
                lambda path: step_run(datasets[path], flags, PATHS[path]),
                "pairs",
            ),
        ):
            runs = {path: make_run(path) for path in PATHS}
            results = harness.timing_records(
                harness.time_rounds(runs, flags.rounds, flags.round_s),
                items_per_step=flags.batch_size,
            )
            recorder.emit(
                "full_resolution",
                stage=stage,
                unit=f"{unit}/s",
                image_size=flags.image_size,
                batch_size=flags.batch_size,
                backbone=flags.backbone,
                results=results,
                full_over_resize_first=results["resize_first"]["median_s"]
                / results["full_resolution"]["median_s"],
            )
        medians = {
            path: float(np.median(fit_step_seconds(folder, flags, full)))
            for path, full in PATHS.items()
        }
        recorder.emit(
            "full_resolution",
            stage="fit",
            unit="pairs/s",
            image_size=flags.image_size,
            batch_size=flags.batch_size,
            backbone=flags.backbone,
            steps=flags.fit_steps,
            results={
                path: {"median_s": seconds, "per_s": flags.batch_size / seconds}
                for path, seconds in medians.items()
            },
            full_over_resize_first=medians["resize_first"] / medians["full_resolution"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
