"""Channel and size conversion of image tensors (grayscale <-> RGB, square resize)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma weights (the same ones PIL's convert("L") uses).
LUMA_601 = (0.299, 0.587, 0.114)


def to_channels(x: Tensor, channels: int) -> Tensor:
    """Convert float images ``(B, C, H, W)`` with C in {1, 3} to ``channels`` channels.

    1 -> 3 repeats the gray plane; 3 -> 1 takes the ITU-R 601 luma. Range is kept.
    """
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor(LUMA_601, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_square(x: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Resize float images ``(B, C, h, w)`` in ``[0, 1]`` to ``(B, C, size, size)``, clamped to ``[0, 1]``.

    Uses antialiasing when shrinking (no effect when enlarging); returns ``x`` if already that size.
    """
    if x.shape[-2:] == (size, size):
        return x
    y = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    return y.clamp_(0.0, 1.0)


def convert_uint8(images: Tensor, channels: int, size: int, chunk: int = 4096) -> Tensor:
    """Convert uint8 images ``(N, C, h, w)`` to uint8 ``(N, channels, size, size)``.

    Works in chunks of ``chunk`` images so the float intermediate stays small;
    values are rounded back to uint8. Returns the input unchanged when nothing to do.
    """
    if images.shape[1] == channels and images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], channels, size, size), dtype=torch.uint8)
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].float().div_(255.0)
        if channels < x.shape[1]:  # fewer planes to resize: convert first
            x = resize_square(to_channels(x, channels), size)
        else:
            x = to_channels(resize_square(x, size), channels)
        out[s : s + chunk] = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out
