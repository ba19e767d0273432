"""The Barlow Twins loss: the naive path (forms C) against the Gram path.

For every embedding size D and batch size N of the grid, both exact ways of
computing `sum_ij C_ij^2` (`keras_barlow.losses.barlow_twins_loss(method=...)`)
run value + gradient with respect to both embeddings, compiled as a train step
is, timed in interleaved rounds. One `loss` line per (D, N): each path's median
time and spread, the Gram / naive time ratio, the bytes of the matrices each
path forms, the relative difference of the two results (value and gradients),
and the path `choose_method` picks.

Usage:

    python benchmarks/loss.py                      # D 2048 8192, N 128 ... 4096
    KERAS_BACKEND=jax python benchmarks/loss.py --dims 8192 --batch_sizes 256
"""

import sys

import harness
import numpy as np
import workloads

from keras_barlow import losses

METHODS = ("cross_correlation", "gram")
SMOKE = {"dims": [64], "batch_sizes": [8, 48], "rounds": 1, "round_s": 0.05}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[128, 256, 1024, 4096]
    )
    parser.add_argument(
        "--jit_compile", action="store_true", help="TensorFlow: with XLA (JAX: always)"
    )
    return harness.parse(parser, argv, SMOKE)


def matrices_bytes(method, batch_size, dim):
    """float32 bytes of the matrices a path forms: C (D x D) or G1, G2 (N x N)."""
    return 4 * (dim * dim if method == "cross_correlation" else 2 * batch_size**2)


def relative_difference(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def compare(dim, batch_size, flags):
    z1, z2 = workloads.correlated_embeddings(batch_size, dim)
    functions = {
        method: workloads.compiled_value_and_grad(
            lambda a, b, method=method: losses.barlow_twins_loss(a, b, method=method),
            flags.jit_compile,
        )
        for method in METHODS
    }
    runs = {
        method: (
            lambda steps, function=function: [function(z1, z2) for _ in range(steps)]
        )
        for method, function in functions.items()
    }
    results = harness.timing_records(
        harness.time_rounds(runs, flags.rounds, flags.round_s)
    )
    for method, result in results.items():
        result["matrices_bytes"] = matrices_bytes(method, batch_size, dim)
    (naive_loss, naive_grads), (gram_loss, gram_grads) = (
        functions[method](z1, z2) for method in METHODS
    )
    return {
        "dim": dim,
        "batch_size": batch_size,
        "results": results,
        "gram_over_naive_time": results["gram"]["median_s"]
        / results["cross_correlation"]["median_s"],
        "loss": float(naive_loss),
        "relative_difference_value": relative_difference(gram_loss, naive_loss),
        "relative_difference_gradient": max(
            relative_difference(g, n)
            for g, n in zip(gram_grads, naive_grads, strict=True)
        ),
        "choose_method": losses.choose_method(batch_size, dim),
        "fastest": min(METHODS, key=lambda method: results[method]["median_s"]),
    }


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "loss")
    xla = workloads.BACKEND == "jax" or flags.jit_compile
    for dim in flags.dims:
        for batch_size in flags.batch_sizes:
            recorder.emit("loss", xla=xla, **compare(dim, batch_size, flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
