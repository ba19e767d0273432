import keras
import numpy as np
import pytest
from conftest import numpy_barlow_twins_terms, to_numpy, value_and_gradients

from keras_barlow import losses

pytestmark = pytest.mark.core

BACKEND = keras.backend.backend()


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def compiled(fn):
    """`fn` compiled as the backend's train step is: tf.function or jax.jit."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def correlated_pair(n, d, seed=0):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    z2 = z1 + 0.5 * rng.normal(size=(n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize("method", ["cross_correlation", "gram", "auto"])
@pytest.mark.parametrize("n, d", [(64, 128), (32, 8192)])
def test_loss_matches_numpy(n, d, method):
    z1, z2 = correlated_pair(n, d)
    _, on_diag, off_diag = numpy_barlow_twins_terms(
        z1.astype(np.float64), z2.astype(np.float64)
    )
    expected = 0.5 * (on_diag + 0.0051 * off_diag)
    loss = losses.barlow_twins_loss(z1, z2, lambd=0.0051, scale_loss=0.5, method=method)
    assert dtype_of(loss) == "float32"
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_terms_match_numpy():
    z1, z2 = correlated_pair(48, 96, seed=1)
    _, on_diag, off_diag = numpy_barlow_twins_terms(
        z1.astype(np.float64), z2.astype(np.float64)
    )
    got_on, got_off = losses.barlow_twins_terms(z1, z2)
    np.testing.assert_allclose(
        [float(got_on), float(got_off)], [on_diag, off_diag], rtol=1e-4
    )


def test_cross_correlation_matches_numpy():
    z1, z2 = correlated_pair(40, 24, seed=2)
    expected, _, _ = numpy_barlow_twins_terms(
        z1.astype(np.float64), z2.astype(np.float64)
    )
    np.testing.assert_allclose(
        to_numpy(losses.cross_correlation(z1, z2)), expected, atol=1e-5
    )


def test_identical_views_have_unit_diagonal():
    z, _ = correlated_pair(128, 16, seed=3)
    c = to_numpy(losses.cross_correlation(z, z))
    np.testing.assert_allclose(np.diag(c), 1.0, atol=1e-4)


def pair_with_degenerate_dimensions(n=64, d=16, seed=8):
    """A correlated pair with one dimension of tiny variance and one constant.

    Dimension 0 varies by about 1e-3 (variance about 1e-6, a tenth of the default
    epsilon) and dimension 1 not at all, as dead or collapsed units of a projector
    do: there epsilon decides the normalized values (and keeps them finite).
    """
    rng = np.random.default_rng(seed)
    z1, z2 = correlated_pair(n, d, seed)
    tiny = 1e-3 * rng.normal(size=n)
    z1[:, 0], z2[:, 0] = tiny, tiny + 0.5e-3 * rng.normal(size=n)
    z1[:, 1], z2[:, 1] = 2.0, 2.0
    return z1, z2


@pytest.mark.parametrize("method", ["cross_correlation", "gram"])
@pytest.mark.parametrize("epsilon", [None, 1e-3])  # None: the default, 1e-5
def test_epsilon_is_that_of_the_paper_where_it_matters(method, epsilon):
    z1, z2 = pair_with_degenerate_dimensions()
    eps = 1e-5 if epsilon is None else epsilon
    z1_64, z2_64 = z1.astype(np.float64), z2.astype(np.float64)
    c, on_diag, off_diag = numpy_barlow_twins_terms(z1_64, z2_64, eps)
    expected = on_diag + 0.0051 * off_diag
    # Epsilon matters here: a much smaller one changes the loss by more than 10%.
    _, on_tiny, off_tiny = numpy_barlow_twins_terms(z1_64, z2_64, 1e-12)
    assert abs(on_tiny + 0.0051 * off_tiny - expected) > 0.1 * expected
    kwargs = {} if epsilon is None else {"epsilon": epsilon}
    loss = losses.barlow_twins_loss(z1, z2, method=method, **kwargs)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    got_c = np.asarray(to_numpy(losses.cross_correlation(z1, z2, **kwargs)), np.float64)
    np.testing.assert_allclose(got_c, c, atol=1e-5)


@pytest.mark.parametrize("n, d", [(16, 256), (200, 64)])
def test_gram_and_cross_correlation_paths_agree_in_value_and_gradient(n, d):
    z1, z2 = correlated_pair(n, d, seed=4)
    variables = [keras.Variable(z) for z in (z1, z2)]
    results = {}
    for method in ("cross_correlation", "gram"):
        loss, gradients = value_and_gradients(
            lambda method=method: losses.barlow_twins_loss(*variables, method=method),
            variables,
        )
        results[method] = [to_numpy(value) for value in (loss, *gradients)]
    pairs = zip(results["gram"], results["cross_correlation"], strict=True)
    for got, expected in pairs:
        np.testing.assert_allclose(
            got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
        )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    z1, z2 = correlated_pair(32, 64, seed=5)
    low1, low2 = keras.ops.cast(z1, dtype), keras.ops.cast(z2, dtype)
    loss = losses.barlow_twins_loss(low1, low2)
    reference = losses.barlow_twins_loss(
        keras.ops.cast(low1, "float32"), keras.ops.cast(low2, "float32")
    )
    assert dtype_of(loss) == "float32"
    np.testing.assert_allclose(float(loss), float(reference), rtol=1e-6)


@pytest.mark.tensorflow_only  # Keras on JAX maps float64 to float32
def test_float64_inputs_are_computed_in_float64():
    z1, z2 = correlated_pair(32, 64, seed=5)
    _, on_diag, off_diag = numpy_barlow_twins_terms(
        z1.astype(np.float64), z2.astype(np.float64)
    )
    loss = losses.barlow_twins_loss(z1.astype(np.float64), z2.astype(np.float64))
    assert dtype_of(loss) == "float64"
    np.testing.assert_allclose(float(loss), on_diag + 0.0051 * off_diag, rtol=1e-12)


def test_perfectly_invariant_decorrelated_embeddings_have_zero_loss():
    # Zero-mean, orthogonal columns of equal norm: C is the identity.
    basis = np.concatenate(
        [np.ones((64, 1)), np.random.default_rng(6).normal(size=(64, 32))], 1
    )
    q, _ = np.linalg.qr(basis)
    z = (8.0 * q[:, 1:]).astype(np.float32)
    assert float(losses.barlow_twins_loss(z, z)) < 1e-6


def test_choose_method():
    assert losses.choose_method(256, 8192) == "gram"
    assert losses.choose_method(4096, 8192) == "cross_correlation"
    assert losses.choose_method(None, 8192) == "cross_correlation"


def test_works_inside_a_compiled_function():  # tf.function on TF, jax.jit on JAX
    z1, z2 = correlated_pair(32, 64, seed=7)
    eager = losses.barlow_twins_loss(z1, z2)
    graph = compiled(losses.barlow_twins_loss)(z1, z2)
    np.testing.assert_allclose(float(graph), float(eager), rtol=1e-6)


@pytest.mark.parametrize(
    "z1, z2, message",
    [
        (
            np.zeros((4, 2, 3), np.float32),
            np.zeros((4, 2, 3), np.float32),
            "batch_size, dim",
        ),
        (np.zeros((4, 3), np.float32), np.zeros((4, 5), np.float32), "same shape"),
        (
            np.zeros((1, 3), np.float32),
            np.zeros((1, 3), np.float32),
            "at least 2 samples",
        ),
        (np.zeros((4, 3), np.int32), np.zeros((4, 3), np.int32), "floating point"),
    ],
)
def test_bad_embeddings_raise_clear_errors(z1, z2, message):
    with pytest.raises(ValueError, match=message):
        losses.barlow_twins_loss(z1, z2)


def test_unknown_method_raises():
    z1, z2 = correlated_pair(8, 4)
    with pytest.raises(ValueError, match="Received: method='fast'"):
        losses.barlow_twins_loss(z1, z2, method="fast")


def test_a_negative_lambd_is_refused():
    # With lambd < 0 the loss is unbounded below: the off-diagonal term would be
    # rewarded. Refused by the loss and by the model.
    z1, z2 = correlated_pair(8, 4)
    with pytest.raises(ValueError, match="`lambd` must be >= 0. Received: lambd=-0.1"):
        losses.barlow_twins_loss(z1, z2, lambd=-0.1)
    from conftest import tiny_encoder

    from keras_barlow import BarlowTwins

    with pytest.raises(ValueError, match="Received: lambd=-1"):
        BarlowTwins(tiny_encoder(8), projector_dims=(4,), lambd=-1)
    assert float(losses.barlow_twins_loss(z1, z2, lambd=0.0)) >= 0.0


@pytest.mark.tensorflow_only
def test_a_batch_of_one_is_refused_at_run_time_when_its_size_is_not_static():
    import tensorflow as tf

    loss = tf.function(
        losses.barlow_twins_loss,
        input_signature=[tf.TensorSpec([None, 8], tf.float32)] * 2,
    )
    z1, z2 = correlated_pair(4, 8)
    assert np.isfinite(float(loss(z1, z2)))  # the same graph, a valid batch
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2 samples"):
        loss(z1[:1], z2[:1])  # would return D = 8.0 without the check
