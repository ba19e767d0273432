"""The same train step on Keras' JAX and TensorFlow backends, one process each.

Keras picks its backend once per process, so this driver runs `train_step.py`
with `KERAS_BACKEND` set, once per (backend, dtype policy) and `--processes`
times, the processes interleaved (jax, tensorflow, tensorflow, jax, ...: which
backend goes first alternates) so that the load of a shared machine falls on both
alike. Each process runs in `harness.run_process` with `--timeout_s`; its
`train_step` line is forwarded with the process's round. Then one
`backends_ratio` line per policy: the JAX / TensorFlow throughput of each model
kind, from the median of the processes' median step times.

On TensorFlow the step runs as `compile(jit_compile="auto")` leaves it (no XLA on
a CPU, XLA on a single GPU); on JAX Keras always compiles it with XLA.

Usage:

    python benchmarks/backends.py                           # ResNet-18, ready views
    python benchmarks/backends.py --policies float32 --processes 1 --smoke
"""

import os
import pathlib
import statistics
import sys

import harness

BACKENDS = ("jax", "tensorflow")
SCRIPT = pathlib.Path(__file__).resolve().parent / "train_step.py"


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--processes", type=int, default=2, help="per case")
    parser.add_argument("--config", default="resnet18_32")
    parser.add_argument("--batch_size", type=int, default=64, help="image pairs")
    parser.add_argument("--kinds", nargs="+", default=["ready"])
    parser.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    parser.add_argument("--timeout_s", type=float, default=600, help="per process")
    return harness.parse(parser, argv)


def step_command(flags, policy):
    command = [sys.executable, str(SCRIPT), "--policy", policy, "--kinds", *flags.kinds]
    command += ["--optimizer", flags.optimizer]
    command += ["--rounds", str(flags.rounds), "--round_s", str(flags.round_s)]
    if flags.smoke:
        return [*command, "--smoke"]
    return [*command, "--configs", flags.config, "--batch_size", str(flags.batch_size)]


def run_case(flags, backend, policy, round_index, recorder):
    """The `train_step` line of one process, forwarded; or an error line."""
    outcome = harness.run_process(
        step_command(flags, policy),
        flags.timeout_s,
        env=dict(os.environ, KERAS_BACKEND=backend),
        stderr_prefix=f"[{backend} {policy}] ",
    )
    lines = [
        record for record in outcome.records if record["benchmark"] == "train_step"
    ]
    if outcome.status != "ok" or not lines:
        recorder.emit(
            "backends_error",
            backend=backend,
            policy=policy,
            round=round_index,
            status=outcome.status,
            stderr_tail=outcome.stderr_tail[-2000:],
        )
        return None
    recorder.write({**lines[0], "round": round_index})
    return lines[0]


def ratios(lines, policy, kinds):
    """JAX / TensorFlow throughput of each kind, from the medians of the processes."""
    result = {}
    for kind in kinds:
        medians = {
            backend: statistics.median(
                line["results"][kind]["median_s"]
                for line in lines
                if line["backend"] == backend and line["policy"] == policy
            )
            for backend in BACKENDS
            if any(
                line["backend"] == backend and line["policy"] == policy
                for line in lines
            )
        }
        if len(medians) == 2:
            result[kind] = {
                **{
                    f"{backend}_step_s": seconds for backend, seconds in medians.items()
                },
                "jax_over_tensorflow_speed": medians["tensorflow"] / medians["jax"],
            }
    return result


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.Recorder(flags.out, script="backends", smoke=flags.smoke)
    lines = []
    for round_index in range(flags.processes):
        for policy in flags.policies:
            order = flags.backends if round_index % 2 == 0 else flags.backends[::-1]
            for backend in order:
                line = run_case(flags, backend, policy, round_index, recorder)
                if line:
                    lines.append(line)
    for policy in flags.policies:
        recorder.emit(
            "backends_ratio", policy=policy, kinds=ratios(lines, policy, flags.kinds)
        )
    return (
        0
        if len(lines) == flags.processes * len(flags.policies) * len(flags.backends)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
