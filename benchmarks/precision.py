"""Precision: the train step in float32, mixed bfloat16 (and float16), with and
without XLA; and how accurate the cross-correlation is at each matmul precision.

Two parts (`--parts`):

* `speed`: for each dtype policy and compile setting (TensorFlow: a
  `tf.function` without and with XLA; JAX: always XLA) the library's step
  (`barlow_twins`: augmentation, loss, optimizer) and `network_only` (the same
  network and loss in Keras' own step, ready views) are timed in interleaved
  rounds. One `precision_speed` line: each model's median step time and
  pairs/s, and each setting's speed-up over float32 without XLA (TensorFlow) or
  with it (JAX), for both models: where the library's step gains less from a
  policy than the network alone, the difference is in augmentation, loss or
  casts. On a CPU, `cpu_native_bfloat16` says whether it has bfloat16
  instructions (avx512_bf16 or amx_bf16): without them bfloat16 is converted in
  software, much slower, and the bfloat16 figures say nothing of the step.
* `accuracy`: C (N x D correlated embeddings) and the loss at the backend's
  default float32 matmul precision (TF32 on Ampere and newer GPUs) and at full
  float32, against float64 NumPy. One `precision_accuracy` line.

Usage:

    python benchmarks/precision.py --config resnet18_32 --batch_size 64
    KERAS_BACKEND=jax python benchmarks/precision.py --config resnet50_224 \\
        --batch_size 256 --policies float32 mixed_bfloat16
"""

import contextlib
import sys

import devices
import harness
import keras
import numpy as np
import workloads

from keras_barlow import losses

SMOKE = {
    "config": "smoke",
    "batch_size": 8,
    "rounds": 1,
    "round_s": 0.1,
    "accuracy_dims": [16, 64],
}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--config", choices=sorted(workloads.CONFIGS), default="resnet18_32"
    )
    parser.add_argument("--batch_size", type=int, default=64, help="image pairs")
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=workloads.KINDS,
        default=["barlow_twins", "network_only"],
    )
    parser.add_argument(
        "--jit_compile",
        nargs="+",
        choices=("false", "true"),
        default=["false", "true"],
        help="TensorFlow: the compile settings timed (JAX: always XLA)",
    )
    parser.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("speed", "accuracy"),
        default=["speed", "accuracy"],
    )
    parser.add_argument(
        "--accuracy_dims", type=int, nargs=2, default=[256, 8192], help="N D"
    )
    return harness.parse(parser, argv, SMOKE)


def settings(flags):
    """`(name, policy, jit_compile)` of every setting timed."""
    jit_options = (
        [True]
        if workloads.BACKEND == "jax"
        else [j == "true" for j in flags.jit_compile]
    )
    return [
        (f"{policy}{'_xla' if jit else ''}", policy, jit)
        for policy in flags.policies
        for jit in jit_options
    ]


def measure_speed(flags):
    config = workloads.CONFIGS[flags.config]
    runs = {}
    for name, policy, jit_compile in settings(flags):
        keras.config.set_dtype_policy(policy)
        for kind in flags.kinds:
            model = workloads.make_model(kind, config, flags.optimizer, jit_compile)
            batch = workloads.batch_for(kind, config, flags.batch_size)
            runs[f"{kind}/{name}"] = workloads.fit_steps(model, batch)
    keras.config.set_dtype_policy("float32")
    results = harness.timing_records(
        harness.time_rounds(runs, flags.rounds, flags.round_s),
        items_per_step=flags.batch_size,
    )
    baseline = settings(flags)[0][0]
    speedups = {
        key: results[f"{key.split('/')[0]}/{baseline}"]["median_s"] / result["median_s"]
        for key, result in results.items()
    }
    return {
        "config": flags.config,
        "batch_size": flags.batch_size,
        "optimizer": flags.optimizer,
        "results": results,
        "baseline": baseline,
        "speedup_over_baseline": speedups,
        "cpu_native_bfloat16": devices.has_native_bfloat16(),
    }


def matmul_precisions():
    """name -> context manager setting the backend's float32 matmul precision."""
    if workloads.BACKEND == "jax":
        import jax

        return {
            "default": contextlib.nullcontext(),
            "float32": jax.default_matmul_precision("float32"),
        }
    import tensorflow as tf

    @contextlib.contextmanager
    def tensor_float_32(enabled):
        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)

    return {"default": tensor_float_32(True), "float32": tensor_float_32(False)}


def measure_accuracy(batch_size, dim, lambd=losses.DEFAULT_LAMBD):
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((batch_size, dim))
    z1, z2 = (shared + 0.5 * rng.standard_normal((batch_size, dim)) for _ in range(2))
    a, b = (
        (z - z.mean(0)) / np.sqrt(z.var(0) + losses.BATCH_NORM_EPSILON)
        for z in (z1, z2)
    )
    reference = a.T @ b / batch_size
    diagonal = np.diag(reference)
    reference_loss = np.sum((diagonal - 1) ** 2) + lambd * (
        np.sum(reference**2) - np.sum(diagonal**2)
    )
    cross_correlation = workloads.compiled(losses.cross_correlation)
    loss = workloads.compiled(lambda x, y: losses.barlow_twins_loss(x, y, lambd=lambd))
    errors = {}
    for name, precision in matmul_precisions().items():
        with precision:
            inputs = [
                keras.ops.convert_to_tensor(z.astype(np.float32)) for z in (z1, z2)
            ]
            c = np.asarray(
                keras.ops.convert_to_numpy(cross_correlation(*inputs)), np.float64
            )
            value = float(keras.ops.convert_to_numpy(loss(*inputs)))
        errors[name] = {
            "c_relative_error": float(
                np.linalg.norm(c - reference) / np.linalg.norm(reference)
            ),
            "c_max_abs_error": float(np.max(np.abs(c - reference))),
            "loss_relative_error": abs(value - reference_loss) / reference_loss,
        }
    return {"batch_size": batch_size, "dim": dim, "errors": errors}


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "precision")
    if "accuracy" in flags.parts:
        recorder.emit("precision_accuracy", **measure_accuracy(*flags.accuracy_dims))
    if "speed" in flags.parts:
        recorder.emit("precision_speed", **measure_speed(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
