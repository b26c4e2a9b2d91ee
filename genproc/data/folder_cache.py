"""A one-time pre-resized cache of an image folder, so later epochs and runs never decode the originals again.

``genproc cache RECIPE`` decodes every image of the recipe's folder once, at the recipe's size, channels and resize
rule, into one uint8 array (N, C, H, W) written next to the data::

    <root>/.genproc-cache/<split>-<H>x<W>-c<C>-<rule>.u8     the images, raw uint8, memory-mapped when read
    <root>/.genproc-cache/<split>-<H>x<W>-c<C>-<rule>.json   shape, sha256 of the .u8, and every source file's
                                                            relative path, size and modification time

:func:`open_cache` is used by the folder loader: when a manifest for the recipe's settings exists, lists exactly the
current files (same names, sizes and times) and the array's size and sha256 match, the data set is the memory-mapped
array (read at memory speed, no decoding); a stale or damaged cache is reported in one line and the files are
decoded as before. The cache stores 8 bits per channel: a folder with deeper images (16-bit PNG) is refused, since
the cache would change the data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.errors import GenprocError
from genproc.filehash import sha256_file

CACHE_DIR = ".genproc-cache"


def cache_paths(root: Path, split: str, hw: tuple[int, int], channels: int, rule: str) -> tuple[Path, Path]:
    stem = f"{split}-{hw[0]}x{hw[1]}-c{channels}-{rule}"
    return root / CACHE_DIR / f"{stem}.u8", root / CACHE_DIR / f"{stem}.json"


def signature(files: list[Path], root: Path) -> list[list[Any]]:
    """[relative path, size, mtime_ns] of each file: what the cache was built from."""
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


def build_cache(files: list[Path], root: Path, split: str, hw: tuple[int, int], channels: int, rule: str,
                decode: Callable[[Path], torch.Tensor], workers: int | None = None,
                progress: Callable[[int], Any] | None = None) -> Path:
    """Decode ``files`` with ``decode`` (-> (C, H, W) uint8) into the cache array and write its manifest (atomically:
    both are renamed into place when complete). Returns the array's path."""
    data, manifest = cache_paths(root, split, hw, channels, rule)
    data.parent.mkdir(parents=True, exist_ok=True)
    tmp = data.with_suffix(f".u8.tmp-{os.getpid()}")
    shape = (len(files), channels, *hw)
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    try:
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:  # PIL releases the GIL
            for i, x in enumerate(pool.map(decode, files)):
                if x.dtype != torch.uint8:
                    raise GenprocError(f"{files[i]} has more than 8 bits per channel; the cache stores 8 bits and would "
                                       "change the data: train from the files (no cache)")
                out[i] = x.numpy()
                if progress is not None:
                    progress(1)
        out.flush()
        del out
        record = {"shape": list(shape), "dtype": "uint8", "sha256": sha256_file(tmp), "size": tmp.stat().st_size,
                  "split": split, "rule": rule, "files": signature(files, root)}
        os.replace(tmp, data)
        manifest.write_text(json.dumps(record))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return data


def open_cache(files: list[Path], root: Path, split: str, hw: tuple[int, int], channels: int, rule: str,
               warn: Callable[[str], Any]) -> torch.Tensor | None:
    """The cached (N, C, H, W) uint8 images (memory-mapped) if a valid cache for these files and settings exists, else
    None (with one ``warn`` line when a cache exists but is stale or damaged)."""
    data, manifest = cache_paths(root, split, hw, channels, rule)
    if not manifest.is_file():
        return None
    try:
        rec = json.loads(manifest.read_text())
        shape = tuple(rec["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        warn(f"image cache {manifest} is unreadable; decoding the files (rebuild it with 'genproc cache')")
        return None
    if rec.get("files") != signature(files, root):
        warn(f"image cache {data} is stale (the folder's files changed since it was built); decoding the files "
             "(rebuild it with 'genproc cache')")
        return None
    if not data.is_file() or data.stat().st_size != rec.get("size") or sha256_file(data) != rec.get("sha256"):
        warn(f"image cache {data} is damaged (size or sha256 differ from {manifest.name}); decoding the files "
             "(rebuild it with 'genproc cache')")
        return None
    return torch.from_numpy(np.memmap(data, dtype=np.uint8, mode="c", shape=shape))
