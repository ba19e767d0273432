"""Files on the local disk or behind a URL, for checkpoints and run settings.

A local path is read and written with Python's `os` and `shutil`, so that a run
on Keras' JAX backend needs no TensorFlow. A URL (`gs://`, `s3://`, `hdfs://`,
...) goes through TensorFlow's file systems, `tf.io.gfile`, when TensorFlow is
installed. `file_system(path)` alone decides which one a path uses.
"""

import os
import shutil
import types

from keras_barlow import _backend


def _makedirs(path):
    os.makedirs(path, exist_ok=True)


def _rename(source, target, overwrite=False):
    if not overwrite and os.path.exists(target):
        raise FileExistsError(f"{target} exists")
    os.replace(source, target)  # atomic on one POSIX file system


# The functions of `tf.io.gfile` that keras_barlow uses, with the same names and
# arguments, on the local disk.
LOCAL = types.SimpleNamespace(
    exists=os.path.exists,
    isdir=os.path.isdir,
    listdir=os.listdir,
    makedirs=_makedirs,
    remove=os.remove,
    rmtree=shutil.rmtree,
    rename=_rename,
    GFile=open,
)


def file_system(path):
    """The file functions for `path`: `LOCAL` for a local path, else `tf.io.gfile`.

    Args:
        path: str, a local path or a URL such as `"gs://bucket/run"`.

    Returns:
        `LOCAL` or the `tf.io.gfile` module: either has `exists`, `isdir`,
        `listdir`, `makedirs`, `remove`, `rmtree`, `rename(source, target,
        overwrite)` and `GFile(path, mode)`.

    Raises:
        ImportError: `path` is a URL and TensorFlow is not installed.

    Example:

    >>> file_system("runs/barlow") is LOCAL
    True
    """
    if "://" not in path:
        return LOCAL
    tf = _backend.import_tensorflow(
        f"{path!r} is a URL: reading and writing it with tf.io.gfile",
        instead="Or use a local path (e.g. where the bucket is mounted).",
    )
    return tf.io.gfile


def flush_to_disk(path):
    """Flush a written local file to the disk, so that it survives a power loss.

    A no-op for a URL, whose file system commits the file when it is closed.
    """
    if file_system(path) is not LOCAL:
        return
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def write_atomically(path, text):
    """Write `text` to the file `path` so that it is either complete or absent.

    The text goes to `path + ".tmp"` first, which is then renamed over `path`:
    a process killed midway leaves at most the temporary file.
    """
    files = file_system(path)
    temporary = path + ".tmp"
    with files.GFile(temporary, "w") as file:
        file.write(text)
    flush_to_disk(temporary)
    files.rename(temporary, path, overwrite=True)
