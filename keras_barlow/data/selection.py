"""Class-balanced selection on label arrays: validation splits, limits, subsets.

One selector, `select_by_class`, takes a number of images per class (its quota)
from every class; one rounding rule, `apportion` (largest remainders), sets the
quotas. `stratified_split` and `evaluation.labeled_subset` make the quotas
proportional to the class sizes and draw at random; `balanced_subset` makes them
as equal as the class sizes allow and takes the first images. NumPy only.
"""

import numpy as np

from keras_barlow import _checks as checks

SUBSETS = ("training", "validation")


def apportion(total, weights, capacity):
    """Split `total` over classes in proportion to `weights`, by largest remainders.

    Each class gets the floor of its share and the classes with the largest
    remainders one more (ties to the lower class index), so the quotas add up to
    `total` exactly; a class whose share exceeds its `capacity` gets its capacity
    and the rest is shared again among the others.

    Args:
        total: int, at most `sum(capacity)`.
        weights: `(K,)` positive numbers, e.g. the class sizes, or ones.
        capacity: `(K,)` ints, the most each class can give.

    Returns:
        int64 array `(K,)` of quotas.

    Example:

    >>> apportion(5, np.ones(3), np.array([1, 9, 9]))
    array([1, 2, 2])
    """
    weights = np.asarray(weights)
    capacity = np.asarray(capacity, np.int64)
    quotas = np.zeros(len(weights), np.int64)
    open_classes = capacity > 0
    remaining = int(total)
    while remaining > 0 and open_classes.any():
        open_weights = np.where(open_classes, weights, 0)
        shares = open_weights * remaining / open_weights.sum()
        full = open_classes & (shares >= capacity - quotas)
        if full.any():
            remaining -= int((capacity - quotas)[full].sum())
            quotas[full] = capacity[full]
            open_classes &= ~full
            continue
        floors = np.floor(shares).astype(np.int64)
        left = remaining - floors.sum()
        floors[np.argsort(floors - shares, kind="stable")[:left]] += 1
        quotas += floors
        remaining = 0
    return quotas


def select_by_class(labels, quotas, seed=None):
    """Indices of `quotas[c]` images of the c-th class (classes in sorted order).

    Args:
        labels: integer array `(N,)`.
        quotas: `(K,)` ints, one per distinct label in sorted order.
        seed: `None` for the first images of each class in index order, or an int
            seed: each class's images drawn at random (one permutation per class,
            in class order, from `np.random.default_rng(seed)`).

    Returns:
        Sorted int64 array of `sum(quotas)` indices.
    """
    members = class_members(labels)
    rng = None if seed is None else np.random.default_rng(seed)
    chosen = [
        group[:quota] if rng is None else rng.permutation(group)[:quota]
        for group, quota in zip(members, quotas, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def class_members(labels):
    """Indices of each class (distinct labels in sorted order), in index order."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


def stratified_split(labels, val_fraction=None, val_count=None, seed=0):
    """Split indices into training and validation parts with the class proportions.

    Each class gives `floor` or `ceil` of its share of the validation images
    (`apportion`, so the total is exact), drawn at random with `seed`. The result
    depends only on the labels, the size and the seed.

    Args:
        labels: integer array `(N,)` or `(N, 1)`.
        val_fraction: fraction in (0, 1) of the images held back, rounded.
        val_count: number of images held back, in [1, N - 1] (instead of
            `val_fraction`).
        seed: int seed.

    Returns:
        `(train_indices, val_indices)`: sorted, disjoint int64 arrays that
        together hold `range(N)`.

    Example:

    >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], val_count=2)
    >>> len(val), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[val])
    (2, [0, 1])
    """
    labels = np.asarray(labels).reshape(-1)
    total = _validation_total(len(labels), val_fraction, val_count)
    counts = np.unique(labels, return_counts=True)[1]
    val = select_by_class(labels, apportion(total, counts, counts), seed)
    return np.setdiff1d(np.arange(len(labels), dtype=np.int64), val), val


def balanced_subset(labels, limit):
    """Indices of the first `limit` images, taken round-robin over the classes.

    The first image of every class, then the second of every class, and so on
    (classes in sorted order, images in index order), until `limit` are chosen:
    class counts differ by at most one unless a class runs out (`apportion` with
    equal weights).

    Args:
        labels: integer array `(N,)`.
        limit: positive int.

    Returns:
        Sorted int64 array of `min(limit, N)` indices.

    Example:

    >>> balanced_subset([0, 0, 0, 1, 1, 1], 4)
    array([0, 1, 3, 4])
    """
    labels = np.asarray(labels).reshape(-1)
    counts = np.unique(labels, return_counts=True)[1]
    quotas = apportion(min(limit, len(labels)), np.ones(len(counts)), counts)
    return select_by_class(labels, quotas)


def split_and_limit(labels, subset, val_fraction, val_count, seed, limit):
    """The indices a loader keeps: one side of the split, then at most `limit`."""
    indices = np.arange(len(labels), dtype=np.int64)
    if subset is not None:
        train, val = stratified_split(labels, val_fraction, val_count, seed)
        indices = train if subset == "training" else val
    if limit is not None:
        indices = indices[balanced_subset(labels[indices], limit)]
    return indices


def check_subset(subset, val_fraction, val_count):
    """`subset` and the size of the held-back part go together."""
    checks.choice("subset", subset, (None, *SUBSETS))
    held_back = val_fraction is not None or val_count is not None
    if (subset is None) == held_back:
        raise ValueError(
            "`subset` ('training' or 'validation') and `val_fraction` or `val_count` "
            f"go together. Received: subset={subset!r}, val_fraction={val_fraction}, "
            f"val_count={val_count}"
        )


def _validation_total(size, val_fraction, val_count):
    if (val_fraction is None) == (val_count is None):
        raise ValueError(
            "Pass exactly one of `val_fraction` and `val_count`. Received: "
            f"val_fraction={val_fraction}, val_count={val_count}"
        )
    if val_fraction is not None:
        checks.number("val_fraction", val_fraction, 0, 1, low_open=True, high_open=True)
        val_count = round(val_fraction * size)
    if not 1 <= val_count <= size - 1:
        raise ValueError(
            f"The validation part must hold between 1 and {size - 1} of the {size} "
            f"images. Received: val_fraction={val_fraction}, val_count={val_count}. "
            "Use a larger fraction or more images."
        )
    return val_count
