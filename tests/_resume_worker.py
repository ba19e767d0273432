"""A tiny, deterministic Barlow Twins run with checkpoints, for test_checkpoints.py.

Usage: python _resume_worker.py MODEL_DIR RESULT_NPZ [--pause-at EPOCH BATCH MARKER]

Trains 3 epochs of 6 batches with LARS, a warm-up cosine schedule and an encoder
with batch normalization and dropout, resuming from MODEL_DIR when it holds a
checkpoint. The data order of each epoch is keyed by the epoch (the recipe of
`TrainingCheckpoint`). With --pause-at, after that batch (0-based epoch and batch)
it creates MARKER and sleeps, waiting to be killed. At the end it writes the
weights, the optimizer variables and the epoch it started from to RESULT_NPZ.
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_barlow  # noqa: E402
from keras_barlow.callbacks import NaNGuard  # noqa: E402
from keras_barlow.checkpoints import TrainingCheckpoint  # noqa: E402
from keras_barlow.optimizers import LARS  # noqa: E402
from keras_barlow.schedules import WarmupCosine  # noqa: E402

EPOCHS, STEPS, BATCH, SIZE = 3, 6, 8, 16


class PauseAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch, marker):
        super().__init__()
        self.at, self.marker, self.epoch = (epoch, batch), marker, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            open(self.marker, "w").close()
            time.sleep(600)


IMAGES = np.random.default_rng(0).integers(
    0, 256, (STEPS * BATCH, SIZE, SIZE, 3), dtype=np.uint8
)


def one_epoch(epoch):
    """The batches of one epoch, in an order that depends on the epoch only."""
    order = tf.random.experimental.stateless_shuffle(
        tf.range(len(IMAGES)), seed=tf.stack([tf.constant(1000, tf.int64), epoch])
    )
    return tf.data.Dataset.from_tensor_slices(tf.gather(IMAGES, order)).batch(
        BATCH, drop_remainder=True
    )


def main(model_dir, result, pause=None):
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    encoder = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.3),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    model = keras_barlow.BarlowTwins(
        encoder, projector_dims=(16, 8), augmenter="cifar", seed=7
    )
    schedule = WarmupCosine(0.5, total_steps=EPOCHS * STEPS, warmup_steps=STEPS)
    model.compile(optimizer=LARS(schedule, eta=0.02, weight_decay=1e-4))

    checkpoint = TrainingCheckpoint(model_dir)
    initial_epoch = checkpoint.restore(model)
    callbacks = [checkpoint, NaNGuard()]
    if pause:
        callbacks.append(PauseAt(int(pause[0]), int(pause[1]), pause[2]))
    if initial_epoch < EPOCHS:
        batches = tf.data.Dataset.range(initial_epoch, EPOCHS).flat_map(one_epoch)
        model.fit(
            batches,
            epochs=EPOCHS,
            initial_epoch=initial_epoch,
            steps_per_epoch=STEPS,
            callbacks=callbacks,
            verbose=0,
        )
    arrays = {f"weight_{i}": v.numpy() for i, v in enumerate(model.weights)}
    arrays.update(
        {f"optimizer_{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)}
    )
    np.savez(result, initial_epoch=initial_epoch, **arrays)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    pause = None
    if "--pause-at" in arguments:
        index = arguments.index("--pause-at")
        pause, arguments = arguments[index + 1 : index + 4], arguments[:index]
    main(*arguments, pause=pause)
