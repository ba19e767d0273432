"""Export a pre-trained encoder as a SavedModel that TensorFlow Serving can serve.

The exported graph carries its own preprocessing (`keras_barlow.Preprocessing`,
the evaluation transform), so clients send raw uint8 pixels or encoded JPEG/PNG
bytes and receive float32 features. The layout is the one TF Serving watches:
`export_dir/<version>/saved_model.pb` plus `variables/`.

Signatures:

- `serving_default`: `images`, uint8 `(None, None, None, 3)` -> `{"features":
  float32 (None, F)}`.
- `serve_jpeg`: `image_bytes`, string `(None,)` of encoded JPEG/PNG/GIF/BMP
  images, each of any size -> `{"features": float32 (None, F)}`.
- `serve_embeddings` (with `include_projector=True`): uint8 images as in
  `serving_default` -> `{"embeddings": float32 (None, D)}`, the projector output.

An empty request (0 images) gets `(0, F)` features (`(0, D)` embeddings). An item of
a `serve_jpeg` batch that is not a whole image file (other bytes, or a JPEG, PNG or
GIF file cut short) fails the request with its index.

A model trained elsewhere (on Keras' JAX backend, say) and saved as `.keras` is
exported on a machine with TensorFlow by

    KERAS_BACKEND=tensorflow python -m keras_barlow.export MODEL.keras EXPORT_DIR
"""

import argparse
import os
import shutil
import tempfile

import keras

from keras_barlow import _backend, backbones, preprocessing
from keras_barlow import _checks as checks
from keras_barlow.model import BarlowTwins

tf = _backend.import_tensorflow("keras_barlow.export")

IMAGES_SPEC = tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")
IMAGE_BYTES_SPEC = tf.TensorSpec((None,), tf.string, name="image_bytes")


def export_encoder(
    model_or_encoder,
    export_dir,
    image_size=None,
    crop_fraction=1.0,
    version=1,
    include_projector=False,
    overwrite=False,
):
    """Write the encoder, with its preprocessing, as a servable SavedModel.

    The images are resized and normalized inside the graph by
    `keras_barlow.Preprocessing(image_size, crop_fraction)`, the transform used in
    evaluation, and the encoder runs in inference mode. The features are float32
    whatever the dtype policy the model was trained with.

    The version is written to a temporary folder next to it and renamed when
    complete, so a TF Serving instance watching `export_dir` never loads a
    half-written model.

    Args:
        model_or_encoder: a `keras_barlow.BarlowTwins` model (its `encoder` is
            exported) or an encoder `keras.Model` mapping normalized float images
            `(B, H, W, 3)` to features `(B, F)`.
        export_dir: the model's base folder; the SavedModel goes to
            `export_dir/<version>/`.
        image_size: int or `(height, width)` the encoder takes. Defaults to the
            encoder's input size, and must match it when both are known.
        crop_fraction: see `keras_barlow.Preprocessing` (1.0 resizes the shorter
            side to `image_size` and center-crops; 0.875 is the 256 -> 224
            ImageNet evaluation).
        version: positive int, the TF Serving model version.
        include_projector: also export the projector embeddings under
            `serve_embeddings` (needs a `BarlowTwins` model).
        overwrite: replace an existing `export_dir/<version>/`.

    Returns:
        str, the path of the version folder written.

    Example:

    ```python
    path = keras_barlow.export.export_encoder(model, "models/barlow", version=1)
    served = tf.saved_model.load(path)
    features = served.signatures["serving_default"](
        images=tf.zeros((2, 48, 64, 3), tf.uint8))["features"]  # (2, F) float32
    ```
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "export_encoder writes a TensorFlow SavedModel and needs Keras' "
            f"TensorFlow backend. Received: KERAS_BACKEND={keras.backend.backend()!r}. "
            "Save the model (`model.save('model.keras')`) and export it with "
            "`KERAS_BACKEND=tensorflow python -m keras_barlow.export model.keras DIR`."
        )
    encoder, projector = _split_model(model_or_encoder, include_projector)
    image_size = _resolve_image_size(encoder, image_size)
    version_dir = _version_dir(export_dir, version, overwrite)
    archive = _build_archive(
        encoder, projector, preprocessing.Preprocessing(image_size, crop_fraction)
    )

    os.makedirs(export_dir, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    try:
        archive.write_out(staging_dir, verbose=False)
        if os.path.exists(version_dir):
            shutil.rmtree(version_dir)
        os.rename(staging_dir, version_dir)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return version_dir


def _build_archive(encoder, projector, preprocess):
    """An ExportArchive with the serving signatures; checks the feature shape."""

    height, width = preprocess.image_size

    def features(images):
        return tf.cast(encoder(images, training=False), tf.float32)

    def unless_empty(count, compute, head=features):
        """`compute()`, or `(0, F)` for an empty request, which the preprocessing
        (and some encoders) cannot take: a blank image's output, none of its rows."""

        def none():
            return head(tf.zeros((1, height, width, 3), tf.float32))[:0]

        return tf.cond(count > 0, compute, none)

    def serve_images(images):
        return {
            "features": unless_empty(
                tf.shape(images)[0], lambda: features(preprocess(images))
            )
        }

    def serve_jpeg(image_bytes):
        return {
            "features": unless_empty(
                tf.size(image_bytes),
                lambda: features(_decode_and_preprocess(image_bytes, preprocess)),
            )
        }

    def embeddings(images):
        outputs = projector(encoder(images, training=False), training=False)
        return tf.cast(outputs, tf.float32)

    def serve_embeddings(images):
        return {
            "embeddings": unless_empty(
                tf.shape(images)[0], lambda: embeddings(preprocess(images)), embeddings
            )
        }

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    endpoint = archive.add_endpoint("serving_default", serve_images, [IMAGES_SPEC])
    _check_features(endpoint.get_concrete_function().structured_outputs["features"])
    archive.add_endpoint("serve_jpeg", serve_jpeg, [IMAGE_BYTES_SPEC])
    if projector is not None:
        archive.track(projector)
        archive.add_endpoint("serve_embeddings", serve_embeddings, [IMAGES_SPEC])
    return archive


def _decode_and_preprocess(image_bytes, preprocess):
    """Encoded images of any sizes `(B,)` -> preprocessed float32 `(B, h, w, 3)`.

    Each image is decoded and brought to the encoder's size on its own, so one
    request may mix sizes (and JPEG with PNG). An item whose first and last
    bytes are not those of a JPEG, PNG, GIF or BMP file fails the request, its
    index in the message.
    """

    def decode_one(item):
        index, encoded = item
        message = tf.strings.format(
            "image_bytes[{}] is not a whole encoded JPEG, PNG, GIF or BMP image "
            "(its first bytes are {}, its last {}). Send each image file's bytes, "
            "complete, as one item.",
            (
                index,
                tf.io.decode_raw(tf.strings.substr(encoded, 0, 4), tf.uint8),
                tf.io.decode_raw(_last_bytes(encoded, 4), tf.uint8),
            ),
        )
        check = tf.debugging.Assert(_is_whole_image(encoded), [message])
        with tf.control_dependencies([check]):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return preprocess(image[tf.newaxis])[0]

    height, width = preprocess.image_size
    indices = tf.range(tf.size(image_bytes, out_type=tf.int64))
    return tf.map_fn(
        decode_one,
        (indices, image_bytes),
        fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32),
    )


# The first and last bytes of the formats `tf.io.decode_image` reads: a file cut
# short (a truncated upload) lacks its end marker. BMP has none.
_IMAGE_MARKERS = (
    (b"\xff\xd8\xff", b"\xff\xd9"),  # JPEG: start and end of image
    (b"\x89PNG", b"IEND\xaeB`\x82"),  # PNG: the IEND chunk and its CRC
    (b"GIF8", b";"),  # GIF: the trailer
    (b"BM", b""),
)


def _is_whole_image(encoded):
    """Whether scalar string `encoded` starts and ends as an image file does."""
    return tf.reduce_any(
        [
            (tf.strings.substr(encoded, 0, len(start)) == start)
            & (_last_bytes(encoded, len(end)) == end)
            for start, end in _IMAGE_MARKERS
        ]
    )


def _last_bytes(encoded, count):
    start = tf.maximum(tf.strings.length(encoded) - count, 0)
    return tf.strings.substr(encoded, start, count)


def _split_model(model_or_encoder, include_projector):
    if isinstance(model_or_encoder, BarlowTwins):
        projector = model_or_encoder.projector if include_projector else None
        return _check_encoder(model_or_encoder.encoder), projector
    if not isinstance(model_or_encoder, keras.Model):
        raise TypeError(
            "`model_or_encoder` must be a keras_barlow.BarlowTwins model or an "
            f"encoder keras.Model. Received: {type(model_or_encoder).__name__}"
        )
    if include_projector:
        raise ValueError(
            "`include_projector=True` needs a BarlowTwins model, which holds the "
            f"projector. Received the encoder {model_or_encoder.name!r}: pass the "
            "BarlowTwins model or set include_projector=False."
        )
    return _check_encoder(model_or_encoder), None


def _check_encoder(encoder):
    if not encoder.built:
        raise ValueError(
            f"The encoder {encoder.name!r} has no weights yet. Train it, or call it "
            "once on a batch of images, before exporting it."
        )
    shape = backbones.encoder_input_shape(encoder)
    if shape is not None and (
        not isinstance(shape, tuple) or len(shape) != 4 or shape[-1] != 3
    ):
        raise ValueError(
            "The encoder must take one batch of RGB images of shape "
            f"(batch, height, width, 3). Received: the encoder {encoder.name!r} "
            f"with input shape {shape}. Export the image encoder, not a model "
            "built on other inputs."
        )
    return encoder


def _check_features(features):
    if features.shape.rank != 2:
        raise ValueError(
            "The encoder must return features of shape (batch, features). "
            f"Received: output shape {features.shape}. Add a pooling layer "
            "(e.g. keras.layers.GlobalAveragePooling2D) at the end of the encoder."
        )


def _resolve_image_size(encoder, image_size):
    fixed = backbones.encoder_image_size(encoder)
    if image_size is None:
        if fixed is None:
            raise ValueError(
                f"The encoder {encoder.name!r} has no fixed input size (input "
                f"shape {backbones.encoder_input_shape(encoder)}), so `image_size` "
                "is needed. Pass the size it was trained on, e.g. image_size=224."
            )
        return fixed
    size = checks.image_size("image_size", image_size)
    if fixed is not None and fixed != size:
        raise ValueError(
            f"`image_size` does not match the encoder {encoder.name!r}, which takes "
            f"images of {fixed[0]}x{fixed[1]}. Received: image_size={image_size!r}. "
            "Leave image_size=None to use the encoder's own size."
        )
    return size


def _version_dir(export_dir, version, overwrite):
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            "`version` must be a positive int (TF Serving loads the numbered "
            f"folders under export_dir). Received: version={version!r}"
        )
    export_dir = os.fspath(export_dir)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(
            f"`export_dir` must be a folder, but {export_dir!r} is a file. Pass a "
            "folder path; the model goes to export_dir/<version>/."
        )
    version_dir = os.path.join(export_dir, str(version))
    if os.path.exists(version_dir) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists at {version_dir!r}. Pass a new "
            "`version` (TF Serving then switches to it) or overwrite=True."
        )
    return version_dir


def main(argv=None):
    """`python -m keras_barlow.export MODEL.keras EXPORT_DIR`: see the module."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_barlow.export",
        description="Export the encoder of a saved model (.keras: a "
        "keras_barlow.BarlowTwins or an encoder) as a SavedModel for TF Serving.",
    )
    parser.add_argument("model", help="the .keras file, e.g. written by model.save")
    parser.add_argument("export_dir", help="the SavedModel goes to EXPORT_DIR/VERSION")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--include_projector", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    model = keras.saving.load_model(args.model, compile=False)
    path = export_encoder(
        model,
        args.export_dir,
        version=args.version,
        include_projector=args.include_projector,
        overwrite=args.overwrite,
    )
    print(path)
    return path


if __name__ == "__main__":
    main()
