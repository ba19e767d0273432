"""The benchmark scripts run and print what they promise, with tiny settings.

`benchmarks/train_step.py` is left out: even its smallest run builds and traces
two ResNets, which costs more than the whole of this file. So are
`benchmarks/backends.py` (a process per backend) and `benchmarks/gpu.py --smoke`
(about a minute on JAX): only the kNN of `gpu.py` is checked here, against the
library's, and the CIFAR archive decoder of `make_cifar_npz.py`.
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


def test_make_cifar_npz_decodes_class_folders_of_jpegs(tmp_path, monkeypatch):
    image_lib = pytest.importorskip("PIL.Image")
    import io
    import tarfile

    import numpy as np

    archive_path = tmp_path / "tiny.tar.gz"
    colors = {"cat": (200, 30, 30), "airplane": (30, 30, 200)}
    with tarfile.open(archive_path, "w:gz") as archive:
        for name, color in colors.items():
            for index in range(3):
                data = io.BytesIO()
                image_lib.new("RGB", (8, 6), color).save(data, format="JPEG")
                member = tarfile.TarInfo(f"train/{name}/{index:04d}.jpg")
                member.size = len(data.getvalue())
                archive.addfile(member, io.BytesIO(data.getvalue()))
    script = load_script("make_cifar_npz", monkeypatch)
    output = tmp_path / "out.npz"
    script.main(["--archive", str(archive_path), "--output", str(output)])
    with np.load(output) as data:
        images, labels = data["images"], data["labels"]
        assert list(data["class_names"]) == ["airplane", "cat"]
    assert images.shape == (6, 6, 8, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    # JPEG keeps flat colors within a few levels: airplane blue, cat red.
    assert (
        abs(int(images[0, 3, 4, 2]) - 200) < 8
        and abs(int(images[3, 3, 4, 0]) - 200) < 8
    )


def test_gpu_script_knn_agrees_with_the_library(monkeypatch):
    """benchmarks/gpu.py's JAX kNN (no TensorFlow) against keras_barlow.evaluation."""
    pytest.importorskip("jax")
    import numpy as np

    from keras_barlow.evaluation import knn_accuracy

    script = load_script("gpu", monkeypatch)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    train_labels = rng.integers(0, 5, 300)
    test_labels = rng.integers(0, 5, 70)
    train = centers[train_labels] + 1.5 * rng.normal(size=(300, 16))
    test = centers[test_labels] + 1.5 * rng.normal(size=(70, 16))
    for k, temperature in ((20, 0.1), (300, 0.5)):
        expected = knn_accuracy(train, train_labels, test, test_labels, k, temperature)
        got = script.knn_top1(train, train_labels, test, test_labels, k, temperature)
        assert got == pytest.approx(expected["top1"])
    split_train, split_val = script.stratified_split(np.repeat(np.arange(4), 10), 8)
    assert len(split_val) == 8 and len(split_train) == 32
    assert np.bincount(np.repeat(np.arange(4), 10)[split_val]).tolist() == [2] * 4
