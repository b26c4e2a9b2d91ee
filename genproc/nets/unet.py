"""The U-Net of the IHDM paper (App. B.1), after Ho et al. (2020).

Residual blocks with GroupNorm and dropout, a sinusoidal level embedding added in
every block, single-head self-attention at chosen resolutions, average-pool down /
nearest up (or strided / transposed-free conv resampling), zero-initialised output.
Sized entirely by :class:`UNetConfig`.

Any H x W (``image_size`` an int for H = W, or ``(H, W)``). Each level halves both sides, rounding up:
an odd side (e.g. MNIST's 7) is padded by one replicated row / column before pooling and the up path
crops back to the skip connection's size, so no side has to be divisible by 2^(levels - 1) (28 -> 14 -> 7 -> 4).
``attn_resolutions`` lists feature-map sizes measured by the **shorter side** ``min(h, w)`` of the map: a
square map is its side (the paper recipes' meaning, e.g. 16 and 8 on 64x64), and a 64x96 image gets attention
at the same levels as 64x64 (maps 16x24 and 8x12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genproc.errors import GenprocError
from genproc.imagesize import as_hw


@dataclass
class UNetConfig:
    channels: int = 128  # base channels
    channel_mult: tuple[int, ...] = (1, 2, 2)  # per-resolution multipliers
    num_res_blocks: int = 4  # residual blocks per resolution
    attn_resolutions: tuple[int, ...] = (7,)  # feature-map sizes min(h, w) with self-attention
    dropout: float = 0.1
    resample: str = "avgpool"  # avgpool (down) + nearest (up) | conv
    norm_groups: int = 32  # GroupNorm groups (reduced to a divisor of the width if needed)

    def validate(self) -> None:
        if self.channels < 1 or not self.channel_mult or self.num_res_blocks < 1:
            raise GenprocError("recipe fields 'net.channels', 'net.channel_mult', 'net.num_res_blocks' must be positive")
        if self.resample not in ("avgpool", "conv"):
            raise GenprocError(f"recipe field 'net.resample': expected avgpool|conv, got {self.resample!r}")
        if not 0 <= self.dropout < 1:
            raise GenprocError(f"recipe field 'net.dropout': expected a value in [0, 1), got {self.dropout}")


def level_embedding(k: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer levels k: (N,) -> (N, dim) float32 (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=k.device, dtype=torch.float32) / half)
    args = k.float()[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _groups(ch: int, wanted: int) -> int:
    return math.gcd(ch, wanted)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout, groups), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # level embedding added in each block
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch, groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b 1 (h w) c", three=3)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        return x + self.proj(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class Down(nn.Module):
    def __init__(self, ch: int, mode: str):
        super().__init__()
        self.op = nn.AvgPool2d(2) if mode == "avgpool" else nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:  # odd size (e.g. 7): pad so that up-sampling matches
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="replicate")
        return self.op(x)


class Up(nn.Module):
    def __init__(self, ch: int, mode: str):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1) if mode == "conv" else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")[..., : size[0], : size[1]]
        return self.conv(x)


class UNet(nn.Module):
    """f(u, k): (N, C, H, W) float, (N,) int levels -> (N, C, H, W) float32.

    image_size: H = W (int) or (H, W); each level's map is (ceil(h / 2), ceil(w / 2)) of the one above, with
    self-attention where its shorter side min(h, w) is in ``cfg.attn_resolutions`` (and always in the middle).
    """

    def __init__(self, cfg: UNetConfig, image_channels: int, image_size: int | tuple[int, int]):
        super().__init__()
        self.cfg = cfg
        ch, g = cfg.channels, cfg.norm_groups
        emb_dim = 4 * ch
        self.emb = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.inp = nn.Conv2d(image_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, hw, cur = [ch], as_hw(image_size), ch
        level_res = []  # shorter side min(h, w) of the feature map at each level (odd sides round up when pooled)
        for level, mult in enumerate(cfg.channel_mult):
            res = min(hw)
            level_res.append(res)
            for _ in range(cfg.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, cfg.dropout, g)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(cur, g))
                self.down.append(blocks)
                skips.append(cur)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([Down(cur, cfg.resample)]))
                skips.append(cur)
                hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
        self.mid = nn.ModuleList([ResBlock(cur, cur, emb_dim, cfg.dropout, g), AttnBlock(cur, g),
                                  ResBlock(cur, cur, emb_dim, cfg.dropout, g)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = level_res[level]
            for _ in range(cfg.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, emb_dim, cfg.dropout, g)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(cur, g))
                self.up.append(blocks)
            if level > 0:
                self.up.append(nn.ModuleList([Up(cur, cfg.resample)]))
        self.out = nn.Sequential(nn.GroupNorm(_groups(cur, g), cur), nn.SiLU(), _zero(nn.Conv2d(cur, image_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        emb = self.emb(level_embedding(k, self.cfg.channels))
        h = self.inp(x)
        hs = [h]
        for blocks in self.down:
            for b in blocks:
                h = b(h, emb) if isinstance(b, ResBlock) else b(h)
            hs.append(h)
        for b in self.mid:
            h = b(h, emb) if isinstance(b, ResBlock) else b(h)
        for blocks in self.up:
            if isinstance(blocks[0], Up):
                h = blocks[0](h, hs[-1].shape[-2:])
                continue
            h = torch.cat([h, hs.pop()], dim=1)
            for b in blocks:
                h = b(h, emb) if isinstance(b, ResBlock) else b(h)
        return self.out(h).float()
