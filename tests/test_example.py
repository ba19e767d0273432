"""examples/cifar10_barlow.py end to end, on tiny images made here.

The example runs in this process (its `run()` after parsing flags), on an archive
of random JPEGs with a 4-layer convolutional encoder at 16x16: pre-training,
resumption with more epochs, evaluation and export. The exported SavedModel is
checked against an independent path: its own features, fed to `knn_accuracy`,
must give the accuracy the example reported from the in-memory encoder.
"""

import json
import pathlib
import shutil
import sys
import tarfile

import h5py
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from keras_barlow import data, evaluation

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import cifar10_barlow as example  # noqa: E402

CLASSES, PER_CLASS, SIZE = 3, 16, 16
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
def archive(tmp_path_factory):
    """A .tar.gz of 3 class folders of 16 random 16x16 JPEGs each."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(PER_CLASS):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            (folder / f"{index}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    path = root / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
    return path


@pytest.fixture
def run_example(tmp_path, monkeypatch):
    """Parses the flags like the command line and runs the example in-process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def run(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["cifar10_barlow.py", *args])
        return example.run()

    yield run
    flags.FLAGS.unparse_flags()


def read_weights(path):
    """Every array of a Keras `.weights.h5` file, by its path in the file."""
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: arrays.update(
                {name: item[()]} if isinstance(item, h5py.Dataset) else {}
            )
        )
    return arrays


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
    for subset in ("training", "validation"):
        images = data.from_image_folder(
            archive,
            image_size=SIZE,
            batch_size=64,
            training=False,
            subset=subset,
            val_count=12,
            split_seed=example.SPLIT_SEED,
        )
        batches = [(served(images=x)["features"].numpy(), y.numpy()) for x, y in images]
        features += [np.concatenate(part) for part in zip(*batches, strict=True)]
    assert features[0].shape == (36, 8 * 32) and features[2].shape == (12, 8 * 32)
    knn = second["knn"]
    assert knn["k"] == 3  # a tenth of the 36 reference images
    reference = evaluation.knn_accuracy(*features, k=3, temperature=0.1)
    assert reference["top1"] == pytest.approx(knn["top1"])

    with pytest.raises(ValueError, match=r"other settings.*projector_dims"):
        run_example(*args, "--projector", "16-8")
    with pytest.raises(ValueError, match=r"--epochs=1 is fewer than the 2 epochs"):
        run_example(*args, "--epochs", "1")


def test_settings_may_change_only_in_the_epochs(tmp_path):
    path = str(tmp_path / "settings.json")
    settings = {
        "seed": 0,
        "recipe": {"epochs": 10, "warmup_epochs": 1, "projector_dims": (16, 16)},
    }
    example.check_settings(path, settings)  # a new run: stored
    longer = {
        "seed": 0,
        "recipe": {"epochs": 20, "warmup_epochs": 2, "projector_dims": (16, 16)},
    }
    example.check_settings(path, longer)  # more epochs: resumable
    with pytest.raises(ValueError, match=r"seed: 0 -> 1.*another --model_dir"):
        example.check_settings(path, {**settings, "seed": 1})


def test_tfds_source_with_mock_data(tmp_path, run_example, tfds):
    with tfds.testing.mock_data(num_examples=40):
        summary = run_example(
            "--data",
            "tfds",
            "--model_dir",
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


def test_clear_errors_before_any_work(tmp_path, run_example, monkeypatch):
    monkeypatch.setattr(example, "DEFAULT_ARCHIVE", tmp_path / "missing.tar.gz")
    with pytest.raises(FileNotFoundError, match="No --data given.*--data tfds"):
        run_example("--model_dir", str(tmp_path / "a"), *TINY)
    with pytest.raises(ValueError, match="--projector.*'2048-2048-2048'.*'16-x'"):
        example.parse_projector("16-x")
    with pytest.raises(ValueError, match="a global batch of 1 for 1 replicas"):
        run_example("--model_dir", str(tmp_path / "b"), *TINY, "--batch_size", "1")
    with pytest.raises(ValueError, match=r"--task_index.*\[0, 1\].*Received: 2"):
        example.tf_config(["a:1", "b:2"], 2)
    config = json.loads(example.tf_config(["a:1", "b:2"], 1))
    assert config == {
        "cluster": {"worker": ["a:1", "b:2"]},
        "task": {"type": "worker", "index": 1},
    }
