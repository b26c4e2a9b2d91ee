"""DDIM (Song et al. 2021, Eq. 12), per coordinate in the process's basis (gDDIM, Zhang et al. 2023, for BDM's
per-frequency α):

    u_s = α_s û_x + √(σ_s² - c²) û_ε + c ε,   c = η σ̃_{k→s}   (σ̃²: the posterior variance of q(u_s | u_k, û_x)),

η = 0 deterministic, η = 1 the ancestral chain's mean and variance. The step into level 0 returns x̂₀.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genproc.errors import GenprocError
from genproc.processes import ForwardProcess, Net
from genproc.processes.views import GaussianView
from genproc.samplers.base import Noise, OnStep, Sampler
from genproc.samplers.gaussian import GaussianConfig, denoise


@dataclass
class DDIMConfig(GaussianConfig):
    eta: float = 0.0  # 0: deterministic; 1: the ancestral posterior's variance

    def validate(self) -> None:
        super().validate()
        if self.eta < 0:
            raise GenprocError(f"sampler setting 'eta': expected >= 0, got {self.eta}")


def ddim_step(view: GaussianView, u: torch.Tensor, u_x: torch.Tensor, u_e: torch.Tensor, k: int, s: int, eta: float,
              n: torch.Tensor | None) -> torch.Tensor:
    """Song et al. Eq. (12) per coordinate, from level k to s >= 1; coefficients float64, n: standard normal (or None
    when eta = 0)."""
    hw, dev = tuple(u.shape[-2:]), u.device
    a_s, s2_s = view.alpha(s, hw, dev), view.sigma(s, dev) ** 2
    if eta == 0:
        return a_s * u_x + s2_s.sqrt() * u_e
    c = eta * view.posterior(k, s, hw, dev)[2].sqrt()
    return a_s * u_x + (s2_s - c**2).clamp_min(0).sqrt() * u_e + c * n


class DDIM(Sampler):
    view = GaussianView
    description = "DDIM (Song et al. 2021, Eq. 12), per coordinate; eta = 0 deterministic"
    default_steps = 50
    cfg: DDIMConfig

    def stochastic(self, process: ForwardProcess) -> bool:
        return self.cfg.eta > 0

    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        view: GaussianView = process  # type: ignore[assignment]
        u = view.to_basis(x)
        for j, k in enumerate(levels):
            s = levels[j + 1] if j + 1 < len(levels) else 0
            u_x, u_e = denoise(view, net, u, k, self.cfg)
            if s == 0:
                u = u_x
            else:
                n = view.to_basis(noise(j).to(x.device)) if self.cfg.eta > 0 else None
                u = ddim_step(view, u, u_x, u_e, k, s, self.cfg.eta, n)
            if on_step is not None:
                on_step(j, s, view.from_basis(u))
        return view.from_basis(u)
