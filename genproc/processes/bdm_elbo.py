"""The negative ELBO of a Blurring Diffusion Model's discrete-time chain (levels T..1, then the data), term by term.

Every term is a sum of independent per-frequency Gaussians in the DCT basis u = Vᵀ z (the process is diagonal there):

    -log P(x) <= L_T + sum_{k=2}^{T} L_{k-1} + L_0
    L_T     = KL(q(u_T | x) || N(0, I)),  q(u_T | x) = N(α_T ⊙ u_x, σ_T² I)
    L_{k-1} = E_q KL(q(u_{k-1} | u_k, x) || p(u_{k-1} | u_k)), both Gaussians with the posterior variance
              σ²_{k→k-1} (:meth:`BDMProcess.posterior`); p's mean takes û_x from the network's output
    L_0     = E_q -log p(x | z_1), a discretised Gaussian on the 8-bit bins (Ho et al. Eq. 13) with mean
              x̂ = V û_x(z_1) and std σ_1 / a_1 (the noise-to-signal ratio of level 1 at the DC frequency)

x = 2 v / 255 - 1 for the 8-bit values v. Convention "discrete", as DDPM's: the decoder gives a probability mass, and
the ``to_density`` term (-N log 256) cancels the metrics' dequantisation term, so bits/dim = nats / (N log 2). The
sum over k is exact for ``levels`` >= T - 1, else estimated per image by stratified sampling (unbiased), as in
:mod:`genproc.processes.ddpm_elbo`.
"""

from __future__ import annotations

import math

import torch

from genproc.processes.base import ForwardProcess, Net
from genproc.processes.dct import dct2, idct2
from genproc.processes.ddpm_elbo import CONVENTION, CONVENTION_DETAIL, elbo_levels, log_bin_mass, stratified_levels
from genproc.processes.gaussian import normal_kl
from genproc.processes.rng import SampleRNG

LABELS = {
    "L_T": "L_T, KL(q(u_T|x) || N(0,I)) per frequency",
    "L_kl": "sum L_{k-1}, k=2..T, per-frequency posterior KLs",
    "L_0": "L_0, discretised decoder -log p(x|z_1)",
    "to_density": "mass -> density on [0,1)^N: -N log 256",
}


class BDMELBO:
    """``BDMELBO(process, levels=None).terms(net, x0, rng)``: x0 (B, C, H, W) in [0, 1] (dequantised or on the 8-bit
    grid; v = floor(256 x0)) -> {"L_T", "L_kl", "L_0", "to_density"}, each (B,) float64 nats, additive."""

    labels = LABELS
    convention = CONVENTION
    convention_detail = CONVENTION_DETAIL

    def __init__(self, process: ForwardProcess, levels: int | None = None):
        self.process = process
        self.levels = elbo_levels(levels)

    def _predict(self, net: Net, u_x: torch.Tensor, k: torch.Tensor, rng: SampleRNG) -> tuple[torch.Tensor, torch.Tensor]:
        """u_k ~ q(u_k | x) (float64) and the network's û_x at per-image levels k: (B,). u_x: (B, C, H, W) coefficients."""
        p = self.process
        hw, dev = tuple(u_x.shape[-2:]), u_x.device
        eps = rng.randn(tuple(u_x.shape[1:])).double()  # isotropic: the same law in both bases
        u_t = p.alpha(k, hw, dev) * u_x + p.sigma(k, dev) * eps
        out = net(idct2(u_t.float(), p.cfg.dct), k.to(dev)).float()
        return u_t, p.split(u_t, dct2(out, p.cfg.dct), k)[0]

    @torch.no_grad()
    def terms(self, net: Net, x0: torch.Tensor, rng: SampleRNG) -> dict[str, torch.Tensor]:
        p, B, dev = self.process, x0.shape[0], x0.device
        n, T, hw = x0[0].numel(), p.num_levels, tuple(x0.shape[-2:])
        v = torch.floor(x0.double() * 256.0).clamp(0, 255)  # (B, C, H, W) 8-bit values
        x = 2.0 * v / 255.0 - 1.0
        u_x = dct2(x.float(), p.cfg.dct).double()
        l_kl = torch.zeros(B, dtype=torch.float64, device=dev)
        if T >= 2:
            K = T - 1 if self.levels >= T - 1 else self.levels
            u = torch.stack([torch.rand(K, generator=g, device=g.device).cpu() for g in rng.gens])  # (B, K)
            levels, weights = stratified_levels(T, K, u)  # (B, K'), (K',)
            for j in range(levels.shape[1]):
                k = levels[:, j]  # (B,) one level per image
                u_t, u_x_hat = self._predict(net, u_x, k, rng)
                c_t, c_x, var = p.posterior(k, k - 1, hw, dev)  # (B, 1, H, W) each
                kl = normal_kl(c_t * u_t + c_x * u_x, var, c_t * u_t + c_x * u_x_hat, var)
                l_kl += float(weights[j]) * kl.flatten(1).sum(1)
        _, u_x1 = self._predict(net, u_x, torch.ones(B, dtype=torch.long), rng)
        x_hat = idct2(u_x1.float(), p.cfg.dct).double()
        std = float(p.sigmas[1]) / float(p.a[1])
        a_T = p.alpha(T, hw, dev)
        return {
            "L_T": normal_kl(a_T * u_x, float(p.sigmas[T]) ** 2, 0.0, 1.0).flatten(1).sum(1),
            "L_kl": l_kl,
            "L_0": -log_bin_mass(v, x_hat, torch.full_like(x_hat, std)).flatten(1).sum(1),
            "to_density": torch.full((B,), -n * math.log(256.0), dtype=torch.float64, device=dev),
        }
