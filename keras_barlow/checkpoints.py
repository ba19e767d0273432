"""Checkpoint every epoch and resume after a crash, ending where an unbroken run ends.

`TrainingCheckpoint` is a Keras callback that writes, after every completed epoch,
everything the next epoch depends on:

* the model's weights and the optimizer's state (`model.save_weights`: LARS
  momentum, the iteration count that drives the learning-rate schedule, the
  loss scale of a `LossScaleOptimizer`);
* the augmentation random state: `BarlowTwins` draws its distortions from
  `(model.augment_seed, model.train_step_count, replica)` (see
  `BarlowTwins._step_seed`), both model weights; the states of the model's
  `keras.random.SeedGenerator`s (e.g. a `Dropout` in the encoder) are stored
  too, as `save_weights` leaves them out;
* the number of completed epochs.

Each checkpoint is a directory `epoch-NNNNNN` (N = completed epochs) holding
`model.weights.h5` and `checkpoint.json` (`keras_barlow._checkpoint_dir` writes
and loads one). The JSON file is written last, through
a temporary file and a rename, and marks the checkpoint complete: a process
killed while saving leaves a directory without it, which is ignored (and
removed at the next start), and the previous checkpoint is used. A complete
checkpoint that fails to load (e.g. a damaged disk) is skipped with a warning in
favour of the one before it; the failed attempt leaves the model as it was. The
last `max_to_keep` checkpoints are kept.

A restart must be the same run: `check_settings` refuses other settings, and
`TrainingCheckpoint.check_epochs` fewer epochs than already done.

On TensorFlow and on JAX. A local directory needs no TensorFlow; a URL (`gs://`,
...) goes through `tf.io.gfile` (`keras_barlow._files`). Resuming restarts the
interrupted epoch from its beginning. The run then ends with the same weights as
an uninterrupted one when every epoch sees the same batches in the same order
after a restart: see `TrainingCheckpoint` for the recipe of an input pipeline
keyed by epoch.
"""

import json
import os
import re
import warnings

import keras
import numpy as np
from keras.src.utils import io_utils

from keras_barlow import _checkpoint_dir, _files, distribute
from keras_barlow import _checks as checks

_CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)$")

# What NaN or Inf values in training mean, for this module's errors and NaNGuard's.
NON_FINITE_CAUSES = (
    "Likely causes: a learning rate too high for the batch size (lower it or "
    "lengthen the warm-up); float16 overflow under 'mixed_float16' (use "
    "'mixed_bfloat16', or keep the loss scale of the LossScaleOptimizer dynamic, "
    "or lower `scale_loss`); bad input values (NaN or Inf pixels from the input "
    "pipeline). Fix the cause, then restart: training resumes from the last "
    "checkpoint, which holds finite weights."
)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Save the whole training state every epoch and resume from it on restart.

    At the start of `fit` (or earlier, with `restore`), the newest complete
    checkpoint in `directory` is loaded into the model and its optimizer, and
    training continues after the last completed epoch. After every epoch the
    state is saved atomically (see the module docstring). Nothing is deleted at
    the end of training: the last checkpoint is the trained model.

    A state that is not finite (NaN or Inf weights) is never saved: the callback
    raises `FloatingPointError` instead and the previous checkpoint stays the
    newest. An epoch cut short by `model.stop_training` is not saved either.

    Exact resumption. A resumed run repeats the interrupted epoch from its first
    batch, so it ends with the weights of an uninterrupted run (given
    `keras.utils.set_random_seed(...)`, and on TensorFlow
    `tf.config.experimental.enable_op_determinism()`) when epoch `e` yields the
    same batches whether or not the process restarted. A
    `dataset.shuffle(..., reshuffle_each_iteration=True)` does not: its order
    depends on how many epochs the process has already run. Key the order by the
    epoch instead, and skip the completed epochs:

    ```python
    def one_epoch(epoch):  # the batches of epoch `epoch`, a function of it only
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(files)), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return (tf.data.Dataset.from_tensor_slices(tf.gather(files, order))
                .map(decode).batch(256, drop_remainder=True))

    checkpoint = keras_barlow.checkpoints.TrainingCheckpoint(model_dir)
    initial_epoch = checkpoint.restore(model)  # 0 when model_dir has none
    if initial_epoch < epochs:  # else the run is finished: nothing to do
        batches = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
        model.fit(batches, epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=len(files) // 256,
                  callbacks=[checkpoint, keras_barlow.callbacks.NaNGuard()])
    ```

    (`Dataset.shuffle` takes no tensor seed, hence the stateless shuffle of the
    file list; each epoch is batched on its own, with `drop_remainder=True`, so
    that no batch straddles two epochs.) A pipeline built in Python for a given
    epoch (e.g. `dataset.shuffle(n, seed=seed + epoch)`) can instead be given to
    one `fit` per epoch, with the same callback (e.g. on JAX, NumPy arrays in the
    order `np.random.default_rng([seed, epoch]).permutation(n)`):

    ```python
    for epoch in range(initial_epoch, epochs):
        model.fit(make_dataset(epoch), initial_epoch=epoch, epochs=epoch + 1,
                  callbacks=[checkpoint])
    ```

    Without the explicit `restore`, the callback restores at the start of `fit`
    by itself; training then resumes correctly but with another data order than
    an uninterrupted run.

    Only the chief process writes (`keras_barlow.distribute.is_chief`); all
    read, so `directory` must be shared by the processes. One run per directory.

    Args:
        directory: where the checkpoints are written, created if missing: a
            local path, or with TensorFlow installed any `tf.io.gfile` URL.
        max_to_keep: number of most recent checkpoints kept, at least 1.
        verbose: 1 (default) to print which checkpoint was restored, or that
            there was none; 0 for silence. `fit(verbose=0)` silences it too.

    Raises:
        ImportError: `directory` is a URL and TensorFlow is not installed.

    Example:

    ```python
    model.compile(optimizer=keras_barlow.optimizers.LARS(schedule))
    model.fit(dataset, epochs=100, callbacks=[
        keras_barlow.checkpoints.TrainingCheckpoint("runs/barlow")])
    ```
    """

    def __init__(self, directory, max_to_keep=2, verbose=1):
        super().__init__()
        self.directory = os.fspath(directory)
        self._files = _files.file_system(self.directory)
        self.max_to_keep = checks.positive_int("max_to_keep", max_to_keep)
        self.verbose = verbose
        self._restored_epoch = None
        self._first_epoch_of_fit = False
        self._batches_this_epoch = 0

    def restore(self, model=None):
        """Load the newest loadable checkpoint into `model`.

        Builds the model and its optimizer first when needed. `model` must be
        compiled. A `BarlowTwins` also gets the augmentation seed it was
        trained with (a weight), without retracing its steps. The chief prints
        which checkpoint it restored, or that `directory` holds none (see
        `verbose`).

        Args:
            model: the model to restore; defaults to the callback's model.

        Returns:
            int, the number of completed epochs: the `initial_epoch` of `fit`;
            0 when `directory` holds no checkpoint.

        Raises:
            RuntimeError: checkpoints exist but none of them loads into `model`
                (e.g. the model's architecture changed). The model is then built
                but its weights, optimizer state and seed are unchanged.
        """
        model = model if model is not None else self.model
        if model is not None and self.model is None:
            self.set_model(model)
        if getattr(model, "optimizer", None) is None:
            raise ValueError(
                "`restore` needs a compiled model: call "
                "`model.compile(optimizer=...)` first."
            )
        chief = distribute.is_chief(_checkpoint_dir.strategy_of(model))
        if chief:
            self._remove_incomplete()
        paths = self.checkpoints()
        if paths:
            _checkpoint_dir.build(model)
        errors = []
        for path in reversed(paths):
            try:
                state = _checkpoint_dir.load(model, path)
            except (OSError, ValueError, KeyError) as error:
                errors.append(f"{path}: {error}")
                warnings.warn(
                    f"Checkpoint {path} could not be loaded ({error}). "
                    "Trying the previous one.",
                    stacklevel=2,
                )
                continue
            self._restored_epoch = state["epoch"]
            if chief:
                self._say(
                    f"Restored {path}, the checkpoint after epoch "
                    f"{self._restored_epoch}."
                )
            return self._restored_epoch
        if errors:
            raise RuntimeError(
                "No checkpoint in {} loads into this model. Was the model or its "
                "optimizer changed? Restore the original code, or train in a new "
                "directory. Errors: {}".format(self.directory, "; ".join(errors))
            )
        if chief:
            self._say(f"No checkpoint in {self.directory} yet: nothing restored.")
        self._restored_epoch = 0
        return 0

    def _say(self, message):
        fit_is_silent = self.params is not None and self.params.get("verbose") == 0
        if self.verbose and not fit_is_silent:
            io_utils.print_msg(message)

    def check_epochs(self, epochs, name="epochs"):
        """Refuse to train to `epochs` when more epochs are already completed here.

        Args:
            epochs: int, the total epochs the run asks for.
            name: `epochs` as the user typed it, e.g. `"--epochs"`, for the message.

        Raises:
            ValueError: `epochs` is below `latest_epoch()`.
        """
        completed = self.latest_epoch()
        if epochs < completed:
            raise ValueError(
                f"{name}={epochs} is fewer than the {completed} epochs already "
                f"completed in {self.directory}. Pass {name}={completed} or more to "
                "resume (or just evaluate and export) this run, or train a new one "
                "in another directory."
            )

    def checkpoints(self):
        """Paths of the complete checkpoints, oldest first."""
        return [path for _, path in self._complete()]

    def latest_epoch(self):
        """Completed epochs of the newest complete checkpoint (0 if none), unloaded.

        An upper bound of what `restore` returns (which falls back to older
        checkpoints when the newest does not load), cheap enough to check
        settings before building anything.
        """
        complete = self._complete()
        return complete[-1][0] if complete else 0

    def _complete(self):
        """`(completed epochs, path)` of the complete checkpoints, oldest first."""
        if not self._files.isdir(self.directory):
            return []
        found = []
        for name in self._files.listdir(self.directory):
            match = _CHECKPOINT_NAME.match(name.rstrip("/"))
            path = os.path.join(self.directory, name.rstrip("/"))
            marker = os.path.join(path, _checkpoint_dir.STATE_FILE)
            if match and self._files.exists(marker):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def on_train_begin(self, logs=None):
        if self._restored_epoch is None:
            self.restore()
            # fit() starts from the private `model._initial_epoch` when set, as
            # Keras' own BackupAndRestore relies on (keras-team/keras#19179): its
            # `initial_epoch` argument could not know. Checked by
            # tests/test_checkpoints.py.
            self.model._initial_epoch = self._restored_epoch or None
        self._first_epoch_of_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch_of_fit and epoch < self._restored_epoch:
            raise ValueError(
                f"`fit` starts at epoch {epoch + 1}, but the model was restored from "
                f"the checkpoint after epoch {self._restored_epoch}. Pass "
                f"`initial_epoch={self._restored_epoch}` (the value `restore` "
                "returned) to `fit`."
            )
        self._first_epoch_of_fit = False
        self._batches_this_epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        # Not on_train_batch_begin: when the data runs out, Keras begins a batch
        # that never runs.
        self._batches_this_epoch += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._batches_this_epoch == 0:
            raise ValueError(
                f"The training data yielded no batch in epoch {epoch + 1}. Check "
                "that the dataset is not empty (file patterns, filters, "
                "`batch(drop_remainder=True)` with fewer samples than one batch) "
                "and that it yields `steps_per_epoch` batches per epoch."
            )
        steps = self.params.get("steps") if self.params else None
        if self.model.stop_training and steps and self._batches_this_epoch < steps:
            return  # an incomplete epoch must not count as done
        self.save(epoch + 1)

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None

    def save(self, epoch):
        """Write the current state as the checkpoint of `epoch` completed epochs.

        Returns:
            The checkpoint's path, or None on a worker that does not write.

        Raises:
            FloatingPointError: the weights or optimizer state are not finite.
        """
        model = self.model
        _check_finite(model, epoch)
        if not distribute.is_chief(_checkpoint_dir.strategy_of(model)):
            return None
        path = os.path.join(self.directory, f"epoch-{epoch:06d}")
        _checkpoint_dir.write(model, path, epoch)
        self._remove_old()
        return path

    def _remove_old(self):
        for path in self.checkpoints()[: -self.max_to_keep]:
            # Unmark first: a kill during the removal leaves an incomplete
            # directory, never a complete-looking one with files missing.
            self._files.remove(os.path.join(path, _checkpoint_dir.STATE_FILE))
            self._files.rmtree(path)

    def _remove_incomplete(self):
        if not self._files.isdir(self.directory):
            return
        complete = set(self.checkpoints())
        for name in self._files.listdir(self.directory):
            path = os.path.join(self.directory, name.rstrip("/"))
            if _CHECKPOINT_NAME.match(name.rstrip("/")) and path not in complete:
                self._files.rmtree(path)


def check_settings(path, settings, may_change=()):
    """Store a new run's settings in `path`; refuse to resume one with other settings.

    The first call writes `settings` to the JSON file `path`, nested keys flattened
    (`{"recipe": {"epochs": 10}}` -> `"recipe.epochs"`). A later call (a restart)
    raises on any difference but those of the keys `may_change`, whose new values
    replace the stored ones (so that a run made longer stays longer); call it on
    the chief alone, as it writes. An `os.PathLike`
    value (e.g. a `pathlib.Path`) is a local path, stored and compared resolved
    (absolute, links followed): the same data by another path is the same setting.

    Args:
        path: the JSON file (a local path, or with TensorFlow a `tf.io.gfile` URL).
        settings: dict of JSON-ready values or `os.PathLike`s, dicts nested in it
            (tuples compare equal to lists).
        may_change: dotted keys that may change on a restart, e.g.
            `("recipe.epochs",)`.

    Returns:
        dict, the stored settings (flat), as they are after this call.

    Raises:
        ValueError: listing every change as `key: old -> new`.
        ImportError: `path` is a URL and TensorFlow is not installed.

    Example:

    ```python
    settings = {"data": pathlib.Path(data_dir), "recipe": {"epochs": 100}}
    check_settings(f"{model_dir}/settings.json", settings, ("recipe.epochs",))
    ```
    """
    flat = _flat(settings)
    paths = {key for key, value in flat.items() if isinstance(value, os.PathLike)}
    current = {
        key: os.path.realpath(value) if key in paths else value
        for key, value in flat.items()
    }
    current = json.loads(json.dumps(current))  # tuples become lists, as stored
    stored = stored_settings(path)
    if stored is None:
        _files.file_system(path).makedirs(os.path.dirname(path) or ".")
        _files.write_atomically(path, json.dumps(current, indent=2))
        return current
    changed = []
    for key in sorted((set(stored) | set(current)) - set(may_change)):
        old, new = stored.get(key), current.get(key)
        if key in paths and isinstance(old, str):
            old = os.path.realpath(old)  # as typed, in a store of an older version
        if old != new:
            changed.append(f"{key}: {old!r} -> {new!r}")
    if changed:
        raise ValueError(
            f"{os.path.dirname(path) or '.'!r} holds a run with other settings "
            f"({'; '.join(changed)}). Resume it with its own settings, or start the "
            "new run in another directory."
        )
    updated = {**stored, **{key: current[key] for key in may_change if key in current}}
    if updated != stored:
        _files.write_atomically(path, json.dumps(updated, indent=2))
    return updated


def stored_settings(path):
    """The settings that `check_settings` stored in `path` (flat), or None if none."""
    files = _files.file_system(path)
    if not files.exists(path):
        return None
    with files.GFile(path) as file:
        return _flat(json.load(file))


def _flat(settings, prefix=""):
    """`{"a.b": leaf}` for the leaves of nested dicts."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_finite(model, epoch):
    variables = model.weights + model.optimizer.variables
    bad = [
        v.path
        for v in variables
        if v.dtype.startswith(("float", "bfloat"))
        and not np.isfinite(_checkpoint_dir.numpy_copy(v).astype(np.float32)).all()
    ]
    if bad:
        raise FloatingPointError(
            f"After epoch {epoch}, {len(bad)} variables hold NaN or Inf (first: "
            f"{bad[0]}); this state is not saved and the newest checkpoint is kept. "
            + NON_FINITE_CAUSES
        )
