"""One process of a tiny Barlow Twins run on JAX, for test_multiprocess.py.

Usage: python _multiprocess_worker.py RESULT_NPZ PROCESSES [COORDINATOR PROCESS_ID]

Trains 3 steps of a global batch of 8 uint8 8x8 images, read with the Grain
pipeline of `keras_barlow.data.from_numpy` (shuffled, epoch-keyed order), on the
CPU devices this process sees (the test gives it one):

- PROCESSES 1: the reference, one process on the whole global batch, no
  distribution;
- PROCESSES 2: one of two processes under `distribute.initialize_processes`
  (from COORDINATOR and PROCESS_ID when given, else from the KERAS_DISTRIBUTION_*
  environment variables) and `distribute.data_parallel()`, reading its own
  part of every global batch (the loader's default shard).

A `TrainingCheckpoint` in `run-PROCESSES` beside RESULT_NPZ (shared by the 2
processes) saves the trained model; every process then restores it into a new
model. Writes to RESULT_NPZ: `losses` (every step's), `batches` (the images this
process read, in order), `chief` (`distribute.is_chief()`), `restored_epoch`, and
`initial_<i>`, `final_<i>`, `restored_<i>` (the model's weights before and after
training, and the restored model's).
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_barlow  # noqa: E402
from keras_barlow import distribute  # noqa: E402
from keras_barlow.checkpoints import TrainingCheckpoint  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import StepLosses, tiny_model, uint8_images, weights_of  # noqa: E402

STEPS, GLOBAL_BATCH, SIZE = 3, 8, 8


def main(result, processes, coordinator=None, process_id=None):
    if processes > 1:
        if coordinator is None:
            distribute.initialize_processes()
        else:
            distribute.initialize_processes(coordinator, processes, int(process_id))
        distribute.data_parallel()
    keras.utils.set_random_seed(0)
    train = keras_barlow.data.from_numpy(
        uint8_images(STEPS * GLOBAL_BATCH, SIZE),
        batch_size=GLOBAL_BATCH,
        epochs=1,
        pipeline="grain",
    )
    model = tiny_model(optimizer=keras.optimizers.SGD(0.1), size=SIZE)
    initial = weights_of(model)
    steps = StepLosses()
    run = os.path.join(os.path.dirname(result), f"run-{processes}")
    checkpoint = TrainingCheckpoint(run)  # written by the chief, read by all
    model.fit(train, steps_per_epoch=STEPS, verbose=0, callbacks=[steps, checkpoint])
    distribute.wait_for_all_workers(None)  # until the chief has written it
    restored = tiny_model(optimizer=keras.optimizers.SGD(0.1), size=SIZE)
    restored_epoch = TrainingCheckpoint(run).restore(restored)
    np.savez(
        result,
        losses=np.array(steps.losses),
        batches=np.concatenate(list(train)),  # epochs=1: every pass is epoch 0
        chief=distribute.is_chief(),
        restored_epoch=restored_epoch,
        **_numbered("initial", initial),
        **_numbered("final", weights_of(model)),
        **_numbered("restored", weights_of(restored)),
    )
    distribute.wait_for_all_workers(None)


def _numbered(prefix, arrays):
    return {f"{prefix}_{index}": array for index, array in enumerate(arrays)}


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
