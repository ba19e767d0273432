import numpy as np
import pytest
import tensorflow as tf

from keras_barlow import losses


def numpy_terms(z1, z2, eps=1e-5):
    """The paper's pseudo-code in float64 NumPy."""
    z1 = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
    z2 = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    c = z1.T @ z2 / len(z1)
    on_diag = ((1.0 - np.diag(c)) ** 2).sum()
    off_diag = (c**2).sum() - (np.diag(c) ** 2).sum()
    return c, on_diag, off_diag


def correlated_pair(n, d, seed=0):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    z2 = z1 + 0.5 * rng.normal(size=(n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize("method", ["cross_correlation", "gram", "auto"])
@pytest.mark.parametrize("n, d", [(64, 128), (32, 8192)])
def test_loss_matches_numpy(n, d, method):
    z1, z2 = correlated_pair(n, d)
    _, on_diag, off_diag = numpy_terms(z1.astype(np.float64), z2.astype(np.float64))
    expected = 0.5 * (on_diag + 0.0051 * off_diag)
    loss = losses.barlow_twins_loss(z1, z2, lambd=0.0051, scale_loss=0.5, method=method)
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_terms_match_numpy():
    z1, z2 = correlated_pair(48, 96, seed=1)
    _, on_diag, off_diag = numpy_terms(z1.astype(np.float64), z2.astype(np.float64))
    got_on, got_off = losses.barlow_twins_terms(z1, z2)
    np.testing.assert_allclose(
        [float(got_on), float(got_off)], [on_diag, off_diag], rtol=1e-4
    )


def test_cross_correlation_matches_numpy():
    z1, z2 = correlated_pair(40, 24, seed=2)
    expected, _, _ = numpy_terms(z1.astype(np.float64), z2.astype(np.float64))
    np.testing.assert_allclose(
        losses.cross_correlation(z1, z2).numpy(), expected, atol=1e-5
    )


def test_identical_views_have_unit_diagonal():
    z, _ = correlated_pair(128, 16, seed=3)
    c = losses.cross_correlation(z, z).numpy()
    np.testing.assert_allclose(np.diag(c), 1.0, atol=1e-4)


@pytest.mark.parametrize("n, d", [(16, 256), (200, 64)])
def test_gram_and_cross_correlation_paths_agree_in_value_and_gradient(n, d):
    z1, z2 = correlated_pair(n, d, seed=4)
    results = {}
    for method in ("cross_correlation", "gram"):
        v1, v2 = tf.Variable(z1), tf.Variable(z2)
        with tf.GradientTape() as tape:
            loss = losses.barlow_twins_loss(v1, v2, method=method)
        results[method] = (
            loss.numpy(),
            *[g.numpy() for g in tape.gradient(loss, [v1, v2])],
        )
    pairs = zip(results["gram"], results["cross_correlation"], strict=True)
    for got, expected in pairs:
        np.testing.assert_allclose(
            got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
        )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    z1, z2 = correlated_pair(32, 64, seed=5)
    low1, low2 = tf.cast(z1, dtype), tf.cast(z2, dtype)
    loss = losses.barlow_twins_loss(low1, low2)
    reference = losses.barlow_twins_loss(
        tf.cast(low1, tf.float32), tf.cast(low2, tf.float32)
    )
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(float(loss), float(reference), rtol=1e-6)


def test_float64_inputs_are_computed_in_float64():
    z1, z2 = correlated_pair(32, 64, seed=5)
    _, on_diag, off_diag = numpy_terms(z1.astype(np.float64), z2.astype(np.float64))
    loss = losses.barlow_twins_loss(z1.astype(np.float64), z2.astype(np.float64))
    assert loss.dtype == tf.float64
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


def test_works_inside_tf_function():
    z1, z2 = correlated_pair(32, 64, seed=7)
    eager = losses.barlow_twins_loss(z1, z2)
    graph = tf.function(losses.barlow_twins_loss)(z1, z2)
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
