"""Reader for IDX image files (the MNIST / Fashion-MNIST format), gzipped or raw.

Layout: a 4-byte big-endian magic number (2051 = 0x00000803: unsigned bytes,
3 dimensions), three big-endian uint32 sizes N, H, W, then N*H*W uint8 pixels.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from genproc.errors import GenprocError

IDX_IMAGES_MAGIC = 2051
HEADER_BYTES = 16


def _read_bytes(path: Path) -> bytes:
    """The decompressed contents of ``path`` (gunzipped when it ends in ``.gz``)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GenprocError(f"cannot read IDX file {path}: {msg} (truncated or not gzip?)") from None


def read_idx_images(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Parse an IDX image file into a uint8 array ``(N, H, W)`` in ``[0, 255]``.

    ``limit`` keeps only the first ``limit`` images. The magic number and the
    file size are validated; a bad file raises :class:`GenprocError` naming it.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < HEADER_BYTES:
        raise GenprocError(f"IDX file {path} is truncated: {len(data)} bytes, shorter than the 16-byte header")
    magic, n, h, w = struct.unpack(">IIII", data[:HEADER_BYTES])
    if magic != IDX_IMAGES_MAGIC:
        raise GenprocError(
            f"{path} is not an IDX image file: magic number {magic}, expected {IDX_IMAGES_MAGIC}"
        )
    expected = HEADER_BYTES + n * h * w
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise GenprocError(
            f"IDX file {path} is {what}: {len(data)} bytes, expected {expected} for {n} images of {h}x{w}"
        )
    keep = n if limit is None else min(n, limit)
    pixels = np.frombuffer(data, dtype=np.uint8, count=keep * h * w, offset=HEADER_BYTES)
    return pixels.reshape(keep, h, w).copy()
