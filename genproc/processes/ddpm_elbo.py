"""The DDPM negative ELBO, term by term (Ho et al. 2020, Eq. 5; Nichol & Dhariwal 2021, Sec. 2).

    -log P(x_0) <= L_T + sum_{t=2}^{T} L_{t-1} + L_0                                      (Eq. 5)

    L_T     = KL(q(x_T|x_0) || N(0, I)),  q(x_T|x_0) = N(sqrt(ab_T) x_0, (1 - ab_T) I)    (Eq. 4)
    L_{t-1} = E_q KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)),  t = 2..T                     (Eq. 6, 7)
              q(x_{t-1}|x_t, x_0) = N(mu~_t, beta~_t I),  p(x_{t-1}|x_t) = N(mu_theta, sigma_t^2 I)
              mu_theta = (x_t - beta_t / sqrt(1 - ab_t) eps_theta(x_t, t)) / sqrt(alpha_t)   (Eq. 11)
    L_0     = E_q -log p(x_0|x_1), discretised Gaussian decoder on 8-bit bins              (Eq. 13)

x_0 = 2 v / 255 - 1 in [-1, 1] for the 8-bit values v; sigma_t^2 is beta_t or beta~_t
(``process.cfg.posterior_variance``); for 'tilde' the decoder uses beta~_2, since beta~_1 = 0
(improved-diffusion's clipped log-variance). The bound is on the ancestral (Markov) model,
whatever sampler draws the samples.

Convention ("discrete"). The decoder gives the probability *mass* P(v) of the 8-bit image, so
bits/dim = nats / (N log 2), with no dequantisation term. IHDM/heat instead bound a *density* on
[0,1)^N with uniform dequantisation, bits/dim = (nats/N + log 256) / log 2 (``genproc.metrics.nll``).
To go through the same interface, the terms here include ``to_density`` = -N log 256: P(v) 256^N
is the piecewise-constant density on [0,1)^N whose dequantisation Jensen gap is zero, so the
shared formula's + log 256 cancels it and the reported bits/dim is exactly nats/(N log 2).

Cost. Every t in 2..T needs a network call per image. ``levels`` >= T - 1 sums all terms exactly;
otherwise (default ``DEFAULT_LEVELS``, or $GENPROC_DDPM_ELBO_LEVELS) the sum is estimated per
image by stratified sampling: {2..T} is cut into K contiguous strata S_j, one t_j ~ U(S_j) is
drawn per stratum and sum_t L_{t-1} ~= sum_j |S_j| L_{t_j - 1}, an unbiased estimate (its
spread shows in the reported standard error). Each expectation over x_t is one sample, as in training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch

from genproc.errors import GenprocError
from genproc.processes.base import ForwardProcess, Net
from genproc.processes.gaussian import normal_kl
from genproc.processes.rng import SampleRNG

DEFAULT_LEVELS = 50  # sampled t per image (stratified); >= T - 1 means the exact sum
LEVELS_ENV = "GENPROC_DDPM_ELBO_LEVELS"
LOG256 = math.log(256.0)
CONVENTION = "discrete"
CONVENTION_DETAIL = ("discretised Gaussian decoder (Ho et al. Eq. 13): bound on -log P(v) of the 8-bit values, "
                     "bits/dim = nats/(N log 2); the -N log 256 'to_density' term cancels the dequantisation term")
LABELS = {
    "L_T": "L_T, KL(q(x_T|x_0) || N(0,I)) (Eq. 5)",
    "L_kl": "sum L_{t-1}, t=2..T, posterior KLs (Eq. 5-7)",
    "L_0": "L_0, discretised decoder -log p(x_0|x_1) (Eq. 13)",
    "to_density": "mass -> density on [0,1)^N: -N log 256",
}


def prior_kl(x0: torch.Tensor, alpha_bar_T: float) -> torch.Tensor:
    """L_T = KL(N(sqrt(ab_T) x_0, (1 - ab_T) I) || N(0, I)) per image. x0: (B, ...) in [-1, 1] -> (B,) float64."""
    kl = normal_kl(math.sqrt(alpha_bar_T) * x0.double(), 1.0 - alpha_bar_T, 0.0, 1.0)
    return kl.flatten(1).sum(1)


def posterior(process: ForwardProcess, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (7) for t >= 1 (t: (B,) long): mu~_t = c0 x_0 + ct x_t and beta~_t, each (B,) float64.

        c0 = sqrt(ab_{t-1}) beta_t / (1 - ab_t),  ct = sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t),
        beta~_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t.
    """
    t = t.cpu()
    beta, ab, ab_prev = process.betas[t], process.alpha_bar[t], process.alpha_bar[t - 1]
    return ab_prev.sqrt() * beta / (1 - ab), (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab), (1 - ab_prev) / (1 - ab) * beta


def model_variance(process: ForwardProcess, t: torch.Tensor) -> torch.Tensor:
    """sigma_t^2 of p(x_{t-1}|x_t), (B,) float64: beta_t, or beta~_t with beta~_1 := beta~_2 ('tilde', T >= 2)."""
    t = t.cpu()
    if process.cfg.posterior_variance == "beta" or process.num_levels < 2:
        return process.betas[t]
    return posterior(process, t.clamp(min=2))[2]


def log_bin_mass(v: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Eq. (13): log of the N(mean, std^2) mass of bin v in [-1, 1] (width 2/255, outer edges at +-inf).

    v: (B, ...) integer values 0..255; mean: same shape; std: broadcastable. Returns float64 nats,
    computed as log(Phi(b) - Phi(a)) in log space (reflected to the lower tail), stable for far bins.
    """
    x = 2.0 * v.double() / 255.0 - 1.0
    std = torch.as_tensor(std, dtype=torch.float64)
    a = torch.where(v <= 0, -math.inf, (x - 1.0 / 255.0 - mean) / std)
    b = torch.where(v >= 255, math.inf, (x + 1.0 / 255.0 - mean) / std)
    flip = (a + b) > 0  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): keep the interval in the accurate lower tail
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return lb + torch.log(-torch.expm1(la - lb))


def elbo_levels(levels: int | None = None) -> int:
    """How many levels per image the sum over t is estimated from: ``levels``, else $GENPROC_DDPM_ELBO_LEVELS, else
    ``DEFAULT_LEVELS`` (>= T - 1 means the exact sum); one clear error for a bad value."""
    env = os.environ.get(LEVELS_ENV)
    try:
        n = int(levels if levels is not None else env if env else DEFAULT_LEVELS)
    except ValueError:
        raise GenprocError(f"${LEVELS_ENV} must be an integer number of levels, got {env!r}") from None
    if n < 1:
        raise GenprocError(f"ELBO levels must be >= 1, got {n}")
    return n


def stratified_levels(T: int, K: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Levels for the L_{t-1} sum over t = 2..T: (B, K') long levels and (K',) float64 weights |S_j|.

    u: (B, K) uniforms in [0, 1). K >= T - 1: every t once with weight 1 (exact, K' = T - 1);
    else K contiguous strata of {2..T} (sizes differ by at most one), one uniform draw in each.
    """
    M = T - 1
    if K >= M:
        levels = torch.arange(2, T + 1).expand(u.shape[0], M)
        return levels, torch.ones(M, dtype=torch.float64)
    edges = torch.round(torch.arange(K + 1, dtype=torch.float64) * M / K).long()  # (K+1,)
    sizes = edges[1:] - edges[:-1]  # (K,) >= 1
    offs = torch.clamp((u.double() * sizes).floor().long(), max=sizes - 1)  # (B, K)
    return 2 + edges[:-1] + offs, sizes.double()


class DDPMELBO:
    """Per-image negative-ELBO terms of DDPM (``DDPMProcess.elbo``; any process with ``betas``, ``alpha_bar``).

    ``DDPMELBO(process, train_data, device, levels=None).terms(net, x0, rng)`` with x0: (B, C, H, W)
    in [0, 1], either dequantised (v + U)/256 or on the grid v/255 (v = floor(256 x0) either way),
    returns {"L_T", "L_kl", "L_0", "to_density"}: (B,) float64 nats, additive. ``train_data`` is unused.
    """

    labels = LABELS
    convention = CONVENTION
    convention_detail = CONVENTION_DETAIL

    def __init__(self, process: ForwardProcess, train_data: Any = None, device: torch.device | str = "cpu",
                 levels: int | None = None):
        self.process = process
        self.levels = elbo_levels(levels)
        self.exact = self.levels >= process.num_levels - 1

    def _eps(self, net: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor,
             rng: SampleRNG) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t ~ q(x_t|x_0) (Eq. 4, float64) and mu_theta(x_t, t) (Eq. 11). x, t: (B, ...), (B,)."""
        p, shape = self.process, (-1,) + (1,) * (x.dim() - 1)
        ab, beta = p.alpha_bar[t.cpu()].to(x).reshape(shape), p.betas[t.cpu()].to(x).reshape(shape)
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * rng.randn(tuple(x.shape[1:])).double()
        eps = net(x_t.float(), t.to(x.device)).double()
        return x_t, (x_t - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()

    @torch.no_grad()
    def terms(self, net: Net, x0: torch.Tensor, rng: SampleRNG) -> dict[str, torch.Tensor]:
        p, B, dev = self.process, x0.shape[0], x0.device
        n, T = x0[0].numel(), p.num_levels
        v = torch.floor(x0.double() * 256.0).clamp(0, 255)  # (B, C, H, W) 8-bit values
        x = 2.0 * v / 255.0 - 1.0  # (B, C, H, W) in [-1, 1]
        shape = (-1,) + (1,) * (x.dim() - 1)
        l_kl = torch.zeros(B, dtype=torch.float64, device=dev)
        if T >= 2:
            K = T - 1 if self.exact else self.levels
            u = torch.stack([torch.rand(K, generator=g, device=g.device).cpu() for g in rng.gens])  # (B, K) one row per image
            levels, weights = stratified_levels(T, K, u)  # (B, K'), (K',)
            for j in range(levels.shape[1]):
                t = levels[:, j]  # (B,)
                x_t, mu = self._eps(net, x, t, rng)
                c0, ct, var_q = (z.to(x).reshape(shape) for z in posterior(p, t))
                kl = normal_kl(c0 * x + ct * x_t, var_q, mu, model_variance(p, t).to(x).reshape(shape))
                l_kl += float(weights[j]) * kl.flatten(1).sum(1)
        one = torch.ones(B, dtype=torch.long)
        _, mu1 = self._eps(net, x, one, rng)
        std1 = model_variance(p, one).sqrt().to(x).reshape(shape)
        return {
            "L_T": prior_kl(x, float(p.alpha_bar[T])),
            "L_kl": l_kl,
            "L_0": -log_bin_mass(v, mu1, std1).flatten(1).sum(1),
            "to_density": torch.full((B,), -n * LOG256, dtype=torch.float64, device=dev),
        }
