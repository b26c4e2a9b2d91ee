"""What every sampler of a Gaussian diffusion shares: the denoiser in the process's basis and x̂₀ clipping.

The x̂₀ settings are the same for every sampler that predicts x̂₀ (``clip``: clamp | none | dynamic), so a record's
sampler settings say which was used:

* ``clamp`` (the default for every sampler): x̂₀ clamped to the data range, where the data are known to lie (Ho et
  al.'s released sampling code, diffusers' ``clip_sample``, genproc's DDIM before samplers were their own units);
  measured on the released DDPM it is worth 20+ FID to DPM-Solver++ (issue 20);
* ``none``: the samplers' equations as written (diffusers' DPM-Solver default);
* ``dynamic``: dynamic thresholding (Saharia et al. 2022, Sec. 2.3 / App. E): s = the ``clip_percentile`` quantile of
  |x̂₀| per image (in the data range's centred, unit-half-width units), s = max(s, 1) capped at ``clip_max``, x̂₀ clamped
  to [-s, s] and divided by s (diffusers' ``thresholding``).

After a clip the noise estimate is made consistent with it: ε̂ = (u_t - α û_x) / σ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genproc.errors import GenprocError
from genproc.processes import Net
from genproc.processes.views import GaussianView
from genproc.samplers.base import SamplerConfig, call

CLIPS = ("none", "clamp", "dynamic")


@dataclass
class GaussianConfig(SamplerConfig):
    """Settings of every Gaussian sampler that predicts x̂₀."""

    clip: str = "clamp"  # clamp | none | dynamic (x̂₀ to the data range; Saharia et al. 2022's dynamic thresholding)
    clip_percentile: float = 0.995  # dynamic: the quantile of |x̂₀| per image
    clip_max: float = 1.0  # dynamic: the largest threshold s (1: plain clamping of the outliers' scale)

    def validate(self) -> None:
        super().validate()
        if self.clip not in CLIPS:
            raise GenprocError(f"sampler setting 'clip': expected {'|'.join(CLIPS)}, got {self.clip!r}")
        if not 0 < self.clip_percentile <= 1 or self.clip_max < 1:
            raise GenprocError(f"sampler settings 'clip_percentile' in (0, 1] and 'clip_max' >= 1 expected, "
                               f"got {self.clip_percentile}, {self.clip_max}")


def clip_x0(x0: torch.Tensor, cfg: GaussianConfig, data_range: tuple[float, float]) -> torch.Tensor:
    """x̂₀ (B, C, H, W) in state units clipped as ``cfg.clip`` says (see the module docstring); same shape and dtype."""
    if cfg.clip == "none":
        return x0
    lo, hi = data_range
    c, r = (lo + hi) / 2, (hi - lo) / 2
    z = (x0 - c) / r  # the data range as [-1, 1]
    if cfg.clip == "clamp":
        z = z.clamp(-1, 1)
    else:  # Saharia et al. 2022: per image threshold s >= 1
        s = torch.quantile(z.abs().flatten(1).float(), cfg.clip_percentile, dim=1).to(z.dtype)  # (B,)
        s = s.clamp(1.0, cfg.clip_max)[:, None, None, None]
        z = z.clamp(-s, s) / s
    return z * r + c


def denoise(view: GaussianView, net: Net, u: torch.Tensor, k: int,
            cfg: GaussianConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One network call at level k >= 1 on the state with coefficients u (B, C, H, W) float64: (û_x, û_ε), float64
    coefficients, x̂₀ clipped as ``cfg`` says and ε̂ consistent with it."""
    x = view.from_basis(u)
    u_x, u_e = view.split(u, view.to_basis(call(net, x, k)), k)
    if cfg.clip != "none":
        u_x = view.to_basis(clip_x0(view.from_basis(u_x).double(), cfg, view.data_range))
        u_e = view.eps_from_x0(u, u_x, k)
    return u_x, u_e
