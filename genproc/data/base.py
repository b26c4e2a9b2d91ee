"""The data-set interface every loader returns.

An :class:`ImageDataset` yields single images as ``(C, H, W)`` float32 tensors
in ``[0, 1]`` and batches as ``(B, C, H, W)`` float32 tensors in ``[0, 1]``.
Every image of a data set has the same ``channels`` and ``image_hw`` = (H, W); H != W is allowed.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.utils.data import Dataset

from genproc.imagesize import as_hw


class ImageDataset(Dataset):
    """Base class: a sized, indexable set of equally shaped images.

    Attributes:
        name: data-set name as in the recipe (``mnist``, ``folder``, ...).
        root: the folder actually read (absolute path), ``None`` for built-in data.
        split: ``"train"`` or ``"test"``.
        channels: C of every image (1 or 3).
        image_size: H = W of every image (an int), or (H, W) when H != W, as ``data.image_size``.
        image_hw: (H, W) of every image.
        resize: the rule (``data.resize``: crop | pad | stretch) that fitted source images of another aspect
            ratio to (H, W); set by :func:`genproc.data.build_dataset`.
        in_memory: True when all images live in one tensor (``get_batch`` is a
            single indexing op and DataLoader workers are not needed).
    """

    in_memory: bool = False
    resize: str = "crop"

    def __init__(self, name: str, root: str | None, split: str, channels: int,
                 image_size: int | tuple[int, int]) -> None:
        self.name = name
        self.root = root
        self.split = split
        self.channels = channels
        h, w = self.image_hw = as_hw(image_size)
        self.image_size = h if h == w else (h, w)  # an int for square images, as before

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Tensor:
        """Image ``i`` as ``(C, H, W)`` float32 in ``[0, 1]``."""
        raise NotImplementedError

    def get_batch(self, idx: Tensor) -> Tensor:
        """Images at the int64 indices ``idx`` (shape ``(B,)``) as ``(B, C, H, W)`` float32 in ``[0, 1]``.

        The default stacks ``__getitem__``; in-memory sets override it.
        """
        return torch.stack([self[int(i)] for i in idx.tolist()])

    def __repr__(self) -> str:
        where = f", root={self.root!r}" if self.root else ""
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape=({self.channels}, {self.image_hw[0]}, {self.image_hw[1]}), in_memory={self.in_memory}{where})"
        )


class TensorImageDataset(ImageDataset):
    """All images held in one ``(N, C, H, W)`` tensor.

    ``images`` is either uint8 in ``[0, 255]`` (divided by 255 on access) or
    float32 already in ``[0, 1]`` (returned as is).
    """

    in_memory = True

    def __init__(self, images: Tensor, name: str, root: str | None, split: str) -> None:
        if images.ndim != 4 or images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"expected (N, C, H, W) uint8 or float32, got {tuple(images.shape)} {images.dtype}")
        super().__init__(name, root, split, channels=images.shape[1], image_size=tuple(images.shape[2:]))
        self.images = images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def _to_float(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.clone()

    def __getitem__(self, i: int) -> Tensor:
        return self._to_float(self.images[i])

    def get_batch(self, idx: Tensor) -> Tensor:
        """The images at ``idx`` as float32 in [0, 1], on the device the images are on (:meth:`on_device`)."""
        return self._to_float(self.images[idx.to(device=self.images.device, dtype=torch.long)])

    def on_device(self, device: torch.device | str) -> TensorImageDataset:
        """The same data set with its images (uint8 or float32, as stored) copied to ``device`` once, so batches are
        indexed there with no host-to-device copy per step."""
        out = copy.copy(self)
        out.images = self.images.to(device)
        return out
