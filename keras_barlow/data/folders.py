"""Image folders and tar archives of them: the class folders, the images, their sizes.

An archive is extracted once into a cache folder, atomically, with the path rules
of `tarfile`'s `"data"` filter; only regular files and folders are written.
"""

import collections
import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from concurrent import futures

import numpy as np
from absl import logging
from PIL import Image

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
ARCHIVE_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
_WRITER_THREADS = 4  # file creation dominates; threads overlap it with parsing
_QUEUED_FILES = 256  # bounds the memory of files read but not yet written


def default_cache_dir():
    """`$XDG_CACHE_HOME/keras_barlow`, else `~/.cache/keras_barlow`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "keras_barlow")


def image_root(path, cache_dir=None):
    """The folder that holds the class folders of `path` (a folder or an archive).

    Archives are extracted first (see `extract_archive`). When `path` holds a
    single sub-folder and that sub-folder holds folders but no images (e.g.
    `train/` in `train/cat/1.jpg`), the sub-folder is the root.

    Returns:
        str, path of a folder.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Image folder or archive not found: {path!r}. Check the path; relative "
            f"paths start at the current directory {os.getcwd()!r}."
        )
    if os.path.isfile(path):
        if not path.lower().endswith(ARCHIVE_EXTENSIONS):
            raise ValueError(
                "Expected a folder of images or an archive "
                f"({', '.join(ARCHIVE_EXTENSIONS)}). Received the file {path!r}."
            )
        path = extract_archive(path, cache_dir)
    entries = _visible_entries(path)
    if len(entries) == 1 and _is_wrapper(os.path.join(path, entries[0])):
        return os.path.join(path, entries[0])
    return path


def _is_wrapper(folder):
    """A folder of sub-folders and no images, like `train/` in `train/cat/1.jpg`."""
    if not os.path.isdir(folder):
        return False
    entries = [os.path.join(folder, entry) for entry in _visible_entries(folder)]
    return any(os.path.isdir(entry) for entry in entries) and not any(
        entry.lower().endswith(IMAGE_EXTENSIONS) for entry in entries
    )


def class_names(path, cache_dir=None):
    """Sorted class folder names of an image folder or archive; label i is name i.

    Example:

    >>> class_names("pets.tar.gz")  # pets/cat/1.jpg, pets/dog/2.png, ...
    ['cat', 'dog']
    """
    root = image_root(path, cache_dir)
    return [
        entry
        for entry in _visible_entries(root)
        if os.path.isdir(os.path.join(root, entry))
    ]


def extract_archive(path, cache_dir=None):
    """Extract a tar archive once into `cache_dir` and return the folder.

    The folder is named after the archive and a hash of its resolved path (links
    followed, so a link to an archive reuses its extraction), size and
    modification time, so a changed archive is extracted again. Extraction
    goes to a temporary folder next to it that is renamed when complete: an
    interrupted run leaves no half-extracted folder, and of two processes
    extracting at once one result is kept. Only regular files and folders are
    written (links and devices are skipped with a warning); a member whose path
    is absolute or climbs out with `..` stops the extraction with an error.

    Args:
        path: `.tar`, `.tar.gz` or `.tgz` file.
        cache_dir: parent of the extracted folder. Default: `default_cache_dir()`.

    Returns:
        str, path of the extracted folder.
    """
    path = os.path.realpath(os.fspath(path))
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    stat = os.stat(path)
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    target = os.path.join(cache_dir, f"{_archive_stem(path)}-{key.hexdigest()[:12]}")
    if os.path.isdir(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".extracting-", dir=cache_dir)
    try:
        start = time.perf_counter()
        count = _extract_members(path, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):  # not another process finishing first
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info(
        "Extracted %d files from %s into %s in %.1f s.",
        count,
        path,
        target,
        time.perf_counter() - start,
    )
    return target


def _archive_stem(path):
    name = os.path.basename(path)
    for extension in sorted(ARCHIVE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return name


def _extract_members(archive, root):
    """Stream the archive once; writes run in threads, as file creation dominates."""
    made_dirs, skipped, pending, count = set(), [], collections.deque(), 0
    try:
        with (
            tarfile.open(archive, "r|*") as tar,
            futures.ThreadPoolExecutor(_WRITER_THREADS) as pool,
        ):
            for member in tar:
                if not (member.isdir() or member.isfile()):
                    skipped.append(member.name)  # links, devices: never written
                    continue
                target = _member_target(member, root, archive)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                parent = os.path.dirname(target)
                if parent not in made_dirs:
                    os.makedirs(parent, exist_ok=True)
                    made_dirs.add(parent)
                contents = tar.extractfile(member).read()
                pending.append(pool.submit(_write, target, contents))
                count += 1
                while len(pending) > _QUEUED_FILES:
                    pending.popleft().result()
            for write in pending:
                write.result()
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ValueError(
            f"Could not extract {archive!r}: {error}. The archive may be truncated or "
            "corrupt; check its size and checksum."
        ) from error
    except OSError as error:
        raise OSError(
            f"Could not extract {archive!r} into {root!r}: {error}. Check that the "
            "archive is readable and that the cache folder is writable and has room, "
            "or pass another cache_dir."
        ) from error
    if skipped:
        logging.warning(
            "Skipped %d archive members that are not regular files or "
            "folders (links, devices), e.g. %s.",
            len(skipped),
            skipped[:3],
        )
    return count


def _member_target(member, root, archive):
    """Where a member is written: tarfile's "data" filter refuses '..' escapes.

    An absolute name, which the filter would make relative, is refused too.
    """
    try:
        if member.name.startswith(("/", "\\")):
            raise tarfile.AbsolutePathError(member)
        member = tarfile.data_filter(member, root)
    except tarfile.FilterError as error:
        raise ValueError(
            f"Refusing to extract {archive!r}: the member {error.tarinfo.name!r} would "
            "be written outside the extraction folder (absolute path or '..'). The "
            "archive is unsafe; rebuild it with relative paths."
        ) from error
    return os.path.join(root, member.name)


def _write(path, contents):
    with open(path, "wb") as file:
        file.write(contents)


def _visible_entries(folder):
    return sorted(entry for entry in os.listdir(folder) if not entry.startswith("."))


def list_images(root, labels):
    """`(class_names or None, paths, labels)` of the images under `root`, sorted.

    `labels="inferred"`: the images of each class folder, labelled by the folder's
    rank; `None`: every image found, all labelled 0.
    """
    if labels is None:
        paths = _find_images(root)
        label_array = np.zeros(len(paths), np.int32)
        names = None
    else:
        names = class_names(root)
        if not names:
            raise ValueError(
                f"No class folders in {root!r}: expected one sub-folder per class "
                "(root/cat/1.jpg, root/dog/2.png). For images without labels pass "
                "labels=None."
            )
        per_class = [_find_images(os.path.join(root, name)) for name in names]
        empty = [
            name for name, files in zip(names, per_class, strict=True) if not files
        ]
        if empty and len(empty) < len(names):
            logging.warning("Class folders without images (labels kept): %s", empty)
        paths = [file for files in per_class for file in files]
        label_array = np.repeat(
            np.arange(len(names), dtype=np.int32), [len(files) for files in per_class]
        )
    if not paths:
        raise ValueError(
            f"No images found in {root!r}. Expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} (any case)"
            + ("" if labels is None else " inside the class folders")
            + "."
        )
    return names, np.array(paths), label_array


def _find_images(folder):
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(entry for entry in dirs if not entry.startswith("."))
        found.extend(
            os.path.join(parent, name)
            for name in sorted(files)
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


def image_size(path):
    """`(height, width)` of a JPEG or PNG file, read from its header only.

    The stored size, as decoded (EXIF orientation is not applied).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:  # Pillow raises all three
        raise ValueError(
            f"Cannot read the image size of {os.fspath(path)!r}: {error}. Remove or "
            "replace the file, or check the files first with validate='header'."
        ) from error
    return height, width


def image_sizes(paths):
    """int64 `(N, 2)`: the `(height, width)` of each file, from the headers.

    About 25 us a file when the files are in the page cache.
    """
    return np.array([image_size(path) for path in paths], np.int64).reshape(-1, 2)
