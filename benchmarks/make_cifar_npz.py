"""Decode the CIFAR-10 JPEG archive into one NumPy `.npz` (Pillow and tarfile only).

The archive holds `train/<class>/<nnnn>.jpg` (10 classes x 5,000 32x32 JPEGs).
The `.npz` gets `images` (uint8 `(N, 32, 32, 3)`, sorted by class then file name),
`labels` (int64 `(N,)`, the index of the class in sorted class names) and
`class_names`. It needs neither TensorFlow nor Keras, so it runs on the GPU
machines too; `benchmarks/gpu.py --cifar_npz` reads its output.

The decoded set is about 154 MB, over the 64 MiB that travels to a GPU machine:
carry the 16 MB archive and decode it there (benchmarks/RESULTS.md, last section).

Usage:

    python benchmarks/make_cifar_npz.py          # ../shared archive -> artifacts/
    python benchmarks/make_cifar_npz.py --archive A.tar.gz --output /tmp/cifar10.npz
"""

import argparse
import io
import json
import pathlib
import sys
import tarfile
import time

import numpy as np
from PIL import Image

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPOSITORY.parent / "shared/datasets/cifar10-jpeg-train.tar.gz"
DEFAULT_OUTPUT = REPOSITORY / "artifacts/cifar10-train.npz"  # git-ignored folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_archive(path, limit_per_class=None):
    """`(images, labels, class_names)` decoded from a `.tar` / `.tar.gz` archive.

    Args:
        path: archive of `<anything>/<class>/<image>` files.
        limit_per_class: keep only the first this many images of each class
            (in file-name order); all of them when None.

    Returns:
        uint8 `(N, H, W, 3)`, int64 `(N,)`, and the sorted list of class names.
    """
    members = {}
    with tarfile.open(path) as archive:
        for member in archive:
            name = pathlib.PurePosixPath(member.name)
            if not member.isfile() or name.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            members.setdefault(name.parent.name, []).append(
                (name.name, archive.extractfile(member).read())
            )
    if not members:
        raise ValueError(f"No images found in {path}")
    class_names = sorted(members)
    images, labels = [], []
    for label, class_name in enumerate(class_names):
        files = sorted(members[class_name])[:limit_per_class]
        for _, data in files:
            with Image.open(io.BytesIO(data)) as image:
                images.append(np.asarray(image.convert("RGB"), np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64), class_names


def write_npz(archive, output, limit_per_class=None):
    images, labels, class_names = load_archive(archive, limit_per_class)
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, images=images, labels=labels, class_names=np.asarray(class_names))
    return images, labels, class_names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--limit_per_class", type=int, default=None)
    flags = parser.parse_args(argv)
    start = time.perf_counter()
    images, labels, class_names = write_npz(
        flags.archive, flags.output, flags.limit_per_class
    )
    record = {
        "benchmark": "make_cifar_npz",
        "output": flags.output,
        "images": list(images.shape),
        "per_class": np.bincount(labels).tolist(),
        "class_names": class_names,
        "bytes": pathlib.Path(flags.output).stat().st_size,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
