"""Image integrity: finding the image files that the input pipeline cannot decode."""

import os

import numpy as np
from absl import logging

from keras_barlow import _checks as checks
from keras_barlow.data import options as options_lib

_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
_TAIL_BYTES = 4096
_MAX_LISTED = 10


def find_corrupt_images(paths, validate="header", pipeline="auto"):
    """Image files that the input pipeline cannot decode, with the reason.

    `"header"` reads the first bytes and the last 4 KiB of each file: a JPEG
    must start with `FF D8 FF` and hold its end marker `FF D9`, a PNG must start
    with its signature and hold its `IEND` chunk. This catches empty, non-image
    and truncated files (the usual corruption: an interrupted copy or download)
    at the cost of two small reads a file. Suspects are decoded once by the
    pipeline's decoder, and kept when that works. `"decode"` decodes every file
    once (exact, slower). Both pipelines' decoders accept the same files.

    Args:
        paths: sequence of file paths.
        validate: `"header"` or `"decode"`.
        pipeline: whose decoder decides: `"auto"`, `"tf.data"` or `"grain"`
            (see `Options.pipeline`).

    Returns:
        List of `(path, reason)` in the order of `paths`.

    Example:

    >>> find_corrupt_images(["ok.png", "empty.jpg"])
    [('empty.jpg', 'empty file')]
    """
    checks.choice("validate", validate, ("header", "decode"))
    decodable = options_lib.pipeline_module(
        options_lib.resolve_pipeline(pipeline)
    ).decodable
    return _corrupt(np.asarray([str(path) for path in paths], str), validate, decodable)


def _corrupt(paths, validate, decodable):
    """`(path, reason)` of the files `decodable` (paths -> bool array) rejects."""
    if validate == "header":
        reasons = [_header_problem(path) for path in paths]  # threads: slower here
        suspects = [
            (path, reason)
            for path, reason in zip(paths, reasons, strict=True)
            if reason
        ]
    else:
        suspects = [(path, "cannot be decoded") for path in paths]
    if not suspects:
        return []
    decoded = decodable([path for path, _ in suspects])
    return [
        (str(path), reason)
        for (path, reason), ok in zip(suspects, decoded, strict=True)
        if not ok
    ]


def _header_problem(path):
    """A reason string when the file does not look like a whole JPEG or PNG."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(_PNG_START))
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if size == 0:
        return "empty file"
    if head.startswith(_JPEG_START):
        return None if _JPEG_END in tail else "truncated JPEG (no end marker FF D9)"
    if head.startswith(_PNG_START):
        return None if _PNG_END in tail else "truncated PNG (no IEND chunk)"
    return f"not a JPEG or PNG file (starts with {head[:8]!r})"


def drop_corrupt(paths, labels, validate, on_corrupt, root, decodable):
    """`(paths, labels)` without the corrupt files, or a `ValueError` naming them.

    `decodable` is the pipeline's decoder check (paths -> bool array).
    """
    corrupt = _corrupt(paths, validate, decodable)
    if not corrupt:
        return paths, labels
    listing = "\n".join(f"  {path}: {reason}" for path, reason in corrupt[:_MAX_LISTED])
    more = len(corrupt) - _MAX_LISTED
    listing += f"\n  ... and {more} more" if more > 0 else ""
    if on_corrupt == "raise":
        raise ValueError(
            f"{len(corrupt)} of {len(paths)} image files in {root!r} cannot be decoded:"
            f"\n{listing}\nRemove or replace them, or pass on_corrupt='skip' to leave "
            "them out."
        )
    logging.warning(
        "Skipping %d of %d image files in %s that cannot be decoded:\n%s",
        len(corrupt),
        len(paths),
        root,
        listing,
    )
    keep = ~np.isin(paths, [path for path, _ in corrupt])
    return paths[keep], labels[keep]
