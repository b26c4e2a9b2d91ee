"""Network registry: recipe name -> (module class, config dataclass).

A net is built as ``cls(cfg, image_channels, image_size)`` (``image_size``: H = W as an int, or
``(H, W)``; every registered net accepts H != W) and called as ``net(x, k)`` with x: (N, C, H, W)
and k: (N,) int64 levels.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from genproc.nets.unet import UNet, UNetConfig

NETS: dict[str, tuple[type, type]] = {
    "unet": (UNet, UNetConfig),
}


def name_of(cfg: Any) -> str:
    """The registry name of the net whose config ``cfg`` is (exact class match)."""
    for name, (_, cfg_cls) in NETS.items():
        if type(cfg) is cfg_cls:
            return name
    raise TypeError(f"no net registered for config {type(cfg).__name__}")


def build_net(cfg: Any, image_channels: int, image_size: int | tuple[int, int]) -> nn.Module:
    """The registered net for config ``cfg`` on (image_channels, H, W) images; ``image_size``: H = W or (H, W)."""
    for cls, cfg_cls in NETS.values():
        if type(cfg) is cfg_cls:
            return cls(cfg, image_channels, image_size)
    raise TypeError(f"no net registered for config {type(cfg).__name__}")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
