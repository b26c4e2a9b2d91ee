"""Channel and size conversion of image tensors (grayscale <-> RGB; resize to H x W by the rule
``data.resize``: crop = cover and centre-crop, pad = fit and centre on black, stretch). The in-memory
data sets (digits, MNIST, CIFAR-10) all resize through :func:`resize_to`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genproc.imagesize import as_hw

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


def resize_to(x: Tensor, hw: tuple[int, int], rule: str = "crop", mode: str = "bilinear") -> Tensor:
    """Resize float images ``(B, C, h, w)`` in ``[0, 1]`` to ``(B, C, H, W)``, ``hw = (H, W)``, clamped to ``[0, 1]``.

    ``rule`` (the recipe's ``data.resize``) says what happens when the aspect ratio h : w is not H : W:

    - ``crop``: scale both sides by s = max(H / h, W / w), so the image covers H x W (sides round(h s) and
      round(w s), at least H and W), then keep the centre H x W (offset floor of half the excess per axis);
    - ``pad``: scale by s = min(H / h, W / w), so the image fits inside (sides round(h s), round(w s)), and centre
      it on black (0, as folders: ``genproc.data.decode.BACKGROUND``; an odd margin's extra line goes bottom / right);
    - ``stretch``: resize to H x W directly, ignoring the aspect ratio.

    With the same aspect ratio (e.g. square to square) all three are the same plain resize. Interpolation is
    ``mode`` (bilinear, align_corners=False) with antialiasing when shrinking. Returns ``x`` if already H x W.
    """
    h, w = x.shape[-2:]
    H, W = int(hw[0]), int(hw[1])
    if (h, w) == (H, W):
        return x
    if rule not in ("crop", "pad", "stretch"):
        raise ValueError(f"resize rule must be crop, pad or stretch, got {rule!r}")
    if rule == "stretch" or h * W == w * H:  # same aspect: every rule is the plain resize
        size = (H, W)
    elif rule == "crop":
        s = max(H / h, W / w)
        size = (max(H, round(h * s)), max(W, round(w * s)))
    else:
        s = min(H / h, W / w)
        size = (min(H, max(1, round(h * s))), min(W, max(1, round(w * s))))
    y = x if size == (h, w) else F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)
    if rule == "pad":  # an odd margin leaves its extra row / column at the bottom / right
        top, left = (H - size[0]) // 2, (W - size[1]) // 2
        out = y.new_zeros((*y.shape[:-2], H, W))
        out[..., top : top + size[0], left : left + size[1]] = y
        return out
    top, left = (size[0] - H) // 2, (size[1] - W) // 2  # crop: an odd excess loses its extra row / column at the bottom / right
    return y[..., top : top + H, left : left + W]


def convert_uint8(images: Tensor, channels: int, hw: int | tuple[int, int], rule: str = "crop",
                  chunk: int = 4096) -> Tensor:
    """Convert uint8 images ``(N, C, h, w)`` to uint8 ``(N, channels, H, W)`` (``hw``: H = W, or (H, W)),
    resized by :func:`resize_to` with ``rule``.

    Works in chunks of ``chunk`` images so the float intermediate stays small;
    values are rounded back to uint8. Returns the input unchanged when nothing to do.
    """
    size = as_hw(hw)
    if images.shape[1] == channels and tuple(images.shape[-2:]) == size:
        return images
    out = torch.empty((images.shape[0], channels, *size), dtype=torch.uint8)
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].float().div_(255.0)
        if channels < x.shape[1]:  # fewer planes to resize: convert first
            x = resize_to(to_channels(x, channels), size, rule)
        else:
            x = to_channels(resize_to(x, size, rule), channels)
        out[s : s + chunk] = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out
