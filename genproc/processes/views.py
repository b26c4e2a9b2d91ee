"""What a process exposes to samplers: the *views*, a small part of the forward-process contract.

A sampler (:mod:`genproc.samplers`) never asks which process it drives; it asks for a view, a contract type the process
implements as a mixin beside :class:`~genproc.processes.base.ForwardProcess`:

* :class:`GaussianView`: a Gaussian diffusion, diagonal in an orthonormal basis V (identity for DDPM, the 2-D DCT for
  BDM): q(x_k | x) = N(V(α_k ⊙ Vᵀ x), σ_k² I) for levels k = 0..T (level 0: α = 1, σ = 0, the data x). Exposing it
  buys every Gaussian sampler (ancestral, DDIM, DPM-Solver++, Heun, ...): a user's own Gaussian process gets them all.
* :class:`HeatChainView`: IHDM's chain, x_{k-1} = x_k + f(x_k, k) + δ ε over heat times t_k (Rissanen et al. Eq. 8);
  the network's output f is the residual to the next, less blurred, level.

A process that exposes neither keeps its own chain (:meth:`ForwardProcess.reverse_step` over
:meth:`ForwardProcess.reverse_levels`), sampled by the generic ``chain`` sampler; exposing a view is what buys the
solvers, not an obligation.

Every basis coefficient here is float64 (BDM's α reaches 7e-6 at the top level, σ/α 1e5).
"""

from __future__ import annotations

import abc

import torch

DELTA = 1e-8  # floor of the posterior's variances (the BDM paper's pseudocode clips its denominators at this)


class GaussianView(abc.ABC):
    """A Gaussian diffusion as samplers see it. ``num_levels`` T; levels are integers 0..T.

    Coefficients ``u = to_basis(x)`` are (B, C, H, W) float64; :meth:`alpha` broadcasts against them (a scalar tensor
    when α is the same for every coordinate, (H, W) when it depends on the frequency), :meth:`sigma` is a scalar tensor
    (the noise is isotropic, so ε is the same in either basis). ``data_range`` is the data's range in state units, the
    range samplers clip x̂₀ to. ``reverse_variance`` is the variance of the model's reverse step p(u_s | u_k) that the
    process's ELBO assumes, the ancestral sampler's default (see :meth:`posterior`).
    """

    num_levels: int
    data_range: tuple[float, float] = (-1.0, 1.0)
    reverse_variance: str = "posterior"  # the model's p(u_s | u_k) variance: posterior (σ̃²) | transition (σ²_ks)

    @abc.abstractmethod
    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        """Vᵀ x: (B, C, H, W) state (float32) -> (B, C, H, W) float64 coefficients."""

    @abc.abstractmethod
    def from_basis(self, u: torch.Tensor) -> torch.Tensor:
        """V u: (B, C, H, W) coefficients -> (B, C, H, W) float32 state."""

    @abc.abstractmethod
    def alpha(self, k: int, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """α_k per coordinate, float64, broadcastable to (C, H, W) coefficients; α_0 = 1."""

    @abc.abstractmethod
    def sigma(self, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """σ_k, a float64 scalar tensor; σ_0 = 0."""

    @abc.abstractmethod
    def split(self, u_t: torch.Tensor, u_out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(û_x, û_ε), float64 coefficients, from the state's coefficients u_t and the network output's u_out
        (``to_basis(net(x, k))``) at level k >= 1, for the process's parametrisation (ε, x or v)."""

    # -- derived from the members above: one formula each, for every Gaussian process
    def log_snr(self, k: int, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """λ_k = log(α_k / σ_k) per coordinate (float64; +inf at level 0): the time variable of the ODE solvers."""
        return torch.log(self.alpha(k, hw, device)) - torch.log(self.sigma(k, device))

    def eps_from_x0(self, u_t: torch.Tensor, u_x: torch.Tensor, k: int) -> torch.Tensor:
        """û_ε = (u_t - α_k û_x) / σ_k: the noise consistent with a (e.g. clipped) data estimate û_x."""
        hw, dev = tuple(u_t.shape[-2:]), u_t.device
        return (u_t - self.alpha(k, hw, dev) * u_x) / self.sigma(k, dev)

    def posterior(self, k: int | torch.Tensor, s: int | torch.Tensor, hw: tuple[int, int],
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(u_s | u_k, u_x) for levels s < k, per coordinate (Ho et al. 2020 Eqs. 6-7; Kingma et al. 2021 App. A;
        Hoogeboom & Salimans 2023 per frequency): with α_ks = α_k / α_s and σ²_ks = σ_k² - α_ks² σ_s² (the forward
        transition q(u_k | u_s) = N(α_ks u_s, σ²_ks)),

            var = 1 / (1 / σ_s² + α_ks² / σ²_ks),   mean = var (α_ks / σ²_ks u_k + α_s / σ_s² u_x).

        Returns (c_k, c_x, var) with mean = c_k u_k + c_x u_x; variances floored at DELTA. float64, broadcastable to the
        coefficients (levels may also be (B,) tensors where the process's α and σ accept them)."""
        a_k, a_s = self.alpha(k, hw, device), self.alpha(s, hw, device)
        s2_s = (self.sigma(s, device) ** 2).clamp_min(DELTA)
        a_ks = a_k / a_s
        s2_ks = self.transition_variance(k, s, hw, device)
        var = 1.0 / (1.0 / s2_s + a_ks**2 / s2_ks)
        return var * a_ks / s2_ks, var * a_s / s2_s, var

    def transition_variance(self, k: int | torch.Tensor, s: int | torch.Tensor, hw: tuple[int, int],
                            device: torch.device | str = "cpu") -> torch.Tensor:
        """σ²_ks = σ_k² - (α_k / α_s)² σ_s², the variance of q(u_k | u_s) (Ho et al.'s β_t for adjacent DDPM levels),
        floored at DELTA; float64."""
        a_ks = self.alpha(k, hw, device) / self.alpha(s, hw, device)
        return (self.sigma(k, device) ** 2 - a_ks**2 * self.sigma(s, device) ** 2).clamp_min(DELTA)


class HeatChainView(abc.ABC):
    """IHDM's chain as samplers see it (Rissanen et al. 2023, Eqs. 4 and 8, Alg. 2).

    Members: ``num_levels`` K; ``t`` (K + 1,) float32 heat times, t_0 = 0, t_k = σ_B,k² / 2 (pixels²);
    ``sigma_blur`` (K + 1,) float64 σ_B,k; :meth:`sampling_noise` δ and :meth:`training_noise` σ.
    The network's output at level k is the residual f(x_k, k) ≈ E[F(t_{k-1}) x | x_k] - x_k, so x + f is the mean of
    p(x_{k-1} | x_k). States are images in data units.
    """

    num_levels: int
    t: torch.Tensor
    sigma_blur: torch.Tensor

    @abc.abstractmethod
    def blur_by_time(self, y: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """The forward operator for heat time dt (B,) >= 0 applied to y (B, C, H, W): F(dt) y."""

    @abc.abstractmethod
    def sampling_noise(self) -> float:
        """δ: the std of the noise each reverse step adds (Eq. 8), data units."""

    @abc.abstractmethod
    def training_noise(self) -> float:
        """σ: the std of the white noise in every level's state (Eq. 4), data units."""
