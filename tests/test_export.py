"""Tests of keras_barlow.export and of the `.keras` round trip of BarlowTwins.

The exported SavedModel is checked in a fresh Python process that imports only
TensorFlow and NumPy, against features computed here by the in-memory encoder on
the same preprocessed images, and its signatures are read back with the
`saved_model_cli` that ships with TensorFlow.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import conftest
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import round_trip

import keras_barlow
from keras_barlow import export

IMAGE_SIZE = 32
FEATURES = 8
EMBEDDINGS = 16


def tiny_encoder(name="tiny_encoder"):
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(FEATURES, 3, strides=2, activation="relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name=name)


def random_images(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def trained_model():
    """A BarlowTwins model after one SGD-with-momentum step (non-trivial BN stats)."""
    model = keras_barlow.BarlowTwins(
        tiny_encoder(), projector_dims=(16, EMBEDDINGS), augmenter="cifar", seed=3
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(
        random_images(0, (8, IMAGE_SIZE, IMAGE_SIZE, 3)),
        batch_size=8,
        epochs=1,
        verbose=0,
    )
    return model


def in_memory_features(model, images):
    preprocessed = keras_barlow.Preprocessing(IMAGE_SIZE)(images)
    features = model.encoder(preprocessed, training=False)
    embeddings = model.projector(features, training=False)
    return features.numpy(), embeddings.numpy()


# A fresh interpreter: no keras_barlow, only what TF Serving would need.
SERVING_CHECK = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    data = sys.argv[1]
    load = lambda name: np.load(os.path.join(data, name + ".npy"))
    served = tf.saved_model.load(sys.argv[2])
    errors = {}

    def check(name, got, want):
        assert got.dtype == np.float32, (name, got.dtype)
        # Relative to the largest feature: resizing in a graph and eagerly
        # differ by float32 rounding, which the encoder scales with its output.
        errors[name] = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))

    default = served.signatures["serving_default"]
    for batch in ("square", "wide"):
        out = default(images=tf.constant(load(batch + "_images")))
        check(batch, out["features"].numpy(), load(batch + "_features"))

    count = int(load("encoded_count"))
    encoded = [open(os.path.join(data, f"encoded_{i}.bin"), "rb").read()
               for i in range(count)]
    out = served.signatures["serve_jpeg"](image_bytes=tf.constant(encoded))
    check("jpeg", out["features"].numpy(), load("encoded_features"))

    out = served.signatures["serve_embeddings"](
        images=tf.constant(load("square_images")))
    check("embeddings", out["embeddings"].numpy(), load("square_embeddings"))

    assert "keras_barlow" not in sys.modules
    print(json.dumps(errors))
""")


def test_saved_model_serves_in_fresh_process(trained_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    batches = {
        "square": random_images(1, (4, IMAGE_SIZE, IMAGE_SIZE, 3)),
        "wide": random_images(2, (3, 40, 56, 3)),  # resized and center-cropped
    }
    for name, images in batches.items():
        features, embeddings = in_memory_features(trained_model, images)
        np.save(data / f"{name}_images.npy", images)
        np.save(data / f"{name}_features.npy", features)
        np.save(data / f"{name}_embeddings.npy", embeddings)

    # Mixed sizes and formats in one request. PNG is lossless, so its reference
    # is the original array; the JPEG reference is TF's own decoder.
    originals = [
        random_images(3, (32, 32, 3)),
        random_images(4, (45, 30, 3)),
        random_images(5, (36, 50, 3)),
    ]
    encoded = [
        tf.io.encode_png(originals[0]),
        tf.io.encode_png(originals[1]),
        tf.io.encode_jpeg(originals[2]),
    ]
    decoded = originals[:2] + [tf.io.decode_jpeg(encoded[2]).numpy()]
    expected = [in_memory_features(trained_model, image[None])[0] for image in decoded]
    for index, blob in enumerate(encoded):
        (data / f"encoded_{index}.bin").write_bytes(blob.numpy())
    np.save(data / "encoded_count.npy", len(encoded))
    np.save(data / "encoded_features.npy", np.concatenate(expected))

    path = export.export_encoder(
        trained_model, tmp_path / "served", include_projector=True
    )
    assert path == os.path.join(tmp_path / "served", "1")
    assert sorted(os.listdir(tmp_path / "served")) == ["1"]  # no staging leftovers
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))

    result = subprocess.run(
        [sys.executable, "-c", SERVING_CHECK, str(data), path],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(errors) == {"square", "wide", "jpeg", "embeddings"}
    assert max(errors.values()) < 1e-5, errors

    signatures = parse_saved_model_cli(path)
    images = {"images": ("DT_UINT8", "(-1, -1, -1, 3)")}
    assert signatures["serving_default"] == {
        "inputs": images,
        "outputs": {"features": ("DT_FLOAT", f"(-1, {FEATURES})")},
    }
    assert signatures["serve_jpeg"] == {
        "inputs": {"image_bytes": ("DT_STRING", "(-1)")},
        "outputs": {"features": ("DT_FLOAT", f"(-1, {FEATURES})")},
    }
    assert signatures["serve_embeddings"] == {
        "inputs": images,
        "outputs": {"embeddings": ("DT_FLOAT", f"(-1, {EMBEDDINGS})")},
    }


def parse_saved_model_cli(path):
    """`saved_model_cli show --all` as {signature: {side: {name: (dtype, shape)}}}."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    signatures, current, side = {}, None, None
    for line in result.stdout.splitlines():
        if match := re.match(r"signature_def\['(\w+)'\]:", line):
            current = signatures[match[1]] = {"inputs": {}, "outputs": {}}
        elif "contains the following input(s)" in line:
            side = "inputs"
        elif "contains the following output(s)" in line:
            side = "outputs"
        elif match := re.match(r"\s+(inputs|outputs)\['(\w+)'\] tensor_info:", line):
            name = match[2]
        elif match := re.match(r"\s+dtype: (\w+)", line):
            dtype = match[1]
        elif (match := re.match(r"\s+shape: (.+)", line)) and current is not None:
            current[side][name] = (dtype, match[1].strip())
        elif line.startswith("Concrete Functions"):
            break
    return signatures


def test_features_are_float32_under_mixed_precision(tmp_path):
    images = random_images(6, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        encoder = tiny_encoder()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = tiny_encoder()
    reference.set_weights(encoder.get_weights())
    expected = reference(keras_barlow.Preprocessing(IMAGE_SIZE)(images)).numpy()

    served = tf.saved_model.load(export.export_encoder(encoder, tmp_path))
    features = served.signatures["serving_default"](images=tf.constant(images))
    assert features["features"].dtype == tf.float32
    np.testing.assert_allclose(
        features["features"].numpy(), expected, rtol=1e-2, atol=1e-2
    )


def test_keras_file_round_trip_continues_training(trained_model, tmp_path):
    path = tmp_path / "barlow.keras"
    loaded = round_trip(trained_model, path)

    assert isinstance(loaded, keras_barlow.BarlowTwins)
    assert loaded.seed == trained_model.seed
    images = random_images(7, (4, IMAGE_SIZE, IMAGE_SIZE, 3))
    views = keras_barlow.Preprocessing(IMAGE_SIZE)(images)
    np.testing.assert_array_equal(
        loaded.predict(views, verbose=0), trained_model.predict(views, verbose=0)
    )

    iterations = int(trained_model.optimizer.iterations)
    assert int(loaded.optimizer.iterations) == iterations == 1
    momenta = {
        v.path: v.numpy()
        for v in trained_model.optimizer.variables
        if "momentum" in v.path
    }
    assert momenta and all(np.any(m != 0) for m in momenta.values())
    for variable in loaded.optimizer.variables:
        if variable.path in momenta:
            np.testing.assert_array_equal(variable.numpy(), momenta.pop(variable.path))
    assert not momenta, f"slot variables missing after loading: {sorted(momenta)}"

    # The next step from the file equals the next step of the uninterrupted run
    # (same seed, step and sample order, hence same views; momentum included).
    batch = random_images(8, (8, IMAGE_SIZE, IMAGE_SIZE, 3))
    for model in (trained_model, loaded):
        model.fit(batch, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(loaded.optimizer.iterations) == 2
    pairs = zip(loaded.weights, trained_model.weights, strict=True)
    for resumed, uninterrupted in pairs:
        np.testing.assert_allclose(
            resumed.numpy(),
            uninterrupted.numpy(),
            rtol=1e-5,
            atol=1e-6,
            err_msg=resumed.path,
        )


def test_existing_version_needs_overwrite(tmp_path):
    encoder = tiny_encoder()
    export.export_encoder(encoder, tmp_path, version=2)
    marker = tmp_path / "2" / "marker"
    marker.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_encoder(encoder, tmp_path, version=2)
    assert marker.exists()
    export.export_encoder(encoder, tmp_path, version=2, overwrite=True)
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == ["2"]


def dense_model():
    inputs = keras.Input((5,))
    return keras.Model(inputs, keras.layers.Dense(4)(inputs))


def feature_map_model():
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))


def two_input_model():
    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([first, second]))
    return keras.Model([first, second], pooled)


def size_free_encoder():
    return conftest.tiny_encoder(None, filters=0)


@pytest.mark.parametrize(
    "make_model, kwargs, error, message",
    [
        (dense_model, {}, ValueError, r"shape \(batch, height, width, 3\)"),
        (two_input_model, {}, ValueError, r"shape \(batch, height, width, 3\)"),
        (feature_map_model, {}, ValueError, r"features of shape \(batch, features\)"),
        (lambda: "encoder.keras", {}, TypeError, "must be a keras_barlow.BarlowTwins"),
        (tiny_encoder, {"image_size": 64}, ValueError, "does not match the encoder"),
        (tiny_encoder, {"image_size": (32, 31)}, ValueError, "takes images of 32x32"),
        (tiny_encoder, {"image_size": 0}, ValueError, "positive int"),
        (size_free_encoder, {}, ValueError, "`image_size` is needed"),
        (tiny_encoder, {"version": 0}, ValueError, "positive int"),
        (tiny_encoder, {"version": "1"}, ValueError, "positive int"),
        (tiny_encoder, {"version": True}, ValueError, "positive int"),
        (tiny_encoder, {"include_projector": True}, ValueError, "needs a BarlowTwins"),
        (tiny_encoder, {"crop_fraction": 1.5}, ValueError, "crop_fraction"),
    ],
)
def test_bad_requests_fail_clearly_and_write_nothing(
    make_model, kwargs, error, message, tmp_path
):
    with pytest.raises(error, match=message):
        export.export_encoder(make_model(), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_export_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "model"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file"):
        export.export_encoder(tiny_encoder(), target)


def test_size_free_encoder_exports_at_the_requested_size(tmp_path):
    encoder = size_free_encoder()
    served = tf.saved_model.load(export.export_encoder(encoder, tmp_path, image_size=8))
    images = random_images(9, (2, 20, 12, 3))
    got = served.signatures["serving_default"](images=tf.constant(images))["features"]
    # Mean over the 8x8 center crop of the image resized to 14x8 (shorter side 8).
    resized = tf.image.resize(images / 255.0, (14, 8), antialias=True)[:, 3:11]
    expected = (
        np.mean(resized, axis=(1, 2)) - keras_barlow.image_ops.IMAGENET_MEAN
    ) / keras_barlow.image_ops.IMAGENET_STD
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_empty_request_gets_no_features_and_bad_jpeg_item_is_named(
    trained_model, tmp_path
):
    path = export.export_encoder(trained_model, tmp_path, include_projector=True)
    served = tf.saved_model.load(path).signatures
    none = served["serving_default"](images=tf.zeros((0, 20, 24, 3), tf.uint8))
    assert none["features"].shape == (0, FEATURES)
    assert none["features"].dtype == tf.float32
    none = served["serve_jpeg"](image_bytes=tf.constant([], tf.string))
    assert none["features"].shape == (0, FEATURES)
    none = served["serve_embeddings"](images=tf.zeros((0, 32, 32, 3), tf.uint8))
    assert none["embeddings"].shape == (0, EMBEDDINGS)

    images = random_images(5, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
    jpeg = [tf.io.encode_jpeg(image).numpy() for image in images]
    png = tf.io.encode_png(images[0]).numpy()
    good = served["serve_jpeg"](image_bytes=tf.constant([*jpeg, png]))["features"]
    assert good.shape == (3, FEATURES)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[2\] is"):
        served["serve_jpeg"](image_bytes=tf.constant([*jpeg, b"not an image", png]))
    cut_short = [jpeg[1][: len(jpeg[1]) // 2], b"\xff\xd8\xff" + b"junk" * 8, png[:-20]]
    for bad in cut_short:
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is"
        ):
            served["serve_jpeg"](image_bytes=tf.constant([jpeg[0], bad]))
