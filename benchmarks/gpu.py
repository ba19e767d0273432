"""keras_barlow on one GPU without TensorFlow: speed, a PyTorch reference, quality.

One script for a GPU machine that has JAX (and PyTorch) but no TensorFlow, run
with `KERAS_BACKEND=jax`, at most about 8 minutes on an H100/H200. It prints one
JSON line per measurement; every section is guarded (a failure prints a line
with `"error"` and the next section runs) and the whole run keeps to
`--time_budget_s` (a section that no longer fits prints a line with
`"skipped"`). Sections, in the order they run:

* `torch`: a plain PyTorch reference of the same step, in a subprocess that
  runs first, before JAX takes its share of the GPU's memory: torchvision
  ResNet-50 without `fc` (zero-initialized last BN of each block, as
  keras_barlow's), the projector `Linear(bias=False) + BN1d +
  ReLU` x2 + `Linear(bias=False)`, the Barlow Twins loss (BatchNorm1d without
  affine, float32), SGD with momentum, bf16 autocast, channels_last, ready views
  on the GPU; eager and with `torch.compile`. Skipped when torch is missing.
* `precision`: how far the cross-correlation matrix C (N=256, D=8192) and the
  loss move at the GPU's default float32 matmul precision (TF32 on Ampere and
  newer) and at full float32, against float64 NumPy.
* `resnet50`: keras_barlow on JAX, `mixed_bfloat16`, ResNet-50 at 224 px, batch
  256 image pairs, projector 8192x3, SGD with momentum, through `model.fit`, in
  interleaved rounds: `augment` (uint8 images of `--input_size` px in,
  `augmenter="imagenet"`, exact loss), `ready` (ready views on the GPU,
  `augmenter=None`, exact loss) and `ceiling` (the same network, ready views,
  a trivial loss: what the network alone costs). Then a summary line with the
  ratios and the targets (augment >= 0.85 x ceiling, >= 1.0 x the PyTorch
  reference, >= 700 pairs/s).
* `resnet18`: the CIFAR ResNet-18 at 32 px, batch 512, projector 2048x3, with the
  `"cifar"` augmentation in the step and with ready views.
* `quality`: the `cifar10-resnet18` preset (LARS, warm-up + cosine, augmentation
  `"cifar"`, `mixed_bfloat16`) trained on CIFAR-10 (`--cifar_npz`, from
  `benchmarks/make_cifar_npz.py`) minus 5,000 held-back images (500 a class,
  seed 0) for as many epochs as fit in `--quality_train_s` seconds (the number
  of epochs is planned from the measured ResNet-18 speed, so that the schedule
  ends; training also stops when time runs out), then the weighted kNN top-1
  (k=200, T=0.1, cosine similarity, InstDisc weights exp(s/T)) of the held-back
  images against the training images, for the trained encoder and at
  initialization.

Steps are timed inside `fit` from the end of its first step to the end of its
last (a callback that waits for the loss at those two steps only, in Keras'
callback thread), so the pipeline is not stalled; each timed `fit` call runs
`--steps` steps after one untimed step, and the median of `--rounds` rounds is
kept.

Usage:

    KERAS_BACKEND=jax python benchmarks/gpu.py --cifar_npz /tmp/cifar10.npz
    KERAS_BACKEND=jax python benchmarks/gpu.py --smoke      # tiny, on a CPU
    KERAS_BACKEND=jax python benchmarks/gpu.py --sections resnet50 torch

`--smoke` swaps in a small convnet, tiny batches and images and a few steps, and
fake CIFAR-like data when `--cifar_npz` is not given: it checks the code paths
on a CPU, its figures mean nothing.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

BENCHMARKS = pathlib.Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS.parent
SECTIONS = ("torch", "precision", "resnet50", "resnet18", "quality")
LAMBD = 0.0051

# Targets of issue 15, on an H100/H200-class GPU.
TARGET_AUGMENT_OVER_CEILING = 0.85
TARGET_OVER_TORCH = 1.0
TARGET_RESNET50_PAIRS_PER_S = 700

SMOKE = {
    "backbone": "convnet",
    "batch_size": 8,
    "image_size": 32,
    "input_size": 36,
    "projector": [64, 64, 64],
    "steps": 2,
    "rounds": 1,
    "r18_batch_size": 16,
    "r18_projector": [64, 64, 64],
    "precision_dims": [16, 64],
    "quality_train_s": 25.0,
    "quality_batch_size": 32,
    "quality_per_class": 40,
    "val_count": 100,
    "knn_k": 20,
    "time_budget_s": 150.0,
}


def make_flags(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument(
        "--time_budget_s",
        type=float,
        default=470.0,
        help="the whole run: sections that no longer fit are skipped, and the "
        "quality section trains for what is left",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU")
    parser.add_argument("--policy", default="mixed_bfloat16", help="Keras dtype policy")
    parser.add_argument(
        "--backbone",
        default="ResNet50",
        help="keras_barlow.backbones constructor of the resnet50 section",
    )
    parser.add_argument("--batch_size", type=int, default=256, help="image pairs")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument(
        "--input_size", type=int, default=256, help="side of the uint8 images"
    )
    parser.add_argument("--projector", type=int, nargs="+", default=[8192] * 3)
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "lars"),
        default="sgd",
        help="of the speed sections: SGD(0.01, momentum 0.9), as the PyTorch "
        "reference, or keras_barlow.LARS(0.2)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--r18_batch_size", type=int, default=512)
    parser.add_argument("--r18_projector", type=int, nargs="+", default=[2048] * 3)
    parser.add_argument(
        "--precision_dims", type=int, nargs=2, default=[256, 8192], help="N D"
    )
    parser.add_argument(
        "--torch_timeout_s",
        type=float,
        default=200.0,
        help="the PyTorch subprocess at most (torch.compile included)",
    )
    parser.add_argument(
        "--cifar_npz",
        default=None,
        help="CIFAR-10 as written by benchmarks/make_cifar_npz.py (a .tar/.tar.gz "
        "of class folders of JPEGs is decoded on the fly); default: "
        "artifacts/cifar10-train.npz when it exists",
    )
    parser.add_argument(
        "--quality_train_s",
        type=float,
        default=240.0,
        help="training time of the quality section, compilation included",
    )
    parser.add_argument(
        "--quality_epochs",
        type=int,
        default=None,
        help="epochs of the schedule (default: planned from the measured speed)",
    )
    parser.add_argument("--quality_batch_size", type=int, default=None)
    parser.add_argument(
        "--quality_per_class",
        type=int,
        default=None,
        help="use only this many images of each class (default: all)",
    )
    parser.add_argument("--val_count", type=int, default=5000, help="held back")
    parser.add_argument("--knn_k", type=int, default=200)
    parser.add_argument("--knn_temperature", type=float, default=0.1)
    parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
    flags = parser.parse_args(argv)
    if flags.smoke:
        given = {arg.split("=")[0].lstrip("-") for arg in (argv or sys.argv[1:])}
        for name, value in SMOKE.items():
            if name not in given:
                setattr(flags, name, value)
    return flags


# ----------------------------------------------------------------------------------
# Output and time.


class Run:
    """The flags, the start time, the results so far, and the JSON output."""

    def __init__(self, flags):
        self.flags = flags
        self.start = time.perf_counter()
        self.results = {}
        self.context = {}

    def elapsed(self):
        return time.perf_counter() - self.start

    def remaining(self):
        return self.flags.time_budget_s - self.elapsed()

    def emit(self, record):
        record = {
            **self.context,
            **record,
            "elapsed_s": round(self.elapsed(), 1),
            "smoke": self.flags.smoke,
        }
        print(json.dumps(record, default=_json_default), flush=True)
        return record


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def guarded(run, name, function, needs_s):
    """Run one section; on failure print an error line and go on."""
    if run.remaining() < needs_s:
        run.emit(
            {
                "benchmark": name,
                "skipped": f"{run.remaining():.0f} s of --time_budget_s left, "
                f"the section needs about {needs_s:.0f} s",
            }
        )
        return
    try:
        function(run)
    except Exception as error:  # noqa: BLE001 - report and go on to the next one
        run.emit(
            {
                "benchmark": name,
                "error": f"{type(error).__name__}: {error}"[:2000],
                "traceback": traceback.format_exc()[-3000:],
            }
        )


# ----------------------------------------------------------------------------------
# Keras helpers (imported lazily: the torch worker must not start JAX).


def keras_context():
    import jax
    import keras

    device = jax.devices()[0]
    return {
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def make_encoder(backbone, image_size, stem):
    from keras_barlow import backbones

    shape = (image_size, image_size, 3)
    if backbone == "convnet":
        return backbones.convnet(shape, width=8)
    return getattr(backbones, backbone)(shape, stem=stem)


def network_only_class():
    """`BarlowTwins` with a trivial loss: the mean squared difference of z1 and z2.

    Everything else (encoder, projector, train step, metrics) is `BarlowTwins`',
    so the difference in speed is the augmentation and the loss.
    """
    from keras import ops

    import keras_barlow

    class NetworkOnly(keras_barlow.BarlowTwins):
        def _loss_terms(self, view1, view2, training):
            z1 = self(view1, training=training)
            z2 = self(view2, training=training)
            difference = ops.cast(z1, "float32") - ops.cast(z2, "float32")
            loss = ops.mean(ops.square(difference))
            zero = ops.zeros((), "float32")
            return loss, zero, zero, z1

    return NetworkOnly


def make_speed_model(
    kind, backbone, image_size, stem, projector, optimizer, preset, input_size
):
    """`kind`: "augment" (uint8 of `input_size` in, `preset`), "ready" or "ceiling"
    (ready views)."""
    import keras

    import keras_barlow

    keras.utils.set_random_seed(0)
    encoder = make_encoder(backbone, image_size, stem)
    model_class = (
        network_only_class() if kind == "ceiling" else keras_barlow.BarlowTwins
    )
    model = model_class(
        encoder,
        projector_dims=projector,
        augmenter=preset if kind == "augment" else None,
        seed=0,
    )
    model.build((None, image_size, image_size, 3))
    if kind == "augment":
        # Without it, Keras' JAX trainer builds the unbuilt augmenter by calling the
        # whole model on the raw images, which fails when they are larger than the
        # encoder's input (reported in benchmarks/RESULTS.md).
        model.augmenter.build((None, input_size, input_size, 3))
    if optimizer == "lars":
        model.compile(optimizer=keras_barlow.LARS(0.2))
    else:
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    return model


def repeat_dataset(batch, length):
    """A `PyDataset` that yields the same batch (a tuple) `length` times."""
    import keras

    class Repeat(keras.utils.PyDataset):
        def __len__(self):
            return length

        def __getitem__(self, index):
            return batch

    return Repeat()


def step_marks(at):
    """A callback that records when the steps in `at` have finished (async-safe:
    it waits for their loss in Keras' callback thread, not in the training loop)."""
    import keras

    class Marks(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.times, self.losses = {}, {}

        def on_train_batch_end(self, batch, logs=None):
            if batch in at:
                self.losses[batch] = float(logs["loss"])
                self.times[batch] = time.perf_counter()

    return Marks()


def timed_fit(model, batch, steps):
    """Seconds per step over steps 2..steps+1 of one `fit` call, and the last loss."""
    marks = step_marks({0, steps})
    model.fit(
        repeat_dataset(batch, steps + 1),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[marks],
    )
    return (marks.times[steps] - marks.times[0]) / steps, marks.losses[steps]


def speed_comparison(run, models, batches, batch_size):
    """Compile each model (an untimed 2-step fit), then interleaved timed rounds."""
    flags = run.flags
    first_s, step_times, losses = {}, {name: [] for name in models}, {}
    for name, model in models.items():
        start = time.perf_counter()
        timed_fit(model, batches[name], 1)
        first_s[name] = time.perf_counter() - start
    for _ in range(flags.rounds):
        for name, model in models.items():
            seconds, losses[name] = timed_fit(model, batches[name], flags.steps)
            step_times[name].append(seconds)
    results = {}
    for name in models:
        step_s = statistics.median(step_times[name])
        results[name] = {
            "ms_per_step": round(1000 * step_s, 2),
            "ms_per_step_rounds": [round(1000 * s, 2) for s in step_times[name]],
            "image_pairs_per_s": round(batch_size / step_s, 1),
            "first_fit_s": round(first_s[name], 1),
            "loss": losses[name],
            "loss_finite": bool(np.isfinite(losses[name])),
        }
    return results


def uint8_images(batch_size, size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)


def device_views(batch_size, size):
    import jax

    keys = jax.random.split(jax.random.key(0))
    shape = (batch_size, size, size, 3)
    return tuple(jax.random.normal(key, shape, "float32") for key in keys)


def set_policy(policy):
    import keras

    keras.config.set_dtype_policy(policy)


# ----------------------------------------------------------------------------------
# Sections.


def section_precision(run):
    """Errors of C and of the loss against float64, per matmul precision."""
    import jax
    import jax.numpy as jnp

    import keras_barlow

    batch_size, dim = run.flags.precision_dims
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((batch_size, dim))
    z1 = shared + 0.5 * rng.standard_normal((batch_size, dim))
    z2 = shared + 0.5 * rng.standard_normal((batch_size, dim))
    a, b = ((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) for z in (z1, z2))
    reference = a.T @ b / batch_size
    reference_loss = float(
        np.sum((np.diag(reference) - 1) ** 2)
        + LAMBD * (np.sum(reference**2) - np.sum(np.diag(reference) ** 2))
    )
    errors = {}
    for precision in ("default", "tensorfloat32", "float32"):
        with jax.default_matmul_precision(precision):
            c = np.asarray(
                jax.jit(lambda x, y: x.T @ y / batch_size)(
                    jnp.float32(a), jnp.float32(b)
                ),
                np.float64,
            )
            loss = float(
                keras_barlow.barlow_twins_loss(
                    jnp.float32(z1), jnp.float32(z2), lambd=LAMBD
                )
            )
        errors[precision] = {
            "c_relative_error": float(
                np.linalg.norm(c - reference) / np.linalg.norm(reference)
            ),
            "c_max_abs_error": float(np.max(np.abs(c - reference))),
            "loss_relative_error": abs(loss - reference_loss) / reference_loss,
        }
    run.emit(
        {
            "benchmark": "cross_correlation_precision",
            "batch_size": batch_size,
            "dim": dim,
            **errors,
        }
    )


def section_torch(run):
    flags = run.flags
    if importlib.util.find_spec("torch") is None:
        run.emit({"benchmark": "torch_reference", "skipped": "torch is not installed"})
        return
    timeout = max(30.0, min(flags.torch_timeout_s, run.remaining() - 150))
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--torch_worker"]
    for name in ("batch_size", "image_size", "steps", "rounds"):
        command += [f"--{name}", str(getattr(flags, name))]
    command += ["--projector", *map(str, flags.projector)]
    if flags.smoke:
        command.append("--smoke")
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        stdout, stderr, code = result.stdout, result.stderr, result.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = _text(expired.stdout)
        stderr = _text(expired.stderr) + f"\n(stopped after {timeout:.0f} s)"
        code = "timeout"
    got_lines = False
    for line in stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            got_lines = True
            if "image_pairs_per_s" in record:
                run.results[f"torch_{record['variant']}"] = record["image_pairs_per_s"]
            run.emit(record)
    if code != 0:
        run.emit(
            {
                "benchmark": "torch_reference",
                "error": f"worker exit {code}",
                "partial_output": got_lines,
                "stderr_tail": stderr[-3000:],
            }
        )


def _text(value):
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def section_resnet50(run):
    flags = run.flags
    set_policy(flags.policy)
    try:
        models = {
            kind: make_speed_model(
                kind,
                flags.backbone,
                flags.image_size,
                "imagenet",
                flags.projector,
                flags.optimizer,
                "imagenet",
                flags.input_size,
            )
            for kind in ("augment", "ready", "ceiling")
        }
        views = device_views(flags.batch_size, flags.image_size)
        batches = {
            "augment": (uint8_images(flags.batch_size, flags.input_size),),
            "ready": views,
            "ceiling": views,
        }
        results = speed_comparison(run, models, batches, flags.batch_size)
    finally:
        set_policy("float32")
    run.results["resnet50"] = results
    run.emit(
        {
            "benchmark": "keras_barlow_resnet50",
            "backbone": flags.backbone,
            "policy": flags.policy,
            "batch_size": flags.batch_size,
            "image_size": flags.image_size,
            "input_size": flags.input_size,
            "projector": flags.projector,
            "optimizer": flags.optimizer,
            "steps": flags.steps,
            "rounds": flags.rounds,
            "results": results,
        }
    )
    emit_targets(run)


def emit_targets(run):
    results = run.results.get("resnet50")
    if not results:
        return
    augment = results["augment"]["image_pairs_per_s"]
    ready = results["ready"]["image_pairs_per_s"]
    ceiling = results["ceiling"]["image_pairs_per_s"]
    torch_runs = {
        key[len("torch_") :]: value
        for key, value in run.results.items()
        if key.startswith("torch_")
    }
    record = {
        "benchmark": "targets",
        "augment_pairs_per_s": augment,
        "ready_pairs_per_s": ready,
        "ceiling_pairs_per_s": ceiling,
        "augment_over_ceiling": round(augment / ceiling, 3),
        "ready_over_ceiling": round(ready / ceiling, 3),
        "target_augment_over_ceiling": TARGET_AUGMENT_OVER_CEILING,
        "met_augment_over_ceiling": augment / ceiling >= TARGET_AUGMENT_OVER_CEILING,
        "target_resnet50_pairs_per_s": TARGET_RESNET50_PAIRS_PER_S,
        "met_resnet50_pairs_per_s": augment >= TARGET_RESNET50_PAIRS_PER_S,
    }
    if torch_runs:
        best_variant = max(torch_runs, key=torch_runs.get)
        best = torch_runs[best_variant]
        record.update(
            torch_pairs_per_s=torch_runs,
            torch_best=best_variant,
            augment_over_torch_best=round(augment / best, 3),
            ready_over_torch_best=round(ready / best, 3),
            target_over_torch=TARGET_OVER_TORCH,
            met_augment_over_torch=augment / best >= TARGET_OVER_TORCH,
        )
    else:
        record["torch"] = "no PyTorch figures in this run"
    run.emit(record)


def section_resnet18(run):
    flags = run.flags
    backbone = "convnet" if flags.smoke else "ResNet18"
    set_policy(flags.policy)
    try:
        models = {
            kind: make_speed_model(
                kind,
                backbone,
                32,
                "cifar",
                flags.r18_projector,
                flags.optimizer,
                "cifar",
                32,
            )
            for kind in ("augment", "ready")
        }
        views = device_views(flags.r18_batch_size, 32)
        batches = {"augment": (uint8_images(flags.r18_batch_size, 32),), "ready": views}
        results = speed_comparison(run, models, batches, flags.r18_batch_size)
    finally:
        set_policy("float32")
    run.results["resnet18"] = results
    run.emit(
        {
            "benchmark": "keras_barlow_resnet18_cifar",
            "backbone": backbone,
            "policy": flags.policy,
            "batch_size": flags.r18_batch_size,
            "image_size": 32,
            "projector": flags.r18_projector,
            "optimizer": flags.optimizer,
            "results": results,
        }
    )


def load_cifar(flags):
    """`(images, labels, source)` of the CIFAR-10 training set, or fake data."""
    path = flags.cifar_npz
    default = REPOSITORY / "artifacts" / "cifar10-train.npz"
    if path is None and default.exists():
        path = str(default)
    if path is None:
        if not flags.smoke:
            raise FileNotFoundError(
                "No CIFAR-10 data: pass --cifar_npz (benchmarks/make_cifar_npz.py "
                "writes it)"
            )
        return (*fake_cifar(flags.quality_per_class or 40), "fake (smoke)")
    if path.endswith((".tar", ".tar.gz", ".tgz")):
        sys.path.insert(0, str(BENCHMARKS))
        from make_cifar_npz import load_archive

        images, labels, _ = load_archive(path, flags.quality_per_class)
        return images, labels, path
    with np.load(path) as data:
        images, labels = data["images"], data["labels"]
    if flags.quality_per_class:
        keep = np.concatenate(
            [
                np.flatnonzero(labels == label)[: flags.quality_per_class]
                for label in np.unique(labels)
            ]
        )
        images, labels = images[keep], labels[keep]
    return images, labels, path


def fake_cifar(per_class, classes=10):
    """uint8 32x32 images whose mean color depends on the class (kNN > chance)."""
    rng = np.random.default_rng(0)
    colors = rng.integers(40, 216, (classes, 3))
    labels = np.repeat(np.arange(classes), per_class)
    noise = rng.normal(0, 30, (len(labels), 32, 32, 3))
    images = np.clip(colors[labels][:, None, None, :] + noise, 0, 255)
    return images.astype(np.uint8), labels.astype(np.int64)


def stratified_split(labels, val_count, seed=0):
    """`(train_index, val_index)`: `val_count` held back, equal shares per class."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = val_count // len(classes)
    val = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        val.append(rng.choice(members, per_class, replace=False))
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def shuffled_batches(images, batch_size, seed=0):
    """A `PyDataset` of full batches of uint8 images, reshuffled every epoch."""
    import keras

    class Shuffled(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self):
            return len(images) // batch_size

        def __getitem__(self, index):
            take = self.order[index * batch_size : (index + 1) * batch_size]
            return (images[np.sort(take)],)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(images))

    return Shuffled()


def encoder_features(encoder, images, batch_size):
    """float32 features of uint8 images: `Preprocessing` (normalize), the encoder."""
    import keras

    import keras_barlow

    inputs = keras.Input(images.shape[1:], dtype="uint8")
    preprocessing = keras_barlow.Preprocessing(images.shape[1])
    features = encoder(preprocessing(inputs), training=False)
    extractor = keras.Model(inputs, features)
    count = len(images)
    padded = -count % batch_size
    if padded:  # one batch shape: one compilation
        images = np.concatenate([images, images[:padded]])
    features = extractor.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(features, np.float32)[:count]


def knn_top1(train_features, train_labels, test_features, test_labels, k, temperature):
    """Weighted kNN top-1 (InstDisc): the k most cosine-similar training samples
    vote for their class with weight exp(s / T); in JAX, chunks of test samples."""
    import jax
    import jax.numpy as jnp

    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    k = min(k, len(train_features))

    def normalized(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train = normalized(jnp.asarray(train_features, jnp.float32))
    train_labels = jnp.asarray(train_labels, jnp.int32)

    @jax.jit
    def predict(test, train, train_labels):
        with jax.default_matmul_precision("float32"):
            similarity = normalized(test) @ train.T
        top, index = jax.lax.top_k(similarity, k)
        # Subtracting each row's best similarity rescales its votes by one constant.
        weights = jnp.exp((top - top[:, :1]) / temperature)
        votes = jax.nn.one_hot(train_labels[index], num_classes)
        return jnp.argmax(jnp.einsum("nk,nkc->nc", weights, votes), axis=1)

    chunk = max(1, min(len(test_features), 2**25 // len(train_features)))
    predictions = []
    for start in range(0, len(test_features), chunk):
        part = np.asarray(test_features[start : start + chunk], np.float32)
        missing = chunk - len(part)
        if missing:
            part = np.concatenate(
                [part, np.zeros((missing, part.shape[1]), part.dtype)]
            )
        predictions.append(
            np.asarray(predict(part, train, train_labels))[: chunk - missing]
        )
    return float(np.mean(np.concatenate(predictions) == np.asarray(test_labels)))


def plan_epochs(run, train_s, steps_per_epoch, batch_size):
    """`(epochs, seconds an epoch, why)`: the epochs of the schedule that should fit
    in `train_s` seconds (the seconds an epoch is None when not estimated)."""
    flags = run.flags
    if flags.quality_epochs:
        return flags.quality_epochs, None, "--quality_epochs"
    r18 = run.results.get("resnet18")
    if not r18:
        return 10, None, "no ResNet-18 speed measured in this run: a guess"
    # Batch 256 instead of 512 and LARS instead of SGD: assume 70% of the speed,
    # and 1 s an epoch for Keras' work between epochs. Too few epochs end the
    # schedule early; too many are cut by the time limit before it ends.
    pairs_per_s = 0.7 * r18["augment"]["image_pairs_per_s"]
    compile_s = 1.5 * r18["augment"]["first_fit_s"]
    epoch_s = steps_per_epoch * batch_size / pairs_per_s + 1.0
    epochs = int((train_s - compile_s) // epoch_s)
    return (
        max(1, epochs),
        epoch_s,
        (
            f"{train_s:.0f} s, compile about {compile_s:.0f} s, about {epoch_s:.1f} s "
            "an epoch from 0.7 x the ResNet-18 augment speed of this run + 1 s"
        ),
    )


def section_quality(run):
    import keras

    import keras_barlow

    flags = run.flags
    images, labels, source = load_cifar(flags)
    train_index, val_index = stratified_split(labels, flags.val_count)
    train_images = images[train_index]
    recipe = keras_barlow.presets.get("cifar10-resnet18")
    batch_size = flags.quality_batch_size or recipe.batch_size
    steps_per_epoch = len(train_images) // batch_size
    eval_reserve = 45.0 if not flags.smoke else 15.0
    train_s = min(flags.quality_train_s, run.remaining() - eval_reserve)
    epochs, epoch_s, planned_from = plan_epochs(
        run, train_s, steps_per_epoch, batch_size
    )
    warmup_epochs = min(10, epochs // 10)
    recipe = recipe.replace(
        batch_size=batch_size, epochs=epochs, warmup_epochs=warmup_epochs
    )

    set_policy(flags.policy)
    try:
        keras.utils.set_random_seed(0)
        encoder = make_encoder("convnet", 32, None) if flags.smoke else None
        model = recipe.model(encoder=encoder, seed=0)
        model.build((None, 32, 32, 3))
        model.compile(optimizer=recipe.optimizer(steps_per_epoch))

        start = time.perf_counter()
        initial = knn_of(model.encoder, images, labels, train_index, val_index, flags)
        baseline_s = time.perf_counter() - start

        timer = EpochTimer(train_s, epoch_s)
        start = time.perf_counter()
        history = model.fit(
            shuffled_batches(train_images, batch_size),
            epochs=epochs,
            verbose=0,
            callbacks=[timer],
        )
        train_wall_s = time.perf_counter() - start

        start = time.perf_counter()
        top1 = knn_of(model.encoder, images, labels, train_index, val_index, flags)
        knn_s = time.perf_counter() - start
    finally:
        set_policy("float32")
    run.emit(
        {
            "benchmark": "quality_cifar10_resnet18",
            "data": source,
            "train_images": len(train_images),
            "held_back_images": len(val_index),
            "recipe": recipe.name,
            "backbone": "convnet (smoke)" if flags.smoke else recipe.backbone,
            "policy": flags.policy,
            "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch,
            "epochs_planned": epochs,
            "epochs_completed": len(timer.epoch_s),
            "epochs_planned_from": planned_from,
            "warmup_epochs": warmup_epochs,
            "train_budget_s": round(train_s, 1),
            "train_wall_s": round(train_wall_s, 1),
            "train_minutes": round(train_wall_s / 60, 2),
            "first_epoch_s": round(timer.epoch_s[0], 1) if timer.epoch_s else None,
            "median_epoch_s": round(statistics.median(timer.epoch_s[1:]), 2)
            if len(timer.epoch_s) > 1
            else None,
            "final_loss": history.history["loss"][-1]
            if history.history.get("loss")
            else None,
            "knn": {"k": flags.knn_k, "temperature": flags.knn_temperature},
            "knn_top1": top1,
            "knn_top1_at_initialization": initial,
            "baseline_s": round(baseline_s, 1),
            "knn_s": round(knn_s, 1),
        }
    )


def knn_of(encoder, images, labels, train_index, val_index, flags):
    batch = 1000 if not flags.smoke else 64
    features = encoder_features(encoder, images, batch)
    return knn_top1(
        features[train_index],
        labels[train_index],
        features[val_index],
        labels[val_index],
        flags.knn_k,
        flags.knn_temperature,
    )


def epoch_timer_class():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch; stops before an epoch that would overrun.

        The next epoch is expected to last as long as the median epoch after the
        first (which compiles); after the first alone, `expected_epoch_s` when
        given.
        """

        def __init__(self, budget_s, expected_epoch_s=None):
            super().__init__()
            self.budget_s = budget_s
            self.expected_epoch_s = expected_epoch_s
            self.epoch_s = []

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epoch_s.append(now - self.epoch_start)
            if len(self.epoch_s) > 1:
                next_epoch_s = statistics.median(self.epoch_s[1:])
            else:
                next_epoch_s = self.expected_epoch_s or self.epoch_s[0]
            if now - self.start + next_epoch_s > self.budget_s:
                self.model.stop_training = True

    return EpochTimer


def EpochTimer(budget_s, expected_epoch_s=None):  # noqa: N802 - reads as a class
    return epoch_timer_class()(budget_s, expected_epoch_s)


# ----------------------------------------------------------------------------------
# The PyTorch reference (its own process).


def torch_worker(flags):
    import torch
    import torchvision
    from torch import nn

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    # JAX's default for float32 products on these GPUs is TF32: the same here.
    torch.set_float32_matmul_precision("high")
    context = {
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "smoke": flags.smoke,
    }
    backbone_name = "resnet18" if flags.smoke else "resnet50"
    backbone = getattr(torchvision.models, backbone_name)(zero_init_residual=True)
    features = backbone.fc.in_features
    backbone.fc = nn.Identity()
    layers, width = [], features
    for units in flags.projector[:-1]:
        layers += [
            nn.Linear(width, units, bias=False),
            nn.BatchNorm1d(units),
            nn.ReLU(),
        ]
        width = units
    layers.append(nn.Linear(width, flags.projector[-1], bias=False))
    model = nn.Sequential(backbone, nn.Sequential(*layers))
    model = model.to(device, memory_format=torch.channels_last)
    normalize = nn.BatchNorm1d(flags.projector[-1], affine=False).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, **({"fused": True} if cuda else {})
    )

    def loss_of(z1, z2):
        z1, z2 = normalize(z1.float()), normalize(z2.float())
        c = z1.T @ z2 / z1.shape[0]
        diagonal = torch.diagonal(c)
        on_diag = (diagonal - 1).pow(2).sum()
        off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
        return on_diag + LAMBD * off_diag

    def make_step(network, loss_function):
        def step(x1, x2):
            with torch.autocast(device, dtype=torch.bfloat16):
                z1, z2 = network(x1), network(x2)
            loss = loss_function(z1, z2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        return step

    shape = (flags.batch_size, 3, flags.image_size, flags.image_size)
    views = [
        torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
        for _ in range(2)
    ]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(step, count):
        sync()
        start = time.perf_counter()
        for _ in range(count):
            loss = step(*views)
        sync()
        return time.perf_counter() - start, loss

    def report(name, times, first_s, loss, **extra):
        step_s = statistics.median(times)
        record = {
            "benchmark": "torch_reference",
            "variant": name,
            "backbone": f"torchvision {backbone_name}",
            "batch_size": flags.batch_size,
            "image_size": flags.image_size,
            "projector": flags.projector,
            "autocast": "bfloat16",
            "channels_last": True,
            "optimizer": "SGD(0.01, momentum 0.9)",
            "fused_optimizer": cuda,
            "ms_per_step": round(1000 * step_s, 2),
            "ms_per_step_rounds": [round(1000 * s, 2) for s in times],
            "image_pairs_per_s": round(flags.batch_size / step_s, 1),
            "first_3_steps_s": round(first_s, 1),
            "loss_finite": bool(torch.isfinite(loss).item()),
            **extra,
            **context,
        }
        print(json.dumps(record), flush=True)

    # Eager first, and one round of it printed at once: should torch.compile fail
    # or overrun the time limit, the eager figure is kept (the later, interleaved
    # line replaces it).
    steps, first_s = {"eager": make_step(model, loss_of)}, {}
    first_s["eager"], loss = timed(steps["eager"], 3)
    seconds, loss = timed(steps["eager"], flags.steps)
    report("eager", [seconds / flags.steps], first_s["eager"], loss, provisional=True)
    try:
        steps["compiled"] = make_step(torch.compile(model), torch.compile(loss_of))
        first_s["compiled"], loss = timed(steps["compiled"], 3)
    except Exception as error:  # noqa: BLE001 - keep the eager figures
        steps.pop("compiled", None)
        print(
            json.dumps(
                {
                    "benchmark": "torch_reference",
                    "variant": "compiled",
                    "error": f"{type(error).__name__}: {error}"[:2000],
                    **context,
                }
            ),
            flush=True,
        )
    times = {name: [] for name in steps}
    losses = {}
    for _ in range(flags.rounds):
        for name, step in steps.items():
            seconds, losses[name] = timed(step, flags.steps)
            times[name].append(seconds / flags.steps)
    for name in steps:
        report(name, times[name], first_s[name], losses[name])


# ----------------------------------------------------------------------------------


SECTION_FUNCTIONS = {
    "precision": (section_precision, 5),
    "torch": (section_torch, 60),
    "resnet50": (section_resnet50, 60),
    "resnet18": (section_resnet18, 30),
    "quality": (section_quality, 60),
}
# PyTorch first, in its own process, before JAX takes its share of the GPU's
# memory (75% by default) in this one.
ORDER = ("torch", "precision", "resnet50", "resnet18", "quality")


def main(argv=None):
    flags = make_flags(argv)
    if flags.torch_worker:
        torch_worker(flags)
        return 0
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise SystemExit(f"Run with KERAS_BACKEND=jax. Received: {backend!r}")
    sys.path.insert(0, str(REPOSITORY))
    run = Run(flags)
    needs = {name: seconds for name, (_, seconds) in SECTION_FUNCTIONS.items()}
    if flags.smoke:
        needs = dict.fromkeys(needs, 1)
    run.emit({"benchmark": "setup", "flags": vars(flags)})
    for name in ORDER:
        if name not in flags.sections:
            continue
        if name != "torch" and not run.context:
            try:
                run.context = keras_context()
                import keras_barlow  # noqa: F401 - fails here, not in every section
            except Exception as error:  # noqa: BLE001
                run.emit(
                    {"benchmark": "setup", "error": f"{type(error).__name__}: {error}"}
                )
                return 1
        guarded(run, name, SECTION_FUNCTIONS[name][0], needs[name])
    run.emit(
        {
            "benchmark": "done",
            "wall_s": round(run.elapsed(), 1),
            "tensorflow_imported": "tensorflow" in sys.modules,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
