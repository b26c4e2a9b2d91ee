"""Image data sets: ``build_dataset(cfg)`` returns an :class:`ImageDataset`.

Every data set yields ``(C, H, W)`` float32 images in ``[0, 1]`` with exactly
``cfg.channels`` channels (1 or 3) and ``(H, W) = cfg.image_hw`` (``image_size``: an int for
H = W, or ``[H, W]``). A source image of another aspect ratio is resized by ``cfg.resize``:
``crop`` (default: scale to cover H x W, keep the centre), ``pad`` (fit inside, centre on black)
or ``stretch`` (see :func:`genproc.data.convert.resize_to`; folders: :mod:`genproc.data.folder`).

Known names: ``digits`` (scikit-learn 8x8, no files), ``mnist`` and
``fashion_mnist`` (IDX files), ``cifar10`` (torchvision pickle layout) and
``folder`` (PNG / JPEG files). ``cfg.hflip`` is left to the training loop.
"""

from __future__ import annotations

from collections.abc import Callable

from genproc.data.base import ImageDataset, TensorImageDataset
from genproc.data.cifar import load_cifar10
from genproc.data.digits import load_digits_dataset
from genproc.data.folder import load_folder
from genproc.data.mnist import load_mnist
from genproc.data.roots import resolve_root
from genproc.errors import GenprocError
from genproc.recipe import DataConfig

__all__ = ["DATASETS", "ImageDataset", "TensorImageDataset", "build_dataset", "resolve_root"]

# name -> loader(cfg, split, root) -> ImageDataset
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": load_digits_dataset,
    "mnist": load_mnist,
    "fashion_mnist": load_mnist,
    "cifar10": load_cifar10,
    "folder": load_folder,
}
SPLITS = ("train", "test")


def _check(cfg: DataConfig, split: str) -> None:
    if cfg.name not in DATASETS:
        raise GenprocError(f"recipe field 'data.name': unknown data set '{cfg.name}' (known: {', '.join(DATASETS)})")
    if split not in SPLITS:
        raise GenprocError(f"unknown data split '{split}' (expected one of: {', '.join(SPLITS)})")
    if cfg.channels not in (1, 3):
        raise GenprocError(f"recipe field 'data.channels': expected 1 or 3, got {cfg.channels}")
    cfg.validate()  # data.image_size (a positive int or [H, W]) and data.resize
    if cfg.max_images is not None and cfg.max_images < 1:
        raise GenprocError(f"recipe field 'data.max_images': expected a positive integer or null, got {cfg.max_images}")


def build_dataset(cfg: DataConfig, split: str = "train", data_root: str | None = None) -> ImageDataset:
    """The data set described by ``cfg`` for ``split`` ("train" or "test").

    ``data_root`` (CLI ``--data-root``) overrides ``cfg.root``; see :func:`resolve_root`.
    ``cfg.max_images`` keeps the first N training images. Raises :class:`GenprocError`
    (one line, naming the path) when the data cannot be found or read.
    """
    _check(cfg, split)
    root = resolve_root(cfg, data_root)
    data = DATASETS[cfg.name](cfg, split, root)
    data.resize = cfg.resize
    return data
