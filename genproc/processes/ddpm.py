"""DDPM (Ho et al., 2020) as a forward process on the shared engine: Gaussian noising,
epsilon-prediction, ancestral or DDIM (Song et al., 2021) sampling.

Data enter in [0, 1] and are mapped to [-1, 1] inside the process (and back in ``to_image``).
Levels are t = 1..T; level 0 is the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genproc.errors import GenprocError
from genproc.processes.base import ELBO, ForwardProcess, ProcessConfig, evenly_spaced_levels
from genproc.processes.rng import SampleRNG


@dataclass
class DDPMConfig(ProcessConfig):
    T: int = 1000  # number of noise levels
    schedule: str = "linear"  # linear (Ho et al.) | cosine (Nichol & Dhariwal)
    beta_start: float = 1e-4  # linear schedule endpoints
    beta_end: float = 0.02
    sampler: str = "ancestral"  # ancestral | ddim
    ddim_steps: int = 50  # levels visited by DDIM
    eta: float = 0.0  # DDIM stochasticity (0: deterministic, 1: ancestral-like)
    posterior_variance: str = "beta"  # reverse std: beta (sigma_t^2 = beta_t) | tilde (posterior beta~_t)
    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("sampler", "ddim_steps", "eta", "posterior_variance")

    def validate(self) -> None:
        if self.T < 1:
            raise GenprocError(f"recipe field 'process.T': expected an integer >= 1, got {self.T}")
        if self.schedule not in ("linear", "cosine"):
            raise GenprocError(f"recipe field 'process.schedule': expected linear|cosine, got {self.schedule!r}")
        if self.sampler not in ("ancestral", "ddim"):
            raise GenprocError(f"recipe field 'process.sampler': expected ancestral|ddim, got {self.sampler!r}")
        if self.posterior_variance not in ("beta", "tilde"):
            raise GenprocError(f"recipe field 'process.posterior_variance': expected beta|tilde, got {self.posterior_variance!r}")
        if self.sampler == "ddim" and not 1 <= self.ddim_steps <= self.T:
            raise GenprocError(f"recipe field 'process.ddim_steps': expected 1..T={self.T}, got {self.ddim_steps}")


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


class DDPMProcess(ForwardProcess):
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

    def reverse_levels(self) -> list[int]:
        """Ancestral: T, ..., 1. DDIM: ``ddim_steps`` evenly spaced levels from T down to 1."""
        if self.cfg.sampler == "ancestral":
            return list(range(self.num_levels, 0, -1))
        return evenly_spaced_levels(self.num_levels, self.cfg.ddim_steps)

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), in [-1, 1] units (Ho et al. Eq. 15)."""
        ab = float(self.alpha_bar[k])
        return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)

    def reverse_step(self, x: torch.Tensor, net_out: torch.Tensor, k: int, k_next: int,
                     noise: torch.Tensor) -> torch.Tensor:
        """One step from level k to k_next (k - 1 for ancestral sampling); no noise into level 0."""
        eps = net_out.float()
        if self.cfg.sampler == "ancestral":
            beta, ab = float(self.betas[k]), float(self.alpha_bar[k])
            # Ho et al. Eq. (11): mu = (x - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)
            mean = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)
            if k_next == 0:
                return mean
            var = beta if self.cfg.posterior_variance == "beta" else beta * (1 - float(self.alpha_bar[k - 1])) / (1 - ab)
            return mean + math.sqrt(var) * noise
        # DDIM (Song et al. 2021, Eq. 12)
        ab, ab_next = float(self.alpha_bar[k]), float(self.alpha_bar[k_next])
        x0 = self.predict_x0(x, eps, k).clamp(-1, 1)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)  # consistent with the clipped x0
        sigma = self.cfg.eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)) if k_next > 0 else 0.0
        x = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - sigma**2, 0.0)) * eps
        return x + sigma * noise if sigma > 0 else x

    @property
    def reverse_is_stochastic(self) -> bool:
        """Ancestral sampling always; DDIM only with eta > 0 (and more than one step)."""
        return self.cfg.sampler == "ancestral" or (self.cfg.eta > 0 and len(self.reverse_levels()) > 1)

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
