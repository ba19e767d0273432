"""The same `BarlowTwins` train step on Keras' JAX and TensorFlow backends.

Keras picks its backend once per process, so this driver runs every
(backend, dtype policy) case in a fresh subprocess with `KERAS_BACKEND` set, the
cases interleaved round after round (jax, tensorflow, jax, tensorflow, ...) so
that the load of a shared machine falls on both alike. Each case trains the
ResNet-18 with the CIFAR stem at 32 px, projector 2048x3, on ready view pairs
(`augmenter=None`: the network, the exact loss and the optimizer, no
augmentation) through `model.fit`, and times its steps after a few untimed
warm-up steps (tracing and compilation).

Prints one JSON line per measurement (`"benchmark": "backends"`: backend, policy,
round, ms/step, image pairs/s, settings, versions) and then one line per policy
(`"benchmark": "backends_ratio"`) with the JAX / TensorFlow throughput ratio from
the medians of all timed steps of each backend.

On TensorFlow the step runs as `compile(jit_compile="auto")` leaves it: a
`tf.function` without XLA on a CPU, with XLA on a single GPU. On JAX Keras
always compiles the step with XLA.

Usage:

    python benchmarks/backends.py                      # 2 rounds, float32 and bf16
    python benchmarks/backends.py --rounds 1 --steps 4 --policies float32
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow")
POLICIES = ("float32", "mixed_bfloat16")
REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def make_flags(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=POLICIES)
    parser.add_argument("--rounds", type=int, default=2, help="processes per case")
    parser.add_argument("--batch_size", type=int, default=64, help="image pairs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--steps", type=int, default=2, help="timed steps a process")
    parser.add_argument(
        "--worker_timeout",
        type=float,
        default=300,
        help="seconds after which a case is stopped and reported as an error",
    )
    parser.add_argument(
        "--optimizer",
        choices=("lars", "sgd"),
        default="lars",
        help="keras_barlow.LARS(0.2) or SGD(0.01, momentum 0.9)",
    )
    parser.add_argument(
        "--worker",
        nargs=2,
        metavar=("BACKEND", "POLICY"),
        help=argparse.SUPPRESS,  # internal: run one case in this process
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------
# One case, in a process of its own (KERAS_BACKEND set by the driver).


def run_case(flags, backend, policy):
    if os.environ.get("KERAS_BACKEND") != backend:
        raise RuntimeError(f"KERAS_BACKEND must be {backend!r} in the worker")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPOSITORY))
    start = time.perf_counter()
    import keras
    import numpy as np

    import keras_barlow

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    encoder = keras_barlow.ResNet18((32, 32, 3), stem="cifar")
    model = keras_barlow.BarlowTwins(
        encoder, projector_dims=(2048, 2048, 2048), augmenter=None, seed=0
    )
    # Built explicitly: `fit` on a tuple of ready views would build the model from
    # the pair's shapes (see the report of benchmarks/RESULTS.md).
    model.build((None, 32, 32, 3))
    if flags.optimizer == "lars":
        optimizer = keras_barlow.LARS(0.2)
    else:
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    model.compile(optimizer=optimizer)

    steps = flags.warmup + flags.steps
    shape = (flags.batch_size * steps, 32, 32, 3)
    rng = np.random.default_rng(0)
    views = tuple(rng.standard_normal(shape, np.float32) for _ in range(2))
    timer = _step_timer(keras)
    model.fit(
        views,
        batch_size=flags.batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    timed = timer.seconds[flags.warmup :]
    step_s = statistics.median(timed)
    return {
        "benchmark": "backends",
        "backend": backend,
        "dtype_policy": policy,
        "model": "ResNet18 cifar stem 32px + projector 2048x3, ready views",
        "batch_size": flags.batch_size,
        "optimizer": flags.optimizer,
        "jit_compile": model.jit_compile,
        "warmup_steps": flags.warmup,
        "first_step_s": round(timer.seconds[0], 2),
        "step_s_timed": [round(s, 4) for s in timed],
        "ms_per_step": round(1000 * step_s, 1),
        "image_pairs_per_s": round(flags.batch_size / step_s, 2),
        "loss_finite": bool(np.isfinite(timer.last_loss)),
        "process_s": round(time.perf_counter() - start, 1),
        "versions": _versions(backend, keras, np),
        "machine": _machine(),
    }


def _step_timer(keras):
    class StepTimer(keras.callbacks.Callback):
        """Seconds of each step, until its loss is on the host."""

        def __init__(self):
            super().__init__()
            self.seconds = []
            self.last_loss = float("nan")

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.last_loss = float(logs["loss"])  # waits for the device
            self.seconds.append(time.perf_counter() - self.start)

    return StepTimer()


def _versions(backend, keras, np):
    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
    if backend == "jax":
        import jax
        import jaxlib

        versions.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
    else:
        import tensorflow as tf

        versions.update(tensorflow=tf.__version__)
    return versions


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in cpuinfo
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_count": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------------
# The driver.


def worker_command(flags, backend, policy):
    return [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--worker",
        backend,
        policy,
        "--batch_size",
        str(flags.batch_size),
        "--warmup",
        str(flags.warmup),
        "--steps",
        str(flags.steps),
        "--optimizer",
        flags.optimizer,
    ]


def run_worker(flags, backend, policy):
    """The worker's JSON record, or an error record."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        result = subprocess.run(
            worker_command(flags, backend, policy),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=flags.worker_timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "benchmark": "backends",
            "backend": backend,
            "dtype_policy": policy,
            "error": f"stopped after --worker_timeout {flags.worker_timeout} s",
        }
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {
        "benchmark": "backends",
        "backend": backend,
        "dtype_policy": policy,
        "error": f"worker exited with {result.returncode}",
        "stderr_tail": result.stderr[-2000:],
    }


def ratios(records, policies):
    """Per policy: JAX / TensorFlow throughput from the medians of all timed steps."""
    lines = []
    for policy in policies:
        medians = {}
        for backend in BACKENDS:
            steps = [
                s
                for record in records
                if record.get("backend") == backend
                and record.get("dtype_policy") == policy
                and "step_s_timed" in record
                for s in record["step_s_timed"]
            ]
            if steps:
                medians[backend] = statistics.median(steps)
        line = {"benchmark": "backends_ratio", "dtype_policy": policy}
        for backend, median in medians.items():
            line[f"{backend}_ms_per_step"] = round(1000 * median, 1)
        if len(medians) == 2:
            line["jax_over_tensorflow_speed"] = round(
                medians["tensorflow"] / medians["jax"], 3
            )
            line["faster"] = (
                "jax" if medians["jax"] < medians["tensorflow"] else ("tensorflow")
            )
        lines.append(line)
    if set(policies) == set(POLICIES):
        for backend in BACKENDS:
            by_policy = {
                p: next(
                    (
                        line.get(f"{backend}_ms_per_step")
                        for line in lines
                        if line["dtype_policy"] == p
                    ),
                    None,
                )
                for p in POLICIES
            }
            if all(by_policy.values()):
                lines.append(
                    {
                        "benchmark": "backends_bf16_speedup",
                        "backend": backend,
                        "mixed_bfloat16_over_float32_speed": round(
                            by_policy["float32"] / by_policy["mixed_bfloat16"], 3
                        ),
                    }
                )
    return lines


def main(argv=None):
    flags = make_flags(argv)
    if flags.worker:
        backend, policy = flags.worker
        print(json.dumps(run_case(flags, backend, policy)), flush=True)
        return 0
    start = time.perf_counter()
    records = []
    for round_index in range(flags.rounds):
        for policy in flags.policies:
            # Alternate which backend goes first, so neither always follows the other.
            order = flags.backends if round_index % 2 == 0 else flags.backends[::-1]
            for backend in order:
                record = run_worker(flags, backend, policy)
                record["round"] = round_index
                records.append(record)
                print(json.dumps(record), flush=True)
    for line in ratios(records, flags.policies):
        line["wall_s"] = round(time.perf_counter() - start, 1)
        print(json.dumps(line), flush=True)
    return 1 if any("error" in record for record in records) else 0


if __name__ == "__main__":
    sys.exit(main())
