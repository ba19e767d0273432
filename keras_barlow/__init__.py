"""keras_barlow: Barlow Twins self-supervised learning for Keras 3.

TensorFlow is the primary backend (tf.distribute, tf.data, SavedModel export); the
whole workflow (data, training, evaluation, resume) also runs on Keras' JAX backend
without TensorFlow installed, which is needed only for the SavedModel export, TFDS
and TensorBoard summaries. When `KERAS_BACKEND` is not set, keras_barlow picks
TensorFlow if it is installed, else JAX.

Example:

```python
import keras_barlow

encoder = keras_barlow.backbones.ResNet18((32, 32, 3), stem="cifar")
model = keras_barlow.BarlowTwins(encoder, projector_dims=(2048, 2048, 2048),
                                 augmenter="cifar")
model.compile(optimizer="sgd")
model.fit(images, batch_size=256, epochs=10)
```
"""

import importlib
import importlib.util
import os

if "KERAS_BACKEND" not in os.environ:
    for _name in ("tensorflow", "jax"):
        if importlib.util.find_spec(_name) is not None:
            os.environ["KERAS_BACKEND"] = _name
            break

from keras_barlow import (  # noqa: E402
    augment,
    backbones,
    image_ops,
    input_checks,
    losses,
    metrics,
    model,
    optimizers,
    preprocessing,
    presets,
    schedules,
)
from keras_barlow.augment import BarlowTwinsAugment  # noqa: E402
from keras_barlow.backbones import ResNet18, ResNet34, ResNet50  # noqa: E402
from keras_barlow.losses import (  # noqa: E402
    barlow_twins_loss,
    barlow_twins_terms,
    cross_correlation,
)
from keras_barlow.model import BarlowTwins, Projector  # noqa: E402
from keras_barlow.optimizers import LARS  # noqa: E402
from keras_barlow.preprocessing import Preprocessing  # noqa: E402
from keras_barlow.schedules import WarmupCosine  # noqa: E402

__version__ = "0.1.0"

# Modules imported on first use: they bring in what the training core does not
# need (Grain or tf.data, TensorFlow's SavedModel and summaries, matplotlib).
_LAZY_MODULES = (
    "callbacks",
    "checkpoints",
    "data",
    "distribute",
    "evaluation",
    "export",
    "plotting",
)
_LAZY_NAMES = {
    "CollapseMonitor": "callbacks",
    "CrossCorrelationImage": "callbacks",
    "KNNMonitor": "callbacks",
    "NaNGuard": "callbacks",
    "TrainingCheckpoint": "checkpoints",
    "export_encoder": "export",
}


def __getattr__(name):
    if name not in _LAZY_MODULES and name not in _LAZY_NAMES:
        raise AttributeError(f"module 'keras_barlow' has no attribute {name!r}")
    module_name = _LAZY_NAMES.get(name, name)
    module = importlib.import_module(f"keras_barlow.{module_name}")
    return module if name == module_name else getattr(module, name)


__all__ = [
    "BarlowTwins",
    "BarlowTwinsAugment",
    "CollapseMonitor",
    "CrossCorrelationImage",
    "KNNMonitor",
    "LARS",
    "NaNGuard",
    "Preprocessing",
    "Projector",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "TrainingCheckpoint",
    "WarmupCosine",
    "augment",
    "backbones",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "callbacks",
    "checkpoints",
    "cross_correlation",
    "data",
    "distribute",
    "evaluation",
    "export",
    "export_encoder",
    "image_ops",
    "input_checks",
    "losses",
    "metrics",
    "model",
    "optimizers",
    "plotting",
    "preprocessing",
    "presets",
    "schedules",
]
