"""The ancestral sampler of a Gaussian diffusion (Ho et al. 2020, Alg. 2 and Eq. 11), per coordinate in the process's
basis (Hoogeboom & Salimans 2023's per-frequency posterior for BDM), also with fewer steps than levels:

    u_s = c_k u_k + c_x û_x + √v ε,   (c_k, c_x, σ̃²) of q(u_s | u_k, û_x)  (GaussianView.posterior),

between the visited levels k > s, which need not be adjacent (Song et al. 2021's DDIM with η = 1 is the same chain with
v = σ̃²). ``variance``: ``posterior`` v = σ̃² (Ho et al.'s β̃_t), ``transition`` v = σ²_ks (Ho et al.'s β_t), ``auto`` the
one the process's model assumes (``GaussianView.reverse_variance``). The step into level 0 returns x̂₀.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genproc.errors import GenprocError
from genproc.processes import ForwardProcess, Net
from genproc.processes.views import GaussianView
from genproc.samplers.base import Noise, OnStep, Sampler
from genproc.samplers.gaussian import GaussianConfig, denoise

VARIANCES = ("auto", "posterior", "transition")


@dataclass
class AncestralConfig(GaussianConfig):
    variance: str = "auto"  # auto | posterior | transition

    def validate(self) -> None:
        super().validate()
        if self.variance not in VARIANCES:
            raise GenprocError(f"sampler setting 'variance': expected {'|'.join(VARIANCES)}, got {self.variance!r}")


def posterior_step(view: GaussianView, u: torch.Tensor, u_x: torch.Tensor, k: int, s: int, variance: str,
                   n: torch.Tensor) -> torch.Tensor:
    """Ho et al. Eq. (11) generalised: a draw of q(u_s | u_k, û_x) (with variance σ̃² or σ²_ks), coefficients float64;
    n: (B, C, H, W) standard normal in the basis."""
    hw, dev = tuple(u.shape[-2:]), u.device
    c_k, c_x, var = view.posterior(k, s, hw, dev)
    if variance == "transition":
        var = view.transition_variance(k, s, hw, dev)
    return c_k * u + c_x * u_x + var.sqrt() * n


class Ancestral(Sampler):
    view = GaussianView
    description = "ancestral sampling (Ho et al. 2020, Eq. 11), per coordinate, any subset of levels"
    cfg: AncestralConfig

    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        view: GaussianView = process  # type: ignore[assignment]
        variance = view.reverse_variance if self.cfg.variance == "auto" else self.cfg.variance
        u = view.to_basis(x)
        for j, k in enumerate(levels):
            s = levels[j + 1] if j + 1 < len(levels) else 0
            u_x, _ = denoise(view, net, u, k, self.cfg)
            u = u_x if s == 0 else posterior_step(view, u, u_x, k, s, variance, view.to_basis(noise(j).to(x.device)))
            if on_step is not None:
                on_step(j, s, view.from_basis(u))
        return view.from_basis(u)
