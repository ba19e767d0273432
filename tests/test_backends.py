"""TensorFlow and JAX agree: augmentation pixels, LARS steps, and serving.

The JAX side runs in its own process (`tests/_backend_worker.py`, Keras picks its
backend once per process). Each backend is also tested against independent
references on its own (tests marked `core` run on both); this checks that a
model trained on JAX is the model TensorFlow serves.
"""

import os
import subprocess
import sys

import _backend_worker as worker
import keras
import numpy as np
import pytest

import keras_barlow

pytestmark = pytest.mark.slow

pytest.importorskip("jax")
tf = pytest.importorskip("tensorflow")


def per_sample_parameters(rng, batch):
    """Parameters for each layer of `worker.layers()`, as NumPy arrays."""
    height = rng.integers(4, 16, batch).astype(np.float32)
    width = rng.integers(4, 16, batch).astype(np.float32)
    return {
        "crop/top": np.floor(rng.uniform(size=batch) * (16 - height + 1)).astype(
            np.float32
        ),
        "crop/left": np.floor(rng.uniform(size=batch) * (16 - width + 1)).astype(
            np.float32
        ),
        "crop/height": height,
        "crop/width": width,
        "crop/flip": rng.uniform(size=batch) < 0.5,
        "jitter/apply": np.array([True, True, True, False]),
        "jitter/brightness": rng.uniform(0.6, 1.4, batch).astype(np.float32),
        "jitter/contrast": rng.uniform(0.6, 1.4, batch).astype(np.float32),
        "jitter/saturation": rng.uniform(0.8, 1.2, batch).astype(np.float32),
        "jitter/hue": rng.uniform(-0.1, 0.1, batch).astype(np.float32),
        "jitter/order": np.stack([rng.permutation(4) for _ in range(batch)]).astype(
            np.int32
        ),
        "grayscale/apply": np.array([True, False, True, False]),
        "blur/apply": np.array([True, True, False, True]),
        "blur/sigma": rng.uniform(0.1, 2.0, batch).astype(np.float32),
        "solarize/apply": np.array([False, True, True, False]),
    }


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(worker.STEPS * worker.BATCH, worker.SIZE, worker.SIZE, 3))
    inputs = {
        "images": rng.uniform(size=(4, 16, 16, 3)).astype(np.float32),
        "x1": x1.astype(np.float32),
        "x2": (x1 + 0.5 * rng.normal(size=x1.shape)).astype(np.float32),
        "serve_images": rng.integers(0, 256, (5, worker.SIZE, worker.SIZE, 3)).astype(
            np.uint8
        ),
        **per_sample_parameters(rng, 4),
    }
    np.savez(folder / "inputs.npz", **inputs)
    keras.utils.set_random_seed(0)
    worker.tiny_model().save_weights(folder / "initial.weights.h5")
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": ""}
    script = os.path.join(os.path.dirname(__file__), "_backend_worker.py")
    result = subprocess.run(
        [sys.executable, script, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, inputs, dict(np.load(folder / "jax.npz"))


def test_augmentation_layers_give_the_same_pixels_on_both_backends(jax_run):
    _, inputs, on_jax = jax_run
    on_tensorflow = worker.transformed(inputs)
    assert set(on_tensorflow) == {"crop", "jitter", "grayscale", "blur", "solarize"}
    for name, pixels in on_tensorflow.items():
        # The parameters change the images: the comparison is not of identities.
        assert pixels.shape != inputs["images"].shape or not np.allclose(
            pixels, inputs["images"]
        )
        np.testing.assert_allclose(pixels, on_jax[f"layer/{name}"], atol=1e-5)


def test_three_lars_steps_give_the_same_losses_on_both_backends(jax_run):
    folder, inputs, on_jax = jax_run
    model = worker.tiny_model()
    model.load_weights(folder / "initial.weights.h5")
    losses = worker.train(model, inputs["x1"], inputs["x2"])
    assert len(losses) == worker.STEPS and np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, on_jax["losses"], rtol=1e-4)


def test_weights_trained_on_jax_serve_from_tensorflow(jax_run, tmp_path):
    folder, inputs, on_jax = jax_run
    model = worker.tiny_model()
    initial = model.encoder.get_weights()
    model.load_weights(folder / "trained.weights.h5")
    assert any(
        not np.allclose(a, b)
        for a, b in zip(model.encoder.get_weights(), initial, strict=True)
    )
    path = keras_barlow.export_encoder(model, str(tmp_path / "served"))
    served = tf.saved_model.load(path).signatures["serving_default"]
    features = served(images=tf.constant(inputs["serve_images"]))["features"]
    np.testing.assert_allclose(features.numpy(), on_jax["features"], atol=1e-5)


def test_a_model_saved_on_jax_is_exported_by_the_command_line(jax_run, tmp_path):
    # What the example prints on JAX: `python -m keras_barlow.export MODEL DIR`.
    from keras_barlow import export

    folder, inputs, on_jax = jax_run
    path = export.main([str(folder / "trained.keras"), str(tmp_path / "served")])
    assert path == str(tmp_path / "served" / "1")
    served = tf.saved_model.load(path).signatures["serving_default"]
    features = served(images=tf.constant(inputs["serve_images"]))["features"]
    np.testing.assert_allclose(features.numpy(), on_jax["features"], atol=1e-5)
