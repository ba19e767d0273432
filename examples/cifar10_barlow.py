"""Pre-train Barlow Twins on CIFAR-10, evaluate it (kNN, linear probe), export it.

A few minutes on a CPU: a small encoder pre-trained on 10,000 of the shared JPEG
images, and evaluated at its random initialization too (`--baseline`). Measured
from a clean clone on 2 shared CPU cores: 242 s wall, 159 s of it pre-training
(521 images/s); kNN top-1 30.9% -> 37.8%, linear top-1 29.9% -> 48.7% on the
5,000 held-back images:

    python examples/cifar10_barlow.py --backbone convnet --projector 512-512-512 \\
        --limit_images 10000 --epochs 8 --batch_size 128 --optimizer adam \\
        --learning_rate 0.002 --baseline --model_dir runs/cifar10_quick

The full recipe (preset `cifar10-resnet18`: CIFAR ResNet-18, projector
2048-2048-2048, LARS, batch 256, 1000 epochs; solo-learn reports 92.1% linear
accuracy on the CIFAR-10 test set with it) on one or several GPUs:

    python examples/cifar10_barlow.py --model_dir runs/cifar10_resnet18

Data. `--data` is an image folder or a `.tar`/`.tar.gz` archive of one (one
sub-folder per class; default: the shared archive
`../shared/datasets/cifar10-jpeg-train.tar.gz` next to this repository), or
`tfds` for the TFDS `cifar10` training split (`tfds:NAME` for another TFDS
image classification data set). `--val_count` images (5,000 by default) are
held back, stratified by class with a fixed seed that `--seed` does not change.
After pre-training, the features of the non-augmented training images are the
kNN reference set and the training set of the linear probe; the held-back images
are classified.

Devices. All visible GPUs are used (MirroredStrategy when there are several),
and `--batch_size` is the global batch, split evenly across them. On several
machines, start the same command on each with `--workers host:port,...` (every
worker, in the same order) and its own `--task_index` (0 on the first):

    python examples/cifar10_barlow.py --workers 10.0.0.1:2222,10.0.0.2:2222 \\
        --task_index 0 --data /data/cifar10-jpeg-train.tar.gz   # on 10.0.0.1
    python examples/cifar10_barlow.py --workers 10.0.0.1:2222,10.0.0.2:2222 \\
        --task_index 1 --data /data/cifar10-jpeg-train.tar.gz   # on 10.0.0.2

Every worker must reach every other on its port and read the same data and
`--model_dir` (a shared file system or a `gs://` path): worker 0 (the chief)
writes the checkpoints, logs and the exported model, and every worker resumes
from the chief's checkpoints.

Resume. `--model_dir` gets a checkpoint after every epoch
(`keras_barlow.checkpoints.TrainingCheckpoint`). Run the same command again
after a crash or a kill and training continues after the last completed epoch.
The batches of epoch `e` depend only on `(--seed, e)` and the augmentation draws
on the seed and the step, so the resumed run sees what an uninterrupted run
would have seen; with `--deterministic` it ends with the same weights. The
training settings are kept in `model_dir/settings.json`: a restart with other
settings stops with an error. Of them only `--epochs` and `--warmup_epochs` may
change, and `--epochs` not below the epochs already completed (an error says
so); the learning-rate schedule of the remaining steps then follows the new
values (more epochs stretch it). A finished run only evaluates and exports again.

Output: `model_dir/checkpoints/`, TensorBoard event files under `model_dir/logs/`
(loss, collapse indicators, cross-correlation image, kNN accuracy),
`model_dir/summary.json`, and the encoder as a SavedModel with its
preprocessing (`keras_barlow.export.export_encoder`) in `--export_dir`.
"""

import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

from absl import app, flags, logging

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_barlow import (  # noqa: E402
    callbacks,
    checkpoints,
    data,
    evaluation,
    export,
    presets,
    validation,
)

DEFAULT_ARCHIVE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "cifar10-jpeg-train.tar.gz"
)
SPLIT_SEED = 0  # the held-back images do not change with --seed
BACKBONES = {
    "resnet18": "ResNet18",
    "resnet34": "ResNet34",
    "resnet50": "ResNet50",
    "convnet": "convnet",
}
POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
KNN_NEIGHBOURS, KNN_TEMPERATURE = 200, 0.1
EVAL_BATCH_SIZE = 256
# Settings that may change when a run resumes; any other change is refused.
RESUMABLE_CHANGES = ("epochs", "warmup_epochs")

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "data",
    None,
    "Image folder or .tar/.tar.gz archive of one (one sub-folder per "
    "class), or 'tfds' (TFDS cifar10) or 'tfds:NAME'. Default: the shared archive "
    f"{DEFAULT_ARCHIVE}.",
)
flags.DEFINE_integer(
    "val_count", 5000, "Images held back for evaluation, stratified by class."
)
flags.DEFINE_float("val_fraction", None, "Fraction held back instead of --val_count.")
flags.DEFINE_integer(
    "limit_images",
    None,
    "Use at most this many training images (class-balanced), for quick runs.",
)
flags.DEFINE_string(
    "preset",
    "cifar10-resnet18",
    "Recipe of keras_barlow.presets; the flags below override its fields.",
)
flags.DEFINE_enum(
    "backbone",
    None,
    list(BACKBONES),
    "Encoder (default: the "
    "preset's). 'convnet' is a 4-layer convolutional net for CPUs.",
)
flags.DEFINE_string(
    "projector", None, "Projector sizes, e.g. '2048-2048-2048' (default: the preset's)."
)
flags.DEFINE_integer(
    "image_size",
    None,
    "Side of the training images, resized if needed (default: the preset's).",
)
flags.DEFINE_integer("epochs", None, "Pre-training epochs (default: the preset's).")
flags.DEFINE_integer(
    "warmup_epochs",
    None,
    "Learning-rate warm-up epochs "
    "(default: the preset's, at most a tenth of --epochs).",
)
flags.DEFINE_integer(
    "steps_per_epoch",
    None,
    "Batches per epoch (default: all full batches of the training images).",
)
flags.DEFINE_integer(
    "batch_size",
    None,
    "Global batch size, all replicas together (default: the preset's).",
)
flags.DEFINE_enum(
    "optimizer",
    "lars",
    ["lars", "adam"],
    "LARS with the preset's "
    "schedule, or Adam with the same warm-up and cosine schedule.",
)
flags.DEFINE_float(
    "learning_rate",
    None,
    "Peak learning rate of the weights per "
    "256 images, scaled by batch_size / 256 (default: the preset's; "
    "biases keep their ratio to it).",
)
flags.DEFINE_enum(
    "mixed_precision",
    "auto",
    ["auto", *POLICIES],
    "Compute dtype. "
    "'auto': bfloat16 on GPUs of compute capability 8 and more, "
    "float16 on older GPUs, none (float32) on CPUs.",
)
flags.DEFINE_integer(
    "seed", 0, "Seed of the initialization, the data order and the augmentation."
)
flags.DEFINE_bool(
    "deterministic",
    False,
    "Enable TensorFlow op determinism (same weights after a resume; slower on GPUs).",
)
flags.DEFINE_string(
    "model_dir",
    "runs/cifar10_barlow",
    "Checkpoints, logs and summary; a run restarted with it resumes.",
)
flags.DEFINE_enum(
    "eval",
    "both",
    ["knn", "linear", "both", "none"],
    "Evaluation on the held-back images after pre-training.",
)
flags.DEFINE_integer(
    "linear_epochs", 100, "Epochs of the linear probe (on the frozen features)."
)
flags.DEFINE_integer(
    "knn_every",
    0,
    "Also log the kNN accuracy every N epochs during pre-training (0: never).",
)
flags.DEFINE_bool(
    "baseline",
    False,
    "Also evaluate the encoder at its random "
    "initialization, before training: what pre-training must beat.",
)
flags.DEFINE_string(
    "export_dir",
    None,
    "SavedModel folder; the model goes to export_dir/1 (default: model_dir/export).",
)
flags.DEFINE_list(
    "workers",
    None,
    "host:port of every worker, for multi-worker "
    "training (MultiWorkerMirroredStrategy).",
)
flags.DEFINE_integer(
    "task_index", None, "This worker's position in --workers (0 is the chief)."
)
flags.DEFINE_integer(
    "verbose",
    None,
    "Keras fit verbosity (default: a progress "
    "bar on a terminal, a line per epoch otherwise).",
)


# ----------------------------------------------------------------------------------
# Devices.


def tf_config(workers, task_index):
    """The `TF_CONFIG` of worker `task_index` of a cluster of `workers` (host:port)."""
    if task_index is None or not 0 <= task_index < len(workers):
        raise ValueError(
            f"`--task_index` must be in [0, {len(workers) - 1}] for "
            f"{len(workers)} workers. Received: {task_index}"
        )
    return json.dumps(
        {
            "cluster": {"worker": list(workers)},
            "task": {"type": "worker", "index": task_index},
        }
    )


def make_strategy(workers=None, task_index=None):
    """One strategy for the process; call it before any other TensorFlow op.

    `workers` given: MultiWorkerMirroredStrategy through `TF_CONFIG`. Otherwise
    MirroredStrategy over all GPUs when there are several, else the default
    strategy (one GPU or the CPU).
    """
    if workers:
        os.environ["TF_CONFIG"] = tf_config(workers, task_index)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def dtype_policy(choice):
    """The Keras dtype policy of `--mixed_precision`."""
    if choice == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        major = 0
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            major = details.get("compute_capability", (0, 0))[0]
        choice = "bfloat16" if major >= 8 else "float16" if major >= 7 else "none"
    return POLICIES[choice]


# ----------------------------------------------------------------------------------
# Recipe and model.


def make_recipe():
    """The preset with the flags' overrides, e.g. `--epochs` or `--projector`."""
    recipe = presets.get(FLAGS.preset)
    changes = {}
    if FLAGS.backbone is not None:
        changes["backbone"] = BACKBONES[FLAGS.backbone]
    if FLAGS.projector is not None:
        changes["projector_dims"] = parse_projector(FLAGS.projector)
    for name in ("image_size", "epochs", "batch_size"):
        if getattr(FLAGS, name) is not None:
            changes[name] = getattr(FLAGS, name)
    if FLAGS.learning_rate is not None:
        ratio = recipe.learning_rate_biases / recipe.learning_rate_weights
        changes["learning_rate_weights"] = FLAGS.learning_rate
        changes["learning_rate_biases"] = FLAGS.learning_rate * ratio
    epochs = changes.get("epochs", recipe.epochs)
    changes["warmup_epochs"] = (
        FLAGS.warmup_epochs
        if FLAGS.warmup_epochs is not None
        else min(recipe.warmup_epochs, epochs // 10)
    )
    return recipe.replace(**changes)


def parse_projector(text):
    """`"2048-2048-2048"` -> `(2048, 2048, 2048)`."""
    try:
        sizes = tuple(int(size) for size in text.split("-"))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(
            "`--projector` must be positive sizes joined by '-', e.g. "
            f"'2048-2048-2048'. Received: {text!r}"
        )
    return sizes


def convnet(input_shape, width=32):
    """A small encoder for CPUs: 4 x (3x3 convolution, batch norm, ReLU), pooled.

    Widths `width`, 2x, 4x, 8x; the last three halve the resolution. About 0.4 M
    parameters and 16 M multiply-adds per 32x32 image (ResNet-18: 11 M and 560 M).

    Returns:
        A functional `keras.Model` from normalized float images `(B, H, W, 3)` to
        features `(B, 8 * width)`.
    """
    images = keras.Input(input_shape, name="images")
    x = images
    for index, strides in enumerate((1, 2, 2, 2)):
        x = keras.layers.Conv2D(
            width * 2**index,
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"conv{index}",
        )(x)
        # Synchronized across replicas, as the ResNets of keras_barlow.backbones.
        x = keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, synchronized=True, name=f"bn{index}"
        )(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name="convnet")


def make_optimizer(recipe, steps_per_epoch):
    """LARS of the recipe, or Adam with the recipe's schedule (`--optimizer`)."""
    if FLAGS.optimizer == "lars":
        return recipe.optimizer(steps_per_epoch)
    return keras.optimizers.Adam(recipe.learning_rate_schedule(steps_per_epoch))


def build_model(recipe, steps_per_epoch, strategy):
    """The compiled `BarlowTwins` model, created under `strategy`'s scope."""
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        encoder = (
            convnet(recipe.input_shape)
            if recipe.backbone == "convnet"
            else recipe.encoder()
        )
        model = recipe.model(encoder=encoder, seed=FLAGS.seed)
        model.compile(optimizer=make_optimizer(recipe, steps_per_epoch))
    return model


# ----------------------------------------------------------------------------------
# Data.


@dataclasses.dataclass
class DataSource:
    """Where the images come from: an image folder/archive, or arrays from TFDS."""

    name: str
    path: str = None
    arrays: tuple = None

    def load(self, **kwargs):
        """Batches of `keras_barlow.data.from_image_folder` or `from_numpy`."""
        split = {"split_seed": SPLIT_SEED}
        if FLAGS.val_fraction is not None:
            split["val_fraction"] = FLAGS.val_fraction
        else:
            split["val_count"] = FLAGS.val_count
        if self.path is not None:
            return data.from_image_folder(self.path, **split, **kwargs)
        return data.from_numpy(*self.arrays, **split, **kwargs)


def data_source(flag, image_size):
    """The `DataSource` of `--data`, with a clear error when there is no data.

    A TFDS training split is read into memory once (CIFAR-10: 150 MB), so that
    its held-back part is stratified as for an image folder.
    """
    if flag is not None and (flag == "tfds" or flag.startswith("tfds:")):
        name = flag.partition(":")[2] or "cifar10"
        batches = list(
            data.from_tfds(
                name, "train", image_size=image_size, batch_size=4096, training=False
            )
        )
        arrays = tuple(
            np.concatenate([batch[part].numpy() for batch in batches])
            for part in (0, 1)
        )
        return DataSource(f"TFDS {name}", arrays=arrays)
    if flag is None:
        if not DEFAULT_ARCHIVE.exists():
            raise FileNotFoundError(
                f"No --data given and the default archive {DEFAULT_ARCHIVE} does "
                "not exist. Pass --data with an image folder or archive (one "
                "sub-folder per class), or --data tfds for TFDS cifar10."
            )
        flag = str(DEFAULT_ARCHIVE)
    return DataSource(flag, path=flag)


def evaluation_data(source, image_size):
    """`(training images, held-back images)` in file order, with labels."""
    common = {
        "image_size": image_size,
        "batch_size": EVAL_BATCH_SIZE,
        "training": False,
    }
    train = source.load(subset="training", limit_images=FLAGS.limit_images, **common)
    return train, source.load(subset="validation", **common)


def training_data(source, recipe, initial_epoch):
    """Epochs `initial_epoch` to `recipe.epochs - 1` of batches, keyed by epoch."""
    return source.load(
        subset="training",
        limit_images=FLAGS.limit_images,
        image_size=recipe.image_size,
        batch_size=recipe.batch_size,
        seed=FLAGS.seed,
        epochs=recipe.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=FLAGS.steps_per_epoch,
    )


# ----------------------------------------------------------------------------------
# Run state: settings, logs, throughput.


def training_settings(source, recipe, policy, steps_per_epoch):
    """The settings of the training run, as JSON-ready values.

    The number of replicas is left out: a run may resume on other devices (the
    updates are those of the global batch; the augmentation draws change).
    """
    return {
        "data": source.name,
        "val_count": FLAGS.val_count,
        "val_fraction": FLAGS.val_fraction,
        "limit_images": FLAGS.limit_images,
        "recipe": dataclasses.asdict(recipe),
        "optimizer": FLAGS.optimizer,
        "steps_per_epoch": steps_per_epoch,
        "dtype_policy": policy,
        "seed": FLAGS.seed,
    }


def check_settings(path, settings):
    """Store the settings of a new run; refuse to resume one with other settings."""
    if not tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "w") as file:
            file.write(json.dumps(settings, indent=2))
        return
    with tf.io.gfile.GFile(path) as file:
        stored = json.load(file)
    current = json.loads(json.dumps(settings))  # tuples become lists, as stored
    for name in RESUMABLE_CHANGES:
        stored["recipe"].pop(name, None)
        current["recipe"].pop(name, None)
    changed = sorted(_differences(stored, current))
    if changed:
        raise ValueError(
            f"The model directory {os.path.dirname(path)!r} holds a run with other "
            f"settings ({'; '.join(changed)}). Resume it with its own settings, or "
            "pass another --model_dir."
        )


def check_epochs(epochs, checkpoint):
    """Refuse `--epochs` below the epochs that `checkpoint` has already completed."""
    completed = checkpoint.latest_epoch()
    if epochs < completed:
        raise ValueError(
            f"--epochs={epochs} is fewer than the {completed} epochs already "
            f"completed in {checkpoint.directory}. Pass --epochs={completed} or "
            "more to resume (or just evaluate and export) this run, or another "
            "--model_dir for a new one."
        )


def _differences(stored, current, prefix=""):
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            yield from _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            yield f"{prefix}{key}: {old!r} -> {new!r}"


class Throughput(keras.callbacks.Callback):
    """Images per second of the training epochs; put it first in the list."""

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.epoch_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)

    def images_per_second(self):
        """Over the epochs after the first (which traces the step), if any."""
        seconds = self.epoch_seconds[1:] or self.epoch_seconds
        return self.images_per_epoch * len(seconds) / sum(seconds) if seconds else None


# ----------------------------------------------------------------------------------
# Evaluation.


def knn_neighbours(train_count):
    """200 neighbours (InstDisc), fewer for small reference sets: a tenth of them."""
    return max(1, min(KNN_NEIGHBOURS, train_count // 10))


def evaluate(encoder, train_images, val_images, which):
    """kNN and/or linear accuracy on the held-back images, as fractions."""
    if which == "none":
        return {}
    train = evaluation.extract_features(encoder, train_images)
    val = evaluation.extract_features(encoder, val_images)
    num_classes = int(max(train[1].max(), val[1].max())) + 1
    results = {}
    if which in ("knn", "both"):
        k = knn_neighbours(len(train[0]))
        accuracy = evaluation.knn_accuracy(
            *train, *val, k=k, temperature=KNN_TEMPERATURE, num_classes=num_classes
        )
        results["knn"] = {**accuracy, "k": k, "temperature": KNN_TEMPERATURE}
    if which in ("linear", "both"):
        probe = evaluation.linear_probe_on_features(
            *train,
            *val,
            num_classes=num_classes,
            epochs=FLAGS.linear_epochs,
            seed=FLAGS.seed,
        )
        results["linear"] = {
            "top1": probe.top1,
            "top5": probe.top5,
            "epochs": FLAGS.linear_epochs,
        }
    return results


# ----------------------------------------------------------------------------------
# The run.


def run():
    """Pre-train, evaluate and export as the flags say; returns the summary dict."""
    start = time.perf_counter()
    strategy = make_strategy(FLAGS.workers, FLAGS.task_index)  # before any TF op
    if getattr(strategy.extended, "should_checkpoint", True):
        return train_evaluate_export(strategy, start)
    # Workers other than the chief read the checkpoints (model_dir must be
    # shared) and take part in the export, but write their logs and their copy
    # of the export to a scratch folder, removed at the end.
    with tempfile.TemporaryDirectory(prefix="cifar10_barlow_worker-") as scratch:
        summary = train_evaluate_export(strategy, start, scratch_dir=scratch)
    return {**summary, "saved_model": None, "log_dir": None}


def train_evaluate_export(strategy, start, scratch_dir=None):
    """The run on one worker; `scratch_dir` takes the logs and export of a non-chief."""
    chief = scratch_dir is None
    output_dir = FLAGS.model_dir if chief else scratch_dir
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = dtype_policy(FLAGS.mixed_precision)
    keras.mixed_precision.set_dtype_policy(policy)
    recipe = make_recipe()
    replicas = strategy.num_replicas_in_sync
    validation.check_batch_split(recipe.batch_size, replicas)
    if recipe.epochs >= 100 and not tf.config.list_physical_devices("GPU"):
        print(
            f"Note: no GPU. {recipe.epochs} epochs of {recipe.backbone} take days on "
            "a CPU; the docstring of this script has a 4-minute CPU command.",
            flush=True,
        )
    model_dir = FLAGS.model_dir
    tf.io.gfile.makedirs(model_dir)
    checkpoint = checkpoints.TrainingCheckpoint(os.path.join(model_dir, "checkpoints"))
    check_epochs(recipe.epochs, checkpoint)

    source = data_source(FLAGS.data, recipe.image_size)
    train_images, val_images = evaluation_data(source, recipe.image_size)
    train = training_data(source, recipe, initial_epoch=0)
    steps_per_epoch = train.steps_per_epoch
    if chief:
        check_settings(
            os.path.join(model_dir, "settings.json"),
            training_settings(source, recipe, policy, steps_per_epoch),
        )
    print(
        f"{recipe}\n  optimizer = {FLAGS.optimizer!r}, dtype policy = {policy!r}, "
        f"{replicas} replica(s), {train_images.num_images} training and "
        f"{val_images.num_images} held-back images, {steps_per_epoch} steps per "
        "epoch",
        flush=True,
    )

    model = build_model(recipe, steps_per_epoch, strategy)
    summary = {}
    if FLAGS.baseline:
        summary["baseline"] = evaluate(
            model.encoder, train_images, val_images, FLAGS.eval
        )
    initial_epoch = checkpoint.restore(model)
    throughput = Throughput(steps_per_epoch * recipe.batch_size)
    if initial_epoch < recipe.epochs:
        if initial_epoch:
            print(
                f"Resuming after epoch {initial_epoch} from {checkpoint.directory}",
                flush=True,
            )
            train = training_data(source, recipe, initial_epoch)
        monitors = monitoring_callbacks(output_dir, train_images, val_images)
        model.fit(
            train.with_options(_shard_by_data()),
            epochs=recipe.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            callbacks=[throughput, *monitors, checkpoint],
            shuffle=False,  # the dataset orders each epoch itself
            verbose=_verbosity(),
        )
    else:
        print(
            f"Pre-training already finished ({initial_epoch} epochs in "
            f"{checkpoint.directory}): evaluating and exporting.",
            flush=True,
        )

    summary.update(evaluate(model.encoder, train_images, val_images, FLAGS.eval))
    export_dir = FLAGS.export_dir or os.path.join(model_dir, "export")
    if not chief:
        export_dir = os.path.join(output_dir, "export")  # every worker exports
    summary.update(
        {
            "data": source.name,
            "train_images": train_images.num_images,
            "val_images": val_images.num_images,
            "epochs": recipe.epochs,
            "initial_epoch": initial_epoch,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": recipe.batch_size,
            "images_per_second": throughput.images_per_second(),
            "training_seconds": sum(throughput.epoch_seconds),
            "saved_model": export.export_encoder(model, export_dir, overwrite=True),
            "model_dir": model_dir,
            "checkpoint_dir": checkpoint.directory,
            "log_dir": os.path.join(output_dir, "logs"),
            "wall_seconds": time.perf_counter() - start,
        }
    )
    if chief:
        with tf.io.gfile.GFile(os.path.join(model_dir, "summary.json"), "w") as file:
            file.write(json.dumps(summary, indent=2))
    if FLAGS.workers:  # end together: the chief reports an early exit as a crash
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    return summary


def monitoring_callbacks(output_dir, train_images, val_images):
    """NaN guard, collapse and kNN monitors, then Keras' TensorBoard scalars."""
    log_dir = os.path.join(output_dir, "logs")
    fixed_batch = next(iter(val_images))[0]
    monitors = [
        callbacks.NaNGuard(),
        callbacks.CollapseMonitor(fixed_batch),
        callbacks.CrossCorrelationImage(log_dir, fixed_batch),
    ]
    if FLAGS.knn_every:
        monitors.append(
            callbacks.KNNMonitor(
                train_images,
                val_images,
                every_n_epochs=FLAGS.knn_every,
                k=knn_neighbours(train_images.num_images),
                temperature=KNN_TEMPERATURE,
            )
        )
    # After the monitors, so that it writes the values they add to the logs.
    return [*monitors, keras.callbacks.TensorBoard(log_dir, write_graph=False)]


def _shard_by_data():
    """Every worker reads the same order and keeps its share of each batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return options


def _verbosity():
    if FLAGS.verbose is not None:
        return FLAGS.verbose
    return 1 if sys.stdout.isatty() else 2


def print_summary(summary):
    """The end-of-run report: accuracies, speed, time, where things were written."""
    lines = ["", "Summary"]
    for stage in ("baseline", None):
        results = summary.get(stage) if stage else summary
        label = " at initialization" if stage else ""
        if results and "knn" in results:
            knn = results["knn"]
            lines.append(
                f"  kNN{label}: top-1 {knn['top1']:.2%}, top-5 "
                f"{knn['top5']:.2%} (k={knn['k']}, T={knn['temperature']})"
            )
        if results and "linear" in results:
            linear = results["linear"]
            lines.append(
                f"  linear{label}: top-1 {linear['top1']:.2%}, top-5 "
                f"{linear['top5']:.2%} (frozen features, {linear['epochs']} "
                "epochs)"
            )
    first, last = summary["initial_epoch"] + 1, summary["epochs"]
    if first <= last:
        epochs = f"epoch {last}" if first == last else f"epochs {first}-{last}"
        lines.append(
            f"  pre-training: {epochs} of {summary['steps_per_epoch']} steps x "
            f"{summary['batch_size']} images, {summary['images_per_second']:.0f} "
            f"images/s, {summary['training_seconds']:.0f} s"
        )
    else:
        lines.append(f"  pre-training: finished before this run ({last} epochs)")
    lines.append(f"  wall time: {summary['wall_seconds']:.0f} s")
    lines.append(f"  checkpoints: {summary['checkpoint_dir']}")
    lines.append(f"  TensorBoard logs: {summary['log_dir'] or 'the chief writes them'}")
    lines.append(f"  summary: {os.path.join(summary['model_dir'], 'summary.json')}")
    lines.append(f"  SavedModel: {summary['saved_model'] or 'the chief writes it'}")
    print("\n".join(lines), flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    print_summary(run())


if __name__ == "__main__":
    app.run(main)
