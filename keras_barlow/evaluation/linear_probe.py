"""The paper's linear evaluation: a linear classifier on the frozen encoder."""

from keras_barlow.evaluation import features as features_lib
from keras_barlow.evaluation import training
from keras_barlow.evaluation.classifier import Classifier


def linear_probe(
    encoder,
    train_ds,
    test_ds,
    num_classes=None,
    epochs=100,
    learning_rate=0.3,
    momentum=0.9,
    weight_decay=1e-6,
    preprocess="auto",
    train_augment="auto",
    seed=0,
    verbose=0,
    batch_size=256,
):
    """Train and test a linear classifier on the frozen encoder.

    The paper's linear evaluation (`evaluate.py --lr-classifier 0.3`): a `Dense`
    layer initialized with N(0, 0.01) weights and zero bias, trained with SGD
    (momentum 0.9, weight decay 1e-6 added to the gradient as in PyTorch) and a
    cosine learning-rate decay to zero over `epochs`, on random resized crops
    (scale 0.08-1) with horizontal flips. The encoder runs in inference mode and
    is not changed. Tested on `preprocess`-ed images (no augmentation).

    Args:
        encoder: a `keras.Model` mapping normalized images to features `(B, F)`.
        train_ds: labelled batches: `(images, labels)` with images uint8 or
            float in [0, 255] of a fixed size and integer labels, or
            full-resolution dicts with labels; as a batched `tf.data.Dataset`,
            a tuple of NumPy arrays (batched with `batch_size` and shuffled at
            every epoch), or any iterable of batches that can be read again at
            every epoch (a list, a `keras.utils.PyDataset`, a Grain dataset, a
            torch `DataLoader`; not a generator). See
            `keras_barlow.evaluation.inputs`. The paper uses batches of 256.
        test_ds: the same for testing, or `None`. A generator will do: it is
            read once, for testing; other forms are read once more before
            training, for their labels.
        num_classes: number of classes; by default the largest label plus one.
            Before training, the labels of `train_ds` (and of `test_ds` unless
            it is a generator) are read once to find it or to check that they
            are below it.
        epochs: training epochs.
        learning_rate: initial learning rate (0.3 in the paper for batch 256).
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the classifier.
        preprocess: the test transform: `"auto"`, a callable or `None` (see the
            `keras_barlow.evaluation`).
        train_augment: the training transform: `"auto"` for random resized crops
            and flips at the encoder's input size (from [0, 255] images to
            normalized ones; with `preprocess=None`, inputs that are ready are
            not augmented), `None` to train on `preprocess`-ed images, or a
            callable.
        seed: seed of the classifier's initialization, the augmentation and
            the order of arrays.
        verbose: verbosity of `fit`.
        batch_size: batch size for arrays.

    Returns:
        A `ProbeResult` with test `top1` and `top5` accuracies.

    Raises:
        ValueError: before training, on batches without labels or a label of
            `num_classes` or more.

    Example:

    ```python
    result = keras_barlow.evaluation.linear_probe(model.encoder, train_ds, test_ds,
                                                  num_classes=10)
    print(result.top1, result.top5)
    ```
    """
    classifier = training.classifier_for_encoder(
        encoder,
        train_ds,
        num_classes,
        preprocess,
        train_augment,
        seed,
        weight_decay,
        backbone_ratio=None,
        batch_size=batch_size,
        test_ds=test_ds,
    )
    return training.train_and_test(
        classifier,
        train_ds,
        test_ds,
        epochs,
        learning_rate,
        momentum,
        verbose,
        batch_size,
        seed,
    )


def linear_probe_on_features(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes=None,
    epochs=100,
    batch_size=256,
    learning_rate=0.3,
    momentum=0.9,
    weight_decay=1e-6,
    seed=0,
    verbose=0,
):
    """The linear probe on cached features: fast, without augmentation.

    Same classifier and optimizer as `linear_probe`, trained on fixed features
    (e.g. from `extract_features`), so each epoch costs a few matrix products.
    Without augmentation it usually scores a little below `linear_probe`. The
    training features are shuffled at every epoch by a NumPy generator of
    `seed`.

    Args:
        train_features, test_features: `(N, F)` and `(M, F)` float arrays.
        train_labels, test_labels: `(N,)` and `(M,)` integer arrays.
        num_classes: number of classes; by default the largest label plus one.
        epochs, learning_rate, momentum, weight_decay, seed, verbose: see
            `linear_probe`.
        batch_size: training batch size.

    Returns:
        A `ProbeResult`; its classifier maps features to logits.

    Example:

    ```python
    train = extract_features(encoder, train_ds)
    test = extract_features(encoder, test_ds)
    result = linear_probe_on_features(*train, *test)
    ```
    """
    train_features, train_labels, test_features, test_labels = (
        features_lib.train_and_test_arrays(
            train_features, train_labels, test_features, test_labels
        )
    )
    num_classes = features_lib.num_classes_of(num_classes, train_labels, test_labels)
    classifier = Classifier(num_classes, weight_decay=weight_decay, seed=seed)
    return training.train_and_test(
        classifier,
        (train_features, train_labels),
        (test_features, test_labels),
        epochs,
        learning_rate,
        momentum,
        verbose,
        batch_size,
        seed,
    )
