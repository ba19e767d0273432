"""Images/s of the input pipelines: tf.data against Grain, on the same files.

Two workloads, each read by `keras_barlow.data.from_image_folder` through both
pipelines (`pipeline="tf.data"` and `"grain"`) in one run, interleaved round by
round (the order alternates), the median pass kept:

* `cifar10_32px`: the CIFAR-10 JPEG archive (`--archive`, the first
  `--limit_images`), 32 x 32 images at `image_size=32`, batches of 256;
* `jpeg_500x375_224px_full_resolution`: `--large_images` JPEGs of 500 x 375 and
  375 x 500 (smooth content plus noise, quality 90, written with Pillow into a
  temporary folder) at `image_size=224`: training batches at full resolution,
  500 x 500 canvases with the true sizes, batches of 64.

A pass is one training epoch (shuffled, last partial batch dropped), timed from
`iter()` to the last batch, so the start of Grain's threads or processes counts;
the CPU time of the process (all its threads) per image is reported too, as on
a machine shared with other jobs it depends less on what the others run.
Grain runs with each `--grain_variants` entry: `tN` threads, `wN` worker
processes (`tN-wM` both). Each measurement is a JSON line; a table of medians and
of Grain / tf.data ends the output.

Usage:

    python benchmarks/input_pipelines.py                      # both workloads
    python benchmarks/input_pipelines.py --limit_images 5000 --rounds 3
    python benchmarks/input_pipelines.py --grain_variants t1 t2 t4 t2-w2
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from keras_barlow import data  # noqa: E402

DEFAULT_ARCHIVE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "cifar10-jpeg-train.tar.gz"
)


def make_flags(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--limit_images", type=int, default=10_000)
    parser.add_argument("--large_images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--grain_variants",
        nargs="+",
        default=["default"],
        help="'default' (grain_threads = CPU count, at most 8) or tN / wN / tN-wM",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["cifar10_32px", "jpeg_500x375_224px_full_resolution"],
    )
    return parser.parse_args(argv)


def grain_options(variant):
    """`{"grain_threads": N, "grain_workers": M}` of a variant name like 't2-w2'."""
    options = {}
    for part in variant.split("-"):
        if part.startswith("t"):
            options["grain_threads"] = int(part[1:])
        elif part.startswith("w"):
            options["grain_workers"] = int(part[1:])
        elif part != "default":
            raise ValueError(f"Unknown Grain variant {variant!r}: use tN, wN, tN-wM")
    return options


def write_large_jpegs(folder, count, seed=0):
    """`count` JPEGs, alternately 375 x 500 and 500 x 375, quality 90."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    for index in range(count):
        height, width = (375, 500) if index % 2 == 0 else (500, 375)
        coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3))
        smooth = Image.fromarray(coarse.astype(np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        noisy = np.asarray(smooth, np.float64) + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        image.save(folder / "images" / f"{index:05d}.jpg", quality=90)
    return folder


def workload_arguments(name, flags, scratch):
    """`(path, loader keyword arguments)` of a workload."""
    if name == "cifar10_32px":
        if not pathlib.Path(flags.archive).is_file():
            raise SystemExit(f"CIFAR-10 archive not found: {flags.archive}")
        return flags.archive, dict(
            image_size=32,
            batch_size=256,
            limit_images=flags.limit_images,
            cache_dir=str(scratch / "cache"),
        )
    if name == "jpeg_500x375_224px_full_resolution":
        folder = write_large_jpegs(scratch / "large", flags.large_images)
        return folder, dict(image_size=224, batch_size=64, labels=None)
    raise SystemExit(f"Unknown workload {name!r}")


def one_pass(dataset):
    """`(images, seconds, cpu_seconds)` of one pass over the dataset.

    The CPU time is this process's, all threads (not Grain's worker processes).
    """
    start, cpu_start, images = time.perf_counter(), _cpu_seconds(), 0
    for batch in dataset:
        first = batch["images"] if isinstance(batch, dict) else batch
        first = first[0] if isinstance(first, tuple) else first
        images += len(first)
    return images, time.perf_counter() - start, _cpu_seconds() - cpu_start


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(workload, flags, scratch):
    path, arguments = workload_arguments(workload, flags, scratch)
    candidates = {"tf.data": {"pipeline": "tf.data"}}
    for variant in flags.grain_variants:
        candidates[f"grain:{variant}"] = {"pipeline": "grain", **grain_options(variant)}
    datasets = {}
    for name, options in candidates.items():
        dataset, info = data.from_image_folder(
            path, seed=0, with_info=True, **arguments, **options
        )
        datasets[name] = dataset
        print(
            f"# {workload} {name}: {info.num_images} images, batches of "
            f"{arguments['batch_size']}, yielded size {info.image_size}, full "
            f"resolution {info.full_resolution}",
            flush=True,
        )
    rates = {name: [] for name in datasets}
    costs = {name: [] for name in datasets}
    names = list(datasets)
    for round_index in range(flags.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            images, seconds, cpu_seconds = one_pass(datasets[name])
            rates[name].append(images / seconds)
            costs[name].append(1000 * cpu_seconds / images)
            record = dict(
                workload=workload,
                candidate=name,
                round=round_index,
                images=images,
                seconds=round(seconds, 3),
                images_per_s=round(images / seconds, 1),
                cpu_ms_per_image=round(costs[name][-1], 3),
                load_average=round(os.getloadavg()[0], 2),
            )
            print(json.dumps(record), flush=True)
    return {
        name: (statistics.median(rates[name]), statistics.median(costs[name]))
        for name in datasets
    }


def versions():
    import grain
    import PIL
    import simplejpeg
    import tensorflow as tf

    return dict(
        python=platform.python_version(),
        tensorflow=tf.__version__,
        grain=getattr(grain, "__version__", "?"),
        pillow=PIL.__version__,
        simplejpeg=simplejpeg.__version__,
        numpy=np.__version__,
        cpus=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
    )


def main(argv=None):
    flags = make_flags(argv)
    print(json.dumps({"flags": vars(flags), **versions()}), flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for workload in flags.workloads:
            results[workload] = measure(workload, flags, pathlib.Path(scratch))
    print(
        "\n| workload | candidate | images/s (median) | / tf.data "
        "| CPU ms / image (median) | / tf.data |"
    )
    print("|---|---|---|---|---|---|")
    for workload, medians in results.items():
        tf_rate, tf_cost = medians["tf.data"]
        for name, (rate, cost) in medians.items():
            print(
                f"| {workload} | {name} | {rate:,.0f} | {rate / tf_rate:.2f}x "
                f"| {cost:.3f} | {cost / tf_cost:.2f}x |"
            )


if __name__ == "__main__":
    main()
