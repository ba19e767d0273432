"""Shared helpers of the benchmark scripts: device set-up, timing, JSON records.

Every script prints one JSON line per measurement, holding its settings, the
machine and the library versions, so that a line read on its own says what was
measured. Timings compare alternatives *within one run*: the candidates are
interleaved round by round and the median is kept, which cancels most of the
noise of a shared machine.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_barlow import distribute  # noqa: E402

MIXED_PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def add_device_flags(parser):
    """Flags shared by the scripts that train: replicas and mixed precision."""
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="MirroredStrategy over this many devices: the first N GPUs, or N logical "
        "devices carved out of GPU:0 (CPU:0 without a GPU) when there are fewer.",
    )
    parser.add_argument(
        "--logical_gpu_memory_mb",
        type=int,
        default=None,
        help="memory of each logical GPU when one GPU is split into --replicas parts "
        "(default: the GPU's memory from nvidia-smi divided by --replicas, "
        "minus 1 GiB)",
    )
    parser.add_argument(
        "--mixed_precision",
        choices=MIXED_PRECISION_POLICIES,
        default="float32",
        help="Keras dtype policy of the model (mixed_float16 on GPUs, "
        "mixed_bfloat16 on CPUs with bf16 instructions)",
    )


def make_strategy(replicas, logical_gpu_memory_mb=None):
    """`keras_barlow.distribute.choose_strategy(replicas=replicas)`, after carving
    `replicas` logical devices out of the first GPU (CPU:0 without a GPU) when there
    are fewer devices than replicas.

    Must run before TensorFlow initializes its devices when logical devices have
    to be created; if they already exist (e.g. set up by a test session), they
    are used as they are.
    """
    if isinstance(replicas, int) and replicas > 1:
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) < replicas:
            kind = "GPU" if gpus else "CPU"
            _split_first_device(kind, replicas, logical_gpu_memory_mb)
    return distribute.choose_strategy(replicas=replicas)


def _split_first_device(kind, replicas, memory_mb):
    device = tf.config.list_physical_devices(kind)[0]
    if kind == "GPU":
        if memory_mb is None:
            memory_mb = _first_gpu_memory_mb() // replicas - 1024
        config = [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb)]
    else:
        config = [tf.config.LogicalDeviceConfiguration()]
    try:
        tf.config.set_logical_device_configuration(device, config * replicas)
    except RuntimeError:
        pass  # already initialized: make_strategy reports what exists


def _first_gpu_memory_mb():
    """Total memory of the first GPU from nvidia-smi (TensorFlow cannot tell
    before it initializes the device), else 16 GiB."""
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return int(output.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 16 * 1024


def set_mixed_precision(policy):
    """Set the global Keras dtype policy (`float32` restores the default)."""
    keras.mixed_precision.set_global_policy(policy)


def machine_info():
    """The machine and the versions, as a JSON-ready dict."""
    import numpy

    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "gpus": [_gpu_name(gpu) for gpu in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }
    return info


def _gpu_name(gpu):
    return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def emit(benchmark, flags, **measurement):
    """Print one JSON line: the measurement, the flags, the machine."""
    record = {
        "benchmark": benchmark,
        **measurement,
        "flags": vars(flags) if flags is not None else None,
        "machine": machine_info(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(record, default=_json_default), flush=True)
    return record


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def time_interleaved(candidates, repeats, warmup=1):
    """Seconds per call of each candidate, measured in interleaved rounds.

    Args:
        candidates: dict name -> callable that runs once and returns only when its
            work is done (e.g. ends with `.numpy()` on a result).
        repeats: timed rounds; every round calls each candidate once.
        warmup: untimed rounds first (tracing, compilation, caches).

    Returns:
        dict name -> list of `repeats` durations in seconds.
    """
    for _ in range(warmup):
        for run in candidates.values():
            run()
    durations = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            durations[name].append(time.perf_counter() - start)
    return durations


def summary(durations):
    """Median, min and max of a list of durations, in seconds."""
    return {
        "median_s": statistics.median(durations),
        "min_s": min(durations),
        "max_s": max(durations),
        "repeats": len(durations),
    }


def device_name():
    """`GPU:0` when TensorFlow sees a GPU, else `CPU:0`."""
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


def new_parser(description):
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def log(message):
    print(message, file=sys.stderr, flush=True)


class StepTimer(keras.callbacks.Callback):
    """Seconds of each train step of `fit`, until its loss is on the host.

    Timed from `on_train_batch_begin` until the loss can be read (which waits for
    the device), so `fit`'s own set-up is not counted.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self.seconds.append(time.perf_counter() - self.start)
        if not math.isfinite(loss):
            raise FloatingPointError(f"Non-finite loss: {logs}")
