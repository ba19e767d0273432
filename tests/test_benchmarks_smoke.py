"""The benchmark scripts run and print what they promise, with tiny settings.

`benchmarks/train_step.py` is left out: even its smallest run builds and traces
two ResNets, which costs more than the whole of this file.
"""

import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def records(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_loss_benchmark_reports_both_paths_and_their_agreement(monkeypatch, capsys):
    script = load_script("loss", monkeypatch)
    script.main(["--dims", "64", "--batch_sizes", "8", "48", "--repeats", "1"])
    lines = records(capsys)
    assert [(line["dim"], line["batch_size"]) for line in lines] == [(64, 8), (64, 48)]
    for line in lines:
        assert line["agree_within_1e-5"]
        assert set(line["methods"]) == {"cross_correlation", "gram"}
        naive = line["methods"]["cross_correlation"]
        assert naive["method_matrices_bytes"] == 4 * 64 * 64
        assert line["machine"]["tensorflow"] and line["flags"]["repeats"] == 1
    assert [line["choose_method"] for line in lines] == ["gram", "cross_correlation"]


def test_augment_benchmark_reports_views_per_second_and_stages(monkeypatch, capsys):
    script = load_script("augment", monkeypatch)
    script.main(
        [
            "--sizes",
            "8",
            "--input_sizes",
            "10",
            "--presets",
            "cifar",
            "--batch_size",
            "4",
            "--repeats",
            "1",
            "--stages",
        ]
    )
    (line,) = records(capsys)
    assert (line["size"], line["input_size"], line["batch_size"]) == (8, 10, 4)
    graph = line["results"]["graph"]
    assert graph["views_per_s"] == pytest.approx(8 / graph["median_s"])
    stages = [name for name in line["results"] if name != "graph"]
    assert any("color_jitter" in name for name in stages)
    assert stages[-1].endswith("normalize")
