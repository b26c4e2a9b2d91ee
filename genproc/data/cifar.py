"""CIFAR-10 in torchvision's python-pickle layout.

Layout: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
(``root`` may also be the ``cifar-10-batches-py`` folder itself). Each batch is a
pickled dict whose ``data`` entry is a uint8 array ``(n, 3072)``: the R, G and B
32x32 planes of each image, row-major.

torchvision is used only to download the archive when the folder is absent.
The batches are read here rather than through ``torchvision.datasets.CIFAR10``
because that class md5-checks every file (slow, and it rejects the small
generated layouts the tests use). Like torchvision, this unpickles the files:
only point it at CIFAR data you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from genproc.data.base import TensorImageDataset
from genproc.data.convert import convert_uint8
from genproc.errors import GenprocError
from genproc.recipe import DataConfig

FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
LAYOUT = f"{FOLDER}/data_batch_1..5, test_batch, batches.meta"


def _batches_dir(root: Path) -> Path | None:
    """``root/cifar-10-batches-py``, or ``root`` itself if it holds batches; None when absent."""
    if (root / FOLDER).is_dir():
        return root / FOLDER
    if root.is_dir() and (root.name == FOLDER or any((root / f).is_file() for f in ("data_batch_1", "test_batch"))):
        return root
    return None


def torchvision_download(root: Path) -> None:
    """Fetch, md5-check and extract the CIFAR-10 archive into ``root`` (needs network)."""
    from torchvision.datasets import CIFAR10  # imported here: torchvision takes seconds to import

    root.mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=True, download=True)


def _download(root: Path) -> Path:
    """Download CIFAR-10 into ``root``; GenprocError naming the path and layout if that fails."""
    try:
        torchvision_download(root)
    except Exception as e:  # no network, no write permission, bad archive, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GenprocError(
            f"CIFAR-10 not found in {root} and download failed ({msg}); expected torchvision layout {root}/{LAYOUT}"
        ) from None
    return root / FOLDER


def read_cifar_batch(path: Path) -> np.ndarray:
    """Images of one pickled CIFAR batch as uint8 ``(n, 3, 32, 32)`` in ``[0, 255]``."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = entry["data"] if "data" in entry else entry[b"data"]
        data = np.asarray(data, dtype=np.uint8)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GenprocError(f"cannot read CIFAR batch {path}: {msg}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise GenprocError(f"CIFAR batch {path} has data of shape {data.shape}, expected (n, 3072)")
    return data.reshape(-1, 3, 32, 32)


def load_cifar10(cfg: DataConfig, split: str, root: str) -> TensorImageDataset:
    """CIFAR-10 in memory: uint8 ``(N, cfg.channels, H, W)``, (H, W) = ``cfg.image_hw`` (resized by ``cfg.resize``,
    :func:`genproc.data.convert.resize_to`); downloads if absent."""
    folder = _batches_dir(Path(root)) or _download(Path(root))
    limit = cfg.max_images if split == "train" else None
    parts: list[np.ndarray] = []
    for name in SPLIT_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise GenprocError(f"CIFAR-10 batch {path} is missing (expected torchvision layout {root}/{LAYOUT})")
        parts.append(read_cifar_batch(path))
        if limit is not None and sum(len(p) for p in parts) >= limit:
            break
    images = torch.from_numpy(np.concatenate(parts)[:limit])
    images = convert_uint8(images, cfg.channels, cfg.image_hw, cfg.resize)
    return TensorImageDataset(images, name=cfg.name, root=root, split=split)
