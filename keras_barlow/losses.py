"""The Barlow Twins loss (Zbontar et al., 2021), exact for the global batch.

The loss reads like the paper: normalize each embedding dimension along the batch,
take the cross-correlation matrix `C = z1n^T z2n / N` and push it towards the identity:

    loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2

Two facts make this module more than those three lines:

* The batch statistics and `C` are those of the *global* batch, so training on R
  devices is the same algorithm as training on one. On JAX
  (`keras.distribution.DataParallel`) the step sees the global batch as one
  sharded array and nothing more is needed. Inside a replica context of a
  `tf.distribute` strategy the statistics and `C` are reduced across replicas;
  every replica gets the same scalar (see `BarlowTwins.train_step` for the
  matching gradient scaling).
* `sum_ij C_ij^2` does not need `C`. With `G1 = z1n z1n^T` and `G2 = z2n z2n^T`
  (both N x N), `sum_ij C_ij^2 = sum_ab G1_ab G2_ab / N^2`: O(N^2 D) instead of
  O(N D^2) time and O(N^2) instead of O(D^2) memory. It is chosen automatically when
  the global batch is small compared with the embedding size.

Across R replicas, with n = N / R samples each, a step communicates:

* always, by all-reduce: the batch statistics (N, the two D-vectors of sums, then
  the two D-vectors of squared deviations) and the D diagonal entries of C;
* `"cross_correlation"`: the all-reduce of the D x D partial sums `z1n^T z2n`;
* `"gram"`: the all-gather of the 2 x N x D normalized embeddings (each replica
  then computes its own n rows of `G1` and `G2`) and the all-reduce of one scalar.

Both are exact. The Gram route moves `2 N D` numbers instead of `D^2` and does
`2 N^2 D` multiply-adds instead of `N D^2`, so `"auto"` takes it when `2 N < D`,
N being the *global* batch: the static per-replica batch times R, known when the
dataset is batched with `drop_remainder=True` (otherwise `"cross_correlation"`).
The backward pass mirrors this: the gradient of an all-reduce is an all-reduce,
that of an all-gather an all-reduce of the gathered gradient.

Every replica computes the same scalar, the loss of the global batch, so each
replica's gradient is R times its share: a training loop must divide the loss by
R before the optimizer sums the replicas' gradients (`BarlowTwins.train_step`
does).

"Exact" is about the algorithm, not the arithmetic: on Ampere and newer GPUs
TensorFlow and JAX run float32 products in TF32 by default, and entries of C are
then less accurate than in full float32 (README, "Mixed precision").
"""

from keras import backend, ops

from keras_barlow import _backend
from keras_barlow import _checks as checks

DEFAULT_LAMBD = 0.0051
BATCH_NORM_EPSILON = 1e-5
METHODS = ("auto", "cross_correlation", "gram")


def cross_correlation(z1, z2, epsilon=BATCH_NORM_EPSILON):
    """Cross-correlation matrix of two batches of embeddings.

    Each dimension is normalized along the batch as `BatchNorm1d(affine=False)` does
    in training (batch mean, biased variance, `epsilon`), then
    `C = z1n^T z2n / N`. Inside a distribution strategy's replica context, the
    statistics and the sum run over the global batch.

    Args:
        z1: embeddings of the first view, shape `(N, D)`, any float dtype.
        z2: embeddings of the second view, shape `(N, D)`, same dtype as `z1`.
        epsilon: added to the variance before the square root.

    Returns:
        float32 tensor of shape `(D, D)` (float64 for float64 inputs).

    Example:

    >>> z = np.random.default_rng(0).normal(size=(64, 128)).astype("float32")
    >>> c = cross_correlation(z, z)
    >>> tuple(c.shape)
    (128, 128)
    """
    z1n, z2n, n = normalize_along_batch(z1, z2, epsilon)
    return _backend.sum_across_replicas(ops.matmul(ops.transpose(z1n), z2n)) / n


def barlow_twins_terms(z1, z2, method="auto", epsilon=BATCH_NORM_EPSILON):
    """The two terms of the Barlow Twins loss, before weighting.

    Args:
        z1: embeddings of the first view, shape `(N, D)`, any float dtype.
        z2: embeddings of the second view, shape `(N, D)`.
        method: how `sum_ij C_ij^2` is computed: `"cross_correlation"` forms C
            (O(N D^2)), `"gram"` uses the N x N Gram matrices (O(N^2 D)) and
            `"auto"` picks the cheaper one from the global N and D.
        epsilon: batch-normalization epsilon.

    Returns:
        `(on_diag, off_diag)`, float32 scalars (float64 for float64 inputs):
        `sum_i (1 - C_ii)^2` and
        `sum_{i != j} C_ij^2`.
    """
    checks.choice("method", method, METHODS)
    z1n, z2n, n = normalize_along_batch(z1, z2, epsilon)
    diagonal = _backend.sum_across_replicas(ops.sum(z1n * z2n, axis=0)) / n  # D
    if method == "auto":
        method = choose_method(_global_batch_size(z1), z1.shape[-1])
    if method == "gram":
        squares = _sum_of_squares_from_gram(z1n, z2n, n)
    else:
        squares = _sum_of_squares_from_cross_correlation(z1n, z2n, n)
    on_diag = ops.sum(ops.square(1.0 - diagonal))
    off_diag = squares - ops.sum(ops.square(diagonal))
    return on_diag, off_diag


def barlow_twins_loss(
    z1,
    z2,
    lambd=DEFAULT_LAMBD,
    scale_loss=1.0,
    method="auto",
    epsilon=BATCH_NORM_EPSILON,
):
    """The Barlow Twins loss of two batches of embeddings.

    `scale_loss * (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2)` over the global
    batch inside a distribution strategy's replica context. It is computed in
    float32 for float16, bfloat16 and float32 inputs (with mixed precision the sums
    over N and D would overflow or lose precision in 16 bits), in float64 for
    float64 inputs.

    Args:
        z1: embeddings of the first view, shape `(N, D)`, any float dtype.
        z2: embeddings of the second view, shape `(N, D)`.
        lambd: weight of the redundancy-reduction (off-diagonal) term.
        scale_loss: overall factor (0.1 in the CIFAR recipe, 1 in the paper).
        method: see `barlow_twins_terms`.
        epsilon: batch-normalization epsilon.

    Returns:
        float32 scalar (float64 for float64 inputs).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> z1 = rng.normal(size=(32, 64)).astype("float32")
    >>> z2 = z1 + 0.1 * rng.normal(size=(32, 64)).astype("float32")
    >>> float(barlow_twins_loss(z1, z2)) > 0.0
    True
    """
    checks.non_negative("lambd", lambd)
    on_diag, off_diag = barlow_twins_terms(z1, z2, method=method, epsilon=epsilon)
    return scale_loss * (on_diag + lambd * off_diag)


def choose_method(global_batch_size, dim):
    """The cheaper exact way to compute `sum_ij C_ij^2` for N samples of D dims.

    Forming C costs about `N D^2` multiply-adds and moves a D x D matrix between
    replicas; the Gram route costs about `2 N^2 D` and moves the 2 x N x D
    embeddings, so it wins when `2 N < D`. Unknown sizes fall back to
    `"cross_correlation"`, whose memory does not depend on N.
    """
    if global_batch_size is None or dim is None:
        return "cross_correlation"
    return "gram" if 2 * global_batch_size < dim else "cross_correlation"


def normalize_along_batch(z1, z2, epsilon=BATCH_NORM_EPSILON):
    """Standardize each dimension of two embedding batches with global statistics.

    Args:
        z1, z2: `(n, D)` embeddings of this replica (n = N on a single device).
        epsilon: added to the biased variance.

    Returns:
        `(z1n, z2n, N)`: `(n, D)` tensors and the global batch size as a scalar,
        float32 (float64 for float64 inputs).
    """
    z1, z2 = _validated_embeddings(z1, z2)
    n_local = ops.cast(ops.shape(z1)[0], z1.dtype)
    n, sum1, sum2 = _backend.sum_across_replicas(
        [n_local, ops.sum(z1, axis=0), ops.sum(z2, axis=0)]
    )
    n = _checked_global_batch(n, z1)
    centered1, centered2 = z1 - sum1 / n, z2 - sum2 / n
    squares1, squares2 = _backend.sum_across_replicas(
        [ops.sum(ops.square(centered1), 0), ops.sum(ops.square(centered2), 0)]
    )
    z1n = centered1 * ops.rsqrt(squares1 / n + epsilon)
    z2n = centered2 * ops.rsqrt(squares2 / n + epsilon)
    return z1n, z2n, n


def _sum_of_squares_from_cross_correlation(z1n, z2n, n):
    c = _backend.sum_across_replicas(ops.matmul(ops.transpose(z1n), z2n)) / n  # D x D
    return ops.sum(ops.square(c))


def _sum_of_squares_from_gram(z1n, z2n, n):
    # Each replica computes its own rows of G1 and G2 against the gathered batch,
    # so the O(N^2 D) work is split across replicas instead of repeated.
    all_z1n, all_z2n = _backend.gather_across_replicas([z1n, z2n])  # N x D each
    gram1_rows = ops.matmul(z1n, ops.transpose(all_z1n))  # n x N
    gram2_rows = ops.matmul(z2n, ops.transpose(all_z2n))  # n x N
    squares = ops.sum(gram1_rows * gram2_rows)
    return _backend.sum_across_replicas(squares) / ops.square(n)


def _validated_embeddings(z1, z2):
    z1, z2 = ops.convert_to_tensor(z1), ops.convert_to_tensor(z2)
    for name, z in (("z1", z1), ("z2", z2)):
        if len(z.shape) != 2:
            raise ValueError(
                f"Embeddings must have shape (batch_size, dim). Received: {name} with "
                f"shape {tuple(z.shape)}. Flatten or pool the features before the loss."
            )
        if not backend.is_float_dtype(z.dtype):
            raise ValueError(
                "Embeddings must be floating point. "
                f"Received: {name}.dtype={backend.standardize_dtype(z.dtype)}"
            )
    if not all(
        a is None or b is None or a == b
        for a, b in zip(z1.shape, z2.shape, strict=True)
    ):
        raise ValueError(
            "`z1` and `z2` must have the same shape (the two views of the same "
            f"images). Received: z1.shape={tuple(z1.shape)}, "
            f"z2.shape={tuple(z2.shape)}"
        )
    if z1.shape[0] is not None and z1.shape[0] * _backend.num_replicas() < 2:
        raise ValueError(
            f"{TOO_SMALL_BATCH_RULE} Received: a batch of {z1.shape[0]}. "
            "Use a larger batch size."
        )
    dtype = "float64" if backend.standardize_dtype(z1.dtype) == "float64" else "float32"
    return ops.cast(z1, dtype), ops.cast(z2, dtype)


TOO_SMALL_BATCH_RULE = "Batch statistics need at least 2 samples in the global batch."


def _checked_global_batch(n, z1):
    """`n`, made to wait for a check that it is at least 2 when not static.

    Only TensorFlow graphs have batch sizes unknown when tracing; a static size
    was checked by `_validated_embeddings`.
    """
    if z1.shape[0] is not None or _backend.BACKEND != "tensorflow":
        return n
    tf = _backend.tf
    check = tf.debugging.Assert(
        n >= 2,
        [
            f"{TOO_SMALL_BATCH_RULE} Received: a global batch of",
            n,
            "Use a larger batch.",
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(n)


def _global_batch_size(z):
    local = z.shape[0]
    return None if local is None else local * _backend.num_replicas()
