"""The benchmark harness and the GPU run, on a CPU, with tiny sizes (< 60 s).

The harness is checked against what its inputs are known to do (sleeps of known
length, processes that print, fail or hang); `benchmarks/gpu.py` refuses to run
without a GPU, runs a section with `--smoke --allow_cpu` and forwards its figures
(checked against a NumPy loss); every GPU argument of its table parses.
"""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def benchmarks(monkeypatch):
    """Import a benchmark script by name (its folder on `sys.path`)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


@pytest.mark.core
def test_time_rounds_interleaves_candidates_and_times_their_steps(benchmarks):
    harness = benchmarks("harness")
    calls = []

    def sleeper(name, step_s):
        def run(steps):
            calls.append((name, steps))
            time.sleep(step_s * steps)
            return np.zeros(1)

        return run

    results = harness.time_rounds(
        {"short": sleeper("short", 0.002), "long": sleeper("long", 0.006)},
        rounds=2,
        round_s=0.05,
    )
    timed = calls[-4:]  # two rounds, each candidate once a round, in turn
    assert [name for name, _ in timed] == ["short", "long", "short", "long"]
    for name, step_s in (("short", 0.002), ("long", 0.006)):
        record = harness.timing_records(results, items_per_step=10)[name]
        assert step_s <= record["median_s"] < 3 * step_s + 0.002
        assert record["per_s"] == pytest.approx(10 / record["median_s"])
        assert record["steps_per_round"] * step_s == pytest.approx(0.05, abs=0.03)
        assert record["rounds"] == 2 and record["spread"] >= 0


@pytest.mark.core
def test_run_process_stops_an_overrun_and_keeps_what_it_printed(benchmarks):
    harness = benchmarks("harness")
    script = (
        'import json, time; print(json.dumps({"a": 1}), flush=True); time.sleep(60)'
    )
    begin = time.perf_counter()
    outcome = harness.run_process([sys.executable, "-c", script], timeout_s=3)
    assert outcome.status == "overrun"
    assert outcome.records == [{"a": 1}]
    assert time.perf_counter() - begin < 20


@pytest.mark.core
def test_cpu_features_are_read_from_cpuinfo(benchmarks, tmp_path):
    devices = benchmarks("devices")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    )
    assert devices.cpu_features(cpuinfo) == ["avx2", "avx512f", "avx512_bf16"]
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512_bf16x\n")  # no prefix match
    assert devices.cpu_features(cpuinfo) == ["avx2"]
    assert devices.cpu_features(tmp_path / "missing") is None


@pytest.mark.core
def test_run_sections_reserves_the_guaranteed_budget(benchmarks, capsys):
    harness = benchmarks("harness")
    prints = 'import json; print(json.dumps({"benchmark": "x", "value": 2}))'
    sections = [
        harness.Section("first", ("-c", prints), budget_s=30),
        # Fits in the total, but not beside the 40 s kept for "last".
        harness.Section("skipped", ("-c", prints), budget_s=70),
        harness.Section("last", ("-c", "raise SystemExit(3)"), 40, guaranteed=True),
    ]
    statuses = harness.run_sections(sections, 100, harness.Recorder())
    assert statuses == {"first": "ok", "skipped": "skipped", "last": "error"}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"section": "first", "benchmark": "x", "value": 2}.items() <= lines[
        0
    ].items()
    ends = {line["section"]: line for line in lines if line["benchmark"] == "section"}
    assert ends["last"]["exit_code"] == 3 and ends["skipped"]["left_s"] < 70


def test_every_argument_of_the_gpu_table_parses(benchmarks):
    """A flag that a script does not take would fail only on the GPU machine."""
    gpu = benchmarks("gpu")
    for row in gpu.TABLE:
        if not (BENCHMARKS / row.script).exists():
            continue
        script = benchmarks(row.script.removesuffix(".py"))
        for smoke in (False, True):
            flags = script.make_flags(gpu.arguments(row, "cifar.tar.gz", smoke))
            assert getattr(flags, "smoke", smoke) == smoke


def run_gpu(*arguments):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    backend = env.get("KERAS_BACKEND", "tensorflow")
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu.py"), "--backend", backend, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.core
def test_gpu_run_stops_at_once_without_a_gpu_unless_allowed():
    result = run_gpu("--sections", "loss", "--budget_s", "1")
    if '"platform": "gpu"' in result.stdout:
        pytest.skip("this machine has a GPU")
    assert result.returncode != 0
    assert "sees no GPU" in result.stderr and "--allow_cpu" in result.stderr
    assert '"section": "loss"' not in result.stdout


@pytest.mark.core
def test_gpu_smoke_run_forwards_the_figures_of_its_sections(tmp_path):
    out = tmp_path / "gpu.jsonl"
    result = run_gpu("--smoke", "--allow_cpu", "--sections", "loss", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [json.loads(line) for line in result.stdout.splitlines()]
    losses = [line for line in lines if line["benchmark"] == "loss"]
    assert [(line["dim"], line["batch_size"]) for line in losses] == [(64, 8), (64, 48)]
    for line in losses:
        assert line["section"] == "loss"
        assert line["loss"] == pytest.approx(numpy_loss(line["batch_size"], 64), 1e-4)
        assert line["relative_difference_gradient"] < 1e-5
    assert lines[-1]["statuses"] == {"loss": "ok"}


def numpy_loss(batch_size, dim, lambd=0.0051):
    """The Barlow Twins loss in float64 of `workloads.correlated_embeddings`."""
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((batch_size, dim), np.float32)
    z2 = z1 + 0.5 * rng.standard_normal((batch_size, dim), np.float32)
    z1n, z2n = ((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) for z in (z1, z2))
    c = z1n.astype(np.float64).T @ z2n / batch_size
    on_diag = np.sum((np.diag(c) - 1) ** 2)
    return on_diag + lambd * (np.sum(c**2) - np.sum(np.diag(c) ** 2))
