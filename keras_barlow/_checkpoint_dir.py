"""One checkpoint directory of `keras_barlow.checkpoints`: written, then loaded.

A directory holds `model.weights.h5` (`model.save_weights`: the model's weights
and the optimizer's state) and `checkpoint.json`: the completed epochs, the
optimizer step and the states of the model's `keras.random.SeedGenerator`s,
which `save_weights` leaves out. The JSON file is written last and atomically:
its presence marks the checkpoint complete.
"""

import contextlib
import json
import os
import time

import keras
import numpy as np

from keras_barlow import _files, distribute

WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "checkpoint.json"


def write(model, path, epoch):
    """Write `model`'s state after `epoch` completed epochs to the directory `path`.

    A directory already at `path` is replaced. Called by the chief alone.
    """
    files = _files.file_system(path)
    if files.exists(path):
        files.rmtree(path)
    files.makedirs(path)
    weights_path = os.path.join(path, WEIGHTS_FILE)
    with distribute.without_distribution():  # the chief alone
        model.save_weights(weights_path)
    _files.flush_to_disk(weights_path)
    state = {
        "epoch": int(epoch),
        "step": int(numpy_copy(model.optimizer.iterations)),
        "seed_generator_states": [
            numpy_copy(v).tolist() for v in _seed_generator_states(model)
        ],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _files.write_atomically(os.path.join(path, STATE_FILE), json.dumps(state))


def load(model, path):
    """Load a checkpoint directory into a built `model`; returns its state dict.

    A checkpoint that does not load leaves the model, its optimizer and its seed
    generators as they were: the next older checkpoint may then be tried.

    Raises:
        OSError, ValueError, KeyError: the checkpoint does not load.
    """
    with _files.file_system(path).GFile(os.path.join(path, STATE_FILE)) as file:
        state = json.load(file)
    missing = {"epoch", "step", "seed_generator_states"} - set(state)
    if missing:
        raise ValueError(f"{STATE_FILE} lacks {sorted(missing)}")
    seed_states = _seed_generator_states(model)
    if len(seed_states) != len(state["seed_generator_states"]):
        raise ValueError(
            f"the model has {len(seed_states)} random seed generators, "
            f"the checkpoint {len(state['seed_generator_states'])}"
        )
    variables = model.variables + model.optimizer.variables
    before = [numpy_copy(variable) for variable in variables]
    try:
        model.load_weights(os.path.join(path, WEIGHTS_FILE))
        step = int(numpy_copy(model.optimizer.iterations))
        if step != state["step"]:
            raise ValueError(
                f"the optimizer's iteration count is {step}, the checkpoint "
                f"says {state['step']}"
            )
    except Exception:
        for variable, value in zip(variables, before, strict=True):
            variable.assign(value)
        raise
    for variable, value in zip(
        seed_states, state["seed_generator_states"], strict=True
    ):
        variable.assign(np.asarray(value, variable.dtype))
    return state


def build(model):
    """Create the model's and the optimizer's variables so that they can be loaded."""
    strategy = strategy_of(model)
    with strategy.scope() if strategy else contextlib.nullcontext():
        if not model.built:
            encoder = getattr(model, "encoder", None)
            if encoder is None or not encoder.built:
                raise ValueError(
                    "Build the model before restoring a checkpoint, e.g. "
                    "`model.build((None, height, width, 3))`."
                )
            model.build(encoder.input_shape)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def strategy_of(model):
    """The model's `tf.distribute` strategy; None on JAX."""
    return getattr(model, "distribute_strategy", None)


def numpy_copy(variable):
    """A NumPy copy of a Keras variable's value, on every backend."""
    # Of a tensor: NumPy 2 deprecates `np.array` of a variable on both backends.
    return keras.ops.convert_to_numpy(keras.ops.copy(variable))


def _seed_generator_states(model):
    """The `SeedGenerator` state variables, which `save_weights` does not write."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]
