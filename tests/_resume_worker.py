"""A tiny, deterministic Barlow Twins run with checkpoints, for test_resume.py.

Usage: python _resume_worker.py MODEL_DIR RESULT_NPZ [--pause-at EPOCH BATCH MARKER]

Trains 3 epochs of 6 batches with LARS, a warm-up cosine schedule and an encoder
with batch normalization and dropout, resuming from MODEL_DIR when it holds a
checkpoint, on the Keras backend of `KERAS_BACKEND` (TensorFlow by default; JAX
needs no TensorFlow). The data order of each epoch is keyed by the epoch (the
recipe of `TrainingCheckpoint`). With --pause-at, after that batch (0-based
epoch and batch) it creates MARKER and sleeps, waiting to be killed. At the end
it writes the model's variables (the seed generators' too), the optimizer's, the
loss of every epoch it trained and the epoch it started from to RESULT_NPZ.
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_barlow  # noqa: E402
from keras_barlow.checkpoints import TrainingCheckpoint  # noqa: E402
from keras_barlow.optimizers import LARS  # noqa: E402
from keras_barlow.schedules import WarmupCosine  # noqa: E402

EPOCHS, STEPS, BATCH, SIZE, SEED = 3, 6, 8, 16, 1000
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"


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


def training_data(initial_epoch):
    """`fit` arguments: the batches of epochs `initial_epoch`.. in epoch-keyed orders.

    On TensorFlow, the tf.data recipe of `TrainingCheckpoint`'s docstring; on
    JAX, NumPy arrays in the order of a NumPy generator seeded by the epoch.
    """
    if not ON_TENSORFLOW:
        orders = [
            np.random.default_rng([SEED, epoch]).permutation(len(IMAGES))
            for epoch in range(initial_epoch, EPOCHS)
        ]
        return {"x": IMAGES[np.concatenate(orders)], "batch_size": BATCH}
    import tensorflow as tf

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(IMAGES)), seed=tf.stack([tf.constant(SEED, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(tf.gather(IMAGES, order)).batch(
            BATCH, drop_remainder=True
        )

    return {"x": tf.data.Dataset.range(initial_epoch, EPOCHS).flat_map(one_epoch)}


def main(model_dir, result, pause=None):
    if ON_TENSORFLOW:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
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
    callbacks = [checkpoint]
    if pause:
        callbacks.append(PauseAt(int(pause[0]), int(pause[1]), pause[2]))
    losses = {}
    if initial_epoch < EPOCHS:
        history = model.fit(
            **training_data(initial_epoch),
            epochs=EPOCHS,
            initial_epoch=initial_epoch,
            steps_per_epoch=STEPS,
            shuffle=False,  # the data is in the order of each epoch
            callbacks=callbacks,
            verbose=0,
        )
        losses = dict(zip(history.epoch, history.history["loss"], strict=True))
    variables = {"model": model.variables, "optimizer": model.optimizer.variables}
    arrays = {
        f"{kind}_{i}": keras.ops.convert_to_numpy(keras.ops.copy(v))
        for kind, kind_variables in variables.items()
        for i, v in enumerate(kind_variables)
    }
    arrays.update({f"loss_epoch_{epoch}": loss for epoch, loss in losses.items()})
    np.savez(result, initial_epoch=initial_epoch, **arrays)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    pause = None
    if "--pause-at" in arguments:
        index = arguments.index("--pause-at")
        pause, arguments = arguments[index + 1 : index + 4], arguments[:index]
    main(*arguments, pause=pause)
