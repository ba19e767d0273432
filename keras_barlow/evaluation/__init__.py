"""Evaluation of a pre-trained encoder: kNN, linear probe, semi-supervised fine-tuning.

The protocols of the self-supervised literature, as the Barlow Twins paper ran them:

* `knn_accuracy` (`knn.py`): the weighted k-nearest-neighbour classifier of
  InstDisc (Wu et al., 2018) on cosine similarity, computed in chunks on the
  device (`knn_predict` gives its classes). Needs no training: the usual way to
  follow a run (see `keras_barlow.callbacks.KNNMonitor`).
* `linear_probe` (`linear_probe.py`): a linear classifier on the frozen encoder,
  trained as in the paper's `evaluate.py` (SGD with momentum 0.9, cosine schedule,
  weight decay 1e-6, random resized crops and horizontal flips);
  `linear_probe_on_features` is the fast variant on cached features, without
  augmentation.
* `fine_tune` (`fine_tuning.py`) on a class-balanced subset from
  `labeled_subset`: the paper's semi-supervised setting (1% or 10% of the labels).

Both classifiers are a `Classifier` (`classifier.py`, trained by `training.py`);
features come from `extract_features` (`features.py`). The collapse indicators
`effective_rank` and `mean_abs_off_diagonal` live in `keras_barlow.metrics` and
are re-exported here.

Everything here is written with `keras.ops` and NumPy, and runs on Keras'
TensorFlow and JAX backends; TensorFlow is needed only to read a
`tf.data.Dataset`.

Data: a batched `tf.data.Dataset`, NumPy arrays (images, or a tuple `(images,
labels)`, batched with `batch_size`), or any iterable of batches (a list, a
generator, a `keras.utils.PyDataset`, a Grain dataset, a torch `DataLoader`);
each batch is images, `(images, labels)` or a full-resolution dict, as for
`BarlowTwins.fit` (`inputs.py`, `keras_barlow.batches`).

Images and preprocessing: batches hold uint8 or float images in [0, 255], as
for `BarlowTwins.fit`, and the evaluation transform turns them into the encoder's
input (normalized float images). Full-resolution dicts are resized whole to the
encoder's input size (`keras_barlow.image_ops.resized_true_regions`). Every
function takes `preprocess`:

* `"auto"` (the default): `keras_barlow.Preprocessing(image_size)`, the encoder's input
  size, no crop (the CIFAR case: normalization only);
* a layer or callable, e.g. `keras_barlow.Preprocessing(224, crop_fraction=0.875)` for
  the ImageNet resize-256 / center-crop-224 transform;
* `None`: the images are already preprocessed and go to the encoder unchanged.

Accuracies are fractions in [0, 1].
"""

from keras_barlow.evaluation.classifier import Classifier, CropAndFlip
from keras_barlow.evaluation.features import (
    collect_features,
    extract_features,
    feature_function,
    resolve_preprocess,
)
from keras_barlow.evaluation.fine_tuning import fine_tune, labeled_subset
from keras_barlow.evaluation.inputs import iterate_batches
from keras_barlow.evaluation.knn import KNN_BLOCK_ELEMENTS, knn_accuracy, knn_predict
from keras_barlow.evaluation.linear_probe import linear_probe, linear_probe_on_features
from keras_barlow.evaluation.training import ProbeResult
from keras_barlow.metrics import effective_rank, mean_abs_off_diagonal

__all__ = [
    "KNN_BLOCK_ELEMENTS",
    "Classifier",
    "CropAndFlip",
    "ProbeResult",
    "collect_features",
    "effective_rank",
    "extract_features",
    "feature_function",
    "fine_tune",
    "iterate_batches",
    "knn_accuracy",
    "knn_predict",
    "labeled_subset",
    "linear_probe",
    "linear_probe_on_features",
    "mean_abs_off_diagonal",
    "resolve_preprocess",
]
