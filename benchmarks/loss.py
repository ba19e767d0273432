"""Naive (cross-correlation) against Gram path of the Barlow Twins loss.

For every embedding size D and batch size N of the grid, both exact ways of
computing `sum_ij C_ij^2` run value + gradient with respect to both embeddings in
a `tf.function`; the script prints one JSON line per (D, N) with the median time
of each, their ratio, the peak memory allocated by TensorFlow above the inputs,
the relative difference of the two results, and the path `choose_method` picks.

Peak memory is the TensorFlow allocator's own count
(`tf.config.experimental.get_memory_info`), on the GPU or the CPU alike; memory that
oneDNN or cuBLAS take for their scratch space outside the allocator is not in it.

Usage:

    python benchmarks/loss.py                      # the whole grid
    python benchmarks/loss.py --dims 8192 --batch_sizes 256 --repeats 10
"""

import sys  # noqa: I001 (_common sets the environment before TensorFlow loads)

from _common import device_name, emit, log, new_parser, summary, time_interleaved

import tensorflow as tf

from keras_barlow import losses

METHODS = ("cross_correlation", "gram")


def make_flags(argv=None):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[128, 256, 1024, 4096]
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds per (D, N)"
    )
    parser.add_argument("--jit_compile", action="store_true", help="compile with XLA")
    return parser.parse_args(argv)


def correlated_embeddings(batch_size, dim, seed=0):
    """Two `(N, D)` float32 batches, the second a noisy copy of the first."""
    z1 = tf.random.stateless_normal((batch_size, dim), (seed, 1))
    z2 = z1 + 0.5 * tf.random.stateless_normal((batch_size, dim), (seed, 2))
    return z1, z2


def value_and_gradient_function(method, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def value_and_gradient(z1, z2):
        with tf.GradientTape() as tape:
            tape.watch([z1, z2])
            loss = losses.barlow_twins_loss(z1, z2, method=method)
        gradient1, gradient2 = tape.gradient(loss, [z1, z2])
        return loss, gradient1, gradient2

    return value_and_gradient


def blocking(function, *args):
    """Run `function(*args)`, wait for all its outputs (GPU streams included)."""

    def run():
        outputs = function(*args)
        tf.stack([tf.reshape(output, [-1])[0] for output in outputs]).numpy()
        return outputs

    return run


def run_with_peak_memory(run, device):
    """`run()`'s result, and the peak bytes TensorFlow allocated above those before."""
    before = tf.config.experimental.get_memory_info(device)["current"]
    tf.config.experimental.reset_memory_stats(device)
    result = run()
    return result, tf.config.experimental.get_memory_info(device)["peak"] - before


def method_matrices_bytes(method, batch_size, dim):
    """Float32 bytes of the matrix each path forms: C (D x D) or G1, G2 (N x N)."""
    return 4 * (dim * dim if method == "cross_correlation" else 2 * batch_size**2)


def relative_difference(got, expected):
    scale = tf.reduce_max(tf.abs(expected))
    return float(tf.reduce_max(tf.abs(got - expected)) / scale)


def compare(dim, batch_size, flags, device):
    z1, z2 = correlated_embeddings(batch_size, dim)
    functions = {
        method: value_and_gradient_function(method, flags.jit_compile)
        for method in METHODS
    }
    runs = {
        method: blocking(function, z1, z2) for method, function in functions.items()
    }
    durations = time_interleaved(runs, flags.repeats)
    # One more call of each, after tracing and warm-up, for the results and memory.
    results, peaks = {}, {}
    for method, run in runs.items():
        results[method], peaks[method] = run_with_peak_memory(run, device)
    per_method = {
        method: {
            **summary(durations[method]),
            "peak_memory_bytes": peaks[method],
            "method_matrices_bytes": method_matrices_bytes(method, batch_size, dim),
        }
        for method in METHODS
    }
    naive, gram = results["cross_correlation"], results["gram"]
    differences = [relative_difference(g, n) for g, n in zip(gram, naive, strict=True)]
    return {
        "dim": dim,
        "batch_size": batch_size,
        "device": device,
        "methods": per_method,
        "gram_over_naive_time": per_method["gram"]["median_s"]
        / per_method["cross_correlation"]["median_s"],
        "loss_value": float(naive[0]),
        "relative_difference_value": differences[0],
        "relative_difference_gradient": max(differences[1:]),
        "agree_within_1e-5": max(differences) <= 1e-5,
        "choose_method": losses.choose_method(batch_size, dim),
        "fastest_measured": min(METHODS, key=lambda m: per_method[m]["median_s"]),
    }


def main(argv=None):
    flags = make_flags(argv)
    device = device_name()
    for dim in flags.dims:
        for batch_size in flags.batch_sizes:
            log(f"loss: D={dim} N={batch_size} ...")
            emit("loss", flags, **compare(dim, batch_size, flags, device))


if __name__ == "__main__":
    sys.exit(main())
