"""TrainingCheckpoint: saving and restoring, interrupted writes, NaNs, file systems.

Backend-neutral (`core`): these tests run on TensorFlow and on JAX; one of them
imports the callback with TensorFlow blocked, in a subprocess. A run resumed after
a real SIGKILL, and the settings guard of a resumed run: test_resume.py.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import complete_checkpoints, tiny_encoder, to_numpy

from keras_barlow import checkpoints
from keras_barlow.callbacks import NaNGuard
from keras_barlow.checkpoints import TrainingCheckpoint
from keras_barlow.model import BarlowTwins
from keras_barlow.optimizers import LARS

pytestmark = pytest.mark.core

SIZE, BATCH, STEPS = 8, 4, 3


def make_model(seed=0):
    """A model fed with pre-made views: the same checkpoint, a faster trace."""
    encoder = tiny_encoder(SIZE, 4, batch_norm=True, dropout=0.2)
    model = BarlowTwins(encoder, projector_dims=(8,), augmenter=None, seed=seed)
    model.compile(optimizer=LARS(0.1, eta=0.02))
    return model


def views(epochs, nan_at=None):
    """View pairs of STEPS batches per epoch, a `fit` argument of every backend.

    With `nan_at=(epoch, batch)`, one pixel there is NaN.
    """
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(epochs * STEPS * BATCH, SIZE, SIZE, 3)).astype(np.float32)
    x2 = x1 + 0.1 * rng.normal(size=x1.shape).astype(np.float32)
    if nan_at is not None:
        x1[(nan_at[0] * STEPS + nan_at[1]) * BATCH, 0, 0, 0] = np.nan
    return (x1, x2)


def fit(model, data, **kwargs):
    """`model.fit` on NumPy `data` in its order, STEPS batches an epoch, quietly."""
    kwargs = {"steps_per_epoch": STEPS, "shuffle": False, "verbose": 0, **kwargs}
    return model.fit(data, batch_size=BATCH, **kwargs)


def state_of(model):
    """Everything a resumed run depends on, copied to NumPy."""
    variables = model.variables + model.optimizer.variables
    return [to_numpy(keras.ops.copy(v)) for v in variables]


def step_of(model):
    """The optimizer's iteration count."""
    return int(to_numpy(keras.ops.copy(model.optimizer.iterations)))


class Snapshots(keras.callbacks.Callback):
    """Records the state after every epoch: the reference a restore must give."""

    def __init__(self):
        super().__init__()
        self.after_epoch = {}

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch[epoch + 1] = state_of(self.model)


def assert_same_state(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A run of 2 epochs with its checkpoints and the state after each epoch."""
    directory = tmp_path_factory.mktemp("run")
    snapshots = Snapshots()
    fit(
        make_model(),
        views(2),
        epochs=2,
        callbacks=[snapshots, TrainingCheckpoint(directory)],
    )
    return directory, snapshots.after_epoch


def test_restore_gives_weights_optimizer_seed_and_epoch(two_epoch_run, tmp_path):
    directory, after_epoch = two_epoch_run
    assert complete_checkpoints(directory) == ["epoch-000001", "epoch-000002"]
    model = make_model(seed=123)  # fresh weights
    assert TrainingCheckpoint(directory).restore(model) == 2
    assert step_of(model) == 2 * STEPS
    assert_same_state(state_of(model), after_epoch[2])


def test_the_augmentation_seed_is_restored_with_the_weights(tmp_path):
    def augmenting_model(seed):
        model = BarlowTwins(
            make_model().encoder, projector_dims=(8,), augmenter="cifar", seed=seed
        )
        model.compile(optimizer=LARS(0.1, eta=0.02))
        model.build((None, SIZE, SIZE, 3))
        return model

    images = np.random.default_rng(0).integers(0, 256, (BATCH, SIZE, SIZE, 3))
    images = images.astype(np.uint8)
    trained = augmenting_model(seed=11)
    trained.fit(
        images, batch_size=BATCH, verbose=0, callbacks=[TrainingCheckpoint(tmp_path)]
    )
    restored = augmenting_model(seed=123)
    assert TrainingCheckpoint(tmp_path).restore(restored) == 1
    assert restored.seed == 11 and "seed" not in json.loads(
        (tmp_path / "epoch-000001" / "checkpoint.json").read_text()
    )
    # The same views for the next step, with no retrace of the steps.
    step = trained._step_seed(trained.train_step_count)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(trained.make_views(images, step)[0]),
        keras.ops.convert_to_numpy(
            restored.make_views(images, restored._step_seed(restored.train_step_count))[
                0
            ]
        ),
    )


def test_fresh_directory_restores_nothing(tmp_path):
    model = make_model()
    before = state_of(model)
    assert TrainingCheckpoint(tmp_path / "new").restore(model) == 0
    assert_same_state(state_of(model), before)


def test_restore_says_what_it_restored_or_that_there_is_nothing(
    two_epoch_run, tmp_path, capsys
):
    directory, _ = two_epoch_run
    fresh = tmp_path / "fresh"
    assert TrainingCheckpoint(fresh).restore(make_model()) == 0
    assert (
        capsys.readouterr().out == f"No checkpoint in {fresh} yet: nothing restored.\n"
    )
    assert TrainingCheckpoint(directory).restore(make_model()) == 2
    newest = directory / "epoch-000002"
    assert capsys.readouterr().out == (
        f"Restored {newest}, the checkpoint after epoch 2.\n"
    )
    # Silent when asked, by the callback or by `fit(verbose=0)`.
    assert TrainingCheckpoint(directory, verbose=0).restore(make_model()) == 2
    fit(make_model(), views(1), epochs=1, callbacks=[TrainingCheckpoint(fresh)])
    assert capsys.readouterr().out == ""


def test_damaged_newest_checkpoint_falls_back_to_the_previous(two_epoch_run, tmp_path):
    directory, after_epoch = two_epoch_run
    shutil.copytree(directory, tmp_path / "run")
    weights = tmp_path / "run" / "epoch-000002" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    model = make_model()
    with pytest.warns(UserWarning, match="epoch-000002 could not be loaded"):
        assert TrainingCheckpoint(tmp_path / "run").restore(model) == 1
    assert_same_state(state_of(model), after_epoch[1])


def test_checkpoints_of_another_architecture_are_refused(two_epoch_run):
    directory, _ = two_epoch_run
    encoder = tiny_encoder(SIZE, 4, relu=False)
    other = BarlowTwins(encoder, projector_dims=(16,), augmenter=None)
    with pytest.raises(ValueError, match="needs a compiled model"):
        TrainingCheckpoint(directory).restore(other)
    other.compile(optimizer=LARS(0.1))
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="Was the model"):
        TrainingCheckpoint(directory).restore(other)
    assert complete_checkpoints(directory) == ["epoch-000001", "epoch-000002"]


def rewrite_states(directory, change):
    """Apply `change` to the `checkpoint.json` dict of every checkpoint."""
    for path in Path(directory).glob("epoch-*/checkpoint.json"):
        path.write_text(json.dumps(change(json.loads(path.read_text()))))


@pytest.mark.parametrize(
    "change",
    [
        lambda state: {**state, "step": state["step"] + 1},  # checked after loading
        lambda state: {**state, "seed_generator_states": []},  # checked before
    ],
    ids=["iteration_count", "seed_generators"],
)
def test_failed_restore_leaves_the_model_as_it_was(two_epoch_run, tmp_path, change):
    directory, after_epoch = two_epoch_run
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    rewrite_states(tmp_path, change)
    model = make_model(seed=7)
    model.build((None, SIZE, SIZE, 3))
    model.optimizer.build(model.trainable_variables)
    before = state_of(model)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="Was the model"):
        TrainingCheckpoint(tmp_path).restore(model)
    assert_same_state(state_of(model), before)
    # The weights files themselves were fine: they would have changed the model.
    assert any(
        not np.array_equal(a, b) for a, b in zip(after_epoch[2], before, strict=True)
    )


def test_latest_epoch_reads_the_newest_complete_checkpoint(two_epoch_run, tmp_path):
    directory, _ = two_epoch_run
    assert TrainingCheckpoint(tmp_path / "new").latest_epoch() == 0
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    (tmp_path / "epoch-000003").mkdir()  # incomplete: no checkpoint.json
    assert TrainingCheckpoint(tmp_path).latest_epoch() == 2


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup."""


def crash_in_weights_file(monkeypatch):
    save_weights = keras.Model.save_weights

    def half_written(model, path, **kwargs):
        save_weights(model, path, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:2000])
        raise Killed

    monkeypatch.setattr(keras.Model, "save_weights", half_written)


def crash_before_marker_rename(monkeypatch):
    def killed_rename(source, target):
        raise Killed

    monkeypatch.setattr(os, "replace", killed_rename)


@pytest.mark.parametrize("crash", [crash_in_weights_file, crash_before_marker_rename])
def test_write_killed_midway_leaves_previous_checkpoint(
    crash, two_epoch_run, tmp_path, monkeypatch
):
    directory, after_epoch = two_epoch_run
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    model = make_model()
    checkpoint = TrainingCheckpoint(tmp_path)
    assert checkpoint.restore(model) == 2
    model.optimizer.iterations.assign_add(1)  # a state that differs from epoch 2
    crash(monkeypatch)
    with pytest.raises(Killed):
        checkpoint.save(3)
    monkeypatch.undo()
    assert complete_checkpoints(tmp_path) == ["epoch-000001", "epoch-000002"]
    assert (tmp_path / "epoch-000003").exists()

    restored = make_model(seed=5)
    assert TrainingCheckpoint(tmp_path).restore(restored) == 2
    assert_same_state(state_of(restored), after_epoch[2])
    assert not (tmp_path / "epoch-000003").exists()  # the partial one is removed


@pytest.mark.parametrize("guard", [True, False])
def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(guard, tmp_path):
    snapshots = Snapshots()
    callbacks = [snapshots, TrainingCheckpoint(tmp_path)]
    callbacks += [NaNGuard()] if guard else []
    with pytest.raises(FloatingPointError) as error:
        fit(make_model(), views(3, nan_at=(1, 1)), epochs=3, callbacks=callbacks)
    message = str(error.value)
    if guard:  # named at the batch: step 5 = 3 steps of epoch 1 + 2 of epoch 2
        assert "is nan at optimizer step 5 (epoch 2, batch 2" in message
    else:  # caught by the checkpoint at the end of the epoch
        assert "After epoch 2" in message and "not saved" in message
    for cause in ("learning rate", "float16", "NaN or Inf pixels", "last checkpoint"):
        assert cause in message

    assert complete_checkpoints(tmp_path) == ["epoch-000001"]
    restored = make_model()
    assert TrainingCheckpoint(tmp_path).restore(restored) == 1
    assert all(np.isfinite(value).all() for value in state_of(restored))
    assert_same_state(state_of(restored), snapshots.after_epoch[1])


def test_epoch_cut_short_by_stop_training_is_not_saved(tmp_path):
    class StopInSecondEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if step_of(self.model) == STEPS + 1:
                self.model.stop_training = True

    fit(
        make_model(),
        views(2),
        epochs=2,
        callbacks=[StopInSecondEpoch(), TrainingCheckpoint(tmp_path)],
    )
    assert complete_checkpoints(tmp_path) == ["epoch-000001"]


def test_fit_one_epoch_at_a_time_continues_from_the_checkpoint(two_epoch_run, tmp_path):
    directory, after_epoch = two_epoch_run
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    model = make_model()
    checkpoint = TrainingCheckpoint(tmp_path, max_to_keep=5)
    assert checkpoint.restore(model) == 2
    with pytest.raises(ValueError, match="Pass `initial_epoch=2`"):
        fit(model, views(1), epochs=3, callbacks=[checkpoint])
    assert_same_state(state_of(model), after_epoch[2])  # not trained
    for epoch in (2, 3):  # e.g. to build each epoch's dataset in Python
        history = fit(
            model,
            views(1),
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=[checkpoint],
        )
        assert len(history.history["loss"]) == 1
    assert step_of(model) == 4 * STEPS
    assert complete_checkpoints(tmp_path)[-2:] == ["epoch-000003", "epoch-000004"]


def test_check_epochs_refuses_fewer_than_completed(two_epoch_run):
    directory, _ = two_epoch_run
    checkpoint = TrainingCheckpoint(directory)
    checkpoint.check_epochs(2)
    checkpoint.check_epochs(5)
    with pytest.raises(ValueError, match=r"--epochs=1 is fewer than the 2 epochs"):
        checkpoint.check_epochs(1, name="--epochs")
    TrainingCheckpoint(directory.parent / "missing").check_epochs(1)


def test_keras_still_starts_fit_from_the_private_initial_epoch():
    # TrainingCheckpoint sets `model._initial_epoch` in on_train_begin, as Keras'
    # BackupAndRestore does (keras-team/keras#19179); this fails if Keras stops
    # reading it.
    class StartAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model._initial_epoch = 2

    history = fit(make_model(), views(4), epochs=4, callbacks=[StartAtTwo()])
    assert history.epoch == [2, 3]


def test_max_to_keep_is_validated():
    with pytest.raises(ValueError, match="Received: max_to_keep=0"):
        TrainingCheckpoint("unused", max_to_keep=0)


# ----------------------------------------------------------------------------------
# File systems: local paths without TensorFlow, URLs through tf.io.gfile.


def test_a_url_goes_through_tensorflow_file_systems(tmp_path):
    tf = pytest.importorskip("tensorflow")
    url = f"ram://{tmp_path.name}/run"  # TensorFlow's in-memory file system
    snapshots = Snapshots()
    callbacks = [snapshots, TrainingCheckpoint(url)]
    fit(make_model(), views(2), epochs=2, callbacks=callbacks)
    assert sorted(tf.io.gfile.listdir(url)) == ["epoch-000001", "epoch-000002"]
    model = make_model(seed=3)
    assert TrainingCheckpoint(url).restore(model) == 2
    assert_same_state(state_of(model), snapshots.after_epoch[2])
    settings = f"{url}/settings.json"
    checkpoints.check_settings(settings, {"seed": 0})
    with pytest.raises(ValueError, match=r"seed: 0 -> 1"):
        checkpoints.check_settings(settings, {"seed": 1})
    assert not list(tmp_path.iterdir())  # nothing went to the local disk


def test_a_url_without_tensorflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if not installed
    extras = r"'gs://bucket/run' is a URL.*`pip install keras-barlow\[cpu\]`.*local"
    with pytest.raises(ImportError, match=extras):
        TrainingCheckpoint("gs://bucket/run")
    with pytest.raises(ImportError, match="keras-barlow"):
        checkpoints.check_settings("s3://bucket/run/settings.json", {"seed": 0})


def test_local_checkpoints_need_no_tensorflow(tmp_path):
    # In a process where `import tensorflow` fails, as where it is not installed.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None
        import keras, numpy as np
        from keras_barlow import checkpoints

        def model():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            model.compile(optimizer="sgd", loss="mse")
            return model

        trained, x = model(), np.ones((4, 3), "float32")
        callback = checkpoints.TrainingCheckpoint(sys.argv[1])
        trained.fit(x, x[:, :2], epochs=2, verbose=0, callbacks=[callback])
        restored = model()
        assert checkpoints.TrainingCheckpoint(sys.argv[1]).restore(restored) == 2
        for a, b in zip(trained.variables, restored.variables, strict=True):
            np.testing.assert_array_equal(a.value, b.value)
        checkpoints.check_settings(sys.argv[1] + "/settings.json", {"seed": 0})
        print(sorted(name for name in sys.modules if name.startswith("tensorflow")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The blocked entry only (after what `restore` printed).
    assert result.stdout.strip().splitlines()[-1] == "['tensorflow']"
    assert complete_checkpoints(tmp_path / "run") == ["epoch-000001", "epoch-000002"]
