"""Collapse and redundancy indicators of embeddings, on any Keras backend.

* `embedding_std`: spread of the L2-normalized embeddings (0 when they collapse).
* `effective_rank`: how many dimensions the embeddings use (1 when they collapse).
* `mean_abs_off_diagonal`: redundancy left in a cross-correlation matrix.

Written with `keras.ops` only, so the model's train step can call them on every
backend. Each takes tensors or arrays of any float dtype and returns a float32
scalar tensor of the backend.
"""

from keras import ops


def embedding_std(z):
    """Std of the L2-normalized embeddings over the batch, averaged, times sqrt(D).

    About 1 for embeddings spread evenly over the sphere, 0 when they collapse to
    a point (Chen & He, 2021).

    Args:
        z: `(N, D)` embeddings, any float dtype.

    Returns:
        float32 scalar tensor.

    Example:

    >>> float(embedding_std(np.ones((8, 4))))  # collapsed to one point
    0.0
    """
    z = ops.cast(z, "float32")  # N x D
    squared_norm = ops.sum(ops.square(z), axis=-1, keepdims=True)
    z = z * ops.rsqrt(ops.maximum(squared_norm, 1e-12))
    dim = ops.cast(ops.shape(z)[-1], "float32")
    return ops.mean(ops.std(z, axis=0)) * ops.sqrt(dim)


def effective_rank(embeddings):
    """Effective rank of a batch of embeddings (Roy & Vetterli, 2007).

    `exp(H(p))` with `p = sigma / sum(sigma)` the normalized singular values of the
    `(N, D)` embedding matrix, uncentered as in RankMe (Garrido et al., 2023). It
    lies between 1 (all embeddings on one line: collapse) and `min(N, D)` (all
    singular values equal).

    Args:
        embeddings: `(N, D)` tensor or array, any float dtype.

    Returns:
        float32 scalar tensor.

    Example:

    >>> float(effective_rank(np.eye(4)))  # doctest: +ELLIPSIS
    4.0...
    """
    singular_values = ops.svd(ops.cast(embeddings, "float32"), compute_uv=False)
    p = singular_values / ops.maximum(ops.sum(singular_values), 1e-12)
    # 0 * log(0) counts as 0: a zero singular value adds no entropy.
    terms = ops.where(p > 0, p * ops.log(ops.maximum(p, 1e-30)), 0.0)
    return ops.exp(-ops.sum(terms))


def mean_abs_off_diagonal(c):
    """Mean absolute value of the off-diagonal entries of a square matrix.

    On the cross-correlation matrix of the Barlow Twins loss it measures the
    redundancy left between embedding dimensions (0 when decorrelated).

    Args:
        c: `(D, D)` tensor or array with D >= 2.

    Returns:
        float32 scalar tensor.

    Example:

    >>> float(mean_abs_off_diagonal([[1.0, 0.5], [-0.5, 1.0]]))
    0.5
    """
    c = ops.abs(ops.cast(c, "float32"))  # D x D
    dim = ops.cast(ops.shape(c)[0], "float32")
    off_diagonal_sum = ops.sum(c) - ops.sum(ops.diagonal(c))
    return off_diagonal_sum / (dim * dim - dim)
