"""DDPM (Ho et al., 2020) as a forward process on the shared engine: Gaussian noising, epsilon-prediction.

It exposes the Gaussian view (:class:`~genproc.processes.views.GaussianView`: identity basis, α_t = √ᾱ_t,
σ_t = √(1 - ᾱ_t)), so every Gaussian sampler in :mod:`genproc.samplers` drives it. Data enter in [0, 1] and are mapped to
[-1, 1] inside the process (and back in ``to_image``). Levels are t = 1..T; level 0 is the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genproc.errors import GenprocError
from genproc.processes.base import ELBO, ForwardProcess, ProcessConfig
from genproc.processes.rng import SampleRNG
from genproc.processes.views import GaussianView


@dataclass
class DDPMConfig(ProcessConfig):
    T: int = 1000  # number of noise levels
    schedule: str = "linear"  # linear (Ho et al.) | cosine (Nichol & Dhariwal)
    beta_start: float = 1e-4  # linear schedule endpoints
    beta_end: float = 0.02
    posterior_variance: str = "beta"  # the model's reverse variance: beta (sigma_t^2 = beta_t) | tilde (posterior beta~_t)
    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("posterior_variance",)

    def validate(self) -> None:
        if self.T < 1:
            raise GenprocError(f"recipe field 'process.T': expected an integer >= 1, got {self.T}")
        if self.schedule not in ("linear", "cosine"):
            raise GenprocError(f"recipe field 'process.schedule': expected linear|cosine, got {self.schedule!r}")
        if self.posterior_variance not in ("beta", "tilde"):
            raise GenprocError(f"recipe field 'process.posterior_variance': expected beta|tilde, got {self.posterior_variance!r}")


def beta_schedule(cfg: DDPMConfig) -> torch.Tensor:
    """beta_t for t = 1..T as a (T + 1,) float64 tensor with beta_0 = 0."""
    if cfg.schedule == "linear":  # Ho et al. 2020, Sec. 4
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.T, dtype=torch.float64)
    else:  # Nichol & Dhariwal 2021, Eq. (17): alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi / 2)
        s = 0.008
        t = torch.arange(cfg.T + 1, dtype=torch.float64) / cfg.T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cat([torch.zeros(1, dtype=torch.float64), betas])


class DDPMProcess(GaussianView, ForwardProcess):
    """Every tensor is (N, C, H, W) float32; the state ``x`` is in [-1, 1]-ish units (data mapped by 2 x0 - 1)."""

    label = "DDPM"
    cfg: DDPMConfig

    def __init__(self, cfg: DDPMConfig):
        super().__init__(cfg, cfg.T)
        self.betas = beta_schedule(cfg)  # (T+1,) float64
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)  # alpha_bar_0 = 1

    def _ab(self, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alpha_bar[k.cpu()].to(like.device, torch.float32).reshape(-1, 1, 1, 1)

    def forward_marginal(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Ho et al. Eq. (4): x_t = sqrt(ab_t) x + sqrt(1 - ab_t) eps with x = 2 x0 - 1."""
        ab = self._ab(k, x0)
        return ab.sqrt() * (2 * x0 - 1) + (1 - ab).sqrt() * eps

    def training_pair(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ho et al. Alg. 1: input x_t (:meth:`forward_marginal`), target eps (L_simple)."""
        return self.forward_marginal(x0, k, eps), eps

    def prior(self, rng: SampleRNG, shape: tuple[int, int, int], data: Any = None) -> torch.Tensor:
        """x_T ~ N(0, I); ``data`` is not used. Returns (B, *shape) on rng.device."""
        return rng.randn(tuple(shape))

    # -- the Gaussian view: identity basis, α_t = √ᾱ_t, σ_t = √(1 - ᾱ_t)
    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()

    def from_basis(self, u: torch.Tensor) -> torch.Tensor:
        return u.float()

    def alpha(self, k: int, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        return self.alpha_bar[int(k)].sqrt().to(device)

    def sigma(self, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return (1 - self.alpha_bar[int(k)]).sqrt().to(device)

    @property
    def reverse_variance(self) -> str:
        """beta (σ_t² = β_t, Ho et al.'s choice): the forward transition's variance; tilde: the posterior's."""
        return "transition" if self.cfg.posterior_variance == "beta" else "posterior"

    def split(self, u_t: torch.Tensor, u_out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ε-prediction: û_x = (u_t - σ_t ε̂) / α_t (Ho et al. Eq. 15), û_ε = ε̂."""
        return self.predict_x0(u_t.double(), u_out.double(), k), u_out.double()

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), in [-1, 1] units (Ho et al. Eq. 15)."""
        ab = float(self.alpha_bar[k])
        return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)

    def to_data_scale(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1] units (not clamped)."""
        return (x + 1) / 2

    # -- restoration: SDEdit (Meng et al. 2022)
    def level_noise_std(self, k: int) -> float:
        """√((1 - ᾱ_t) / ᾱ_t) / 2: x_t / √ᾱ_t = x + that noise, in [0, 1] units (x = 2 x0 - 1 halves it)."""
        ab = float(self.alpha_bar[k])
        return math.sqrt((1 - ab) / ab) / 2

    def observe(self, y: torch.Tensor, tau: torch.Tensor, noise_std: torch.Tensor, k: int,
                eps: torch.Tensor) -> torch.Tensor | None:
        """SDEdit: √ᾱ_t (2 y - 1) plus the noise that tops the observation's (2 s in [-1, 1] units, scaled by √ᾱ_t) up to
        √(1 - ᾱ_t); the blur is left for the chain to undo. None when 4 s² ᾱ_t > 1 - ᾱ_t."""
        ab = float(self.alpha_bar[k])
        top = (1 - ab) - ab * 4 * noise_std.double() ** 2  # (B,)
        if bool((top < 0).any()):
            return None
        return math.sqrt(ab) * (2 * y - 1) + top.sqrt().float().to(y.device)[:, None, None, None] * eps

    def elbo(self, train_data: Any, device: torch.device | str) -> ELBO:
        """Ho et al. Eq. (5) with the discretised decoder: see :class:`genproc.processes.ddpm_elbo.DDPMELBO`."""
        from genproc.processes.ddpm_elbo import DDPMELBO

        return DDPMELBO(self, train_data, device)
