"""Make docs/cross_correlation.png: a cross-correlation before and after training.

A small convolutional encoder is pre-trained with `keras_barlow.BarlowTwins` (CIFAR
augmentations) for a few minutes on the CPU, on a class-balanced slice of the
CIFAR-10 training images (JPEG archive, read in memory, nothing extracted).
Before and after training, the script computes the cross-correlation of the
embeddings of two fixed augmented views of held-out images, draws the first
64 x 64 dimensions with `keras_barlow.plotting.plot_cross_correlation`, and prints
the weighted kNN accuracy of the encoder's features on held-out images.

    MPLBACKEND=Agg python docs/make_cross_correlation_figure.py \
        --archive ../shared/datasets/cifar10-jpeg-train.tar.gz
"""

import argparse
import os
import tarfile
import time

os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_barlow  # noqa: E402
from keras_barlow import evaluation, plotting  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--archive", default="../shared/datasets/cifar10-jpeg-train.tar.gz")
parser.add_argument(
    "--output", default=os.path.join(os.path.dirname(__file__), "cross_correlation.png")
)
parser.add_argument(
    "--per-class", type=int, default=300, help="images per class read from the archive"
)
parser.add_argument(
    "--held-out", type=int, default=100, help="of which kept out of training, per class"
)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--embedding-dims", type=int, default=512)
parser.add_argument("--learning-rate", type=float, default=1e-3, help="of Adam")
parser.add_argument("--seed", type=int, default=0)


def read_cifar(archive, per_class):
    """The first `per_class` images of each class: uint8 (N, 32, 32, 3), labels (N,)."""
    images, labels, counts, classes = [], [], {}, {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.name.endswith(".jpg"):
                continue
            class_name = member.name.split("/")[-2]
            label = classes.setdefault(class_name, len(classes))
            if counts.get(label, 0) == per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            images.append(tf.io.decode_jpeg(tar.extractfile(member).read(), channels=3))
            labels.append(label)
    return np.stack(images), np.array(labels)


def small_encoder():
    """Four 3x3 convolution stages with batch normalization: 32x32 images to 256."""
    layers = [keras.Input((32, 32, 3))]
    for width in (32, 64, 128, 256):
        layers += [
            keras.layers.Conv2D(width, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
        ]
    return keras.Sequential(layers + [keras.layers.GlobalAveragePooling2D()])


def fixed_batch_cross_correlation(model, views):
    z1, z2 = (model(view, training=False) for view in views)
    return keras_barlow.cross_correlation(z1, z2).numpy()


def knn_top1(model, train, test):
    features_of = evaluation.feature_function(model.encoder)
    train_features, _ = evaluation.collect_features(features_of, train[0])
    test_features, _ = evaluation.collect_features(features_of, test[0])
    return evaluation.knn_accuracy(
        train_features, train[1], test_features, test[1], k=20
    )["top1"]


def main():
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    start = time.time()
    images, labels = read_cifar(args.archive, args.per_class)
    held_out = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        held_out[np.flatnonzero(labels == label)[: args.held_out]] = True
    train, test = (
        (images[~held_out], labels[~held_out]),
        (images[held_out], labels[held_out]),
    )
    print(
        f"{len(train[1])} training and {len(test[1])} held-out images "
        f"({time.time() - start:.0f} s)"
    )

    model = keras_barlow.BarlowTwins(
        small_encoder(),
        projector_dims=(args.embedding_dims,) * 3,
        augmenter="cifar",
        seed=args.seed,
    )
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    views = model.make_views(test[0][:512], tf.constant([args.seed, 1]))

    before = fixed_batch_cross_correlation(model, views)
    knn_before = knn_top1(model, train, test)
    dataset = (
        tf.data.Dataset.from_tensor_slices(train[0])
        .shuffle(len(train[0]), seed=args.seed)
        .batch(args.batch_size, drop_remainder=True)
    )
    model.fit(dataset, epochs=args.epochs, verbose=2)
    after = fixed_batch_cross_correlation(model, views)
    knn_after = knn_top1(model, train, test)

    for name, c in (("before", before), ("after", after)):
        off_diagonal = np.abs(c[~np.eye(len(c), dtype=bool)]).mean()
        print(
            f"{name}: mean diagonal {np.diag(c).mean():.3f}, "
            f"mean |off-diagonal| {off_diagonal:.3f}"
        )
    print(
        f"kNN top-1 (k=20) on held-out images: {knn_before:.3f} before, "
        f"{knn_after:.3f} after; {time.time() - start:.0f} s in all"
    )

    figure, axes = plt.subplots(1, 2, figsize=(8.6, 3.7))
    plotting.plot_cross_correlation(
        before, max_dims=64, ax=axes[0], title="before training"
    )
    plotting.plot_cross_correlation(
        after, max_dims=64, ax=axes[1], title=f"after {args.epochs} epochs"
    )
    figure.tight_layout()
    figure.savefig(args.output, dpi=90)
    print(f"wrote {args.output} ({os.path.getsize(args.output) // 1024} KB)")


if __name__ == "__main__":
    main()
