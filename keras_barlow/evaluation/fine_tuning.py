"""The paper's semi-supervised evaluation: fine-tuning on a labelled subset."""

import numpy as np

from keras_barlow import _checks as checks
from keras_barlow.data import selection
from keras_barlow.evaluation import training


def fine_tune(
    encoder,
    labeled_ds,
    test_ds=None,
    num_classes=None,
    epochs=20,
    backbone_learning_rate=0.005,
    classifier_learning_rate=0.5,
    momentum=0.9,
    weight_decay=0.0,
    preprocess="auto",
    train_augment="auto",
    seed=0,
    verbose=0,
    batch_size=256,
):
    """Fine-tune the encoder with a linear classifier on labelled data.

    The paper's semi-supervised evaluation (`evaluate.py --weights finetune
    --epochs 20 --lr-backbone 0.005 --lr-classifier 0.5 --weight-decay 0`), usually
    on 1% or 10% of the labels (see `labeled_subset`): SGD with momentum 0.9, one
    learning rate for the encoder and another for the classifier, both decayed to
    zero with a cosine, random resized crops and flips; the encoder trains with
    its batch normalization in training mode.

    The encoder's weights are updated in place: keep a copy of the pre-trained
    weights (`encoder.get_weights()`) if you need them again.

    Args:
        encoder: a `keras.Model` mapping normalized images to features `(B, F)`.
        labeled_ds: labelled batches in any form that `linear_probe` takes,
            e.g. the arrays `(images[indices], labels[indices])` of the
            `labeled_subset` indices.
        test_ds: optional dataset to report accuracies on.
        num_classes: see `linear_probe`.
        epochs: training epochs.
        backbone_learning_rate: initial learning rate of the encoder.
        classifier_learning_rate: initial learning rate of the linear layer.
        momentum, weight_decay, preprocess, train_augment, seed, verbose,
        batch_size: see `linear_probe`.

    Returns:
        A `ProbeResult`; `top1`/`top5` are `None` without `test_ds`.

    Example:

    ```python
    indices = labeled_subset(labels, fraction=0.01, seed=0)
    subset = (images[indices], labels[indices])
    result = fine_tune(model.encoder, subset, (test_images, test_labels))
    ```
    """
    checks.positive("classifier_learning_rate", classifier_learning_rate)
    ratio = backbone_learning_rate / classifier_learning_rate
    classifier = training.classifier_for_encoder(
        encoder,
        labeled_ds,
        num_classes,
        preprocess,
        train_augment,
        seed,
        weight_decay,
        backbone_ratio=ratio,
        batch_size=batch_size,
        test_ds=test_ds,
    )
    return training.train_and_test(
        classifier,
        labeled_ds,
        test_ds,
        epochs,
        classifier_learning_rate,
        momentum,
        verbose,
        batch_size,
        seed,
    )


def labeled_subset(labels, fraction, seed=0):
    """Indices of a class-balanced random subset of the labelled data.

    `round(fraction * N)` samples, shared over the classes in proportion to their
    sizes by `keras_barlow.data.selection.apportion` (each class keeps the floor
    or ceiling of its share), and at least one of every class; drawn without
    replacement with a NumPy generator of the given seed, so the same labels,
    fraction and seed always give the same subset. The paper's semi-supervised
    setting uses `fraction=0.01` and `0.1`.

    Args:
        labels: `(N,)` integer labels.
        fraction: share of the samples to keep, in (0, 1].
        seed: int seed.

    Returns:
        Sorted int64 NumPy array of indices into `labels`.

    Example:

    >>> labels = np.repeat(np.arange(10), 100)
    >>> len(labeled_subset(labels, 0.1, seed=0))
    100
    """
    checks.number("fraction", fraction, 0, 1, low_open=True)
    labels = np.asarray(labels).reshape(-1)
    counts = np.unique(labels, return_counts=True)[1]
    quotas = selection.apportion(round(fraction * len(labels)), counts, counts)
    return selection.select_by_class(labels, np.maximum(quotas, 1), seed)
