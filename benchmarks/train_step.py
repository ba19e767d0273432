"""Image pairs per second of `BarlowTwins.fit`, against the network's own cost.

Four things are timed in one run, interleaved round by round:

* `barlow_twins`: `BarlowTwins.fit` on uint8 images, augmentation (two views per
  image) and the exact loss included;
* `ceiling`: the same encoder, projector, optimizer and train step fed with
  pre-made views and a trivial O(N D) loss: what the network alone costs;
* `augment`: the model's augmentation layer alone, in a `tf.function`, on the same
  images;
* `loss`: value and gradient of the Barlow Twins loss alone, on embeddings of the
  batch's size and the projector's dimension.

The parts run as in the train step: under the strategy, each replica on its
share of the global batch (with `--replicas 2`, two halves at once, the loss
with its cross-replica reduction), so they compare with the step times.

Each configuration prints one JSON line with the median step time of each, the
image pairs per second, and three ratios:

* `ratio_to_ceiling`: barlow_twins / ceiling throughput, from the median step
  times (1 means augmentation and loss are free), and `ratio_to_ceiling_min`,
  the same from the fastest steps (the least disturbed by other processes);
* `ratio_from_parts`: ceiling / (ceiling + augment + loss), from the medians: the
  same ratio estimated from the parts, much less noisy when the parts are small;
* `augment_over_train`: augmentation throughput / training throughput, how far
  ahead of the step that consumes it the augmentation runs on the same device.

Usage:

    python benchmarks/train_step.py                    # both configurations below
    python benchmarks/train_step.py --configs resnet18_32 --batch_size 256
    # On a GPU, mixed precision, MirroredStrategy over 2 logical GPUs:
    python benchmarks/train_step.py --configs resnet50_224 --batch_size 256 \\
        --mixed_precision mixed_float16 --replicas 2 --steps 20
"""

import sys  # noqa: I001 (_common sets the environment before TensorFlow loads)
from typing import NamedTuple

from _common import (
    StepTimer,
    add_device_flags,
    emit,
    log,
    make_strategy,
    new_parser,
    set_mixed_precision,
    summary,
    time_interleaved,
)

import keras
import tensorflow as tf

import keras_barlow
from keras_barlow import backbones
from keras_barlow.optimizers import LARS
from loss import correlated_embeddings, value_and_gradient_function


class Config(NamedTuple):
    backbone: str
    stem: str
    image_size: int
    input_size: int  # of the uint8 images the augmentation crops from
    projector: tuple
    preset: str


CONFIGS = {
    "resnet18_32": Config("ResNet18", "cifar", 32, 32, (2048, 2048, 2048), "cifar"),
    "resnet50_224": Config(
        "ResNet50", "imagenet", 224, 256, (8192, 8192, 8192), "imagenet"
    ),
}


def make_flags(argv=None):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(CONFIGS),
        default=["resnet18_32", "resnet50_224"],
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        nargs="+",
        default=None,
        help="global batch per configuration (default: 256 for "
        "resnet18_32, 16 for resnet50_224 on a CPU, 256 on a GPU)",
    )
    parser.add_argument(
        "--steps", type=int, default=2, help="timed train steps per fit call"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds (fit calls per model)"
    )
    parser.add_argument(
        "--jit_compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="`compile(jit_compile=...)` of both models",
    )
    add_device_flags(parser)
    return parser.parse_args(argv)


class NetworkOnly(keras_barlow.BarlowTwins):
    """`BarlowTwins` with a trivial loss, the mean squared difference of z1 and z2.

    Everything else (encoder, projector, train step, metrics) is that of
    `BarlowTwins`, so the difference in speed is the augmentation and the loss.
    """

    def _loss_terms(self, view1, view2, training):
        z1 = self(view1, training=training)
        z2 = self(view2, training=training)
        difference = tf.cast(z1, "float32") - tf.cast(z2, "float32")
        loss = tf.reduce_mean(tf.square(difference))
        zero = tf.zeros((), "float32")
        return loss, zero, zero, z1


def default_batch_size(name):
    if name == "resnet50_224" and not tf.config.list_physical_devices("GPU"):
        return 16
    return 256


def make_model(model_class, config, augmenter, jit_compile):
    size = config.image_size
    encoder = getattr(backbones, config.backbone)((size, size, 3), stem=config.stem)
    model = model_class(
        encoder, projector_dims=config.projector, augmenter=augmenter, seed=0
    )
    model.compile(optimizer=LARS(0.2), jit_compile=jit_compile)
    return model


def batches(config, batch_size):
    """uint8 images, and the pre-made normalized views of the same size."""
    shape = (batch_size, config.input_size, config.input_size, 3)
    pixels = tf.random.stateless_uniform(shape, (0, 0), 0, 256, dtype=tf.int32)
    shape = (batch_size, config.image_size, config.image_size, 3)
    views = [tf.random.stateless_normal(shape, (0, i)) for i in (1, 2)]
    return tf.cast(pixels, tf.uint8), tuple(views)


def fit_round(model, dataset, steps):
    def run():
        timer = StepTimer()
        model.fit(
            dataset,
            epochs=1,
            steps_per_epoch=steps,
            shuffle=False,
            verbose=0,
            callbacks=[timer],
        )
        return timer.seconds

    return run


def measure(name, batch_size, flags, strategy):
    config = CONFIGS[name]
    jit_compile = {"auto": "auto", "true": True, "false": False}[flags.jit_compile]
    images, views = batches(config, batch_size)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        full = make_model(keras_barlow.BarlowTwins, config, config.preset, jit_compile)
        keras.utils.set_random_seed(0)
        ceiling = make_model(NetworkOnly, config, None, jit_compile)

    augment, loss = parts_per_replica(
        full, strategy, images, correlated_embeddings(batch_size, config.projector[-1])
    )

    step_times = {"barlow_twins": [], "ceiling": []}
    rounds = {
        "barlow_twins": _recording(
            fit_round(full, tf.data.Dataset.from_tensors(images).repeat(), flags.steps),
            step_times["barlow_twins"],
        ),
        "ceiling": _recording(
            fit_round(
                ceiling, tf.data.Dataset.from_tensors(views).repeat(), flags.steps
            ),
            step_times["ceiling"],
        ),
        "augment": augment,
        "loss": loss,
    }
    durations = time_interleaved(rounds, flags.repeats)
    # The first round (tracing) was untimed: keep the step times of timed rounds.
    results = {
        key: summary(times[-flags.repeats * flags.steps :])
        for key, times in step_times.items()
    }
    results.update({key: summary(durations[key]) for key in ("augment", "loss")})
    for result in results.values():
        result["image_pairs_per_s"] = batch_size / result["median_s"]
    ceiling_s = results["ceiling"]["median_s"]
    parts_s = results["augment"]["median_s"] + results["loss"]["median_s"]
    return {
        "config": name,
        **config._asdict(),
        "batch_size": batch_size,
        "replicas": strategy.num_replicas_in_sync,
        "dtype_policy": keras.mixed_precision.global_policy().name,
        "correlation_method": keras_barlow.losses.choose_method(
            batch_size, config.projector[-1]
        ),
        "results": results,
        "ratio_to_ceiling": ceiling_s / results["barlow_twins"]["median_s"],
        "ratio_to_ceiling_min": results["ceiling"]["min_s"]
        / results["barlow_twins"]["min_s"],
        "ratio_from_parts": ceiling_s / (ceiling_s + parts_s),
        "augment_over_train": results["augment"]["image_pairs_per_s"]
        / results["barlow_twins"]["image_pairs_per_s"],
    }


def parts_per_replica(model, strategy, images, embeddings):
    """`(augment, loss)`: callables that run the two parts of `model`'s step.

    Each replica gets its equal share of the global batch of `images` (uint8) and
    of `embeddings` (`(z1, z2)`), as `fit` splits it; the functions are compiled
    as the train step is (`model.jit_compile`) and return when every replica is
    done.
    """
    replicas = strategy.num_replicas_in_sync

    def shares(*tensors):
        def local(context):
            size = tensors[0].shape[0] // replicas
            start = context.replica_id_in_sync_group * size
            return tuple(tensor[start : start + size] for tensor in tensors)

        return strategy.experimental_distribute_values_from_function(local)

    @tf.function(jit_compile=model.jit_compile)  # as inside the train step
    def augment_one(images):
        return model.augmenter(images, seed=tf.constant([0, 1]))

    value_and_gradient = value_and_gradient_function(
        model.correlation_method, model.jit_compile
    )

    @tf.function
    def augment(*per_replica):
        return strategy.run(augment_one, args=per_replica)

    @tf.function
    def loss(*per_replica):
        return strategy.run(value_and_gradient, args=per_replica)

    def wait(outputs):
        for tensor in tf.nest.flatten(outputs):
            for local in strategy.experimental_local_results(tensor):
                tf.reshape(local, [-1])[0].numpy()

    image_shares, embedding_shares = shares(images), shares(*embeddings)
    return (
        lambda: wait(augment(*image_shares)),
        lambda: wait(loss(*embedding_shares)),
    )


def _recording(run, into):
    def record():
        into.extend(run())

    return record


def main(argv=None):
    flags = make_flags(argv)
    strategy = make_strategy(flags.replicas, flags.logical_gpu_memory_mb)
    set_mixed_precision(flags.mixed_precision)
    batch_sizes = flags.batch_size or [default_batch_size(n) for n in flags.configs]
    for name, batch_size in zip(flags.configs, batch_sizes, strict=True):
        log(f"train_step: {name}, batch {batch_size} ...")
        emit("train_step", flags, **measure(name, batch_size, flags, strategy))


if __name__ == "__main__":
    sys.exit(main())
