"""The benchmark harness: JSON-lines records, one step timer, budgeted sections.

Backend-neutral: it imports neither Keras nor JAX, TensorFlow or PyTorch at
module level, so the same helpers time a Keras step on JAX or TensorFlow and the
PyTorch reference, and the section runner starts processes that have not chosen
a backend yet.

* Records: `Recorder.emit(benchmark, **fields)` writes one JSON line per
  measurement, flushed at once, to stdout and, with `--out`, to a file.
* Timing: `time_rounds(candidates, ...)` compiles each candidate in an untimed
  warm-up, sizes its rounds to last `round_s`, then times interleaved rounds
  (every candidate once per round), waiting for the device each time;
  `summary` gives the median and the spread of the rounds.
* Processes: `run_process` runs a command with a hard timeout, forwarding its
  JSON lines as they come; `run_sections` runs a table of scripts one process
  each (memory is freed between them) against a total budget, reserving the
  time of the sections marked `guaranteed`.

The device a framework sees is `devices.probe(framework)`.
"""

import argparse
import collections
import dataclasses
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time

import devices

# The default of keras_barlow (TensorFlow when installed, else JAX), set before a
# script imports Keras, which would otherwise insist on TensorFlow.
if "KERAS_BACKEND" not in os.environ:
    os.environ["KERAS_BACKEND"] = (
        "tensorflow" if importlib.util.find_spec("tensorflow") else "jax"
    )
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# ----------------------------------------------------------------------------------
# Records.


class Recorder:
    """Writes JSON lines to stdout (and a file), each flushed as it is produced.

    Args:
        out: path of a file the lines are appended to as well, or None.
        **context: fields put in every record (script, backend, smoke, ...).
    """

    def __init__(self, out=None, **context):
        self.out = out
        self.context = context

    def emit(self, benchmark, **fields):
        """Write `{"benchmark": benchmark, **context, **fields, "time": ...}`."""
        record = {"benchmark": benchmark, **self.context, **fields}
        record["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.write(record)
        return record

    def write(self, record):
        """Write one record as it is (e.g. one forwarded from a subprocess)."""
        line = json.dumps(record, default=_json_default)
        print(line, flush=True)
        if self.out:
            with open(self.out, "a") as file:
                file.write(line + "\n")


def _json_default(value):
    if hasattr(value, "tolist"):  # NumPy and framework scalars and arrays
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def machine_info():
    """The machine and the versions of what the process has imported."""
    info = {
        "platform": platform.platform(),
        "cpu": devices.cpu_model(),
        "cpu_features": devices.cpu_features(),
        "cpu_count": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    for name in ("numpy", "keras", "jax", "tensorflow", "torch", "torchvision"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
    return info


# ----------------------------------------------------------------------------------
# Flags shared by the scripts.


def parser(doc):
    """An `ArgumentParser` described by a script's docstring, with the shared flags.

    Shared flags: `--out` (append the JSON lines to a file too), `--smoke` (tiny
    sizes: the code paths, not the figures), `--rounds` (timed rounds) and
    `--round_s` (seconds each timed round should last).
    """
    result = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument("--out", default=None, help="also append the lines here")
    result.add_argument("--smoke", action="store_true", help="tiny sizes, any device")
    result.add_argument("--rounds", type=int, default=3, help="timed rounds")
    result.add_argument(
        "--round_s", type=float, default=3.0, help="seconds a timed round should last"
    )
    return result


def parse(parser, argv=None, smoke=None):
    """Parse `argv`; with `--smoke`, the `smoke` dict replaces the defaults.

    Flags given on the command line keep their values in both cases.
    """
    flags = parser.parse_args(argv)
    if flags.smoke and smoke:
        parser.set_defaults(**smoke)
        flags = parser.parse_args(argv)
    return flags


def start(flags, script, framework=None):
    """The script's `Recorder`, after writing its `environment` record.

    Args:
        flags: the parsed flags (with `out` and `smoke`).
        script: the script's name, put in every record.
        framework: `"torch"` for the PyTorch reference; by default Keras' backend.
    """
    framework = framework or os.environ["KERAS_BACKEND"]
    recorder = Recorder(flags.out, script=script, backend=framework, smoke=flags.smoke)
    recorder.emit(
        "environment",
        device=devices.probe(framework),
        machine=machine_info(),
        flags=vars(flags),
    )
    return recorder


# ----------------------------------------------------------------------------------
# The step timer.


def wait(outputs):
    """Return once the device has computed `outputs` (any nesting of arrays).

    JAX arrays: `block_until_ready`. TensorFlow and PyTorch tensors: one element
    read back to the host, which waits for the work queued before it without
    copying the whole tensor. Python and NumPy values are ready already.
    """
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        for output in outputs:
            wait(output)
        return
    if hasattr(outputs, "block_until_ready"):
        outputs.block_until_ready()
    elif hasattr(outputs, "shape") and type(outputs).__module__.split(".")[0] in (
        "tensorflow",
        "torch",
    ):
        first = outputs[(0,) * len(outputs.shape)]
        first.item() if hasattr(first, "item") else first.numpy()


def timed(run, steps):
    """Seconds of `run(steps)`, device work included."""
    begin = time.perf_counter()
    wait(run(steps))
    return time.perf_counter() - begin


def time_rounds(candidates, rounds, round_s, warmup_steps=1, on_warm=None):
    """Seconds per step of each candidate, timed in interleaved rounds.

    Each candidate first runs `warmup_steps` steps (compilation: reported apart),
    then is calibrated: runs of 1, 2, 4, ... steps until one lasts a quarter of
    `round_s`, which sets its steps per round so that a round lasts about
    `round_s`. Then every round runs each candidate once, in turn, so that the
    load of a shared machine falls on all alike.

    Args:
        candidates: dict name -> `run(steps)`, which runs `steps` steps and returns
            their outputs (awaited with `wait`).
        rounds: timed rounds, >= 1.
        round_s: the seconds a round of one candidate should last.
        warmup_steps: untimed first steps (tracing, compilation, caches).
        on_warm: called as `on_warm(name, result)` after each candidate's
            warm-up and calibration, e.g. to write a provisional record that
            survives a later overrun.

    Returns:
        dict name -> `{"first_s": warm-up seconds, "calibration_step_s": float,
        "steps_per_round": int, "step_s": [seconds per step, one per round]}`.
    """
    results = {}
    for name, run in candidates.items():
        first_s = timed(run, warmup_steps)
        step_s = _calibrated_step_s(run, round_s / 4)
        results[name] = {
            "first_s": first_s,
            "calibration_step_s": step_s,
            "steps_per_round": max(1, math.ceil(round_s / max(step_s, 1e-6))),
            "step_s": [],
        }
        if on_warm is not None:
            on_warm(name, results[name])
    for _ in range(rounds):
        for name, run in candidates.items():
            steps = results[name]["steps_per_round"]
            results[name]["step_s"].append(timed(run, steps) / steps)
    return results


def _calibrated_step_s(run, at_least_s, max_steps=4096):
    steps = 1
    while True:
        seconds = timed(run, steps)
        if seconds >= at_least_s or steps >= max_steps:
            return seconds / steps
        steps *= 2


def summary(step_s, items_per_step=None):
    """Median, extremes and spread of per-step seconds (one value per round).

    Args:
        step_s: seconds per step, one per round.
        items_per_step: e.g. image pairs a step; adds `per_s` (items per second
            at the median).

    Returns:
        dict with `median_s`, `min_s`, `max_s`, `spread` ((max - min) / median)
        and `rounds` (and `per_s`).
    """
    median = statistics.median(step_s)
    result = {
        "median_s": median,
        "min_s": min(step_s),
        "max_s": max(step_s),
        "spread": (max(step_s) - min(step_s)) / median,
        "rounds": len(step_s),
    }
    if items_per_step is not None:
        result["per_s"] = items_per_step / median
    return result


def timing_records(results, items_per_step=None):
    """`time_rounds`' results with the `summary` of each candidate merged in."""
    return {
        name: {**result, **summary(result["step_s"], items_per_step)}
        for name, result in results.items()
    }


# ----------------------------------------------------------------------------------
# Processes and sections.


@dataclasses.dataclass
class Outcome:
    """How a process ended: `status` is "ok", "error" or "overrun"."""

    status: str
    exit_code: int | None
    seconds: float
    records: list
    stderr_tail: str


def run_process(command, timeout_s, env=None, on_record=None, stderr_prefix=""):
    """Run `command`, stopping it after `timeout_s`; forward its lines as they come.

    The process gets a session of its own: on overrun it and its children get
    SIGTERM, then SIGKILL 10 s later. Its stdout lines that are JSON objects go to
    `on_record` as they arrive; its stderr is copied to ours (prefixed), the last
    lines kept for the outcome.

    Args:
        command: argv list.
        timeout_s: seconds before the process is stopped.
        env: environment of the process (default: ours).
        on_record: called with each JSON record printed by the process.
        stderr_prefix: put before each copied stderr line.

    Returns:
        `Outcome`.
    """
    begin = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    records, tail = [], collections.deque(maxlen=40)
    readers = [
        threading.Thread(
            target=_read_records, args=(process.stdout, records, on_record)
        ),
        threading.Thread(
            target=_copy_stderr, args=(process.stderr, tail, stderr_prefix)
        ),
    ]
    for reader in readers:
        reader.start()
    status = "ok"
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        status = "overrun"
        _stop(process)
    except BaseException:  # e.g. SystemExit from a SIGTERM handler: take it along
        _stop(process)
        raise
    for reader in readers:
        reader.join()
    if status == "ok" and process.returncode != 0:
        status = "error"
    return Outcome(
        status,
        process.returncode,
        time.perf_counter() - begin,
        records,
        "".join(tail),
    )


def _read_records(stream, records, on_record):
    for line in stream:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records.append(record)
        if on_record is not None:
            on_record(record)


def _copy_stderr(stream, tail, prefix):
    for line in stream:
        tail.append(line)
        sys.stderr.write(prefix + line)
        sys.stderr.flush()


def _stop(process):
    for sent, grace_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclasses.dataclass(frozen=True)
class Section:
    """One script of a run: its arguments, environment and time limit.

    Args:
        name: the section's name in the records.
        argv: the script's path and arguments (run with this Python).
        budget_s: hard limit: the process is stopped when it runs longer.
        guaranteed: reserve `budget_s` for this section: the sections before it
            are skipped rather than eat into it.
    """

    name: str
    argv: tuple
    budget_s: float
    guaranteed: bool = False


def run_sections(sections, budget_s, recorder):
    """Run `sections` in order, each in its own process, within `budget_s`.

    A section that is not guaranteed runs only when its whole budget fits in what
    is left of `budget_s` after the budgets of the guaranteed sections still to
    come; otherwise it is recorded as skipped. A guaranteed section always runs
    with its own budget. Each section's records are forwarded with its name, and a
    `section` record says how it ended (ok, error, overrun, skipped).

    Returns:
        dict name -> status.
    """
    begin = time.perf_counter()
    statuses = {}
    for index, section in enumerate(sections):
        left = budget_s - (time.perf_counter() - begin)
        reserved = sum(
            later.budget_s for later in sections[index + 1 :] if later.guaranteed
        )
        if not section.guaranteed and left - reserved < section.budget_s:
            statuses[section.name] = "skipped"
            recorder.emit(
                "section",
                section=section.name,
                status="skipped",
                budget_s=section.budget_s,
                left_s=round(left - reserved, 1),
            )
            continue
        outcome = run_process(
            [sys.executable, *section.argv],
            section.budget_s,
            on_record=lambda record, name=section.name: recorder.write(
                {"section": name, **record}
            ),
            stderr_prefix=f"[{section.name}] ",
        )
        statuses[section.name] = outcome.status
        fields = (
            {"stderr_tail": outcome.stderr_tail[-3000:]}
            if outcome.status != "ok"
            else {}
        )
        recorder.emit(
            "section",
            section=section.name,
            status=outcome.status,
            exit_code=outcome.exit_code,
            seconds=round(outcome.seconds, 1),
            budget_s=section.budget_s,
            records=len(outcome.records),
            **fields,
        )
    return statuses
