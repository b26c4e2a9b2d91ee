"""The Inverse Heat Dissipation forward process (IHDM; Rissanen et al., ICLR 2023).

Forward (Eq. 4):  q(u_k | u_0) = N(u_k | F(t_k) u_0, sigma^2 I), k = 1..K, u_0 = data.
Reverse (Eq. 8):  p(u_{k-1} | u_k) = N(mu(u_k, k), delta^2 I), mu = u_k + f(u_k, k).
Prior (Sec. 3.2): a Gaussian KDE of blurred training images, F(t_K) x_train + delta eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from genproc.errors import GenprocError
from genproc.processes.dct import heat_forward
from genproc.processes.rng import SampleRNG


@dataclass
class HeatConfig:
    K: int = 100  # number of levels (Table 2)
    sigma_blur_min: float = 0.5  # sigma_B at k = 1 (App. B.5: sub-pixel blur)
    sigma_blur_max: float = 20.0  # sigma_B at k = K (Table 2)
    sigma: float = 0.01  # training noise std (Eq. 4), data in [0, 1]
    delta: float = 0.0125  # sampling noise std (Eq. 8), default 1.25 sigma
    dct: str = "auto"  # auto | matmul | fft
    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("delta", "dct")  # may change after training (genproc.load(sampling=...))

    def validate(self) -> None:
        if self.K < 1:
            raise GenprocError(f"recipe field 'process.K': expected an integer >= 1, got {self.K}")
        if not 0 < self.sigma_blur_min <= self.sigma_blur_max:
            raise GenprocError(
                f"recipe fields 'process.sigma_blur_min/max': expected 0 < min <= max, got {self.sigma_blur_min}, {self.sigma_blur_max}"
            )
        if self.sigma < 0 or self.delta < 0:
            raise GenprocError("recipe fields 'process.sigma' and 'process.delta' must be >= 0")
        if self.dct not in ("auto", "matmul", "fft"):
            raise GenprocError(f"recipe field 'process.dct': expected auto|matmul|fft, got {self.dct!r}")


def blur_schedule(K: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """App. B.5: sigma_B,k log-spaced from sigma_min (k=1) to sigma_max (k=K); sigma_B,0 = 0.

    Returns (K + 1,) float64 indexed by k = 0..K.
    """
    k = torch.arange(1, K + 1, dtype=torch.float64)
    if K == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        s = torch.exp(math.log(sigma_min) * (K - k) / (K - 1) + math.log(sigma_max) * (k - 1) / (K - 1))
    return torch.cat([torch.zeros(1, dtype=torch.float64), s])


class HeatProcess:
    """IHDM: blur by the heat equation, learn to de-blur one level at a time.

    Every tensor argument is (N, C, H, W) float32; data ``x0`` is in [0, 1].
    """

    needs_data_for_prior = True

    def __init__(self, cfg: HeatConfig):
        self.cfg = cfg
        self.num_steps = cfg.K
        self.sigma_blur = blur_schedule(cfg.K, cfg.sigma_blur_min, cfg.sigma_blur_max)  # (K+1,)
        self.t = (self.sigma_blur**2 / 2).float()  # t_k = sigma_B,k^2 / 2, (K+1,)

    # -- forward process
    def blur(self, x: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
        """F(t_k) x for a level k (int) or per-sample levels k: (N,) int64."""
        k = torch.as_tensor(k)
        t = self.t[int(k)] if k.ndim == 0 else self.t[k.cpu()].to(x.device)
        return heat_forward(x, t, self.cfg.dct)

    def sample_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Alg. 1: k ~ U{1, ..., K} (inclusive: level K, where sampling starts, is trained too)."""
        return torch.randint(1, self.num_steps + 1, (n,), generator=generator)

    def training_pair(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Alg. 1: input u_k = F(t_k) x0 + sigma eps, target F(t_{k-1}) x0 - u_k.

        The target is the residual, since mu(u_k, k) = u_k + f(u_k, k): regressing f on it
        is the same squared error as ||mu - F(t_{k-1}) x0||^2.
        x0: (N, C, H, W) in [0, 1]; k: (N,) int64 in 1..K; eps: (N, C, H, W) ~ N(0, I).
        """
        u_k = self.blur(x0, k) + self.cfg.sigma * eps
        target = self.blur(x0, k - 1) - u_k
        return u_k, target

    def loss(self, net_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error averaged over batch and pixels (a scalar; = ||.||^2 / (N C H W))."""
        return torch.mean((net_out.float() - target) ** 2)

    # -- generative process
    def prior(self, data, rng: SampleRNG, delta: float | None = None, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Sec. 3.2: a sample of the KDE prior, F(t_K) x_train[i] + delta eps, one per rng stream.

        data: an ImageDataset (get_batch(idx) -> (B, C, H, W) in [0, 1]); ``shape`` is implied by it.
        Returns (B, C, H, W).
        """
        if data is None or len(data) == 0:
            raise GenprocError("the heat prior needs the training images (a KDE of blurred data); none were given")
        delta = self.cfg.delta if delta is None else delta
        idx = rng.randint(len(data)).cpu()
        x = data.get_batch(idx).to(rng.device)
        return self.blur(x, self.num_steps) + delta * rng.randn(tuple(x.shape[1:]))

    def sampling_levels(self) -> list[int]:
        """Alg. 2: k = K, K-1, ..., 1."""
        return list(range(self.num_steps, 0, -1))

    def reverse_step(self, u: torch.Tensor, net_out: torch.Tensor, k: int, noise: torch.Tensor, delta: float | None = None,
                     k_next: int | None = None) -> torch.Tensor:
        """Alg. 2: u <- mu(u, k) + delta eps = u + f(u, k) + delta eps; no noise at k = 1 (App. B.1)."""
        delta = self.cfg.delta if delta is None else delta
        mu = u + net_out.float()
        return mu if k == 1 else mu + delta * noise

    def to_image(self, u: torch.Tensor) -> torch.Tensor:
        """Model state -> image in [0, 1] (clamped)."""
        return u.clamp(0.0, 1.0)
