"""Training recipes as data: the paper's ImageNet recipe and the known-good CIFAR one.

A `Recipe` holds every number of a recipe and turns itself into the objects that
train it (schedule, optimizer, encoder, model), so a preset is a value to print,
compare and override, never a branch in the code.

Example:

```python
recipe = keras_barlow.presets.get("cifar10-resnet18").replace(epochs=200)
print(recipe)
steps_per_epoch = 50_000 // recipe.batch_size
model = recipe.model()
model.compile(optimizer=recipe.optimizer(steps_per_epoch))
model.fit(images.batch(recipe.batch_size, drop_remainder=True), epochs=recipe.epochs)
```
"""

import dataclasses
import inspect

from keras_barlow import _checks as checks
from keras_barlow import augment, backbones, optimizers, schedules
from keras_barlow.model import BarlowTwins

REFERENCE_BATCH_SIZE = 256  # learning rates are given per 256 images, as in the paper


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of a Barlow Twins training run.

    Learning rates are per 256 images: the peak learning rate is
    `learning_rate_weights * batch_size / 256` (the paper's scaling rule), and the
    variables with ndim <= 1 (biases, batch normalization) get
    `learning_rate_biases * batch_size / 256`.

    Args:
        name: the preset's name.
        backbone: name of an encoder constructor in `keras_barlow.backbones`,
            e.g. `"ResNet50"`, or `"convnet"` (a small encoder for CPUs).
        stem: the backbone's stem, `"imagenet"` or `"cifar"` (unused by
            `"convnet"`).
        image_size: side of the square training images (the views).
        augment: preset of `keras_barlow.BarlowTwinsAugment`.
        projector_dims: sizes of the projector layers.
        lambd: weight of the off-diagonal term of the loss.
        scale_loss: overall factor of the loss.
        batch_size: global batch size (all replicas together).
        epochs: training epochs.
        warmup_epochs: epochs of linear learning-rate warm-up.
        learning_rate_weights: LARS learning rate of the weights, per 256 images.
        learning_rate_biases: LARS learning rate of the variables with ndim <= 1,
            per 256 images.
        momentum: LARS momentum.
        eta: LARS trust coefficient.
        weight_decay: LARS weight decay.
        end_factor: final learning rate of the cosine decay, as a fraction of the
            peak.

    Example:

    >>> recipe = get("imagenet-resnet50").replace(batch_size=256)
    >>> recipe.learning_rate
    0.2
    """

    name: str
    backbone: str
    stem: str
    image_size: int
    augment: str
    projector_dims: tuple
    lambd: float
    scale_loss: float
    batch_size: int
    epochs: int
    warmup_epochs: int
    learning_rate_weights: float
    learning_rate_biases: float
    momentum: float
    eta: float
    weight_decay: float
    end_factor: float

    def __post_init__(self):
        object.__setattr__(
            self, "projector_dims", tuple(int(size) for size in self.projector_dims)
        )
        checks.choice("augment", self.augment, sorted(augment.PRESETS))
        for field in ("image_size", "batch_size", "epochs"):
            checks.positive_int(field, getattr(self, field))
        for field in ("learning_rate_weights", "learning_rate_biases", "eta"):
            checks.positive(field, getattr(self, field))
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                "`warmup_epochs` must be in [0, epochs). Received: "
                f"warmup_epochs={self.warmup_epochs}, epochs={self.epochs}"
            )

    @property
    def learning_rate(self):
        """Peak learning rate of the weights: `learning_rate_weights * batch / 256`."""
        return self.learning_rate_weights * self.batch_size / REFERENCE_BATCH_SIZE

    @property
    def bias_learning_rate_multiplier(self):
        """Learning rate of the ndim <= 1 variables relative to the weights'."""
        return self.learning_rate_biases / self.learning_rate_weights

    @property
    def input_shape(self):
        """`(image_size, image_size, 3)`."""
        return (self.image_size, self.image_size, 3)

    def replace(self, **changes):
        """A copy with some fields changed, e.g. `recipe.replace(epochs=100)`."""
        fields = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ValueError(f"Unknown recipe fields {unknown}. Valid fields: {fields}")
        return dataclasses.replace(self, **changes)

    def learning_rate_schedule(self, steps_per_epoch):
        """The warm-up cosine schedule of the weights' learning rate.

        Args:
            steps_per_epoch: int, batches per epoch (e.g. `50_000 // 256` for
                CIFAR-10 batched with `drop_remainder=True`).

        Returns:
            `keras_barlow.schedules.WarmupCosine`.
        """
        checks.positive_int("steps_per_epoch", steps_per_epoch)
        return schedules.WarmupCosine(
            self.learning_rate,
            total_steps=self.epochs * steps_per_epoch,
            warmup_steps=self.warmup_epochs * steps_per_epoch,
            end_factor=self.end_factor,
        )

    def optimizer(self, steps_per_epoch):
        """LARS with the recipe's schedule; see `learning_rate_schedule`.

        Returns:
            `keras_barlow.optimizers.LARS`.
        """
        return optimizers.LARS(
            self.learning_rate_schedule(steps_per_epoch),
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            eta=self.eta,
            bias_learning_rate_multiplier=self.bias_learning_rate_multiplier,
        )

    def encoder(self, **kwargs):
        """The backbone, e.g. `keras_barlow.backbones.ResNet50(input_shape, stem)`.

        Args:
            **kwargs: further arguments of the backbone constructor, e.g.
                `sync_batch_norm=True`.

        Returns:
            A `keras.Model` mapping `(B, image_size, image_size, 3)` images to
            `(B, F)` features.
        """
        constructor = getattr(backbones, self.backbone, None)
        if constructor is None:
            raise ValueError(
                "`backbone` must name a constructor in keras_barlow.backbones, e.g. "
                f"'ResNet50'. Received: backbone={self.backbone!r}"
            )
        if "stem" in inspect.signature(constructor).parameters:  # not `convnet`
            kwargs = {"stem": self.stem, **kwargs}
        return constructor(self.input_shape, **kwargs)

    def model(self, encoder=None, **kwargs):
        """The `BarlowTwins` model of the recipe.

        Args:
            encoder: a `keras.Model` to use instead of `self.encoder()`.
            **kwargs: further arguments of `keras_barlow.BarlowTwins`, e.g. `seed`.

        Returns:
            `keras_barlow.BarlowTwins` (not compiled; compile it with
            `optimizer=recipe.optimizer(steps_per_epoch)`).
        """
        return BarlowTwins(
            self.encoder() if encoder is None else encoder,
            projector_dims=self.projector_dims,
            lambd=self.lambd,
            scale_loss=self.scale_loss,
            augmenter=self.augment,
            **kwargs,
        )

    def __str__(self):
        lines = [
            f"  {field.name} = {getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
        ]
        return "\n".join([f"Recipe {self.name!r}:", *lines[1:]])


# The paper (Zbontar et al., 2021, section 4 and appendix) and its code
# (facebookresearch/barlowtwins main.py).
IMAGENET_RESNET50 = Recipe(
    name="imagenet-resnet50",
    backbone="ResNet50",
    stem="imagenet",
    image_size=224,
    augment="imagenet",
    projector_dims=(8192, 8192, 8192),  # main.py --projector 8192-8192-8192
    lambd=0.0051,  # main.py --lambd
    scale_loss=1.0,  # the final main.py has no loss scale
    batch_size=2048,  # main.py --batch-size
    epochs=1000,  # main.py --epochs
    warmup_epochs=10,  # main.py adjust_learning_rate: 10 * len(loader)
    learning_rate_weights=0.2,  # main.py --learning-rate-weights, x batch / 256
    learning_rate_biases=0.0048,  # main.py --learning-rate-biases, x batch / 256
    momentum=0.9,  # main.py LARS default
    eta=0.001,  # main.py LARS default
    # The paper's text: 1.5e-6 (the argparse default of main.py reads 1e-6).
    weight_decay=1.5e-6,
    end_factor=0.001,  # main.py adjust_learning_rate: end_lr = base_lr * 0.001
)

# solo-learn scripts/pretrain/cifar/barlow.yaml (92.1% linear on CIFAR-10) with
# solo-learn's defaults for what the file leaves out.
CIFAR10_RESNET18 = Recipe(
    name="cifar10-resnet18",
    backbone="ResNet18",
    stem="cifar",  # solo-learn's CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool
    image_size=32,  # augmentations/asymmetric.yaml crop_size
    augment="cifar",  # asymmetric.yaml: no blur, solarize 0.0 / 0.2
    projector_dims=(2048, 2048, 2048),  # proj_hidden_dim, proj_output_dim 2048
    lambd=0.0051,  # barlow_twins.py default lamb
    scale_loss=0.1,  # method_kwargs.scale_loss
    batch_size=256,  # optimizer.batch_size (so lr x batch / 256 = lr)
    epochs=1000,  # max_epochs
    warmup_epochs=10,  # solo-learn default scheduler.warmup_epochs
    learning_rate_weights=0.3,  # optimizer.lr
    # exclude_bias_n_norm only drops weight decay and adaptation: same rate.
    learning_rate_biases=0.3,
    momentum=0.9,  # solo-learn default LARS momentum
    # optimizer.kwargs.eta. solo-learn's own LARS differs from the paper's (used
    # here) in two details: trust ratio eta |w| / (|g| + wd |w|), and clip_lr,
    # which caps it at 1 / lr (LARC-style).
    eta=0.02,
    weight_decay=1e-4,  # optimizer.weight_decay
    # solo-learn decays to scheduler.min_lr = 0 (and warms up from 3e-5, not 0).
    end_factor=0.0,
)

PRESETS = {recipe.name: recipe for recipe in (IMAGENET_RESNET50, CIFAR10_RESNET18)}


def get(name):
    """The preset recipe called `name`.

    Args:
        name: one of `keras_barlow.presets.PRESETS`, e.g. `"cifar10-resnet18"`.

    Returns:
        A frozen `Recipe`; override fields with `recipe.replace(...)`.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Valid names: {sorted(PRESETS)}")
    return PRESETS[name]
