"""keras_barlow: Barlow Twins self-supervised learning for TensorFlow and Keras 3.

Example:

```python
import keras_barlow

encoder = keras_barlow.backbones.ResNet18((32, 32, 3), stem="cifar")
model = keras_barlow.BarlowTwins(encoder, projector_dims=(2048, 2048, 2048),
                                 augmenter="cifar")
model.compile(optimizer="sgd")
model.fit(images, epochs=10)
```
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:
    import tensorflow  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "keras_barlow needs TensorFlow. Install a wheel that provides it, e.g. "
        "`pip install keras-barlow[cpu]` (tensorflow-cpu) or "
        "`pip install keras-barlow[gpu]` (tensorflow[and-cuda])."
    ) from error

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":  # pragma: no cover
    raise ImportError(
        "keras_barlow runs on the TensorFlow backend of Keras (its train step uses "
        f"tf.distribute). Received: KERAS_BACKEND={keras.backend.backend()!r}. "
        "Set KERAS_BACKEND=tensorflow before importing keras."
    )

from keras_barlow import (  # noqa: E402
    augment,
    backbones,
    callbacks,
    checkpoints,
    data,
    evaluation,
    export,
    losses,
    model,
    optimizers,
    plotting,  # imports matplotlib only when a figure is drawn
    presets,
    schedules,
    validation,
)
from keras_barlow.augment import BarlowTwinsAugment, Preprocess  # noqa: E402
from keras_barlow.backbones import ResNet18, ResNet34, ResNet50  # noqa: E402
from keras_barlow.callbacks import (  # noqa: E402
    CollapseMonitor,
    CrossCorrelationImage,
    KNNMonitor,
    NaNGuard,
)
from keras_barlow.checkpoints import TrainingCheckpoint  # noqa: E402
from keras_barlow.export import export_encoder  # noqa: E402
from keras_barlow.losses import (  # noqa: E402
    barlow_twins_loss,
    barlow_twins_terms,
    cross_correlation,
)
from keras_barlow.model import BarlowTwins, Projector  # noqa: E402
from keras_barlow.optimizers import LARS  # noqa: E402
from keras_barlow.schedules import WarmupCosine  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BarlowTwins",
    "BarlowTwinsAugment",
    "CollapseMonitor",
    "CrossCorrelationImage",
    "KNNMonitor",
    "LARS",
    "NaNGuard",
    "Preprocess",
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
    "evaluation",
    "export",
    "export_encoder",
    "losses",
    "model",
    "optimizers",
    "plotting",
    "presets",
    "schedules",
    "validation",
]
