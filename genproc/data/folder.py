"""A folder of PNG / JPEG images (searched recursively), e.g. FFHQ, AFHQ or LSUN exports.

Each image is converted to ``L`` (channels=1, ITU-R 601 luma) or ``RGB``
(channels=3), its shorter side resized to ``image_size`` (bicubic, antialiased)
and centre-cropped to a square. Splits: ``train`` reads ``<root>/train`` if it
exists, else all of ``<root>`` except ``<root>/test``; ``test`` reads ``<root>/test``.
Hidden files (names starting with ``.``) are skipped.

Small sets (at most ``CACHE_MAX_IMAGES`` images and ``image_size <= CACHE_MAX_SIZE``)
are decoded once into memory, which also checks every file up front; larger sets
are read lazily. Either way an unreadable file raises GenprocError naming it.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genproc.data.base import ImageDataset, TensorImageDataset
from genproc.errors import GenprocError
from genproc.recipe import DataConfig

EXTENSIONS = (".png", ".jpg", ".jpeg")
CACHE_MAX_IMAGES = 20000
CACHE_MAX_SIZE = 64


def list_images(folder: Path, exclude: Path | None = None) -> list[Path]:
    """All image files under ``folder`` (recursive, extension case-insensitive), sorted; skips ``exclude``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and here / d != exclude)
        found += [here / f for f in filenames if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
    return sorted(found)


def load_image(path: Path, channels: int, size: int) -> np.ndarray:
    """Decode ``path`` to uint8 ``(channels, size, size)`` in ``[0, 255]``: shorter side to ``size``, centre crop."""
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            img.draft(mode, (size, size))  # JPEG: decode at a reduced scale >= size (no-op for PNG)
            img = img.convert(mode)
            w, h = img.size
            m = min(w, h)
            box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)  # centre square
            img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
            arr = np.array(img, dtype=np.uint8)  # a writable copy
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GenprocError(f"cannot read image {path}: {msg}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class FolderDataset(ImageDataset):
    """Lazily decoded image files; ``__getitem__`` gives ``(C, H, W)`` float32 in ``[0, 1]``."""

    in_memory = False

    def __init__(self, files: list[Path], name: str, root: str, split: str, channels: int, image_size: int) -> None:
        super().__init__(name, root, split, channels, image_size)
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        arr = load_image(self.files[i], self.channels, self.image_size)
        return torch.from_numpy(arr).float().div_(255.0)


def _split_folder(root: Path, split: str) -> tuple[Path, Path | None]:
    """(folder to read, sub-folder to leave out) for ``split``."""
    if split == "test":
        if not (root / "test").is_dir():
            raise GenprocError(f"image folder {root} has no test/ sub-folder, needed for split 'test'")
        return root / "test", None
    if (root / "train").is_dir():
        return root / "train", None
    return root, root / "test"


def load_folder(cfg: DataConfig, split: str, root: str) -> ImageDataset:
    """Image-folder data set, cached in memory as uint8 when small, else read lazily."""
    base = Path(root)
    if not base.is_dir():
        raise GenprocError(f"image folder {base} does not exist (expected {', '.join(EXTENSIONS)} files in it)")
    folder, exclude = _split_folder(base, split)
    files = list_images(folder, exclude)
    if not files:
        raise GenprocError(f"no images found under {folder} (expected files ending in {', '.join(EXTENSIONS)})")
    if split == "train" and cfg.max_images is not None:
        files = files[: cfg.max_images]
    if len(files) > CACHE_MAX_IMAGES or cfg.image_size > CACHE_MAX_SIZE:
        return FolderDataset(files, cfg.name, root, split, cfg.channels, cfg.image_size)
    decode = functools.partial(load_image, channels=cfg.channels, size=cfg.image_size)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL releases the GIL
        arrays = list(pool.map(decode, files))
    return TensorImageDataset(torch.from_numpy(np.stack(arrays)), name=cfg.name, root=root, split=split)
