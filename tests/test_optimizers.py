"""LARS against an independent NumPy implementation of the paper's update rule."""

import keras
import numpy as np
import pytest
from conftest import round_trip, to_numpy, value_and_gradients

from keras_barlow.optimizers import LARS
from keras_barlow.schedules import WarmupCosine

pytestmark = pytest.mark.core

BACKEND = keras.backend.backend()

# Large enough for weight decay and the trust ratio to change float32 results.
LEARNING_RATE = 0.5
MOMENTUM = 0.9
WEIGHT_DECAY = 0.05
ETA = 0.3
STEPS = 5

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 4)).astype("float32")
Y = RNG.normal(size=(8, 3)).astype("float32")
KERNEL = (0.5 * RNG.normal(size=(4, 3))).astype("float32")
BIAS = np.zeros(3, "float32")  # the first step meets |w| = 0


def numpy_gradients(weights):
    """Gradients of 0.5 * mean_n |x W + b - y|^2 with respect to (W, b)."""
    kernel, bias = weights
    residual = (X @ kernel + bias - Y) / len(X)
    return [X.T @ residual, residual.sum(axis=0)]


def numpy_lars(steps, decays, adapts, rate_factors, learning_rate=LEARNING_RATE):
    """The update of facebookresearch/barlowtwins main.py LARS.step, in float64."""
    weights = [KERNEL.astype("float64"), BIAS.astype("float64")]
    mus = [np.zeros_like(w) for w in weights]
    for _ in range(steps):
        gradients = numpy_gradients(weights)
        for i, gradient in enumerate(gradients):
            w = weights[i]
            if decays[i]:
                gradient = gradient + WEIGHT_DECAY * w
            if adapts[i]:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(gradient)
                ratio = ETA * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
                gradient = gradient * ratio
            mus[i] = MOMENTUM * mus[i] + gradient
            weights[i] = w - learning_rate * rate_factors[i] * mus[i]
    return weights


def make_dense():
    layer = keras.layers.Dense(3, name="dense")
    layer.build((None, 4))
    layer.set_weights([KERNEL, BIAS])
    return layer


def loss_of(layer, x, y):
    return 0.5 * keras.ops.sum(keras.ops.square(layer(x) - y)) / len(X)


def apply(optimizer, gradients, variables):
    """One optimizer step, as the backend's trainer takes it.

    `apply` on TensorFlow; on JAX the trainer's `stateless_apply` (a stateful
    `LossScaleOptimizer.apply` cannot run outside a traced step there: its
    `ops.cond` would leak tracers), then the new values are assigned.
    """
    if BACKEND != "jax":
        return optimizer.apply(gradients, variables)
    if not optimizer.built:
        optimizer.build(variables)
    new_values, new_state = optimizer.stateless_apply(
        [v.value for v in optimizer.variables],
        gradients,
        [v.value for v in variables],
    )
    for variable, value in zip(variables, new_values, strict=True):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, new_state, strict=True):
        variable.assign(value)


def train(optimizer, steps=STEPS):
    layer = make_dense()
    for _ in range(steps):
        _, gradients = value_and_gradients(
            lambda: optimizer.scale_loss(loss_of(layer, X, Y)),
            layer.trainable_variables,
        )
        apply(optimizer, gradients, layer.trainable_variables)
    return [to_numpy(variable) for variable in layer.trainable_variables]


def lars(**kwargs):
    return LARS(
        LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, eta=ETA, **kwargs
    )


# (LARS arguments, then per (kernel, bias): weight decay?, trust ratio?, lr factor).
CASES = {
    "default: ndim <= 1 excluded": ({}, (True, False), (True, False), (1.0, 1.0)),
    "no exclusions": (
        dict(exclude_from_weight_decay=[], exclude_from_adaptation=[]),
        (True, True),
        (True, True),
        (1.0, 1.0),
    ),
    "exclusions by name replace the rule": (
        dict(exclude_from_weight_decay=["kernel"], exclude_from_adaptation=["bias$"]),
        (False, True),
        (True, False),
        (1.0, 1.0),
    ),
    "bias learning rate multiplier": (
        dict(bias_learning_rate_multiplier=0.0048 / 0.2),
        (True, False),
        (True, False),
        (1.0, 0.024),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_numpy_reference(case):
    kwargs, decays, adapts, rate_factors = CASES[case]
    expected = numpy_lars(STEPS, decays, adapts, rate_factors)
    for got, want in zip(train(lars(**kwargs)), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_keras_exclude_from_weight_decay_method_adds_exclusions():
    optimizer = lars()
    optimizer.exclude_from_weight_decay(var_names=["kernel"])
    expected = numpy_lars(STEPS, (False, False), (True, False), (1.0, 1.0))
    for got, want in zip(train(optimizer), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_reference_cases_are_distinguishable():
    # The tolerance of the tests above is far below the effect of each option.
    results = [numpy_lars(STEPS, *CASES[case][1:]) for case in CASES]
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            pairs = zip(results[i], results[j], strict=True)
            difference = max(np.abs(a - b).max() for a, b in pairs)
            assert difference > 1e-3


def test_schedule_drives_the_learning_rate():
    schedule = WarmupCosine(LEARNING_RATE, total_steps=STEPS, warmup_steps=2)
    optimizer = LARS(schedule, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, eta=ETA)
    layer_weights = train(optimizer, steps=1)
    # Step 0 of the warm-up has learning rate 0: nothing moves.
    np.testing.assert_array_equal(layer_weights[0], KERNEL)
    np.testing.assert_allclose(
        float(optimizer.learning_rate), LEARNING_RATE / 2, rtol=1e-6
    )


@pytest.mark.tensorflow_only  # tf.distribute.MirroredStrategy, tf.data
def test_mirrored_strategy_step_equals_single_device_step(mirrored_strategy):
    import tensorflow as tf

    strategy = mirrored_strategy
    with strategy.scope():
        layer = make_dense()
        optimizer = lars(bias_learning_rate_multiplier=0.5)
        optimizer.build(layer.trainable_variables)

    @tf.function
    def distributed_step(x, y):
        def replica_step(x, y):
            # The local sum over the global batch size: Keras sums the replicas'
            # gradients, which gives the gradient of the global batch's loss.
            with tf.GradientTape() as tape:
                loss = loss_of(layer, x, y)
            gradients = tape.gradient(loss, layer.trainable_variables)
            optimizer.apply(gradients, layer.trainable_variables)

        strategy.run(replica_step, args=(x, y))

    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((X, Y)).batch(len(X)).repeat(3)
    )
    for x, y in batches:
        distributed_step(x, y)

    single_device = train(lars(bias_learning_rate_multiplier=0.5), steps=3)
    for variable, expected in zip(
        layer.trainable_variables, single_device, strict=True
    ):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        layer.trainable_variables[0].numpy(),
        numpy_lars(3, (True, False), (True, False), (1.0, 0.5))[0],
        rtol=0,
        atol=1e-6,
    )


def test_inside_loss_scale_optimizer():
    optimizer = keras.optimizers.LossScaleOptimizer(lars())
    expected = numpy_lars(STEPS, *CASES["default: ndim <= 1 excluded"][1:])
    for got, want in zip(train(optimizer), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    # A non-finite gradient is skipped: LARS's weights and momentum stay as they are.
    variables = optimizer.inner_optimizer._trainable_variables
    before = [to_numpy(v) for v in optimizer.inner_optimizer.variables]
    apply(
        optimizer, [np.full(v.shape, np.inf, "float32") for v in variables], variables
    )
    after = [to_numpy(v) for v in optimizer.inner_optimizer.variables]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_config_round_trip():
    optimizer = LARS(
        WarmupCosine(0.4, total_steps=100, warmup_steps=10, end_factor=0.01),
        momentum=0.8,
        weight_decay=1e-4,
        eta=0.02,
        exclude_from_weight_decay=["bias"],
        exclude_from_adaptation=[],
        bias_learning_rate_multiplier=0.5,
        clipnorm=1.0,
    )
    restored = round_trip(optimizer)
    assert type(restored) is LARS
    assert restored.get_config() == optimizer.get_config()
    assert restored.get_config()["exclude_from_adaptation"] == []
    assert isinstance(restored._learning_rate, WarmupCosine)
    assert restored._learning_rate.get_config() == optimizer._learning_rate.get_config()


def test_saved_model_restores_optimizer_state(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=lars(exclude_from_weight_decay=["kernel"]), loss="mse")
    model.fit(X, Y, epochs=2, verbose=0)
    restored = round_trip(model, tmp_path / "model.keras")
    assert isinstance(restored.optimizer, LARS)
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    pairs = zip(model.optimizer.variables, restored.optimizer.variables, strict=True)
    for saved, loaded in pairs:
        np.testing.assert_array_equal(to_numpy(saved), to_numpy(loaded))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(weight_decay=-1e-6), "weight_decay"),
        (dict(eta=0.0), "eta"),
        (dict(bias_learning_rate_multiplier=-1.0), "bias_learning_rate_multiplier"),
        (dict(exclude_from_weight_decay="bias"), "exclude_from_weight_decay"),
        (dict(exclude_from_adaptation=["("]), "exclude_from_adaptation"),
        (dict(learning_rate=-1.0), "Received: learning_rate=-1.0"),
        (dict(learning_rate=float("nan")), "Received: learning_rate=nan"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LARS(**{"learning_rate": 0.1, **kwargs})
