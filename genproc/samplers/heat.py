"""IHDM's chain with fewer network calls than levels: jumps over several levels per call (genproc's own sampler; the
IHDM paper samples every level).

The network at level k returns the residual f(x_k, k) ≈ E[F(t_{k-1}) x | x_k] - x_k, so m = x_k + f is the denoised
state one level less blurred: in the DCT basis (eigenvalues λ of the Neumann Laplacian) m_c ≈ e^{-λ_c t_{k-1}} μ_c
with μ = E[x | x_k] (Rissanen et al. Eqs. 2-4). The state at a lower level j < k - 1 is then, per frequency,

    E[F(t_j) x | x_k]_c = e^{λ_c (t_{k-1} - t_j)} m_c,

the heat equation run backwards from t_{k-1} to t_j on the network's estimate. That gain is exact where m is exact and
explodes where it is not: a frequency the blur at t_{k-1} has damped to a_c = e^{-λ_c t_{k-1}} carries the network's
error times 1 / a_c (10² within one σ_B of a pixel at the highest frequencies). So the gain is

    g_c = e^{-λ_c t_j} / max(e^{-λ_c t_{k-1}}, ``floor``):

the backward heat equation where the frequency survives at t_{k-1} above ``floor``, and below it a gain that tends to
e^{-λ_c t_j} / floor, < 1 where the frequency is dead at t_j too (it damps there what the network could not know,
as the forward marginal at level j would). The jump then adds the chain's noise δ (Eq. 8), times √(levels jumped)
with ``stride_noise`` (the variance the skipped steps would have added), none into level 0. With ``steps`` = K it is
the paper's chain (Alg. 2) exactly: each jump is one level, gain 1.

Measured on ``pretrained/ihdm_mnist_small``, FID of n = 500 samples against the first 1000 test images (the protocol
of issue 20, where the 50-call chain scores 44.6 and the naive jumps 135.6-277.5): a cap on the gain alone,
min(e^{λ Δt}, 4), fails (418 at 10 calls, 362 at 25: the capped high frequencies accumulate noise;
``docs/frontier_mnist_small/heat_jump_gaincap.txt``); the floor rule scores 295.3 / 143.4 / 68.7 at 5 / 10 / 25 calls
with floor 0.02 and 106.8 / 55.3 at 10 / 25 with floor 0.01, the default (``heat_jump_probe.txt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genproc.errors import GenprocError
from genproc.processes import ForwardProcess, Net
from genproc.processes.dct import dct2, idct2, laplacian_eigenvalues
from genproc.processes.views import HeatChainView
from genproc.samplers.base import Noise, OnStep, Sampler, SamplerConfig, call


@dataclass
class HeatJumpConfig(SamplerConfig):
    floor: float = 0.01  # damping below which a frequency is not run backwards (see the module docstring)
    stride_noise: bool = False  # δ √(levels jumped) instead of δ per call

    def validate(self) -> None:
        super().validate()
        if not 0 < self.floor <= 1:
            raise GenprocError(f"sampler setting 'floor': expected 0 < floor <= 1, got {self.floor}")


def backward_heat(m: torch.Tensor, t_from: float, t_to: float, floor: float) -> torch.Tensor:
    """m (B, C, H, W) float32 taken from heat time t_from back to t_to <= t_from per frequency, with the gain
    e^{-λ t_to} / max(e^{-λ t_from}, floor) (the module docstring); the identity when t_to == t_from."""
    if t_to >= t_from:
        return m
    lam = laplacian_eigenvalues(*m.shape[-2:], device=m.device).double()  # (H, W)
    gain = torch.exp(-lam * t_to) / torch.exp(-lam * t_from).clamp_min(floor)
    return idct2((gain * dct2(m.float()).double()).float())


class HeatJump(Sampler):
    view = HeatChainView
    description = "IHDM with fewer calls than levels: x + f run back in heat time per frequency, above a floor (genproc)"
    default_steps = 25
    cfg: HeatJumpConfig

    def stochastic(self, process: ForwardProcess) -> bool:
        return process.sampling_noise() > 0  # type: ignore[attr-defined]

    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        view: HeatChainView = process  # type: ignore[assignment]
        delta = view.sampling_noise()
        for i, k in enumerate(levels):
            j = levels[i + 1] if i + 1 < len(levels) else 0
            m = x + call(net, x, k)  # E[F(t_{k-1}) x0 | x_k]
            x = backward_heat(m, float(view.t[k - 1]), float(view.t[j]), self.cfg.floor)
            if j > 0 and delta > 0:
                x = x + delta * (math.sqrt(k - j) if self.cfg.stride_noise else 1.0) * noise(i).to(x.device)
            if on_step is not None:
                on_step(i, j, x)
        return x
