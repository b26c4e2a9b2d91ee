"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2: the multistep second-order solver of the diffusion ODE in
data prediction), per coordinate in the process's basis (λ = log(α / σ) per coordinate: per frequency for BDM).

From level k to s with h = λ_s - λ_k (Eq. 9's first-order step is DDIM's η = 0 update):

    u_s = (σ_s / σ_k) u_k - α_s (e^{-h} - 1) D,
    D = û_x                                              on the first step,
    D = (1 + 1 / (2 r)) û_x - 1 / (2 r) û_x,prev,   r = h_prev / h   after it (the previous call's x̂₀, kept as history).

The step into level 0 (σ = 0, λ = ∞) returns x̂₀, as diffusers' ``DPMSolverMultistepScheduler`` does with
``final_sigmas_type="zero"`` (a first-order final step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genproc.processes import ForwardProcess, Net
from genproc.processes.views import GaussianView
from genproc.samplers.base import Noise, OnStep, Sampler
from genproc.samplers.gaussian import GaussianConfig, denoise


@dataclass
class DPMpp2MConfig(GaussianConfig):
    """The x̂₀ settings and ``steps`` only."""


def dpmpp_2m_step(view: GaussianView, u: torch.Tensor, u_x: torch.Tensor, k: int, s: int,
                  prev: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Lu et al. Alg. 2, one step from level k to s >= 1. prev: (û_x, λ) of the previous call, or None (first
    order). Coefficients float64."""
    hw, dev = tuple(u.shape[-2:]), u.device
    lam_k, lam_s = view.log_snr(k, hw, dev), view.log_snr(s, hw, dev)
    h = lam_s - lam_k
    d = u_x
    if prev is not None:
        r = (lam_k - prev[1]) / h
        d = (1 + 1 / (2 * r)) * u_x - 1 / (2 * r) * prev[0]
    return view.sigma(s, dev) / view.sigma(k, dev) * u - view.alpha(s, hw, dev) * torch.expm1(-h) * d


class DPMpp2M(Sampler):
    view = GaussianView
    description = "DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, per coordinate"
    default_steps = 20
    cfg: DPMpp2MConfig

    def stochastic(self, process: ForwardProcess) -> bool:
        return False

    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        view: GaussianView = process  # type: ignore[assignment]
        u, prev = view.to_basis(x), None
        hw = tuple(x.shape[-2:])
        for j, k in enumerate(levels):
            s = levels[j + 1] if j + 1 < len(levels) else 0
            u_x, _ = denoise(view, net, u, k, self.cfg)
            u = u_x if s == 0 else dpmpp_2m_step(view, u, u_x, k, s, prev)
            prev = (u_x, view.log_snr(k, hw, x.device))
            if on_step is not None:
                on_step(j, s, view.from_basis(u))
        return view.from_basis(u)
