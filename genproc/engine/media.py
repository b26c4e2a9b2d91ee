"""Image files: grids (PNG), sequences (GIF), individual PNGs. uint8 only here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The one float -> 8-bit conversion: (..., C, H, W) float in [0, 1] -> same shape uint8, round(255 x) (clamped)."""
    return torch.round(x.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] -> (N, H, W, C) uint8 numpy, for PIL."""
    return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()


def grid_image(x: torch.Tensor, nrow: int | None = None, scale: int = 1) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one PIL image, ``nrow`` images per row, nearest upscaled by ``scale``."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(x.shape[0]))))
    g = make_grid(x.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    arr = _hwc(g[None])[0]
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(x, nrow, scale).save(path)
    return path


def save_gif(frames: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2, ms_per_frame: int = 120) -> Path:
    """frames: (T, N, C, H, W) in [0, 1] -> animated GIF of the grid over T frames (last frame held)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = [grid_image(f, nrow, scale).convert("P") for f in frames]
    durations = [ms_per_frame] * (len(imgs) - 1) + [ms_per_frame * 10]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0)
    return path


def save_pngs(x: torch.Tensor, folder: str | Path, offset: int = 0, names: list[str] | None = None) -> None:
    """Each image of x (N, C, H, W) in [0, 1] as ``folder/<name>.png`` (default names: 000000, 000001, ... from offset)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(_hwc(x)):
        name = names[i] if names is not None else f"{offset + i:06d}"
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(folder / f"{name}.png")
