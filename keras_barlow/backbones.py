"""ResNet encoders: ResNet-50 of the paper, ResNet-18/34 for smaller data sets.

The networks are torchvision's ResNets (He et al., 2016, in the "v1.5" form: the
stride of a bottleneck block sits on its 3x3 convolution) without the classifier,
ending in global average pooling. They follow the Barlow Twins recipe: convolutions
without bias, batch normalization with PyTorch's defaults (epsilon 1e-5, momentum
0.1, i.e. Keras momentum 0.9), the convolution initialization of torchvision
(He normal, fan-out), and the last batch normalization of every residual block
zero-initialized so that each block starts as the identity.

Strided convolutions pad explicitly by `kernel_size // 2` on every side, as
PyTorch does; Keras' `padding="same"` would pad only the bottom and right of an
even-sized input, which shifts every feature map and breaks weight porting.

Any `keras.Model` that maps images to `(B, F)` features works as the encoder of
`keras_barlow.BarlowTwins`; these builders are the reference networks.
"""

import keras

from keras_barlow import _backend

# Block type, blocks per stage. Stage widths are 64, 128, 256, 512 for all of them.
ARCHITECTURES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4

# Convolution kernel and stride of the stem, whether it max-pools, and by how much
# the whole network then downsamples (stem times 2**3 for stages 2 to 4).
STEMS = {
    "imagenet": {"kernel_size": 7, "strides": 2, "max_pool": True, "downsampling": 32},
    "cifar": {"kernel_size": 3, "strides": 1, "max_pool": False, "downsampling": 8},
}

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}


def ResNet18(
    input_shape=(224, 224, 3),
    stem="imagenet",
    zero_init_residual=True,
    sync_batch_norm=None,
    name="resnet18",
):
    """ResNet-18 encoder: images `(B, H, W, 3)` to pooled features `(B, 512)`.

    With `stem="cifar"` (3x3 stride-1 stem convolution, no max-pool) it is the
    usual CIFAR network of self-supervised learning: 11,168,832 trainable
    parameters.

    Args:
        input_shape: `(height, width, 3)`; height and width may be `None` for
            images of any size (the augmentation presets of `BarlowTwins` need
            them fixed).
        stem: `"imagenet"` (7x7 stride-2 convolution and 3x3 stride-2 max-pool)
            or `"cifar"` (3x3 stride-1 convolution, no pooling).
        zero_init_residual: start the last batch normalization of every residual
            branch with gamma 0, so that every block first passes on its
            shortcut alone (Goyal et al., 2017; the paper's ResNet-50 does).
        sync_batch_norm: synchronize batch statistics across replicas. `None`
            synchronizes when the model is built inside a `tf.distribute`
            strategy scope with more than one replica, which keeps training on R
            replicas equal to training on one. TensorFlow only: on JAX,
            `keras.distribution.DataParallel` normalizes with the statistics of
            the global batch anyway.
        name: name of the model.

    Returns:
        A functional `keras.Model` from normalized float images `(B, H, W, 3)`
        to float features `(B, 512)` (the compute dtype of the dtype policy).

    Example:

    >>> encoder = ResNet18((32, 32, 3), stem="cifar")
    >>> encoder(tf.zeros((2, 32, 32, 3))).shape
    TensorShape([2, 512])
    """
    return _build_resnet(
        "resnet18", input_shape, stem, zero_init_residual, sync_batch_norm, name
    )


def ResNet34(
    input_shape=(224, 224, 3),
    stem="imagenet",
    zero_init_residual=True,
    sync_batch_norm=None,
    name="resnet34",
):
    """ResNet-34 encoder: images `(B, H, W, 3)` to pooled features `(B, 512)`.

    Args and returns: as `ResNet18`.

    Example:

    >>> encoder = ResNet34((64, 64, 3))
    >>> encoder.output_shape
    (None, 512)
    """
    return _build_resnet(
        "resnet34", input_shape, stem, zero_init_residual, sync_batch_norm, name
    )


def ResNet50(
    input_shape=(224, 224, 3),
    stem="imagenet",
    zero_init_residual=True,
    sync_batch_norm=None,
    name="resnet50",
):
    """ResNet-50 encoder of the paper: images `(B, H, W, 3)` to features `(B, 2048)`.

    Bottleneck blocks with the stride on the 3x3 convolution (torchvision's
    ResNet-50); 23,508,032 trainable parameters.

    Args and returns: as `ResNet18`, with 2048 features.

    Example:

    >>> encoder = ResNet50()
    >>> encoder.output_shape
    (None, 2048)
    """
    return _build_resnet(
        "resnet50", input_shape, stem, zero_init_residual, sync_batch_norm, name
    )


def _build_resnet(
    architecture, input_shape, stem, zero_init_residual, sync_batch_norm, name
):
    block_type, depths = ARCHITECTURES[architecture]
    input_shape = _check_input_shape(input_shape, stem, architecture)
    options = {
        "zero_init_residual": bool(zero_init_residual),
        "synchronized": _resolve_sync_batch_norm(sync_batch_norm),
    }
    block = _basic_block if block_type == "basic" else _bottleneck_block

    images = keras.Input(shape=input_shape, name="images")
    x = _stem(images, STEMS[stem], options)
    stages = zip(STAGE_WIDTHS, depths, strict=True)
    for stage, (width, depth) in enumerate(stages, start=1):
        for index in range(1, depth + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = block(x, width, strides, options, name=f"stage{stage}_block{index}")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name=name)


def _stem(images, stem, options):
    x = _conv(images, 64, stem["kernel_size"], stem["strides"], name="stem_conv")
    x = _batch_norm(x, options, name="stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem["max_pool"]:
        # Zero padding equals PyTorch's -inf padding here: the inputs are >= 0.
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def _basic_block(x, width, strides, options, name):
    shortcut = _shortcut(x, width, strides, options, name)
    y = _conv(x, width, 3, strides, name=f"{name}_conv1")
    y = _batch_norm(y, options, name=f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, width, 3, 1, name=f"{name}_conv2")
    y = _batch_norm(y, options, name=f"{name}_bn2", last_in_block=True)
    return _merge(y, shortcut, name)


def _bottleneck_block(x, width, strides, options, name):
    shortcut = _shortcut(x, width * BOTTLENECK_EXPANSION, strides, options, name)
    y = _conv(x, width, 1, 1, name=f"{name}_conv1")
    y = _batch_norm(y, options, name=f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, width, 3, strides, name=f"{name}_conv2")
    y = _batch_norm(y, options, name=f"{name}_bn2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(y, width * BOTTLENECK_EXPANSION, 1, 1, name=f"{name}_conv3")
    y = _batch_norm(y, options, name=f"{name}_bn3", last_in_block=True)
    return _merge(y, shortcut, name)


def _shortcut(x, channels, strides, options, name):
    """Identity, or a 1x1 convolution and batch norm where the shape changes."""
    if strides == 1 and x.shape[-1] == channels:
        return x
    x = _conv(x, channels, 1, strides, name=f"{name}_shortcut_conv")
    return _batch_norm(x, options, name=f"{name}_shortcut_bn")


def _merge(residual, shortcut, name):
    x = keras.layers.Add(name=f"{name}_add")([residual, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _conv(x, filters, kernel_size, strides, name):
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=_CONV_INITIALIZER,
        name=name,
    )(x)


def _batch_norm(x, options, name, last_in_block=False):
    zero_gamma = last_in_block and options["zero_init_residual"]
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        synchronized=options["synchronized"],
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def _resolve_sync_batch_norm(sync_batch_norm):
    if sync_batch_norm is None:
        return _backend.num_replicas() > 1
    if not isinstance(sync_batch_norm, bool):
        raise TypeError(
            "`sync_batch_norm` must be True, False or None (automatic). "
            f"Received: sync_batch_norm={sync_batch_norm!r}"
        )
    if sync_batch_norm and _backend.BACKEND != "tensorflow":
        raise ValueError(
            "sync_batch_norm=True needs Keras' TensorFlow backend. On JAX, "
            "`keras.distribution.DataParallel` already normalizes with the "
            "statistics of the global batch: pass sync_batch_norm=None."
        )
    return sync_batch_norm


def _check_input_shape(input_shape, stem, architecture):
    if stem not in STEMS:
        raise ValueError(
            f"`stem` must be one of {sorted(STEMS)}. Received: stem={stem!r}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            "`input_shape` must be (height, width, 3) for RGB images. "
            f"Received: input_shape={input_shape}"
        )
    smallest = STEMS[stem]["downsampling"]
    for side in input_shape[:2]:
        if side is not None and side < smallest:
            raise ValueError(
                f"{architecture} with stem={stem!r} downsamples by {smallest}, so "
                f"height and width must be at least {smallest}. Received: "
                f"input_shape={input_shape}. Use larger images"
                + (" or stem='cifar'." if stem == "imagenet" else ".")
            )
    return input_shape


def convnet(input_shape=(32, 32, 3), width=32, sync_batch_norm=None, name="convnet"):
    """A small encoder for CPUs: 4 x (3x3 convolution, batch norm, ReLU), pooled.

    The widths are `width`, 2x, 4x and 8x; the last three convolutions have stride
    2. With `width=32`: 388,896 trainable parameters and, at 32x32, 15 M
    multiply-adds per image (the CIFAR ResNet-18: 11.2 M and 0.56 G). For trying
    the method out on a CPU, not for results.

    Args:
        input_shape: `(height, width, 3)`; any sizes, `None` included.
        width: int, channels of the first convolution.
        sync_batch_norm: synchronize the batch statistics across replicas; `None`
            does so when built under a strategy of several replicas.
        name: the model's name.

    Returns:
        A functional `keras.Model` from normalized float images `(B, H, W, 3)` to
        features `(B, 8 * width)`.

    Example:

    >>> encoder = convnet((32, 32, 3))
    >>> encoder.output_shape
    (None, 256)
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            "`input_shape` must be (height, width, 3) for RGB images. "
            f"Received: input_shape={input_shape}"
        )
    sync = _resolve_sync_batch_norm(sync_batch_norm)
    images = keras.Input(input_shape, name="images")
    x = images
    for index, strides in enumerate((1, 2, 2, 2)):
        x = keras.layers.Conv2D(
            width * 2**index,
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"conv{index}",
        )(x)
        x = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            synchronized=sync,
            name=f"bn{index}",
        )(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name=name)


def encoder_input_shape(encoder):
    """An encoder's input shape, or None when Keras does not know it.

    A subclassed model that was never called has none; a multi-input model gives
    a list of shapes.
    """
    try:
        return encoder.input_shape
    except (AttributeError, ValueError):
        return None


def encoder_image_size(encoder):
    """The fixed `(height, width)` of an image encoder's input, or None if not fixed."""
    shape = encoder_input_shape(encoder)
    if not isinstance(shape, tuple) or len(shape) != 4 or None in shape[1:3]:
        return None
    return tuple(shape[1:3])
