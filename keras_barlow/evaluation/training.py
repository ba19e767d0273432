"""How `linear_probe` and `fine_tune` train a `Classifier`, on data of any form.

`classifier_for_encoder` builds the classifier with the transforms the arguments
ask for, its number of classes checked against the labels (`checked_num_classes`);
`train_and_test` trains it with SGD and a cosine decay, then tests it.
Data in any form of `keras_barlow.evaluation.inputs` go to Keras' `fit` and
`evaluate` through `keras_data`.
"""

import dataclasses
import warnings

import keras
import numpy as np

from keras_barlow import _checks as checks
from keras_barlow import batches, input_checks
from keras_barlow.evaluation import features as features_lib
from keras_barlow.evaluation import inputs as inputs_lib
from keras_barlow.evaluation.classifier import Classifier, CropAndFlip


@dataclasses.dataclass
class ProbeResult:
    """What `linear_probe`, `linear_probe_on_features` and `fine_tune` return.

    Attributes:
        top1: test top-1 accuracy (a fraction), `None` without a test set.
        top5: test top-5 accuracy, `None` without a test set.
        classifier: the trained `keras.Model`; it maps what the datasets yield
            (raw images, or features for `linear_probe_on_features`) to logits.
        history: `History.history` of the training.
    """

    top1: float | None
    top5: float | None
    classifier: keras.Model = dataclasses.field(repr=False)
    history: dict = dataclasses.field(repr=False)


def classifier_for_encoder(
    encoder,
    train_ds,
    num_classes,
    preprocess,
    train_augment,
    seed,
    weight_decay,
    backbone_ratio,
    batch_size=256,
    test_ds=None,
):
    """A `Classifier` on `encoder` with the transforms that the arguments ask for.

    `num_classes` is found or checked by `checked_num_classes`, before any
    training.
    """
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            "`encoder` must be a keras.Model mapping images to features. "
            f"Received: {type(encoder).__name__}"
        )
    # Before any reading: the data is read at every epoch, and once more here.
    input_checks.check_reiterable(train_ds, "train_ds", "at every epoch")
    num_classes = checked_num_classes(num_classes, train_ds, test_ds, batch_size)
    test_transform = features_lib.resolve_preprocess(encoder, preprocess)
    if isinstance(train_augment, str) and train_augment != "auto":
        raise ValueError(
            "`train_augment` must be 'auto', a callable or None. "
            f"Received: train_augment={train_augment!r}"
        )
    if train_augment == "auto" and preprocess is None:
        train_augment = None  # ready inputs are not [0, 255] images to crop
    if train_augment == "auto":
        image_size = getattr(test_transform, "image_size", None)
        image_size = image_size or features_lib.encoder_image_size(encoder)
        train_augment = CropAndFlip(image_size, seed=seed)
    if train_augment is None:
        train_augment = test_transform
    return Classifier(
        num_classes,
        encoder,
        train_transform=train_augment,
        test_transform=test_transform,
        backbone_ratio=backbone_ratio,
        weight_decay=weight_decay,
        seed=seed,
    )


def train_and_test(
    classifier,
    train_ds,
    test_ds,
    epochs,
    learning_rate,
    momentum,
    verbose,
    batch_size=256,
    seed=0,
):
    """Compile with SGD and a cosine decay over `epochs`, fit, then test.

    Arrays are batched with `batch_size` and shuffled at every epoch by a NumPy
    generator of `seed`; datasets and other iterables are read in their order.
    """
    checks.positive_int("epochs", epochs)
    checks.positive("learning_rate", learning_rate)
    checks.positive_int("batch_size", batch_size)
    steps = max(1, inputs_lib.batches_per_pass(train_ds, batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=epochs * steps
    )
    classifier.compile(optimizer=keras.optimizers.SGD(schedule, momentum=momentum))
    train = keras_data(train_ds, batch_size, np.random.default_rng(seed), epochs)
    history = classifier.fit(
        train,
        epochs=epochs,
        steps_per_epoch=None if train is train_ds else steps,
        verbose=verbose,
        shuffle=False,
    )
    top1 = top5 = None
    if test_ds is not None:
        test = keras_data(test_ds, batch_size)
        steps = (
            None if test is test_ds else inputs_lib.known_length(test_ds, batch_size)
        )
        with warnings.catch_warnings():
            # A generator's length is unknown: Keras warns at its end.
            warnings.filterwarnings("ignore", "Your input ran out of data")
            scores = classifier.evaluate(
                test, steps=steps, verbose=verbose, return_dict=True
            )
        top1, top5 = float(scores["top1"]), float(scores["top5"])
    return ProbeResult(top1, top5, classifier, history.history)


def keras_data(data, batch_size, shuffle=None, passes=1):
    """What `fit` and `evaluate` take for `data` in any input form.

    tf.data datasets and `PyDataset`s go to Keras as they are (its readers run
    their pipelines and workers); other forms become a generator of `(inputs,
    labels)` batches over `passes` passes, arrays shuffled by the NumPy
    generator `shuffle` (if given) at each pass.
    """
    if isinstance(data, keras.utils.PyDataset) or input_checks.is_tf_dataset(data):
        return data

    def batches_of_every_pass():
        for _ in range(passes):
            empty = True
            for batch in inputs_lib.iterate_batches(data, batch_size, shuffle):
                empty = False
                yield inputs_lib.model_inputs(batch), batch.labels
            if empty:
                raise ValueError("The data is empty: no batch to train or test on.")

    return batches_of_every_pass()


def checked_num_classes(num_classes, train_ds, test_ds=None, batch_size=256):
    """`num_classes` checked against the labels of the data, or found from them.

    Reads the labels of `train_ds` once, and those of `test_ds` unless it is an
    iterator (e.g. a generator), which is read once only, for testing. The rule
    is `features.num_classes_of`'s, as for `linear_probe_on_features`.

    Args:
        num_classes: the number of classes asked for, or `None` for the
            largest label plus one.
        train_ds, test_ds: data in any form of `keras_barlow.evaluation.inputs`
            (`test_ds` may be `None`).
        batch_size: batch size for arrays.

    Returns:
        int, the number of classes.

    Raises:
        ValueError: on a batch without labels, empty data, a label that is
            negative or not an integer, or one of `num_classes` or more.
    """
    labels = [_labels_of(train_ds, "train_ds", batch_size)]
    if test_ds is not None and not input_checks.is_one_shot(test_ds):
        labels.append(_labels_of(test_ds, "test_ds", batch_size))
    return features_lib.num_classes_of(num_classes, *labels)


def _labels_of(data, name, batch_size):
    """The labels of every batch of `data`, concatenated: `(N,)`."""
    labels = []
    for batch in inputs_lib.iterate_batches(data, batch_size):
        if batch.labels is None:
            raise ValueError(
                "Training a classifier needs labels: batches of (images, labels) "
                f"or full-resolution dicts with '{batches.LABELS}'. Received a "
                f"batch of `{name}` without labels."
            )
        labels.append(batch.labels)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if not labels.size:
        raise ValueError(f"`{name}` is empty: it has no labelled sample.")
    return features_lib.class_labels(labels, f"The labels of `{name}`")
