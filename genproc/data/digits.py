"""scikit-learn's 8x8 handwritten digits (1797 images, bundled with the library, no download).

Pixel values 0..16 are scaled to [0, 1] and upsampled to ``image_size`` (H x W) with
bilinear interpolation (align_corners=False), clamped to [0, 1]; for H != W the square
digits are resized by ``data.resize`` (:func:`genproc.data.convert.resize_to`: crop = cover
H x W and centre-crop, the default). The split is
fixed: the first 1500 images are ``train``, the last 297 are ``test``.

The pixels are read from the CSV file scikit-learn bundles (what ``load_digits()``
parses) without importing scikit-learn, which takes ~1.5 s; if that file is not
where expected, ``sklearn.datasets.load_digits()`` is used instead.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from genproc.data.base import TensorImageDataset
from genproc.data.convert import resize_to, to_channels
from genproc.recipe import DataConfig

N_TEST = 297
N_IMAGES = 1797


@functools.lru_cache(maxsize=1)
def digits_pixels() -> np.ndarray:
    """All 1797 digits as float64 ``(1797, 8, 8)`` with values 0..16 (read once per process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")  # 64 pixels + the label per row
            if table.shape == (N_IMAGES, 65):
                return table[:, :64].reshape(N_IMAGES, 8, 8)
    from sklearn.datasets import load_digits

    return load_digits().images


def load_digits_dataset(cfg: DataConfig, split: str, root: str | None = None) -> TensorImageDataset:
    """Digits in memory as float32 ``(N, cfg.channels, H, W)`` in ``[0, 1]``, (H, W) = ``cfg.image_hw``."""
    images = torch.from_numpy(digits_pixels()).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    n_train = images.shape[0] - N_TEST
    if split == "train":
        images = images[:n_train]
        if cfg.max_images is not None:
            images = images[: cfg.max_images]
    else:
        images = images[n_train:]
    images = to_channels(resize_to(images, cfg.image_hw, cfg.resize), cfg.channels).contiguous()
    return TensorImageDataset(images, name=cfg.name, root=None, split=split)
