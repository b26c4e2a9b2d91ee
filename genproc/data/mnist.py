"""MNIST and Fashion-MNIST from their original IDX files (no download).

The root folder holds ``train-images-idx3-ubyte[.gz]`` and
``t10k-images-idx3-ubyte[.gz]`` (label files are not needed). torchvision's
layout ``<root>/MNIST/raw/`` (or ``FashionMNIST/raw``, ``raw``) is accepted too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genproc.data.base import TensorImageDataset
from genproc.data.convert import convert_uint8
from genproc.data.idx import read_idx_images
from genproc.errors import GenprocError
from genproc.recipe import DataConfig

SPLIT_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
TORCHVISION_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
EXPECTED = ", ".join(f"{stem}[.gz]" for stem in SPLIT_FILES.values())


def find_idx_file(root: Path, stem: str, name: str) -> Path:
    """Path of ``<stem>.gz`` or ``<stem>`` under ``root`` (or its torchvision ``raw`` folder)."""
    if not root.is_dir():
        raise GenprocError(f"data folder {root} for '{name}' does not exist (expected IDX files {EXPECTED} there)")
    for folder in (root, root / "raw", root / TORCHVISION_DIRS.get(name, "MNIST") / "raw"):
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    raise GenprocError(f"data folder {root} for '{name}' has no {stem}[.gz] (expected IDX files {EXPECTED})")


def load_mnist(cfg: DataConfig, split: str, root: str) -> TensorImageDataset:
    """MNIST-style data set in memory: uint8 ``(N, cfg.channels, H, W)``, (H, W) = ``cfg.image_hw``.

    Images are 28x28 gray; other sizes use antialiased bilinear resizing (H != W: by ``cfg.resize``, see
    :func:`genproc.data.convert.resize_to`), RGB repeats the plane.
    """
    path = find_idx_file(Path(root), SPLIT_FILES[split], cfg.name)
    limit = cfg.max_images if split == "train" else None
    pixels = read_idx_images(path, limit=limit)
    images = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 28, 28) uint8
    images = convert_uint8(images, cfg.channels, cfg.image_hw, cfg.resize)
    return TensorImageDataset(images, name=cfg.name, root=root, split=split)
