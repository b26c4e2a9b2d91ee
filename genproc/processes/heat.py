"""The Inverse Heat Dissipation forward process (IHDM; Rissanen et al., ICLR 2023).

Forward (Eq. 4):  q(x_k | x_0) = N(x_k | F(t_k) x_0, sigma^2 I), k = 1..K, x_0 = data (the paper's u_k).
Reverse (Eq. 8):  p(x_{k-1} | x_k) = N(mu(x_k, k), delta^2 I), mu = x_k + f(x_k, k).
Prior (Sec. 3.2): a Gaussian KDE of blurred training images, F(t_K) x_train + delta eps.
The paper's chain is the process's own (:meth:`HeatProcess.reverse_step`); it also exposes the heat-chain view
(:class:`~genproc.processes.views.HeatChainView`) for samplers that take fewer network calls than K.
The sampling noise delta is a sampling-time key: it may change after training (``run.with_sampling(delta=...)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genproc.errors import GenprocError
from genproc.processes.base import ELBO, ForwardProcess, ProcessConfig
from genproc.processes.dct import METHODS as DCT_METHODS
from genproc.processes.dct import heat_forward, noise_left
from genproc.processes.kde_prior import KDECentres, compress_centres
from genproc.processes.rng import SampleRNG
from genproc.processes.views import HeatChainView


@dataclass
class HeatConfig(ProcessConfig):
    K: int = 100  # number of levels (Table 2)
    sigma_blur_min: float = 0.5  # sigma_B at k = 1 (App. B.5: sub-pixel blur)
    sigma_blur_max: float = 20.0  # sigma_B at k = K (Table 2)
    sigma: float = 0.01  # training noise std (Eq. 4), data in [0, 1]
    delta: float = 0.0125  # sampling noise std (Eq. 8), default 1.25 sigma
    dct: str = "auto"  # auto | matmul | fft | scipy (genproc.processes.dct)
    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("delta", "dct")

    def validate(self) -> None:
        if self.K < 1:
            raise GenprocError(f"recipe field 'process.K': expected an integer >= 1, got {self.K}")
        if not 0 < self.sigma_blur_min <= self.sigma_blur_max:
            raise GenprocError(
                f"recipe fields 'process.sigma_blur_min/max': expected 0 < min <= max, got {self.sigma_blur_min}, {self.sigma_blur_max}"
            )
        if self.sigma < 0 or self.delta < 0:
            raise GenprocError(f"recipe fields 'process.sigma' and 'process.delta' must be >= 0, got {self.sigma}, {self.delta}")
        if self.dct not in DCT_METHODS:
            raise GenprocError(f"recipe field 'process.dct': expected {'|'.join(DCT_METHODS)}, got {self.dct!r}")


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


class HeatProcess(HeatChainView, ForwardProcess):
    """IHDM: blur by the heat equation, learn to de-blur one level at a time.

    Every tensor argument is (N, C, H, W) float32; data ``x0`` is in [0, 1]; the state x is an image (blurred,
    plus noise) in the same units.
    """

    label = "IHDM"
    needs_data_for_prior = True
    cfg: HeatConfig

    def __init__(self, cfg: HeatConfig):
        super().__init__(cfg, cfg.K)
        self.sigma_blur = blur_schedule(cfg.K, cfg.sigma_blur_min, cfg.sigma_blur_max)  # (K+1,)
        self.t = (self.sigma_blur**2 / 2).float()  # t_k = sigma_B,k^2 / 2, (K+1,)

    # -- forward process
    def blur(self, x: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
        """F(t_k) x for a level k (int) or per-sample levels k: (N,) int64."""
        k = torch.as_tensor(k)
        t = self.t[int(k)] if k.ndim == 0 else self.t[k.cpu()].to(x.device)
        return heat_forward(x, t, self.cfg.dct)

    def forward_marginal(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. (4): x_k = F(t_k) x0 + sigma eps."""
        return self.blur(x0, k) + self.cfg.sigma * eps

    def training_pair(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Alg. 1: input x_k = F(t_k) x0 + sigma eps, target F(t_{k-1}) x0 - x_k.

        The target is the residual, since mu(x_k, k) = x_k + f(x_k, k): regressing f on it
        is the same squared error as ||mu - F(t_{k-1}) x0||^2.
        """
        x_k = self.forward_marginal(x0, k, eps)
        return x_k, self.blur(x0, k - 1) - x_k

    # -- generative process
    def prior(self, rng: SampleRNG, shape: tuple[int, int, int], data: Any = None) -> torch.Tensor:
        """Sec. 3.2: a sample of the KDE prior, F(t_K) x_train[i] + delta eps, one per rng stream.

        data: the training set (get_batch(idx) -> (B, C, H, W) in [0, 1]) or its stored centres
        (:class:`~genproc.processes.kde_prior.KDECentres`). Returns (B, C, H, W) on rng.device.
        """
        if data is None or len(data) == 0:
            raise GenprocError("the IHDM prior needs the training images (a KDE of blurred data); none were given")
        idx = rng.randint(len(data)).cpu()
        centre = self.prior_centres(data, idx).to(rng.device)
        return centre + self.cfg.delta * rng.randn(tuple(centre.shape[1:]))

    def prior_centres(self, data: Any, idx: torch.Tensor) -> torch.Tensor:
        """The KDE's centres F(t_K) x_i for the indices idx (B,): read from stored centres, or blurred from the data."""
        if isinstance(data, KDECentres):
            return data.centres(idx)
        return self.blur(data.get_batch(idx), self.num_levels)

    def prior_state(self, data: Any) -> dict[str, torch.Tensor]:
        """The centres F(t_K) x_i of every training image, compressed to the DCT coefficients that survive, every pixel
        within :data:`genproc.processes.kde_prior.TOL` (:func:`~genproc.processes.kde_prior.compress_centres`)."""
        shape = tuple(data[0].shape) if len(data) else (1, 1, 1)
        return compress_centres(lambda idx: self.prior_centres(data, idx), len(data), shape, dct=self.cfg.dct).state()

    def prior_from_state(self, state: dict[str, torch.Tensor]) -> KDECentres:
        return KDECentres.from_state(state, self.cfg.dct)

    def reverse_levels(self) -> list[int]:
        """Alg. 2: k = K, K-1, ..., 1."""
        return list(range(self.num_levels, 0, -1))

    def reverse_step(self, x: torch.Tensor, net_out: torch.Tensor, k: int, k_next: int,
                     noise: torch.Tensor) -> torch.Tensor:
        """Alg. 2: x <- mu(x, k) + delta eps = x + f(x, k) + delta eps; no noise into level 0 (App. B.1)."""
        mu = x + net_out.float()
        return mu if k_next == 0 else mu + self.cfg.delta * noise

    @property
    def reverse_is_stochastic(self) -> bool:
        return self.cfg.delta != 0

    # -- the heat-chain view (samplers with fewer calls than K)
    def sampling_noise(self) -> float:
        return float(self.cfg.delta)

    def training_noise(self) -> float:
        return float(self.cfg.sigma)

    def to_data_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The state is already an image in data units."""
        return x

    # -- restoration
    def degradation_time(self, k: int) -> float:
        return float(self.t[k])

    def level_noise_std(self, k: int) -> float:
        return float(self.cfg.sigma)

    def blur_by_time(self, y: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """The forward operator for heat time dt (B,) >= 0, applied to y (B, C, H, W): F(dt) y (Eq. 2)."""
        return heat_forward(y, dt.to(y.device).float(), self.cfg.dct)

    def observe(self, y: torch.Tensor, tau: torch.Tensor, noise_std: torch.Tensor, k: int,
                eps: torch.Tensor) -> torch.Tensor | None:
        """F(t_k - tau) y plus white noise topping the state's up to σ (Eq. 4's u_k = F(t_k) u_0 + σ ε). Blurring
        further shrinks the observation's white noise at frequency f by e^{-λ_f (t_k - tau)}: the per-pixel std left
        is s √(mean_f e^{-2 λ_f dt}); None when that is above σ for any image."""
        dt = (self.t[k] - tau.double()).clamp_min(0)  # (B,)
        left = noise_left(noise_std, dt, tuple(y.shape[-2:]))  # (B,)
        if bool((left > self.cfg.sigma * (1 + 1e-6)).any()):
            return None
        top_up = (self.cfg.sigma**2 - left**2).clamp_min(0).sqrt().float().to(y.device)[:, None, None, None]
        return self.blur_by_time(y, dt) + top_up * eps

    def elbo(self, train_data: Any, device: torch.device | str) -> ELBO:
        """Eq. (7) with App. A.2/A.3: see :class:`genproc.processes.heat_elbo.HeatELBO`."""
        from genproc.processes.heat_elbo import HeatELBO

        return HeatELBO(self, train_data, torch.device(device))
