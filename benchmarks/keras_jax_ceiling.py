"""What the recipe's network costs on a GPU that has JAX but no TensorFlow.

keras_barlow runs on TensorFlow. The GPU machines this project is lent carry
JAX and no TensorFlow, and TensorFlow's GPU build with its CUDA 12 libraries
(over 2 GB) cannot be taken there. This script measures, on such a machine, the
ceiling that no Keras implementation of the recipe can beat on that GPU: Keras 3
on JAX, `keras.applications.ResNet50` (no weights) plus the 8192x3 projector,
trained with SGD on views already on the device, with the Barlow Twins loss
(forms C). There is no augmentation and no input pipeline in it. It is not a
measurement of keras_barlow.

It also measures how far the cross-correlation matrix of the loss moves when
float32 matrix products run at the GPU's default precision (TF32 on Ampere and
newer GPUs, which TensorFlow also enables by default) instead of full float32.

Each measurement prints one JSON line. Usage:

    KERAS_BACKEND=jax python benchmarks/keras_jax_ceiling.py
    KERAS_BACKEND=jax python benchmarks/keras_jax_ceiling.py --policies \\
        mixed_bfloat16 --batch_size 256 --image_size 224 --steps 20
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

LAMBD = 0.0051


def make_flags(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["mixed_bfloat16", "float32"])
    parser.add_argument("--batch_size", type=int, default=256, help="image pairs")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--projector", type=int, nargs="+", default=[8192] * 3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision_dims", type=int, nargs=2, default=[256, 8192])
    return parser.parse_args(argv)


def build_network(image_size, projector_dims):
    """ResNet-50 features `(B, 2048)` then the paper's projector `(B, D)`."""
    images = keras.Input((image_size, image_size, 3))
    x = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_tensor=images
    ).output
    for dim in projector_dims[:-1]:
        x = keras.layers.Dense(dim, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Dense(projector_dims[-1], use_bias=False, dtype="float32")(x)
    return keras.Model(images, x)


def standardized(z):
    z = ops.cast(z, "float32")
    mean = ops.mean(z, axis=0)
    return (z - mean) / ops.sqrt(ops.var(z, axis=0) + 1e-5)


def barlow_twins_loss(z1, z2):
    c = ops.matmul(ops.transpose(standardized(z1)), standardized(z2))
    c = c / ops.cast(ops.shape(z1)[0], "float32")
    diagonal = ops.diagonal(c)
    on_diag = ops.sum(ops.square(diagonal - 1.0))
    off_diag = ops.sum(ops.square(c)) - ops.sum(ops.square(diagonal))
    return on_diag + LAMBD * off_diag


def make_train_step(model, optimizer):
    def loss_fn(trainable, non_trainable, view1, view2):
        z1, non_trainable = model.stateless_call(
            trainable, non_trainable, view1, training=True
        )
        z2, non_trainable = model.stateless_call(
            trainable, non_trainable, view2, training=True
        )
        return barlow_twins_loss(z1, z2), non_trainable

    gradient_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(state, view1, view2):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), gradients = gradient_fn(
            trainable, non_trainable, view1, view2
        )
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        return loss, (trainable, non_trainable, optimizer_variables)

    return train_step


def time_training(flags, policy):
    keras.config.set_dtype_policy(policy)
    model = build_network(flags.image_size, flags.projector)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    train_step = make_train_step(model, optimizer)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    shape = (flags.batch_size, flags.image_size, flags.image_size, 3)
    view1, view2 = jax.random.normal(jax.random.key(0), (2, *shape))

    start = time.perf_counter()
    loss, state = train_step(state, view1, view2)
    loss.block_until_ready()
    first_step_s = time.perf_counter() - start
    round_times = []
    for _ in range(flags.rounds):
        start = time.perf_counter()
        for _ in range(flags.steps):
            loss, state = train_step(state, view1, view2)
        loss.block_until_ready()
        round_times.append((time.perf_counter() - start) / flags.steps)
    step_s = statistics.median(round_times)
    keras.config.set_dtype_policy("float32")
    return {
        "policy": policy,
        "first_step_s": round(first_step_s, 1),
        "step_s_rounds": [round(t, 5) for t in round_times],
        "step_s": round(step_s, 5),
        "image_pairs_per_s": round(flags.batch_size / step_s, 1),
        "loss_finite": bool(np.isfinite(float(loss))),
    }


def cross_correlation_precision(batch_size, dim):
    """Errors of C and of the loss against float64, at three matmul precisions.

    "default" is what float32 products get when nothing is asked for.
    """
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((batch_size, dim))
    z1 = shared + 0.5 * rng.standard_normal((batch_size, dim))
    z2 = shared + 0.5 * rng.standard_normal((batch_size, dim))
    a, b = ((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) for z in (z1, z2))
    reference = a.T @ b / batch_size
    reference_loss = float(
        np.sum((np.diag(reference) - 1) ** 2)
        + LAMBD * (np.sum(reference**2) - np.sum(np.diag(reference) ** 2))
    )
    errors = {}
    for precision in ("default", "tensorfloat32", "float32"):
        with jax.default_matmul_precision(precision):
            c = np.asarray(
                jax.jit(lambda x, y: x.T @ y / batch_size)(
                    a.astype(np.float32), b.astype(np.float32)
                ),
                np.float64,
            )
            loss = float(
                barlow_twins_loss(z1.astype(np.float32), z2.astype(np.float32))
            )
        errors[precision] = {
            "c_relative_error": float(
                np.linalg.norm(c - reference) / np.linalg.norm(reference)
            ),
            "c_max_abs_error": float(np.max(np.abs(c - reference))),
            "loss_relative_error": abs(loss - reference_loss) / reference_loss,
        }
    return errors


def emit(record):
    record.update(
        device=jax.devices()[0].device_kind,
        jax=jax.__version__,
        keras=keras.__version__,
        python=platform.python_version(),
    )
    print(json.dumps(record), flush=True)


def main(argv=None):
    flags = make_flags(argv)
    batch_size, dim = flags.precision_dims
    emit(
        {
            "benchmark": "cross_correlation_precision",
            "batch_size": batch_size,
            "dim": dim,
            **cross_correlation_precision(batch_size, dim),
        }
    )
    for policy in flags.policies:
        emit(
            {
                "benchmark": "keras_jax_ceiling",
                "batch_size": flags.batch_size,
                "image_size": flags.image_size,
                "projector": flags.projector,
                "steps": flags.steps,
                **time_training(flags, policy),
            }
        )


if __name__ == "__main__":
    main()
