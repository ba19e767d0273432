"""What tests/test_backends.py runs on the other Keras backend, in its own process.

    KERAS_BACKEND=jax python tests/_backend_worker.py FOLDER

reads FOLDER/inputs.npz and FOLDER/initial.weights.h5 (written by the test on
TensorFlow), and writes FOLDER/jax.npz, FOLDER/trained.weights.h5 and the whole
model, FOLDER/trained.keras:

* every augmentation layer's `transform_images` on the given images with the
  given per-sample parameters;
* the losses of 3 LARS steps on ready views from the initial weights;
* the encoder's features of uint8 images, after those steps (through
  `keras_barlow.Preprocessing`, the evaluation transform of the export).
"""

import os
import sys

import keras
import numpy as np

import keras_barlow
from keras_barlow import distortions

SIZE = 8
BATCH = 8
STEPS = 3
CROP_SIZE = 12


def tiny_model():
    encoder = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="encoder",
    )
    model = keras_barlow.BarlowTwins(
        encoder, projector_dims=(16, 16), augmenter=None, seed=0
    )
    model.build((None, SIZE, SIZE, 3))
    model.compile(optimizer=keras_barlow.LARS(0.2, eta=0.02, weight_decay=1e-4))
    return model


def layers():
    """Each augmentation layer, by name, with the parameter names it draws."""
    return {
        "crop": distortions.RandomResizedCrop(CROP_SIZE),
        "jitter": distortions.RandomColorJitter(),
        "grayscale": distortions.RandomGrayscale(),
        "blur": distortions.RandomGaussianBlur(),
        "solarize": distortions.RandomSolarize(),
    }


class StepLosses(keras.callbacks.Callback):
    """The loss of every step (Keras logs the running mean of the epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.seen = 0.0

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        total = float(logs["loss"]) * (batch + 1)
        self.losses.append(total - self.seen)
        self.seen = total


def train(model, x1, x2):
    losses = StepLosses()
    model.fit(x1, x2, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[losses])
    return np.array(losses.losses)


def transformed(inputs):
    """`{layer name: transform_images(images, parameters)}` as NumPy arrays."""
    images = inputs["images"]
    outputs = {}
    for name, layer in layers().items():
        prefix = f"{name}/"
        parameters = {
            key[len(prefix) :]: inputs[key] for key in inputs if key.startswith(prefix)
        }
        outputs[name] = keras.ops.convert_to_numpy(
            layer.transform_images(images, parameters)
        )
    return outputs


def features(model, images):
    preprocess = keras_barlow.Preprocessing(SIZE)
    return keras.ops.convert_to_numpy(model.encoder(preprocess(images), training=False))


def main(folder):
    inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
    model = tiny_model()
    model.load_weights(os.path.join(folder, "initial.weights.h5"))
    losses = train(model, inputs["x1"], inputs["x2"])
    model.save_weights(os.path.join(folder, "trained.weights.h5"))
    model.save(os.path.join(folder, "trained.keras"))
    np.savez(
        os.path.join(folder, "jax.npz"),
        losses=losses,
        features=features(model, inputs["serve_images"]),
        **{f"layer/{k}": v for k, v in transformed(inputs).items()},
    )


if __name__ == "__main__":
    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    main(sys.argv[1])
