"""examples/cifar10_barlow.py on Keras' JAX backend, without TensorFlow.

On an archive of tiny JPEGs made here (with Pillow): pre-training on the Grain
pipeline, a resume after a kill that ends where the unbroken run did, the
evaluation checked against the saved `.keras` model, and a finished run re-run
with `--eval none` that keeps the accuracies it measured.
"""

import json
import pathlib
import shutil
import sys

import keras
import numpy as np
import pytest
from absl import app, flags
from conftest import example_subsets, read_weights

from keras_barlow import evaluation

pytestmark = [pytest.mark.core, pytest.mark.jax_only]

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import cifar10_barlow as example  # noqa: E402

SIZE = 16  # of the images of the `example_archive` fixture (conftest)
TINY = [
    *("--backbone", "convnet", "--projector", "16-16", "--image_size", str(SIZE)),
    *("--batch_size", "8", "--val_count", "12", "--linear_epochs", "2"),
    *("--optimizer", "adam", "--learning_rate", "0.01", "--verbose", "0"),
]


@pytest.fixture(scope="module")
def archive(example_archive):
    return example_archive


def test_pretrains_resumes_evaluates_and_saves_on_jax(
    archive, tmp_path, run_example, capsys
):
    assert keras.backend.backend() == "jax" and not example.ON_TENSORFLOW
    model_dir = tmp_path / "run"
    args = ["--data", str(archive), *TINY, "--model_dir", str(model_dir)]
    first = run_example(*args, "--epochs", "2", "--eval", "none")
    assert first["initial_epoch"] == 0 and first["backend"] == "jax"
    last = model_dir / "checkpoints" / "epoch-000002"
    unbroken = read_weights(last / "model.weights.h5")

    # As if killed during epoch 2: the state after epoch 1 is the newest on disk.
    shutil.rmtree(last)
    second = run_example(*args, "--epochs", "2")
    assert second["initial_epoch"] == 1
    resumed = read_weights(last / "model.weights.h5")
    assert resumed.keys() == unbroken.keys() and len(resumed) > 10
    for name, value in unbroken.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)

    # The saved model, through another path (the .keras file, the loaders in
    # file order, kNN on its features), gives the accuracy the run reported.
    model = keras.saving.load_model(second["keras_model"], compile=False)
    features = []
    split = dict(image_size=SIZE, val_count=12, split_seed=example.SPLIT_SEED)
    for images in example_subsets(archive, **split):
        features += evaluation.extract_features(model.encoder, images)
    reference = evaluation.knn_accuracy(*features, k=3, temperature=0.1)
    assert reference["top1"] == pytest.approx(second["knn"]["top1"])
    example.print_summary(second)
    printed = capsys.readouterr().out
    assert f"python -m keras_barlow.export {second['keras_model']}" in printed


def test_a_finished_run_rerun_without_evaluation_keeps_its_accuracies(
    archive, tmp_path, run_example
):
    args = [
        "--data",
        str(archive),
        *TINY,
        "--model_dir",
        str(tmp_path),
        "--epochs",
        "1",
    ]
    measured = run_example(*args, "--eval", "knn")
    again = run_example(*args, "--eval", "none")
    assert again["initial_epoch"] == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["knn"] == measured["knn"] and summary == again
    with pytest.raises(flags.IllegalFlagValueError, match="--epochs"):
        run_example(*args[:-2], "--epochs", "0")


def test_tfds_and_workers_say_what_to_pass_on_jax(tmp_path, run_example):
    with pytest.raises(app.UsageError, match="--data PATH"):
        run_example("--model_dir", str(tmp_path / "a"), *TINY)
    with pytest.raises(app.UsageError, match="initialize_processes"):
        run_example("--workers", "a:1,b:2", "--task_index", "0", *TINY)
    assert not (tmp_path / "a").exists()
