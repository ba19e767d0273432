"""Views per second of `BarlowTwinsAugment`, and where the time goes.

For every output size and preset, the two-view layer runs compiled as in the
train step (JAX: `jax.jit`; TensorFlow: `tf.function`, and with `--jit_compile`
also with XLA) on a fixed batch of random uint8 images on the device, timed in
interleaved rounds. One `augment` line per setting: the median seconds per
call, the spread, image pairs/s. With `--stages`, each random layer of view 1
and the normalization are also timed alone, on the input that layer sees in the
pipeline, to show which part dominates.

Usage:

    python benchmarks/augment.py                              # 32 and 224 px
    KERAS_BACKEND=jax python benchmarks/augment.py --sizes 224 --batch_size 256
    python benchmarks/augment.py --sizes 224 --batch_size 64 --stages --jit_compile
"""

import sys

import harness
import keras
import workloads

from keras_barlow import augment, image_ops

SMOKE = {
    "sizes": [8],
    "input_sizes": [10],
    "presets": ["imagenet"],
    "batch_size": 4,
    "rounds": 1,
    "round_s": 0.05,
}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument(
        "--input_sizes",
        type=int,
        nargs="+",
        default=None,
        help="input image size for each output size (default: 32 -> 32, larger -> "
        "size * 8 / 7, e.g. 256)",
    )
    parser.add_argument("--presets", nargs="+", default=["imagenet", "cifar"])
    parser.add_argument("--batch_size", type=int, default=128, help="images a call")
    parser.add_argument(
        "--jit_compile", action="store_true", help="TensorFlow: also time it with XLA"
    )
    parser.add_argument(
        "--stages", action="store_true", help="also time each layer of view 1 alone"
    )
    return harness.parse(parser, argv, SMOKE)


def input_size_for(size, flags):
    if flags.input_sizes is not None:
        return dict(zip(flags.sizes, flags.input_sizes, strict=True))[size]
    return size if size <= 32 else round(size * 8 / 7)


def compile_options(flags):
    """name -> jit_compile of the whole layer: JAX compiles with XLA only."""
    if workloads.BACKEND == "jax":
        return {"xla": True}
    return {"graph": False, "xla": True} if flags.jit_compile else {"graph": False}


def repeated(function, *args):
    """`run(steps)` calling `function(*args)` `steps` times."""
    return lambda steps: [function(*args) for _ in range(steps)]


def stage_runs(layer, images, seed):
    """One run per layer of view 1 (and the normalization), on its own input."""
    runs = {}
    current = image_ops.to_unit_range(images)
    stages = [*layer.views[0], image_ops.normalize]
    for index, stage in enumerate(stages):
        name = getattr(stage, "name", None) or stage.__name__
        if isinstance(stage, keras.layers.Layer):
            function = workloads.compiled(lambda x, s, stage=stage: stage(x, seed=s))
        else:
            function = workloads.compiled(lambda x, s, stage=stage: stage(x))
        runs[f"stage{index}_{name}"] = repeated(function, current, seed)
        current = function(current, seed)
    return runs


def measure(size, preset, flags):
    images = workloads.uint8_images(flags.batch_size, input_size_for(size, flags))
    shape = tuple(images.shape)
    seed = keras.ops.convert_to_tensor([1, 2], "int32")
    layer = augment.BarlowTwinsAugment(size, preset=preset)
    layer.build(shape)
    runs = {
        name: repeated(
            workloads.compiled(lambda x, s: layer(x, seed=s), jit_compile), images, seed
        )
        for name, jit_compile in compile_options(flags).items()
    }
    if flags.stages:
        runs.update(stage_runs(layer, images, seed))
    results = harness.timing_records(
        harness.time_rounds(runs, flags.rounds, flags.round_s),
        items_per_step=flags.batch_size,
    )
    return {
        "size": size,
        "input_size": shape[1],
        "preset": preset,
        "batch_size": flags.batch_size,
        "results": results,
    }


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "augment")
    for size in flags.sizes:
        for preset in flags.presets:
            recorder.emit("augment", **measure(size, preset, flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
