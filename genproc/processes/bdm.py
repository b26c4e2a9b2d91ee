"""Blurring Diffusion Models (BDM; Hoogeboom & Salimans, ICLR 2023, arXiv 2209.05557): blur *and* noise, a Gaussian
diffusion that is diagonal in the DCT basis.

In the frequency basis u = Vᵀ z (genproc's orthonormal 2-D DCT-II, eigenvalues λ_nm = π²(n²/H² + m²/W²) of the
Neumann Laplacian, the same basis as the heat operator), at time t = k / T for level k = 1..T:

    σ_B(t) = σ_B,max sin²(π t / 2),  τ_t = σ_B(t)² / 2                    blur schedule
    d_t    = (1 - d_min) exp(-λ τ_t) + d_min                               dissipation per frequency (d_min = 0.001)
    logsnr_t = -2 log tan(a t + b), b = atan(e^{-logsnr_max/2}), a = atan(e^{-logsnr_min/2}) - b
    a_t = √sigmoid(logsnr_t),  σ_t = √sigmoid(-logsnr_t)                 cosine noise schedule, log-SNR in [-10, 10]
    α_t = a_t d_t                                                          per frequency
    q(z_t | x) = N(V(α_t ⊙ Vᵀ x), σ_t² I)                                 isotropic noise (so ε is the same in both bases)

Level 0 is the data itself (α = 1, σ = 0). ``prediction`` chooses what the network predicts (the loss is the squared
error of that target, averaged over pixels; the DCT is orthonormal, so it is the same in either basis):

    eps  ε (the paper's ε-parametrisation, L_simple):          û_x = (u_t - σ_t û_ε) / α_t
    x    the data x:                                           û_ε = (u_t - α_t û_x) / σ_t
    v    per frequency, with r = √(α_t² + σ_t²), ᾱ = α_t / r, σ̄ = σ_t / r and z̄ = u_t / r (so z̄ = ᾱ u_x + σ̄ ε):
         v = ᾱ ε - σ̄ u_x (Salimans & Ho 2022, Sec. 4, taken per frequency; r = 1 without blur): û_x = ᾱ z̄ - σ̄ v̂,
         û_ε = σ̄ z̄ + ᾱ v̂

ε-prediction multiplies the network's error by σ_t / α_t in û_x, which reaches 10³ at the dissipation floor d_min
(``docs/bdm_mnist_small``); with v the error in û_x is at most the error in v̂, at every frequency and level.
The process exposes the Gaussian view (:class:`~genproc.processes.views.GaussianView`: the DCT basis, α per frequency,
σ isotropic), so every Gaussian sampler of :mod:`genproc.samplers` drives it per frequency: the ancestral chain through
the per-frequency posterior q(u_s | u_t, x̂) (:meth:`GaussianView.posterior`, denominators clipped at ``DELTA`` as in
the paper's pseudocode), DDIM per frequency (as gDDIM did for BDM), DPM-Solver++ and Heun per coordinate.

The schedule, the posterior and the pseudocode follow the paper's Sec. 3-4 and appendix as summarised in genproc's
issue 12; the paper's full text was not available offline in the session that wrote this module, so the published
CIFAR-10 hyper-parameters in ``recipes/bdm_cifar.yaml`` are labelled as such there. Data enter in [0, 1] and are
mapped to [-1, 1] (x = 2 x0 - 1) inside, as the paper and DDPM do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genproc.errors import GenprocError
from genproc.processes.base import ELBO, ForwardProcess, ProcessConfig
from genproc.processes.dct import METHODS as DCT_METHODS
from genproc.processes.dct import dct2, heat_forward, idct2, laplacian_eigenvalues, noise_left
from genproc.processes.rng import SampleRNG
from genproc.processes.views import GaussianView

PREDICTIONS = ("eps", "x", "v")


@dataclass
class BDMConfig(ProcessConfig):
    T: int = 1000  # number of levels (t = k / T)
    sigma_blur_max: float = 20.0  # σ_B at t = 1, pixels
    min_scale: float = 0.001  # d_min: the dissipation never removes a frequency entirely
    logsnr_min: float = -10.0  # log-SNR at t = 1
    logsnr_max: float = 10.0  # log-SNR at t -> 0
    dct: str = "auto"  # auto | matmul | fft | scipy (genproc.processes.dct)
    prediction: str = "eps"  # eps | x | v: the network's target (a training-time choice)
    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("dct",)

    def validate(self) -> None:
        if self.T < 1:
            raise GenprocError(f"recipe field 'process.T': expected an integer >= 1, got {self.T}")
        if self.sigma_blur_max < 0 or not 0 < self.min_scale <= 1:
            raise GenprocError(f"recipe fields 'process.sigma_blur_max' >= 0 and 0 < 'process.min_scale' <= 1 expected, "
                               f"got {self.sigma_blur_max}, {self.min_scale}")
        if not self.logsnr_min < self.logsnr_max:
            raise GenprocError(f"recipe fields 'process.logsnr_min' < 'process.logsnr_max' expected, "
                               f"got {self.logsnr_min}, {self.logsnr_max}")
        if self.prediction not in PREDICTIONS:
            raise GenprocError(f"recipe field 'process.prediction': expected {'|'.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.dct not in DCT_METHODS:
            raise GenprocError(f"recipe field 'process.dct': expected {'|'.join(DCT_METHODS)}, got {self.dct!r}")


def logsnr_cosine(t: torch.Tensor, logsnr_min: float = -10.0, logsnr_max: float = 10.0) -> torch.Tensor:
    """The cosine schedule's log-SNR at times t in [0, 1] (float64), logsnr_max at t = 0 and logsnr_min at t = 1."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t.double() + b))


def blur_sigma(t: torch.Tensor, sigma_blur_max: float) -> torch.Tensor:
    """σ_B(t) = σ_B,max sin²(π t / 2), pixels (float64)."""
    return sigma_blur_max * torch.sin(0.5 * math.pi * t.double()) ** 2


class BDMProcess(GaussianView, ForwardProcess):
    """Every tensor is (N, C, H, W) float32; the state z is in [-1, 1]-ish pixel units."""

    label = "BDM"
    cfg: BDMConfig

    def __init__(self, cfg: BDMConfig):
        super().__init__(cfg, cfg.T)
        t = torch.arange(cfg.T + 1, dtype=torch.float64) / cfg.T  # (T+1,), t_k = k / T
        logsnr = logsnr_cosine(t, cfg.logsnr_min, cfg.logsnr_max)
        self.a = torch.sigmoid(logsnr).sqrt()  # (T+1,) the noise schedule's signal scale
        self.sigmas = torch.sigmoid(-logsnr).sqrt()  # (T+1,) the noise std
        self.a[0], self.sigmas[0] = 1.0, 0.0  # level 0 is the data
        self.tau = blur_sigma(t, cfg.sigma_blur_max) ** 2 / 2  # (T+1,) dissipation time, tau_0 = 0

    # -- the schedule
    def alpha(self, k: torch.Tensor | int, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """α_k = a_k d_k per frequency, float64: (H, W) for an int k, (B, 1, H, W) for levels k: (B,)."""
        lam = laplacian_eigenvalues(*hw, device=device).double()  # (H, W)
        k = torch.as_tensor(k).cpu()
        tau, a = self.tau[k].to(device), self.a[k].to(device)
        if k.ndim:
            tau, a, lam = tau[:, None, None, None], a[:, None, None, None], lam[None, None]
        d = (1 - self.cfg.min_scale) * torch.exp(-lam * tau) + self.cfg.min_scale
        return a * d

    def sigma(self, k: torch.Tensor | int, device: torch.device | str = "cpu") -> torch.Tensor:
        """σ_k, float64: a scalar tensor for an int k, (B, 1, 1, 1) for levels k: (B,)."""
        k = torch.as_tensor(k).cpu()
        s = self.sigmas[k].to(device)
        return s[:, None, None, None] if k.ndim else s

    # -- training
    def forward_marginal(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z_k = V(α_k ⊙ Vᵀ x) + σ_k ε with x = 2 x0 - 1 (level 0: x)."""
        hw = tuple(x0.shape[-2:])
        u = dct2(2 * x0 - 1, self.cfg.dct)
        return idct2((self.alpha(k, hw, x0.device) * u.double()).float(), self.cfg.dct) + self.sigma(k, x0.device).float() * eps

    def training_pair(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input z_k (:meth:`forward_marginal`), target ε, x = 2 x0 - 1 or V v (``prediction``)."""
        z = self.forward_marginal(x0, k, eps)
        if self.cfg.prediction == "eps":
            return z, eps
        if self.cfg.prediction == "x":
            return z, 2 * x0 - 1
        hw, dev = tuple(x0.shape[-2:]), x0.device
        a, s = self._unit_scales(k, hw, dev)
        u_x, u_e = dct2(2 * x0 - 1, self.cfg.dct).double(), dct2(eps, self.cfg.dct).double()
        return z, idct2((a * u_e - s * u_x).float(), self.cfg.dct)

    def _unit_scales(self, k: torch.Tensor | int, hw: tuple[int, int], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(ᾱ, σ̄) = (α_k, σ_k) / √(α_k² + σ_k²) per frequency, float64 (the v-parametrisation's rotation)."""
        a, s = self.alpha(k, hw, device), self.sigma(k, device)
        r = (a**2 + s**2).sqrt()
        return a / r, s / r

    # -- generation
    def prior(self, rng: SampleRNG, shape: tuple[int, int, int], data: Any = None) -> torch.Tensor:
        """z_T ~ N(0, I) (at t = 1, α_1 <= a_1 = √sigmoid(logsnr_min) ≈ 0.0067)."""
        return rng.randn(tuple(shape))

    # -- the Gaussian view: the DCT basis, α per frequency, σ isotropic
    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        return dct2(x.float(), self.cfg.dct).double()

    def from_basis(self, u: torch.Tensor) -> torch.Tensor:
        return idct2(u.float(), self.cfg.dct)

    def split(self, u_t: torch.Tensor, u_out: torch.Tensor, k: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(û_x, û_ε) in the frequency basis (float64) from the state u_t and the network's output u_out (both DCT
        coefficients, (B, C, H, W)) at level k >= 1 (int or (B,)), for the config's ``prediction``."""
        hw, dev = tuple(u_t.shape[-2:]), u_t.device
        u_t, u_out = u_t.double(), u_out.double()
        a, s = self.alpha(k, hw, dev), self.sigma(k, dev)
        if self.cfg.prediction == "eps":
            return (u_t - s * u_out) / a, u_out
        if self.cfg.prediction == "x":
            return u_out, (u_t - a * u_out) / s
        a_bar, s_bar = self._unit_scales(k, hw, dev)
        z_bar = u_t / (a**2 + s**2).sqrt()
        return a_bar * z_bar - s_bar * u_out, s_bar * z_bar + a_bar * u_out

    def to_data_scale(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1] units (not clamped)."""
        return (x + 1) / 2

    # -- restoration
    def degradation_time(self, k: int) -> float:
        return float(self.tau[k])

    def level_noise_std(self, k: int) -> float:
        """σ_t / (2 a_t): z_t / a_t is the (blurred) data plus that noise, in [0, 1] units."""
        return float(self.sigmas[k] / self.a[k]) / 2

    def observe(self, y: torch.Tensor, tau: torch.Tensor, noise_std: torch.Tensor, k: int,
                eps: torch.Tensor) -> torch.Tensor | None:
        """a_t (2 F(τ_t - tau) y - 1) plus the noise topping the observation's (scaled by 2 a_t, thinned by the further
        blur) up to σ_t. The dissipation floor d_min (0.001 of each coefficient) is not re-added: the observation is a
        heat blur, F(2 y - 1) = 2 F y - 1 (the DC coefficient is kept). None when the noise left exceeds σ_t."""
        dt = (self.tau[k] - tau.double()).clamp_min(0)  # (B,)
        left = 2 * float(self.a[k]) * noise_left(noise_std, dt, tuple(y.shape[-2:]))
        top = float(self.sigmas[k]) ** 2 - left**2
        if bool((top < 0).any()):
            return None
        blurred = heat_forward(y, dt.float().to(y.device), self.cfg.dct)
        return float(self.a[k]) * (2 * blurred - 1) + top.sqrt().float().to(y.device)[:, None, None, None] * eps

    def elbo(self, train_data: Any, device: torch.device | str) -> ELBO:
        """The discrete-time chain's bound: see :class:`genproc.processes.bdm_elbo.BDMELBO`."""
        from genproc.processes.bdm_elbo import BDMELBO

        return BDMELBO(self)
