"""Does pre-training learn? The CIFAR-10 recipe for a fixed time, then kNN accuracy.

Trains the `cifar10-resnet18` preset (`keras_barlow.presets`: LARS, warm-up +
cosine, augmentation `"cifar"`) on a class-folder archive of JPEGs (the CIFAR-10
training set) less `--val_count` held-back images (`keras_barlow.data`, a
stratified split with seed 0), for about `--train_s` seconds, then measures the
weighted kNN top-1 (`keras_barlow.evaluation.knn_accuracy`, k=200, T=0.1) of the
held-back images against the training images (`extract_features`, no
augmentation), after pre-training and at initialization.

The number of epochs of the schedule is planned so that it ends within
`--train_s`: a short calibration (the same model and step on a batch held on the
device, then the initial weights restored) measures the step time; training
also stops before an epoch that would overrun. One `quality` line: data, recipe
and settings, epochs planned and completed, whether the schedule completed,
training time, kNN top-1 before and after, and their difference in points; with
`--min_gain`, the exit status is 1 when pre-training gains fewer points.

Usage:

    python benchmarks/quality.py --data cifar10-jpeg-train.tar.gz --train_s 180
    python benchmarks/quality.py --data cifar10-jpeg-train.tar.gz \\
        --backbone convnet --projector 512 512 512 --train_s 600 --min_gain 10
"""

import argparse
import math
import pathlib
import sys
import time

import harness
import keras
import numpy as np
import workloads

import keras_barlow
from keras_barlow import data, evaluation

SHARED_ARCHIVE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared/datasets/cifar10-jpeg-train.tar.gz"
)
SMOKE = {
    "backbone": "convnet",
    "projector": [64, 64],
    "batch_size": 16,
    "train_s": 5.0,
    "val_count": 20,
    "knn_k": 10,
    "limit_images": 160,
    "calibration_steps": 2,
}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--data", default=str(SHARED_ARCHIVE), help="class-folder archive or folder"
    )
    parser.add_argument("--recipe", default="cifar10-resnet18")
    parser.add_argument("--backbone", default=None, help="instead of the recipe's")
    parser.add_argument("--projector", type=int, nargs="+", default=None)
    parser.add_argument("--batch_size", type=int, default=None, help="recipe's")
    parser.add_argument("--policy", default="float32", help="Keras dtype policy")
    parser.add_argument("--train_s", type=float, default=180.0, help="training time")
    parser.add_argument(
        "--epochs", type=int, default=None, help="of the schedule (default: planned)"
    )
    parser.add_argument("--calibration_steps", type=int, default=20)
    parser.add_argument("--val_count", type=int, default=5000, help="held back")
    parser.add_argument("--limit_images", type=int, default=None)
    parser.add_argument("--knn_k", type=int, default=200)
    parser.add_argument("--knn_temperature", type=float, default=0.1)
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the kNN accuracy at initialization",
    )
    parser.add_argument("--min_gain", type=float, default=None, help="kNN points")
    parser.add_argument("--seed", type=int, default=0)
    return harness.parse(parser, argv, SMOKE)


def the_recipe(flags):
    recipe = keras_barlow.presets.get(flags.recipe)
    changes = {"backbone": flags.backbone, "batch_size": flags.batch_size}
    if flags.projector:
        changes["projector_dims"] = tuple(flags.projector)
    return recipe.replace(**{k: v for k, v in changes.items() if v is not None})


def loader(flags, recipe, subset, **options):
    """`(dataset, info)` of one side of the split (`keras_barlow.data`)."""
    return data.from_image_folder(
        flags.data,
        image_size=recipe.image_size,
        batch_size=recipe.batch_size,
        subset=subset,
        val_count=flags.val_count,
        limit_images=flags.limit_images,
        seed=flags.seed,
        with_info=True,
        **options,
    )


def step_seconds(model, recipe, steps):
    """Seconds per train step of `model` on a batch held on the device."""
    images = workloads.uint8_images(recipe.batch_size, recipe.image_size)
    run = workloads.fit_steps(model, (images,))
    harness.timed(run, 1)
    return harness.timed(run, steps) / steps


def plan_epochs(flags, step_s, steps_per_epoch, compile_s):
    """Epochs whose steps fit in what `--train_s` leaves after compiling.

    The step was timed on a batch held on the device; 10% more is allowed for the
    input pipeline and Keras' work between epochs.
    """
    if flags.epochs:
        return flags.epochs
    epoch_s = 1.1 * step_s * steps_per_epoch
    return max(1, math.floor((flags.train_s - compile_s) / epoch_s))


class TimeLimit(keras.callbacks.Callback):
    """Records each epoch's seconds; stops before an epoch that would overrun."""

    def __init__(self, budget_s):
        super().__init__()
        self.budget_s = budget_s
        self.epoch_s = []

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.epoch_s.append(now - self.epoch_begin)
        next_epoch_s = np.median(self.epoch_s[1:] or self.epoch_s)
        if now - self.begin + next_epoch_s > self.budget_s:
            self.model.stop_training = True


def knn_top1(model, flags, recipe):
    """kNN top-1 of the held-back images against the training images."""
    features = {}
    for subset in ("training", "validation"):
        dataset, _ = loader(flags, recipe, subset, training=False, validate=None)
        features[subset] = evaluation.extract_features(model.encoder, dataset)
    result = evaluation.knn_accuracy(
        *features["training"],
        *features["validation"],
        k=flags.knn_k,
        temperature=flags.knn_temperature,
    )
    return result["top1"]


def train(model, flags, recipe, info, initial_weights, step_s):
    """Plan the schedule, compile, fit; the fit's facts as a dict."""
    steps_per_epoch = info.steps_per_epoch
    epochs = plan_epochs(flags, step_s["step_s"], steps_per_epoch, step_s["compile_s"])
    recipe = recipe.replace(epochs=epochs, warmup_epochs=min(10, epochs // 10))
    model.set_weights(initial_weights)
    model.compile(optimizer=recipe.optimizer(steps_per_epoch))
    dataset, _ = loader(flags, recipe, "training", epochs=epochs, validate=None)
    limit = TimeLimit(flags.train_s)
    begin = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,  # the loader shuffles, epoch by epoch
        verbose=0,
        callbacks=[limit],
    )
    return {
        "epochs_planned": epochs,
        "warmup_epochs": recipe.warmup_epochs,
        "epochs_completed": len(limit.epoch_s),
        "schedule_completed": len(limit.epoch_s) == epochs,
        "steps_per_epoch": steps_per_epoch,
        "train_wall_s": time.perf_counter() - begin,
        "first_epoch_s": limit.epoch_s[0],
        "median_epoch_s": float(np.median(limit.epoch_s[1:] or limit.epoch_s)),
        "final_loss": history.history["loss"][-1],
    }


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "quality")
    keras.config.set_dtype_policy(flags.policy)
    recipe = the_recipe(flags)
    _, info = loader(flags, recipe, "training")
    keras.utils.set_random_seed(flags.seed)
    model = recipe.model(seed=flags.seed)
    initial_weights = model.get_weights()
    before = knn_top1(model, flags, recipe) if flags.baseline else None

    begin = time.perf_counter()
    model.compile(optimizer=recipe.optimizer(info.steps_per_epoch))
    calibration = {"step_s": step_seconds(model, recipe, flags.calibration_steps)}
    calibration["compile_s"] = time.perf_counter() - begin
    facts = train(model, flags, recipe, info, initial_weights, calibration)
    after = knn_top1(model, flags, recipe)
    recorder.emit(
        "quality",
        data=flags.data,
        recipe=recipe.name,
        backbone=recipe.backbone,
        projector=recipe.projector_dims,
        batch_size=recipe.batch_size,
        policy=flags.policy,
        train_images=info.num_images,
        held_back_images=flags.val_count,
        train_s=flags.train_s,
        calibration=calibration,
        **facts,
        knn={"k": flags.knn_k, "temperature": flags.knn_temperature},
        knn_top1=after,
        knn_top1_at_initialization=before,
        gain_points=None if before is None else 100 * (after - before),
    )
    if flags.min_gain is not None and 100 * (after - (before or 0)) < flags.min_gain:
        return f"Pre-training gained fewer than --min_gain={flags.min_gain} kNN points."
    return 0


if __name__ == "__main__":
    sys.exit(main())
