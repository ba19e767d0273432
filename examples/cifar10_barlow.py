"""Barlow Twins on CIFAR-10: pre-train without labels, evaluate, export.

The encoder learns from two distorted views of each image; a kNN classifier and a
linear probe judge its features on held-back images; it is exported as a SavedModel
that takes raw images. Without flags: the preset `cifar10-resnet18` on TFDS cifar10,
on all visible GPUs. A run started again resumes, to the epochs saved with it
(`--epochs N` trains it longer). On a CPU, in minutes:

    python examples/cifar10_barlow.py --data cifar10-jpeg-train.tar.gz --backbone \\
        convnet --projector 512-512-512 --limit_images 10000 --epochs 8 \\
        --batch_size 128 --optimizer adam --learning_rate 0.002 --model_dir runs/cpu

On Keras' JAX backend (`KERAS_BACKEND=jax`, or without TensorFlow installed) the
same command reads the data with Grain, trains on every device, and saves the
model as `.keras`; it prints the command that exports it on a machine with
TensorFlow.
"""

import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import sys
import time

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# keras_barlow first: it picks KERAS_BACKEND (TensorFlow if installed, else JAX).
import keras_barlow  # noqa: E402, I001
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_barlow import data, distribute, evaluation  # noqa: E402

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"

SPLIT_SEED = 0  # the held-back images do not change with --seed
BACKBONES = {n.lower(): n for n in ("ResNet18", "ResNet34", "ResNet50", "convnet")}
RECIPE_FLAGS = "backbone projector image_size epochs warmup_epochs batch_size".split()
SETTINGS = ("val_count", "val_fraction", "limit_images", "optimizer", "seed")

# Flags. An integer flag's last argument is its lower bound: numbers are checked as
# they are parsed, and an error names the flag as typed.
F = flags.FLAGS
flags.DEFINE_string(
    "data",
    "tfds",
    "'tfds' (TFDS cifar10), 'tfds:NAME', or a folder of class sub-folders of images "
    "or a .tar/.tar.gz of one, extracted once into ~/.cache/keras_barlow: about "
    "200 MB (50,000 files) for the 16 MB archive of CIFAR-10 JPEG images.",
)
flags.DEFINE_integer("val_count", 5000, "Images held back, stratified by class.", 1)
flags.DEFINE_float("val_fraction", None, "Fraction held back instead of --val_count.")
flags.DEFINE_integer("limit_images", None, "Train on at most N images (balanced).", 1)
flags.DEFINE_string("preset", "cifar10-resnet18", "keras_barlow.presets recipe.")
flags.DEFINE_enum("backbone", None, list(BACKBONES), "Encoder (default: the preset's).")
flags.DEFINE_string("projector", None, "Projector sizes, e.g. '2048-2048-2048'.")
flags.DEFINE_integer("image_size", None, "Side of the training images.", 1)
SAVED = "the run's in --model_dir, or the preset's"
flags.DEFINE_integer("epochs", None, f"Pre-training epochs. Default: {SAVED}.", 1)
flags.DEFINE_integer("warmup_epochs", None, f"Default: {SAVED}, <= epochs/10.", 0)
flags.DEFINE_integer("steps_per_epoch", None, "Batches per epoch (default: all).", 1)
flags.DEFINE_integer("batch_size", None, "Global batch, all replicas together.", 1)
flags.DEFINE_enum("optimizer", "lars", ["lars", "adam"], "Adam: the same schedule.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate per 256 images.")
POLICIES = ["auto", *distribute.POLICIES]
flags.DEFINE_enum("mixed_precision", "auto", POLICIES, "'auto': from the GPU's kind.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, data order and augmentation.")
flags.DEFINE_bool("deterministic", False, "TF op determinism (XLA on JAX is).")
flags.DEFINE_string("model_dir", "runs/cifar10_barlow", "Checkpoints, logs, summary.")
flags.DEFINE_enum("eval", "both", ["knn", "linear", "both", "none"], "Evaluation.")
flags.DEFINE_integer("linear_epochs", 100, "Epochs of the linear probe.", 1)
flags.DEFINE_integer("knn_every", 0, "Log kNN accuracy every N epochs (0: never).", 0)
flags.DEFINE_bool("baseline", False, "Also evaluate the encoder before training.")
flags.DEFINE_string("export_dir", None, "SavedModel folder (default: in model_dir).")
flags.DEFINE_list("workers", None, "host:port of every TensorFlow worker machine.")
flags.DEFINE_integer("task_index", None, "This worker's index in --workers.", 0)
flags.DEFINE_integer("verbose", 1 if sys.stdout.isatty() else 2, "fit verbosity.", 0)
flags.register_validator("learning_rate", lambda v: v is None or v > 0, "must be > 0")
flags.register_validator("val_fraction", lambda v: v is None or 0 < v < 1, "in (0, 1)")


def parse_projector(text):
    """`"2048-2048-2048"` -> `(2048, 2048, 2048)`."""
    sizes = tuple(int(size) for size in text.split("-") if size.isdigit())
    if len(sizes) != text.count("-") + 1 or min(sizes) < 1:
        raise ValueError(
            "`--projector` must be positive sizes joined by '-', e.g. "
            f"'2048-2048-2048'. Received: {text!r}"
        )
    return sizes


def settings_file():
    """The run's settings in --model_dir (`keras_barlow.checkpoints.check_settings`)."""
    return f"{F.model_dir}/settings.json"  # a URL stays a URL


def make_recipe():
    """The preset with the flags' overrides, and the names of those flags.

    A run saved in `--model_dir` keeps its epochs and warm-up unless `--epochs` or
    `--warmup_epochs` change them: running the same command again finishes the
    same run, not the preset's (1000 epochs for CIFAR-10).
    """
    preset = keras_barlow.presets.get(F.preset)
    flagged = [*RECIPE_FLAGS, "learning_rate"]
    given = [name for name in flagged if F[name].value is not None]
    fields = [field.name for field in dataclasses.fields(preset)]
    changes = {name: F[name].value for name in given if name in fields}
    if F.backbone is not None:
        changes["backbone"] = BACKBONES[F.backbone]
    if F.projector is not None:
        changes["projector_dims"] = parse_projector(F.projector)
    if F.learning_rate is not None:  # the biases keep their ratio to the weights
        ratio = preset.learning_rate_biases / preset.learning_rate_weights
        changes["learning_rate_weights"] = F.learning_rate
        changes["learning_rate_biases"] = F.learning_rate * ratio
    saved = keras_barlow.checkpoints.stored_settings(settings_file()) or {}
    for name in ("epochs", "warmup_epochs"):  # resuming: the saved length
        if f"recipe.{name}" in saved:
            changes.setdefault(name, saved[f"recipe.{name}"])
    if F.epochs is None and "recipe.epochs" in saved:
        print(
            f"Resuming: epochs={changes['epochs']}, as saved in {settings_file()}; "
            "pass --epochs to train longer."
        )
    epochs = changes.get("epochs", preset.epochs)
    changes.setdefault("warmup_epochs", min(preset.warmup_epochs, epochs // 10))
    return preset.replace(**changes), ["--" + name for name in given]


# ## Data
# Training batches keyed by epoch (a resumed run sees what an unbroken one would see),
# and the images in file order for the evaluation. TFDS is read into arrays once.


def data_source(recipe):
    """`(name, class names or labels, load)`; see `load` for what it loads."""
    if F.data == "tfds" or F.data.startswith("tfds:"):
        name = F.data.partition(":")[2] or "cifar10"
        if not ON_TENSORFLOW:
            raise app.UsageError(
                f"--data {F.data} reads TFDS, which needs Keras' TensorFlow "
                "backend. Pass --data PATH (a folder of class folders of images, "
                "or a .tar/.tar.gz of one)."
            )
        # A ConnectionError at once when the split must be downloaded and cannot be.
        split = data.from_tfds(name, image_size=recipe.image_size, training=False)
        parts = zip(*split.as_numpy_iterator(), strict=True)
        images, labels = (np.concatenate(part) for part in parts)
        source, classes = f"TFDS {name}", np.unique(labels).tolist()
        loader, arguments = data.from_numpy, (images, labels)
    else:
        source, classes = F.data, data.class_names(F.data)
        loader, arguments = data.from_image_folder, (F.data,)
    held_back = {"val_fraction": F.val_fraction} if F.val_fraction else {}
    held_back = held_back or {"val_count": F.val_count}

    def load(subset, initial_epoch=None):
        """`(dataset, info)`: batches from `initial_epoch` on, or images in order."""
        options = dict(held_back, split_seed=SPLIT_SEED, image_size=recipe.image_size)
        if subset == "training":
            options["limit_images"] = F.limit_images
        if initial_epoch is None:
            options.update(batch_size=256, training=False)
        else:
            options.update(batch_size=recipe.batch_size, seed=F.seed)
            options.update(epochs=recipe.epochs, initial_epoch=initial_epoch)
            options.update(steps_per_epoch=F.steps_per_epoch)
        return loader(*arguments, subset=subset, with_info=True, **options)

    return source, classes, load


# ## Evaluate
# kNN (InstDisc: k = 200, or a tenth of the training images, T = 0.1) and a linear
# probe on the frozen features of the training images: accuracy on held-back images.


def evaluate(encoder, train_images, val_images, k):
    if F.eval == "none":
        return {}
    train = evaluation.extract_features(encoder, train_images)  # (features, labels)
    val = evaluation.extract_features(encoder, val_images)
    results = {}
    if F.eval in ("knn", "both"):
        knn = evaluation.knn_accuracy(*train, *val, k=k, temperature=0.1)
        results["knn"] = {**knn, "k": k, "temperature": 0.1}
    if F.eval in ("linear", "both"):
        probe = evaluation.linear_probe_on_features(
            *train, *val, epochs=F.linear_epochs, seed=F.seed
        )
        results["linear"] = {"top1": probe.top1, "top5": probe.top5}
    return results


# ## The run


def choose_devices():
    """The `tf.distribute` strategy; None on JAX (`DataParallel` on several devices)."""
    if not ON_TENSORFLOW:
        if F.workers:
            raise app.UsageError(
                "--workers is for TensorFlow. On JAX, each process calls "
                "keras_barlow.distribute.initialize_processes (README)."
            )
        if len(keras.distribution.list_devices()) > 1:
            distribute.data_parallel()
        return None
    import tensorflow as tf

    strategy = distribute.choose_strategy(F.workers, F.task_index)  # before any op
    if F.deterministic:
        tf.config.experimental.enable_op_determinism()
    return strategy


def has_gpu():
    if ON_TENSORFLOW:
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return any("gpu" in device.lower() for device in keras.distribution.list_devices())


def run():
    """Pre-train, evaluate and export as the flags say; returns the summary dict."""
    start = time.perf_counter()
    strategy = choose_devices()
    policy = distribute.auto_dtype_policy(F.mixed_precision)
    keras.mixed_precision.set_dtype_policy(policy)
    recipe, overrides = make_recipe()
    replicas = strategy.num_replicas_in_sync if strategy else None
    rule = keras_barlow.input_checks.batch_split_rule(replicas)
    keras_barlow.input_checks.check_batch_split(recipe.batch_size, *rule)
    checkpoint = keras_barlow.TrainingCheckpoint(f"{F.model_dir}/checkpoints")
    checkpoint.check_epochs(recipe.epochs, name="--epochs")

    # ## Data: checked before anything is written.
    source, classes, load = data_source(recipe)
    if len(classes) < 2 and (F.eval != "none" or F.knn_every):
        raise ValueError(
            f"{source} holds a single class, and the evaluation needs 2 or more. "
            "Pass --eval none (and no --knn_every) to pre-train and export only."
        )
    train, info = load("training", initial_epoch=0)
    train_images, train_info = load("training")
    val_images, val_info = load("validation")
    knn_k = max(1, min(200, train_info.num_images // 10))
    print(f"Preset {F.preset!r}, overridden by {', '.join(overrides) or 'no flag'}:")
    print(*str(recipe).splitlines()[1:], f"  {F.optimizer}, {policy}", sep="\n")
    print(f"  Keras {keras.backend.backend()}, {info.pipeline} input pipeline")
    if recipe.epochs >= 100 and not has_gpu():
        print("Note: no GPU, days of training. The docstring has a CPU command.")
    if distribute.is_chief(strategy):  # the data passed its checks: write model_dir
        local = not source.startswith("TFDS ") and "://" not in source
        settings = {name: F[name].value for name in SETTINGS}
        settings.update(data=pathlib.Path(source) if local else source)  # resolved
        settings.update(recipe=dataclasses.asdict(recipe), dtype_policy=policy)
        keras_barlow.checkpoints.check_settings(
            settings_file(),
            dict(settings, steps_per_epoch=info.steps_per_epoch),
            may_change=("recipe.epochs", "recipe.warmup_epochs"),
        )
    # ## Model: the recipe's encoder, projector and LARS (or Adam, on its schedule).
    keras.utils.set_random_seed(F.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = recipe.model(seed=F.seed)
        schedule = recipe.learning_rate_schedule(info.steps_per_epoch)
        adam = keras.optimizers.Adam(schedule) if F.optimizer == "adam" else None
        model.compile(optimizer=adam or recipe.optimizer(info.steps_per_epoch))
    summary = {}
    if F.baseline:
        summary["baseline"] = evaluate(model.encoder, train_images, val_images, knn_k)
    initial_epoch = checkpoint.restore(model)
    seconds = time.perf_counter()
    # ## Fit, evaluate, export. Workers other than the chief write to a scratch folder.
    with distribute.output_dir(strategy, F.model_dir) as output_dir:
        if initial_epoch < recipe.epochs:
            print(f"Pre-training epochs {initial_epoch + 1}-{recipe.epochs}")
            if initial_epoch:
                train, _ = load("training", initial_epoch)
            model.fit(
                distribute.shard_by_data(train) if ON_TENSORFLOW else train,
                epochs=recipe.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=info.steps_per_epoch,
                callbacks=[
                    *monitors(output_dir, train_images, val_images, knn_k),
                    checkpoint,
                ],
                shuffle=False,  # the dataset orders each epoch itself
                verbose=F.verbose,
            )
        seconds = time.perf_counter() - seconds
        summary.update(evaluate(model.encoder, train_images, val_images, knn_k))
        chief = output_dir == F.model_dir
        summary.update(save(model, output_dir, chief))
    images = (recipe.epochs - initial_epoch) * info.steps_per_epoch * recipe.batch_size
    summary.update(
        data=source,
        backend=keras.backend.backend(),
        epochs=recipe.epochs,
        train_images=train_info.num_images,
        val_images=val_info.num_images,
        initial_epoch=initial_epoch,
        steps_per_epoch=info.steps_per_epoch,
        images_per_second=images / seconds if images else None,
        wall_seconds=time.perf_counter() - start,
    )
    if chief:
        summary = write_summary(summary)
    distribute.wait_for_all_workers(strategy)  # else the chief sees an early exit
    return summary


def monitors(output_dir, train_images, val_images, knn_k):
    """NaN guard, collapse and kNN monitors; TensorBoard logs on TensorFlow."""
    batch = next(iter(val_images))[0]
    callbacks = [keras_barlow.NaNGuard(), keras_barlow.CollapseMonitor(batch)]
    if F.knn_every:
        knn = (train_images, val_images, F.knn_every, knn_k)
        callbacks.append(keras_barlow.KNNMonitor(*knn))
    if ON_TENSORFLOW:
        log_dir = f"{output_dir}/logs"
        callbacks.append(keras_barlow.CrossCorrelationImage(log_dir, batch))
        callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
    return callbacks


def save(model, output_dir, chief):
    """The SavedModel on TensorFlow; on JAX the `.keras` model and how to export it."""
    if ON_TENSORFLOW:
        export_dir = F.export_dir if chief and F.export_dir else f"{output_dir}/export"
        saved_model = keras_barlow.export_encoder(model, export_dir, overwrite=True)
        return {"saved_model": saved_model if chief else None}
    path = f"{output_dir}/barlow_twins.keras"
    with distribute.without_distribution():
        model.save(path)
    export_dir = F.export_dir or f"{F.model_dir}/export"
    command = (
        f"KERAS_BACKEND=tensorflow python -m keras_barlow.export {path} "
        f"{export_dir} --overwrite"
    )
    return {"saved_model": None, "keras_model": path, "export_command": command}


def write_summary(summary):
    """Write summary.json; accuracies of an earlier run at the same epoch stay."""
    path = pathlib.Path(F.model_dir) / "summary.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    if earlier.get("epochs") == summary["epochs"]:
        kept = ("baseline", "knn", "linear")
        summary = {**{k: earlier[k] for k in kept if k in earlier}, **summary}
    path.write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary):
    """The end of a run: accuracies, speed, and where everything went."""
    print("\nSummary")
    stages = [(" at initialization", summary.get("baseline") or {}), ("", summary)]
    for (stage, results), name in itertools.product(stages, ("kNN", "linear")):
        if name.lower() in results:
            top1, top5 = results[name.lower()]["top1"], results[name.lower()]["top5"]
            print(f"  {name}{stage}: top-1 {top1:.2%}, top-5 {top5:.2%}")
    if speed := summary["images_per_second"]:
        print(f"  pre-training: {speed:.0f} images/s, tracing included")
    print(f"  {summary['wall_seconds']:.0f} s; checkpoints and logs in {F.model_dir}")
    if summary["saved_model"]:
        print(f"  SavedModel: {summary['saved_model']}")
        print("  to serve it or load it: README.md, section 'Serving the encoder'")
    if summary.get("keras_model"):
        print(f"  model: {summary['keras_model']}; to export it as a SavedModel on a")
        print(f"  machine with TensorFlow: {summary['export_command']}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    print_summary(run())


if __name__ == "__main__":
    app.run(main)
