"""A tiny Barlow Twins run, shared by the distributed tests and their worker processes.

Imported by `test_distributed.py` for the model, the data and the training loop,
and run as a script by it as one worker of a `MultiWorkerMirroredStrategy`:

    python _multiworker_worker.py TASK_INDEX PORT0,PORT1 INPUTS.npz OUTPUTS.npz

`INPUTS.npz` holds the initial weights, the view pairs, the global batch size and
the correlation methods; the worker trains one model per method with the same
strategy and writes the per-step losses and final weights to `OUTPUTS.npz`. Each
worker keeps TensorFlow's default single CPU device (the two logical devices of
`conftest.py` exist only in the test process).
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_barlow

IMAGE_SHAPE = (8, 8, 3)
LEARNING_RATE = 0.05
STEPS = 3


def tiny_encoder():
    """Conv2D(4, 3, no bias) -> BatchNormalization(synchronized) -> ReLU -> pooling."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(synchronized=True),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def tiny_barlow_twins(correlation_method):
    """A compiled `BarlowTwins` small enough for a test: `tiny_encoder()`,
    projector (16, 16), pre-made views (`augmenter=None`), plain SGD.

    The weights, and so the loss, are float64. The tests compare runs that sum
    in different orders; in float32 that alone moves some weights by 1e-5
    relative within 3 steps (the same as permuting the samples of each batch on
    one device), the issue's tolerance. In float64 the runs agree to ~1e-13 (the
    losses exactly), and the tests assert 1e-9.
    """
    # The global dtype policy, not floatx: once a policy is set (e.g. restored to
    # "float32" by another test), new layers follow it and ignore floatx.
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float64")
    try:
        model = keras_barlow.BarlowTwins(
            tiny_encoder(),
            projector_dims=(16, 16),
            augmenter=None,
            correlation_method=correlation_method,
            seed=0,
        )
        model.build((None, *IMAGE_SHAPE))
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    return model


def view_pairs(count, seed=0):
    """`(x1, x2)`: float32 `(count, 8, 8, 3)` view pairs, the second a noisy first."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(count, *IMAGE_SHAPE)).astype(np.float32)
    x2 = (x1 + 0.5 * rng.normal(size=x1.shape)).astype(np.float32)
    return x1, x2


def train(model, x1, x2, global_batch_size, callbacks=()):
    """Fit one epoch of `len(x1) // global_batch_size` steps; returns the step losses.

    The global batches are consecutive slices of `(x1, x2)` in order, whatever the
    strategy, so runs on one device and on R replicas see the same batches.
    """

    class StepLosses(keras.callbacks.Callback):
        # Keras logs the running mean of the epoch; undo it to get each step's loss.
        def on_train_begin(self, logs=None):
            self.means = []

        def on_train_batch_end(self, batch, logs=None):
            self.means.append(float(logs["loss"]))

    dataset = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(
        global_batch_size, drop_remainder=True
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    recorder = StepLosses()
    model.fit(
        dataset.with_options(options),
        epochs=1,
        verbose=0,
        callbacks=[recorder, *callbacks],
    )
    steps = np.arange(1, len(recorder.means) + 1)
    sums = np.asarray(recorder.means, np.float64) * steps
    return np.diff(sums, prepend=0.0)


def _tf_config(task_index, ports):
    workers = [f"localhost:{port}" for port in ports]
    return json.dumps(
        {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": task_index},
        }
    )


def main(task_index, ports, inputs_path, outputs_path):
    os.environ["TF_CONFIG"] = _tf_config(task_index, ports)
    # Created before any other TensorFlow op, as MultiWorkerMirroredStrategy needs.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print(
        f"worker {task_index}: strategy ready after {time.process_time():.1f} s CPU",
        flush=True,
    )
    inputs = np.load(inputs_path)
    weights = [inputs[f"weight_{i}"] for i in range(int(inputs["num_weights"]))]
    outputs = {"replicas": strategy.num_replicas_in_sync}
    for method in inputs["methods"]:
        with strategy.scope():
            model = tiny_barlow_twins(str(method))
        model.set_weights(weights)
        outputs[f"{method}/losses"] = train(
            model, inputs["x1"], inputs["x2"], int(inputs["global_batch_size"])
        )
        for index, weight in enumerate(model.get_weights()):
            outputs[f"{method}/weight_{index}"] = weight
        print(
            f"worker {task_index}: {method} trained after "
            f"{time.process_time():.1f} s CPU",
            flush=True,
        )
    np.savez(outputs_path, **outputs)
    # Exit together: the chief reports a worker that stops first as crashed.
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


if __name__ == "__main__":
    main(
        int(sys.argv[1]),
        [int(port) for port in sys.argv[2].split(",")],
        sys.argv[3],
        sys.argv[4],
    )
