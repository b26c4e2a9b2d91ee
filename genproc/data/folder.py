"""A folder of image files (searched recursively), e.g. FFHQ, AFHQ or LSUN exports.

Files ending in ``.png .jpg .jpeg .bmp .webp .tif .tiff`` (any letter case) are
read; hidden files (names starting with ``.``) are skipped. Each file is decoded
faithfully to float32 in ``[0, 1]`` by :func:`genproc.data.decode.read_image`
(every Pillow mode scaled by its real range, 16-bit gray included; EXIF orientation
applied; alpha composited over black; files it cannot decode faithfully are an
error naming the file and mode). Then, in float:

- channels: gray -> RGB repeats the plane; RGB -> gray is the ITU-R 601-2 luma
  0.299 R + 0.587 G + 0.114 B (:func:`genproc.data.convert.to_channels`);
- size: to (H, W) = ``data.image_size`` by ``data.resize`` (:func:`fit`: bicubic,
  antialiased when shrinking, on float planes, clamped to ``[0, 1]``): ``crop``
  (default) scales by max(H / h, W / w) so the image covers H x W and keeps the
  centre; ``pad`` scales by min(H / h, W / w) and centres it on black (0, the alpha
  background); ``stretch`` ignores the aspect ratio. Same rules as the in-memory
  data sets (:func:`genproc.data.convert.resize_to`), with Pillow's exact source box.

Files of at most 8 bits per sample give values rounded to the nearest k / 255
after resizing (the file's own precision; stored as uint8); deeper files (16-bit
gray, float) keep float32 precision.

Splits: ``train`` reads ``<root>/train`` if it exists, else all of ``<root>`` except
``<root>/test``; ``test`` reads ``<root>/test``.

An image the rule would enlarge more than ``data.max_upscale`` (default 4: a 1 x 1 icon or a thumbnail in a folder
of photos) is refused with its name and size, never blown up without a word.

Small sets (at most ``CACHE_MAX_IMAGES`` images and H, W <= ``CACHE_MAX_SIZE``)
are decoded once into memory (uint8, or float32 when any file is deeper than 8
bits), which also checks every file up front; larger sets are read lazily, with
the same values. Either way an unreadable file raises GenprocError naming it.
"""

from __future__ import annotations

import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genproc.data.base import ImageDataset, TensorImageDataset
from genproc.data.convert import to_channels
from genproc.data.decode import BACKGROUND, read_image
from genproc.data.folder_cache import open_cache
from genproc.errors import GenprocError
from genproc.imagesize import as_hw
from genproc.recipe import DataConfig

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
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


def fit(values: np.ndarray, hw: tuple[int, int], rule: str) -> np.ndarray:
    """Resize ``values`` (c, h, w) float32 in [0, 1] to (c, H, W), ``hw`` = (H, W), by ``rule``; clamped to [0, 1].

    Bicubic, antialiased when shrinking (Pillow on float planes, mode ``F``), with the exact
    source box: ``crop`` keeps the centre (W / s) x (H / s) of the source, s = max(H / h, W / w);
    ``pad`` scales to round(h s) x round(w s), s = min(H / h, W / w), and centres it on
    ``BACKGROUND`` (an odd margin leaves its extra row / column at the bottom / right);
    ``stretch`` scales each axis on its own.
    """
    c, h, w = values.shape
    H, W = hw
    size, box = (W, H), (0.0, 0.0, float(w), float(h))  # stretch
    if rule == "crop":
        s = max(H / h, W / w)
        bw, bh = min(w, W / s), min(h, H / s)  # min: W / (W / w) may round to w + 1 ulp, which Pillow refuses
        box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
    elif rule == "pad":
        s = min(H / h, W / w)
        size = (min(W, max(1, round(w * s))), min(H, max(1, round(h * s))))
    elif rule != "stretch":
        raise ValueError(f"resize rule must be crop, pad or stretch, got {rule!r}")
    planes = [np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BICUBIC, box=box)) for p in values]
    y = np.clip(np.stack(planes), 0.0, 1.0)  # (c, size[1], size[0])
    if size == (W, H):
        return y
    out = np.full((c, H, W), BACKGROUND, dtype=np.float32)
    top, left = (H - size[1]) // 2, (W - size[0]) // 2
    out[:, top : top + size[1], left : left + size[0]] = y
    return out


def upscale(h: int, w: int, hw: tuple[int, int], rule: str) -> float:
    """How much ``rule`` enlarges an h x w image to fit (H, W) = ``hw`` (< 1: it shrinks): the larger axis factor for
    crop and stretch, the smaller for pad."""
    H, W = hw
    return min(H / h, W / w) if rule == "pad" else max(H / h, W / w)


def load_image(path: Path, channels: int, hw: int | tuple[int, int], rule: str = "crop",
               max_upscale: float | None = None) -> Tensor:
    """Decode ``path`` to ``(channels, H, W)``, resized by ``rule`` (crop | pad | stretch); ``hw``: H = W or (H, W).
    ``max_upscale``: refuse (GenprocError naming the file) an image the rule would enlarge more than this.

    Returns uint8 in ``[0, 255]`` for files of at most 8 bits per sample (resized values rounded,
    the file's precision), else float32 in ``[0, 1]`` at full precision.
    """
    size = as_hw(hw)
    values, bits = read_image(path, size, rule)  # (c, h, w) float32 in [0, 1]
    if max_upscale is not None and (f := upscale(*values.shape[1:], size, rule)) > max_upscale:
        h, w = values.shape[1:]
        raise GenprocError(f"image {path} is {h}x{w}: fitting it to {size[0]}x{size[1]} by '{rule}' would enlarge it "
                           f"{f:.1f}x, more than data.max_upscale = {max_upscale:g} (remove or resize it, or raise "
                           f"data.max_upscale)")
    if channels < values.shape[0]:  # fewer planes to resize: convert first
        values = to_channels(torch.from_numpy(values)[None], channels)[0].numpy()
    x = torch.from_numpy(fit(values, size, rule))  # (c, H, W)
    x = to_channels(x[None], channels)[0]  # (channels, H, W)
    return x.mul(255.0).round_().to(torch.uint8) if bits <= 8 else x.contiguous()


def as_float(x: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` -> float32 ``/ 255``; float32 in ``[0, 1]`` as is."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class FolderDataset(ImageDataset):
    """Lazily decoded image files; ``__getitem__`` gives ``(C, H, W)`` float32 in ``[0, 1]``."""

    in_memory = False

    def __init__(self, files: list[Path], name: str, root: str, split: str, channels: int,
                 image_size: int | tuple[int, int], resize: str = "crop", max_upscale: float | None = None) -> None:
        super().__init__(name, root, split, channels, image_size)
        self.files = files
        self.resize = resize
        self.max_upscale = max_upscale

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        return as_float(load_image(self.files[i], self.channels, self.image_hw, self.resize, self.max_upscale))


def _split_folder(root: Path, split: str) -> tuple[Path, Path | None]:
    """(folder to read, sub-folder to leave out) for ``split``."""
    if split == "test":
        if not (root / "test").is_dir():
            raise GenprocError(f"image folder {root} has no test/ sub-folder, needed for split 'test'")
        return root / "test", None
    if (root / "train").is_dir():
        return root / "train", None
    return root, root / "test"


def folder_files(cfg: DataConfig, split: str, root: str) -> tuple[Path, list[Path]]:
    """(the data set folder, the image files of ``split`` in loading order), as :func:`load_folder` reads them."""
    base = Path(root)
    if not base.is_dir():
        raise GenprocError(f"image folder {base} does not exist (expected {', '.join(EXTENSIONS)} files in it)")
    folder, exclude = _split_folder(base, split)
    files = list_images(folder, exclude)
    if not files:
        raise GenprocError(f"no images found under {folder} (expected files ending in {', '.join(EXTENSIONS)})")
    if split == "train" and cfg.max_images is not None:
        files = files[: cfg.max_images]
    return base, files


def load_folder(cfg: DataConfig, split: str, root: str) -> ImageDataset:
    """Image-folder data set ``(C, H, W)`` = (``cfg.channels``, ``*cfg.image_hw``): the ``genproc cache`` array when
    there is a valid one, in memory when small, else decoded lazily."""
    base, files = folder_files(cfg, split, root)
    cached = open_cache(files, base, split, cfg.image_hw, cfg.channels, cfg.resize,
                        warn=lambda m: print(f"warning: {m}", file=sys.stderr, flush=True))
    if cached is not None:  # 'genproc cache': memory-mapped, no decoding
        return TensorImageDataset(cached, name=cfg.name, root=root, split=split)
    if len(files) > CACHE_MAX_IMAGES or max(cfg.image_hw) > CACHE_MAX_SIZE:
        return FolderDataset(files, cfg.name, root, split, cfg.channels, cfg.image_hw, cfg.resize, cfg.max_upscale)
    decode = functools.partial(load_image, channels=cfg.channels, hw=cfg.image_hw, rule=cfg.resize,
                               max_upscale=cfg.max_upscale)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL releases the GIL
        images = list(pool.map(decode, files))
    if any(x.dtype != torch.uint8 for x in images):  # a deeper file: keep every image in float32
        images = [as_float(x) for x in images]
    return TensorImageDataset(torch.stack(images), name=cfg.name, root=root, split=split)
