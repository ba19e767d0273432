"""Image pairs per second of `BarlowTwins.fit`, against the network alone.

Three models of the same network (same encoder, projector, optimizer and initial
weights) are trained through `fit` on one batch held on the device, timed in
interleaved rounds (`harness.time_rounds`: compilation excluded, device work
awaited):

* `barlow_twins`: the library's step on uint8 images: augmentation (two views
  of each image), the Barlow Twins loss, the optimizer;
* `ready`: the library's step on ready views (`augmenter=None`);
* `network_only`: `workloads.NetworkOnly`, the same encoder, projector and loss
  in Keras' own train step on ready views: the ceiling.

A `train_step_provisional` line per model once it is compiled and calibrated
(compile time, calibration step time: what survives a run stopped early), then
one `train_step` line per configuration: per model the median step time, the
spread of the rounds, the compile time and image pairs/s; and the ratios
`barlow_twins_over_network_only` (the target on a GPU is >= 0.85,
benchmarks/RESULTS.md) and `ready_over_network_only` (the library's own step
against Keras' default).

Usage:

    python benchmarks/train_step.py --configs resnet18_32 --batch_size 64
    KERAS_BACKEND=jax python benchmarks/train_step.py --configs resnet50_224 \\
        --batch_size 256 --policy mixed_bfloat16          # the GPU figure
    python benchmarks/train_step.py --smoke
"""

import sys

import harness
import keras
import workloads

SMOKE = {"configs": ["smoke"], "batch_size": 8, "rounds": 1, "round_s": 0.1}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(workloads.CONFIGS),
        default=["resnet18_32"],
    )
    parser.add_argument("--batch_size", type=int, default=64, help="image pairs")
    parser.add_argument("--policy", default="float32", help="Keras dtype policy")
    parser.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    parser.add_argument(
        "--jit_compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="of compile (JAX always compiles with XLA)",
    )
    parser.add_argument(
        "--kinds", nargs="+", choices=workloads.KINDS, default=list(workloads.KINDS)
    )
    return harness.parse(parser, argv, SMOKE)


def measure(config_name, flags, recorder):
    """Timing records of each model kind for one configuration."""
    config = workloads.CONFIGS[config_name]
    jit_compile = {"auto": "auto", "true": True, "false": False}[flags.jit_compile]
    runs = {}
    for kind in flags.kinds:
        model = workloads.make_model(kind, config, flags.optimizer, jit_compile)
        batch = workloads.batch_for(kind, config, flags.batch_size)
        runs[kind] = workloads.fit_steps(model, batch)

    def provisional(kind, result):
        recorder.emit(
            "train_step_provisional",
            config=config_name,
            kind=kind,
            **result,
            per_s=flags.batch_size / result["calibration_step_s"],
        )

    results = harness.time_rounds(
        runs, flags.rounds, flags.round_s, on_warm=provisional
    )
    return harness.timing_records(results, items_per_step=flags.batch_size)


def ratios(results):
    """Throughput of each model over `network_only`'s, from the medians."""
    if "network_only" not in results:
        return {}
    ceiling = results["network_only"]["median_s"]
    return {
        f"{kind}_over_network_only": ceiling / result["median_s"]
        for kind, result in results.items()
        if kind != "network_only"
    }


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "train_step")
    keras.config.set_dtype_policy(flags.policy)
    for name in flags.configs:
        results = measure(name, flags, recorder)
        recorder.emit(
            "train_step",
            config=name,
            **workloads.CONFIGS[name]._asdict(),
            batch_size=flags.batch_size,
            policy=flags.policy,
            optimizer=flags.optimizer,
            jit_compile=flags.jit_compile,
            results=results,
            **ratios(results),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
