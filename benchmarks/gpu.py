"""The GPU run: the benchmark scripts in order, each in its own process and budget.

Meant for one command of about 10 minutes on a GPU machine without TensorFlow
(Keras on JAX, PyTorch for the reference; `run_offline.sh` installs what it
needs). It cannot waste the slot:

* it stops within seconds, before any section, when JAX (or PyTorch, when
  installed) does not see a GPU (`--allow_cpu` for smoke runs on a CPU);
* each section runs in a process of its own with a hard time limit: one that
  overruns or fails is recorded as such, its memory goes with its process, and
  the next section starts;
* the quality section's budget is reserved (`guaranteed`): a section before it
  that would eat into it is skipped instead;
* every JSON line is written as it is produced (stdout and `--out`).

`--smoke` runs every section on tiny sizes (compiled PyTorch included) with
budgets that let each finish on a CPU. The targets the figures are compared with
are in benchmarks/RESULTS.md.

Usage:

    KERAS_BACKEND=jax python benchmarks/gpu.py --data cifar10-jpeg-train.tar.gz \\
        --out gpu.jsonl
    KERAS_BACKEND=jax python benchmarks/gpu.py --smoke --allow_cpu --data A.tar.gz
"""

import importlib.util
import os
import pathlib
import shlex
import signal
import sys
from typing import NamedTuple

import harness

BENCHMARKS = pathlib.Path(__file__).resolve().parent
SHARED_ARCHIVE = BENCHMARKS.parents[1] / "shared/datasets/cifar10-jpeg-train.tar.gz"


class Row(NamedTuple):
    """A section of the run: its script and arguments, on a GPU and in a smoke run.

    `{data}` in the arguments stands for the CIFAR-10 archive. A smoke run passes
    `smoke` instead of `arguments`: by default `--smoke` only, the script's own
    tiny sizes (tests check that the GPU arguments parse too).
    """

    name: str
    budget_s: float
    smoke_budget_s: float
    script: str
    arguments: str
    smoke: str = "--smoke"
    guaranteed: bool = False
    needs: str = ""  # a module without which the section is skipped


# In order. The first three give the figures that matter most (ResNet-50 step
# against the network alone and against PyTorch; CIFAR-10 kNN); the others run
# when the total budget leaves room for them.
TABLE = (
    Row(
        "train_step",
        130,
        120,
        "train_step.py",
        "--configs resnet50_224 --batch_size 256 --policy mixed_bfloat16"
        " --kinds barlow_twins network_only --rounds 3 --round_s 2",
    ),
    Row(
        "torch_reference",
        130,
        150,
        "torch_reference.py",
        "--rounds 3 --round_s 2",
        needs="torch",
    ),
    Row(
        "quality",
        290,
        120,
        "quality.py",
        "--data {data} --policy mixed_bfloat16 --train_s 200",
        smoke="--data {data} --smoke",
        guaranteed=True,
    ),
    Row(
        "precision",
        150,
        150,
        "precision.py",
        "--config resnet50_224 --batch_size 256 --kinds network_only barlow_twins"
        " --rounds 2 --round_s 2",
    ),
    Row("augment", 60, 60, "augment.py", "--sizes 224 32 --batch_size 256 --stages"),
    Row("loss", 45, 45, "loss.py", "--dims 8192 --batch_sizes 256 1024 4096"),
    # tf.data against Grain: needs TensorFlow, so it is skipped on a GPU machine
    # without it.
    Row(
        "input_pipelines",
        90,
        90,
        "input_pipelines.py",
        "--archive {data}",
        smoke="--workloads jpeg_500x375_224px_full_resolution --large_images 64"
        " --rounds 1",
        needs="tensorflow",
    ),
)


def arguments(row, data, smoke):
    """The argv of `row`'s script after its path."""
    text = row.smoke if smoke else row.arguments
    return shlex.split(text.format(data=shlex.quote(data)))


def sections(flags, recorder):
    """The `harness.Section`s of `TABLE` this run runs (`--sections`, `--smoke`);
    those whose script or module is missing are recorded as skipped."""
    chosen = []
    for row in TABLE:
        if flags.sections and row.name not in flags.sections:
            continue
        missing = row.script if not (BENCHMARKS / row.script).exists() else None
        if row.needs and importlib.util.find_spec(row.needs) is None:
            missing = row.needs
        if missing:
            recorder.emit(
                "section", section=row.name, status="skipped", missing=missing
            )
            continue
        argv = (str(BENCHMARKS / row.script), *arguments(row, flags.data, flags.smoke))
        budget_s = row.smoke_budget_s if flags.smoke else row.budget_s
        chosen.append(harness.Section(row.name, argv, budget_s, row.guaranteed))
    return chosen


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--budget_s", type=float, default=550.0, help="all sections together"
    )
    parser.add_argument("--allow_cpu", action="store_true", help="run without a GPU")
    parser.add_argument(
        "--data", default=str(SHARED_ARCHIVE), help="CIFAR-10 JPEG archive"
    )
    parser.add_argument("--sections", nargs="+", default=None, help="only these")
    parser.add_argument(
        "--backend", choices=("jax", "tensorflow"), default="jax", help="of Keras"
    )
    parser.add_argument(
        "--expect_device",
        default=None,
        help="stop unless the GPU's name contains this, e.g. H100",
    )
    return harness.parse(parser, argv, {"budget_s": 900.0})


def check_data(flags, chosen):
    """An error message when the quality section has no data, else None."""
    if any(section.name == "quality" for section in chosen):
        if not pathlib.Path(flags.data).exists():
            return (
                f"No CIFAR-10 archive at --data {flags.data}: pass the path of "
                "cifar10-jpeg-train.tar.gz (class folders of JPEGs)."
            )
    return None


def check_devices(flags, recorder):
    """The devices Keras' backend and PyTorch see, probed in a process of their own
    (this one must not hold the GPU); an error message when one is not a GPU."""
    frameworks = [flags.backend]
    if importlib.util.find_spec("torch"):
        frameworks.append("torch")
    outcome = harness.run_process(
        [sys.executable, str(BENCHMARKS / "devices.py"), *frameworks], 120
    )
    for record in outcome.records:
        recorder.emit("device", **record)
    devices = {record["framework"]: record for record in outcome.records}
    for framework in frameworks:
        found = devices.get(framework, {})
        expected = flags.expect_device or ""
        if found.get("platform") == "gpu" and expected in found.get("device", ""):
            continue
        if flags.allow_cpu and found.get("platform") == "cpu":
            continue
        return (
            f"{framework} sees no GPU{f' named *{expected}*' if expected else ''}: "
            f"{found or outcome.stderr_tail[-2000:]}. "
            "Check the CUDA installation (jax[cuda] / a CUDA build of torch), or pass "
            "--allow_cpu for a smoke run on a CPU."
        )
    return None


def main(argv=None):
    flags = make_flags(argv)
    # A stop from outside (a timeout) ends the running section's process too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    os.environ["KERAS_BACKEND"] = flags.backend  # for the sections
    recorder = harness.Recorder(flags.out, script="gpu", smoke=flags.smoke)
    recorder.emit("setup", flags=vars(flags), machine=harness.machine_info())
    chosen = sections(flags, recorder)
    problem = check_data(flags, chosen) or check_devices(flags, recorder)
    if problem:
        recorder.emit("stopped", reason=problem)
        return problem
    statuses = harness.run_sections(chosen, flags.budget_s, recorder)
    recorder.emit("done", statuses=statuses)
    return 0 if all(status == "ok" for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
