"""Views per second of `BarlowTwinsAugment`, and where the time goes.

For every output size and preset, the two-view layer runs in a `tf.function`
(optionally compiled with XLA) on a fixed batch of random uint8 images; the script
prints one JSON line per setting with the median time per call, the views per
second (two per image) and the image pairs per second. With `--stages`, each
random layer of view 1 and the normalization are also timed alone, on the input
that layer sees in the pipeline, to show which part dominates.

Usage:

    python benchmarks/augment.py                                # 32 and 224 px
    python benchmarks/augment.py --sizes 224 --batch_size 64 --stages --jit_compile
"""

import sys  # noqa: I001 (_common sets the environment before TensorFlow loads)

from _common import device_name, emit, log, new_parser, summary, time_interleaved

import tensorflow as tf

from keras_barlow import augment, image_ops

SEED = tf.constant([1, 2], tf.int32)


def make_flags(argv=None):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[32, 224], help="output sizes in pixels"
    )
    parser.add_argument(
        "--input_sizes",
        type=int,
        nargs="+",
        default=None,
        help="input image size for each output size "
        "(default: 32 -> 32, larger -> size * 8 / 7, e.g. 256)",
    )
    parser.add_argument("--presets", nargs="+", default=["imagenet", "cifar"])
    parser.add_argument("--batch_size", type=int, default=128, help="images per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument(
        "--jit_compile",
        action="store_true",
        help="also time the layer compiled with XLA",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time each random layer of view 1 alone",
    )
    return parser.parse_args(argv)


def input_size_for(size, flags):
    if flags.input_sizes is not None:
        return dict(zip(flags.sizes, flags.input_sizes, strict=True))[size]
    return size if size <= 32 else round(size * 8 / 7)


def random_images(batch_size, size):
    pixels = tf.random.stateless_uniform(
        (batch_size, size, size, 3), (0, 0), 0, 256, dtype=tf.int32
    )
    return tf.cast(pixels, tf.uint8)


def blocking(function, *args):
    """Run `function(*args)` and wait for its outputs (GPU streams included)."""

    def run():
        outputs = tf.nest.flatten(function(*args))
        return tf.stack([tf.reshape(output, [-1])[0] for output in outputs]).numpy()

    return run


def two_view_runs(layer, images, jit_options):
    runs = {}
    for jit_compile in jit_options:
        function = tf.function(lambda x: layer(x, seed=SEED), jit_compile=jit_compile)
        runs["xla" if jit_compile else "graph"] = blocking(function, images)
    return runs


def stage_runs(layer, images):
    """One timed run per random layer of view 1, fed with the input it sees there."""
    runs = {}
    current = image_ops.to_unit_range(images)
    stages = [*layer.views[0], image_ops.normalize]
    for index, stage in enumerate(stages):
        name = getattr(stage, "name", None) or stage.__name__
        if isinstance(stage, augment.RandomLayer):
            function = tf.function(lambda x, stage=stage: stage(x, seed=SEED))
        else:
            function = tf.function(stage)
        runs[f"{index}_{name}"] = blocking(function, current)
        current = function(current)
    return runs


def measure(size, preset, flags, device):
    batch_size = flags.batch_size
    images = random_images(batch_size, input_size_for(size, flags))
    layer = augment.BarlowTwinsAugment(size, preset=preset)
    jit_options = (False, True) if flags.jit_compile else (False,)
    runs = two_view_runs(layer, images, jit_options)
    if flags.stages:
        runs.update(stage_runs(layer, images))
    durations = time_interleaved(runs, flags.repeats)
    results = {}
    for name, times in durations.items():
        result = summary(times)
        if name in ("graph", "xla"):
            result["views_per_s"] = 2 * batch_size / result["median_s"]
            result["image_pairs_per_s"] = batch_size / result["median_s"]
        results[name] = result
    return {
        "size": size,
        "input_size": images.shape[1],
        "preset": preset,
        "batch_size": batch_size,
        "device": device,
        "results": results,
    }


def main(argv=None):
    flags = make_flags(argv)
    device = device_name()
    for size in flags.sizes:
        for preset in flags.presets:
            log(f"augment: {size} px, {preset} ...")
            emit("augment", flags, **measure(size, preset, flags, device))


if __name__ == "__main__":
    sys.exit(main())
