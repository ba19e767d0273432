"""The device a framework computes on: `probe(framework)`, or from the shell
`python benchmarks/devices.py jax torch` (one JSON line per framework).

Each probe imports its framework (and so takes its share of the GPU): run it in
the process that will use the device, or in a process of its own.
"""

import json
import platform
import sys

FRAMEWORKS = ("jax", "tensorflow", "torch")


def probe(framework):
    """`{"framework", "platform", "device", "count"}` of the first device used.

    `platform` is "gpu" for a CUDA or ROCm GPU, else "cpu" (or "tpu").

    Raises:
        ValueError: `framework` is not one of `FRAMEWORKS`.
    """
    if framework == "jax":
        import jax

        first = jax.devices()[0]
        kind = "gpu" if first.platform in ("gpu", "cuda", "rocm") else first.platform
        return _device(framework, kind, first.device_kind, len(jax.devices()))
    if framework == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return _device(framework, "cpu", cpu_model(), 1)
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
        return _device(framework, "gpu", name or gpus[0].name, len(gpus))
    if framework == "torch":
        import torch

        if not torch.cuda.is_available():
            return _device(framework, "cpu", cpu_model(), 1)
        name = torch.cuda.get_device_name(0)
        return _device(framework, "gpu", name, torch.cuda.device_count())
    raise ValueError(
        f"`framework` must be one of {FRAMEWORKS}. Received: {framework!r}"
    )


def _device(framework, kind, name, count):
    return {"framework": framework, "platform": kind, "device": name, "count": count}


# The instruction sets that decide how fast a CPU runs low-precision matmuls:
# without avx512_bf16 or amx_bf16, bfloat16 is converted in software.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")


def cpu_model():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_features(cpuinfo="/proc/cpuinfo"):
    """Which of `CPU_FEATURES` the CPU has, or None if unknown."""
    flags = _cpuinfo("flags", cpuinfo)
    return None if flags is None else [f for f in CPU_FEATURES if f in flags.split()]


def has_native_bfloat16():
    """Whether the CPU computes bfloat16 products in hardware (None: unknown)."""
    features = cpu_features()
    return (
        None if features is None else bool({"avx512_bf16", "amx_bf16"} & set(features))
    )


def _cpuinfo(field, path="/proc/cpuinfo"):
    """The value of the first `field` line of the file `path`, or None."""
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(frameworks):
    """One JSON line per framework: its device, or the error of its probe."""
    for framework in frameworks:
        try:
            record = probe(framework)
        except Exception as error:  # noqa: BLE001 - reported to the caller
            record = {
                "framework": framework,
                "error": f"{type(error).__name__}: {error}",
            }
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["jax"]))
