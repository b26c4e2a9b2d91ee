"""EDM's Heun sampler (Karras et al. 2022, Alg. 1, deterministic; Alg. 2 with ``churn`` > 0, stochastic) on the
probability-flow ODE of any Gaussian diffusion, per coordinate in the process's basis.

In the scaled variable y = u / α (per coordinate), y = x + σ̃ ε with σ̃ = σ / α, and the probability-flow ODE of a
process diagonal in its basis is, coordinate by coordinate, EDM's Eq. 4 with s = 1:

    dy_c / dσ̃_c = (y_c - D_c(y)) / σ̃_c,    D = û_x (the denoiser; per coordinate because q is diagonal),

so Heun's step from level k to s is Alg. 1, lines 4-8, in each coordinate's own σ̃_c (for DDPM every coordinate
shares σ̃; for BDM σ̃ depends on the frequency). The levels follow EDM's Eq. 5 (ρ = 7) in the σ̃ of the coordinate
with the largest α (DDPM: all of them; BDM: the DC coefficient), from the start level's to level 1's, each σ̃ taken to
the nearest trained level (log scale; repeats dropped), since the network knows integer levels only. The last step,
into σ̃ = 0, is Euler (Alg. 1, line 9): N levels cost 2N - 1 network calls.

Heun drives only processes whose α (so σ̃) is the same in every coordinate (EDM's σ(t): DDPM; ``supports``).
With σ̃ per coordinate, as BDM's per-frequency blur gives, no one schedule keeps every coordinate's step small: on
the released ``bdm_mnist_small`` the largest per-coordinate ratio σ̃_c(k) / σ̃_c(s) of a step is 606-52,854 at 25-5
steps, against 2.3-49 on ``ddpm_mnist_small`` (each frequency's σ̃ collapses at its own level;
``docs/samplers/heun_bdm.txt``). Heun's correction adds (r - 1) / 2 times the change of the denoised estimate between
a step's ends in a coordinate with ratio r, so those changes reach the sample multiplied by hundreds (saturated
noise: FID 357-388 at 9-49 calls, n = 500, measured before this refusal; issue 20). DDIM's and
DPM-Solver++'s steps, exact for a constant denoised estimate in every coordinate, drive BDM; ``heun`` refuses it.

Alg. 2's churn: on a step whose σ̃ lies in [s_tmin, s_tmax], γ = min(churn / N, √2 - 1), the state is moved up to the
trained level nearest σ̃ (1 + γ) by adding noise of std s_noise √(σ̃_c(k̂)² - σ̃_c(k)²) in each coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genproc.errors import GenprocError
from genproc.processes import ForwardProcess, Net
from genproc.processes.views import GaussianView
from genproc.samplers.base import Noise, OnStep, Sampler
from genproc.samplers.gaussian import GaussianConfig, denoise


@dataclass
class HeunConfig(GaussianConfig):
    rho: float = 7.0  # EDM Eq. 5's schedule exponent
    churn: float = 0.0  # S_churn (Alg. 2); 0: Alg. 1, deterministic
    s_tmin: float = 0.0  # churn only where s_tmin <= σ̃ <= s_tmax
    s_tmax: float | None = None  # None: no upper bound
    s_noise: float = 1.0  # S_noise: the added noise's scale

    def validate(self) -> None:
        super().validate()
        if self.rho <= 0 or self.churn < 0 or self.s_noise < 0:
            raise GenprocError(f"sampler settings 'rho' > 0, 'churn' >= 0 and 's_noise' >= 0 expected, "
                               f"got {self.rho}, {self.churn}, {self.s_noise}")


def sigma_tilde(view: GaussianView, k: int, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """σ̃_k = σ_k / α_k per coordinate (float64; 0 at level 0)."""
    return view.sigma(k, device) / view.alpha(k, hw, device)


def reference_sigmas(view: GaussianView, hw: tuple[int, int]) -> torch.Tensor:
    """(T + 1,) float64: σ̃ of the coordinate with the largest α at every level (index = level)."""
    return torch.stack([view.sigma(k) / view.alpha(k, hw).max() for k in range(view.num_levels + 1)])


def edm_levels(ref: torch.Tensor, start: int, steps: int, rho: float) -> list[int]:
    """EDM Eq. 5: ``steps`` σ̃ from ref[start] down to ref[1], spaced uniformly in σ̃^(1/ρ), each taken to the level with
    the nearest log σ̃ (among 1..start); decreasing, repeats dropped."""
    hi, lo = float(ref[start]) ** (1 / rho), float(ref[1]) ** (1 / rho)
    i = torch.arange(steps, dtype=torch.float64)
    target = (hi + i / max(steps - 1, 1) * (lo - hi)) ** rho  # (steps,)
    logs = ref[1:start + 1].log()  # levels 1..start
    idx = (logs[None, :] - target.log()[:, None]).abs().argmin(1) + 1
    return torch.unique_consecutive(idx).tolist() if steps > 1 else [start]


class Heun(Sampler):
    view = GaussianView
    description = "EDM's Heun sampler (Karras et al. 2022, Alg. 1; Alg. 2 with churn > 0), per coordinate"
    default_steps = 18
    cfg: HeunConfig

    def supports(self, process: ForwardProcess) -> bool:
        """A Gaussian process whose α is the same in every coordinate (see the module docstring)."""
        if not isinstance(process, GaussianView):
            return False
        return all(bool((a := process.alpha(k, (4, 4))).numel() == 1 or torch.all(a == a.flatten()[0]))
                   for k in (1, process.num_levels // 2, process.num_levels) if k >= 1)

    @classmethod
    def needs(cls) -> str:
        return "a Gaussian process (GaussianView) with the same alpha in every coordinate: its steps diverge otherwise"

    def levels(self, process: ForwardProcess, start: int | None = None) -> list[int]:
        start = process.num_levels if start is None else int(start)
        steps = self.cfg.steps if self.cfg.steps is not None else self.default_steps
        hw = (8, 8)  # the reference coordinate (largest α) is the DC one at any size
        return edm_levels(reference_sigmas(process, hw), start, min(steps, start), self.cfg.rho)  # type: ignore[arg-type]

    def calls(self, levels: list[int]) -> int:
        return 2 * len(levels) - 1

    def stochastic(self, process: ForwardProcess) -> bool:
        return self.cfg.churn > 0 and self.cfg.s_noise > 0

    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        view: GaussianView = process  # type: ignore[assignment]
        hw, dev = tuple(x.shape[-2:]), x.device
        ref = reference_sigmas(view, hw)
        gamma = min(self.cfg.churn / len(levels), math.sqrt(2) - 1)
        y = view.to_basis(x) / view.alpha(levels[0], hw, dev)  # (B, C, H, W) float64
        draws = 0

        def slope(y: torch.Tensor, k: int) -> torch.Tensor:  # (y - D(y)) / σ̃_k, per coordinate
            a = view.alpha(k, hw, dev)
            u_x, _ = denoise(view, net, a * y, k, self.cfg)
            return (y - u_x) / sigma_tilde(view, k, hw, dev)

        for j, k in enumerate(levels):
            s = levels[j + 1] if j + 1 < len(levels) else 0
            t_max = math.inf if self.cfg.s_tmax is None else self.cfg.s_tmax
            if gamma > 0 and self.cfg.s_tmin <= float(ref[k]) <= t_max:  # Alg. 2, lines 5-6, on the trained levels
                up = int((ref[k:].log() - math.log(float(ref[k]) * (1 + gamma))).abs().argmin()) + k
                if up > k:
                    extra = (sigma_tilde(view, up, hw, dev) ** 2 - sigma_tilde(view, k, hw, dev) ** 2).clamp_min(0)
                    y = y + self.cfg.s_noise * extra.sqrt() * view.to_basis(noise(draws).to(dev))
                    draws, k = draws + 1, up
            st_k, st_s = sigma_tilde(view, k, hw, dev), sigma_tilde(view, s, hw, dev)
            d = slope(y, k)
            y_next = y + (st_s - st_k) * d  # Euler (Alg. 1, line 5)
            if s > 0:  # the second-order correction (lines 7-8)
                y_next = y + (st_s - st_k) * (d + slope(y_next, s)) / 2
            y = y_next
            if on_step is not None:
                on_step(j, s, view.from_basis(view.alpha(s, hw, dev) * y))
        return view.from_basis(y)
