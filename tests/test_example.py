"""examples/cifar10_barlow.py end to end, on tiny images made here.

The example runs in this process (its `run()` after parsing flags), on an archive
of random JPEGs with the library's `convnet` encoder at 16x16: pre-training,
resumption (to the saved epochs, or more when `--epochs` asks), evaluation and
export. The exported SavedModel is checked against an independent path: its own
features, fed to `knn_accuracy`, must give the accuracy the example reported from
the in-memory encoder. Then what a user gets wrong: TFDS without a network, a
single class, bad flags, the same data by another path; each fails before
anything is written, naming what to pass.
"""

import json
import pathlib
import shutil
import socket
import sys
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import example_subsets, read_weights

from keras_barlow import backbones, evaluation, presets

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import cifar10_barlow as example  # noqa: E402

SIZE = 16  # of the images of the `example_archive` fixture (conftest)
TINY = [
    "--backbone",
    "convnet",
    "--projector",
    "16-16",
    "--image_size",
    str(SIZE),
    "--batch_size",
    "8",
    "--val_count",
    "12",
    "--linear_epochs",
    "2",
    "--verbose",
    "0",
]


@pytest.fixture(scope="module")
def archive(example_archive):
    return example_archive


def test_pretrains_resumes_exactly_evaluates_and_exports(
    archive, tmp_path, run_example, capsys
):
    model_dir = tmp_path / "run"
    args = [
        "--data",
        str(archive),
        "--model_dir",
        str(model_dir),
        *TINY,
        "--epochs",
        "2",
    ]
    first = run_example(*args, "--knn_every", "1")
    assert first["initial_epoch"] == 0 and first["train_images"] == 36
    assert first["steps_per_epoch"] == 36 // 8 and first["images_per_second"] > 0
    scalars = {
        value.tag
        for path in (model_dir / "logs" / "train").glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert {"epoch_loss", "epoch_collapse_effective_rank", "epoch_knn_top1"} <= scalars
    last = model_dir / "checkpoints" / "epoch-000002"
    uninterrupted = read_weights(last / "model.weights.h5")

    # As if killed during epoch 2: the state after epoch 1 is the newest on disk.
    shutil.rmtree(last)
    second = run_example(*args)
    assert second["initial_epoch"] == 1
    resumed = read_weights(last / "model.weights.h5")
    assert resumed.keys() == uninterrupted.keys() and len(resumed) > 10
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)
    assert json.loads((model_dir / "summary.json").read_text()) == second
    example.print_summary(second)
    report = capsys.readouterr().out
    assert "kNN: top-1" in report and "linear: top-1" in report
    assert str(model_dir / "export" / "1") in report

    # The SavedModel, loaded without the library's Python code, reproduces the
    # reported kNN accuracy of the trained encoder.
    served = tf.saved_model.load(second["saved_model"]).signatures["serving_default"]
    features = []
    split = dict(image_size=SIZE, val_count=12, split_seed=example.SPLIT_SEED)
    for images in example_subsets(archive, **split):
        batches = [(served(images=x)["features"].numpy(), y.numpy()) for x, y in images]
        features += [np.concatenate(part) for part in zip(*batches, strict=True)]
    assert features[0].shape == (36, 8 * 32) and features[2].shape == (12, 8 * 32)
    knn = second["knn"]
    assert knn["k"] == 3  # a tenth of the 36 reference images
    reference = evaluation.knn_accuracy(*features, k=3, temperature=0.1)
    assert reference["top1"] == pytest.approx(knn["top1"])

    with pytest.raises(ValueError, match=r"other settings.*projector_dims.*directory"):
        run_example(*args, "--projector", "16-8")
    with pytest.raises(ValueError, match=r"--epochs=1 is fewer than the 2 epochs"):
        run_example(*args, "--epochs", "1")


def test_a_rerun_without_epochs_finishes_the_saved_run(
    archive, tmp_path, run_example, monkeypatch, capsys
):
    # The preset made 5 epochs long, not 1000: a run that falls back to it fails fast.
    preset = presets.get("cifar10-resnet18")
    short = preset.replace(epochs=5, warmup_epochs=2)
    monkeypatch.setitem(presets.PRESETS, preset.name, short)
    model_dir = tmp_path / "run"
    args = ["--data", str(archive), "--model_dir", str(model_dir), *TINY]
    args += ["--eval", "none"]
    run_example(*args, "--epochs", "2", "--warmup_epochs", "1")
    shutil.rmtree(model_dir / "checkpoints" / "epoch-000002")  # killed in epoch 2
    capsys.readouterr()

    resumed = run_example(*args)
    assert (resumed["initial_epoch"], resumed["epochs"]) == (1, 2)
    printed = capsys.readouterr().out
    saved = model_dir / "settings.json"
    assert f"Resuming: epochs=2, as saved in {saved}; pass --epochs" in printed
    assert "  epochs = 2\n  warmup_epochs = 1\n" in printed

    # Longer only when asked; then the longer run is the one saved.
    longer = run_example(*args, "--epochs", "3")
    assert (longer["initial_epoch"], longer["epochs"]) == (2, 3)
    assert "  epochs = 3\n  warmup_epochs = 1\n" in capsys.readouterr().out
    again = run_example(*args)
    assert (again["initial_epoch"], again["epochs"]) == (3, 3)
    assert "Resuming: epochs=3" in capsys.readouterr().out


def test_tfds_source_with_mock_data(tmp_path, run_example, tfds):
    with tfds.testing.mock_data(num_examples=40):
        summary = run_example(
            "--model_dir",  # --data defaults to TFDS cifar10
            str(tmp_path),
            *TINY,
            "--epochs",
            "1",
            "--steps_per_epoch",
            "2",
            "--eval",
            "knn",
            "--val_count",
            "10",
        )
    assert summary["data"] == "TFDS cifar10"
    assert (summary["train_images"], summary["val_images"]) == (30, 10)
    assert summary["steps_per_epoch"] == 2 and "linear" not in summary
    assert 0.0 <= summary["knn"]["top1"] <= 1.0


@pytest.fixture
def no_network(monkeypatch, tmp_path, tfds):
    """TFDS has nothing prepared, and no host can be reached (whatever this machine
    can reach)."""
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))

    def connect(address, *args, **kwargs):
        raise OSError(f"[Errno -2] Name or service not known: {address[0]!r}")

    monkeypatch.setattr(socket, "create_connection", connect)


def test_tfds_without_network_fails_at_once_naming_the_data_flag(
    tmp_path, run_example, no_network
):
    start = time.perf_counter()
    with pytest.raises(
        ConnectionError, match=r"'cifar10' is not prepared.*--data PATH"
    ):
        run_example("--model_dir", str(tmp_path / "run"), *TINY)
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "run").exists()


def test_tfds_builder_reaches_its_download_urls_without_a_network(tfds):
    # tensorflow-datasets imports `importlib_resources` (undeclared) on this path.
    urls = tfds.builder("cifar10").url_infos
    assert any("cifar-10" in url for url in urls)


def test_data_errors_come_before_model_dir_and_training(archive, tmp_path, run_example):
    one_class = tmp_path / "one_class"
    shutil.copytree(extracted(archive) / "class0", one_class / "only")
    model_dir = tmp_path / "run"
    args = ["--data", str(one_class), "--model_dir", str(model_dir), *TINY]
    with pytest.raises(ValueError, match="single class.*--eval none"):
        run_example(*args, "--epochs", "1", "--val_count", "4")
    assert not model_dir.exists()
    with pytest.raises(ValueError, match="single class"):
        run_example(
            *args,
            "--epochs",
            "1",
            "--val_count",
            "4",
            "--eval",
            "none",
            "--knn_every",
            "1",
        )
    summary = run_example(*args, "--epochs", "1", "--val_count", "4", "--eval", "none")
    assert "knn" not in summary and pathlib.Path(summary["saved_model"]).exists()
    with pytest.raises(FileNotFoundError, match="missing"):
        run_example(
            "--data",
            str(tmp_path / "missing"),
            "--model_dir",
            str(tmp_path / "other"),
            *TINY,
        )
    assert not (tmp_path / "other").exists()


def extracted(archive):
    root = archive.parent / "extracted"
    if not root.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return root / "train"


def test_flags_are_named_as_typed_and_overrides_are_printed(
    archive, tmp_path, run_example, capsys
):
    for bad in (["--learning_rate", "-1"], ["--epochs", "0"], ["--val_fraction", "1"]):
        with pytest.raises(flags.IllegalFlagValueError, match=bad[0]):
            run_example(*bad)
    with pytest.raises(ValueError, match="--projector.*'2048-2048-2048'.*'16-x'"):
        example.parse_projector("16-x")
    for good, sizes in (("16", (16,)), ("8-16", (8, 16))):
        assert example.parse_projector(good) == sizes
    with pytest.raises(ValueError, match=r"a global batch of 1 for 1 replica\(s\)"):
        run_example("--model_dir", str(tmp_path / "b"), *TINY, "--batch_size", "1")
    assert not (tmp_path / "b").exists()
    summary = run_example(
        "--data",
        str(archive),
        "--model_dir",
        str(tmp_path / "c"),
        *TINY,
        "--epochs",
        "1",
        "--eval",
        "none",
    )
    example.print_summary(summary)
    printed = capsys.readouterr().out
    assert (
        "Preset 'cifar10-resnet18', overridden by --backbone, --projector, "
        "--image_size, --epochs, --batch_size:\n  backbone = 'convnet'"
    ) in printed
    assert "README.md, section 'Serving the encoder'" in printed
    assert "200 MB" in str(flags.FLAGS["data"].help)


def test_resume_compares_the_data_path_resolved(
    archive, tmp_path, run_example, monkeypatch
):
    args = ["--model_dir", str(tmp_path / "run"), *TINY, "--eval", "none"]
    run_example("--data", str(archive), *args, "--epochs", "1")
    monkeypatch.chdir(archive.parent)
    again = run_example("--data", archive.name, *args, "--epochs", "2")
    assert again["initial_epoch"] == 1
    other = tmp_path / "other.tar.gz"  # another file: another run
    shutil.copy(archive, other)
    with pytest.raises(ValueError, match=r"data: .*tiny\.tar\.gz' -> .*other\.tar"):
        run_example("--data", str(other), *args, "--epochs", "2")


def test_the_example_encoder_is_the_library_convnet():
    recipe = presets.get("cifar10-resnet18").replace(backbone="convnet", image_size=16)
    encoder = recipe.encoder()
    assert encoder.name == "convnet" and encoder.output_shape == (None, 256)
    assert encoder.input_shape == (None, 16, 16, 3)
    trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    assert trainable == 388_896
    assert backbones.convnet((None, None, 3), width=8).output_shape == (None, 64)
