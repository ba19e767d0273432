"""Full-resolution crops against resize-first: the input pipeline and the step.

Writes `--images` JPEGs of 500 x 375 and 375 x 500 pixels (smooth random content
plus noise, about the size of ImageNet photos) and loads them with
`keras_barlow.data.from_image_folder` at `--image_size` both ways:

* `resize_first` (`full_resolution=False`): every image resized to `image_size`
  in the input pipeline, the crop cut from that copy;
* `full_resolution`: every image on a `--max_side` canvas with its true size,
  each view's crop resampled from the original pixels in the train step.

Two lines, each timing both paths in interleaved rounds: `pipeline` (images/s
of iterating the loader alone: decode, resize or pad, batch) and `step` (image
pairs/s of the library's train step on one batch of the loader held on the
device: augmentation of both views, encoder, projector, loss, SGD). The encoder
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
}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--images", type=int, default=128, help="JPEGs written")
    parser.add_argument("--batch_size", type=int, default=32, help="image pairs")
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--projector", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--max_side", type=int, default=512)
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


def loader(folder, flags, full_resolution):
    return data.from_image_folder(
        folder,
        labels=None,
        image_size=flags.image_size,
        batch_size=flags.batch_size,
        full_resolution=full_resolution,
        max_side=flags.max_side,
        validate=None,
        seed=0,
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
    input_size = flags.max_side if full_resolution else flags.image_size
    config = workloads.Config(
        flags.backbone,
        "imagenet",
        flags.image_size,
        input_size,
        tuple(flags.projector),
        "imagenet",
    )
    model = workloads.make_model("barlow_twins", config)
    return workloads.fit_steps(model, batch if isinstance(batch, dict) else (batch,))


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
