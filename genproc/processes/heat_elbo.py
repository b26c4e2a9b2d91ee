"""The IHDM negative ELBO, Eq. (7) / (32), term by term (paper Sec. 3.2, App. A.2, A.3).

    -log p(u_0) <= L_K + sum_{k=2}^{K} E_q[L_{k-1}] + E_q[L_0]                        (Eq. 7)

    E_q[L_{k-1}] = 1/2 (N sigma^2/delta^2 - N + 2N log(delta/sigma))                (Eq. 10)
                   + |mu(u_k, k) - F(t_{k-1}) u_0|^2 / (2 delta^2),  u_k ~ q(u_k|u_0), k = 2..K
    E_q[L_0]     = N log(delta sqrt(2 pi)) + |mu(u_1, 1) - u_0|^2 / (2 delta^2)       (Eq. 11)
    L_K          <= log N_T - logsumexp_i(-KL[q(u_K|u_0) || N(F(t_K) x_i, delta^2 I)])  (App. A.3)

The KL terms use network levels k = 2..K and L_0 uses k = 1, as the paper writes it (the
authors' code sums the KL terms over k = 1..K-1 instead). The prior is the sampler's KDE:
components F(t_K) x_i over the training images with variance delta^2 (Sec. 3.2).

The terms are returned additively: the data-dependent squared errors of Eq. (10) and (11)
in ``L_kl`` and ``L_0``, and their parts that depend only on (sigma, delta, N, K) in
``const``. ``L_K`` is the whole bound (its own constant included). Each expectation is one
Monte Carlo sample per level and image, as in training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from genproc.errors import GenprocError
from genproc.processes.base import ForwardProcess, Net
from genproc.processes.gaussian import gaussian_kl_iso, kde_kl_upper_bound
from genproc.processes.rng import SampleRNG

LABELS = {
    "L_K": "L_K, prior overlap (App. A.3 upper bound)",
    "L_kl": "sum L_{k-1}, k=2..K, squared errors (Eq. 10)",
    "L_0": "L_0, squared error (Eq. 11)",
    "const": "constant in sigma, delta, N, K (Eq. 10, 11)",
}


def heat_elbo_constant(n: int, K: int, sigma: float, delta: float) -> float:
    """The part of Eq. (7) that depends only on (sigma, delta, N, K), in nats:

        (K - 1) * 1/2 N (sigma^2/delta^2 - 1 + 2 log(delta/sigma))   [Eq. (10), k = 2..K]
        + N log(delta sqrt(2 pi))                                     [Eq. (11)]
    """
    return (K - 1) * gaussian_kl_iso(0.0, n, sigma, delta) + n * math.log(delta * math.sqrt(2 * math.pi))


class BlurredBank:
    """The KDE prior's components F(t_K) x_i, (T, N) chunks over the training set.

    Computed once and kept (on the device) when they fit ``max_bytes``; otherwise re-blurred
    chunk by chunk on every pass, so memory stays bounded by one (chunk, N) block.
    """

    def __init__(self, process: ForwardProcess, data: Any, device: torch.device, chunk: int = 1024,
                 max_bytes: int = 1 << 30):
        self.process, self.data, self.device, self.chunk = process, data, device, chunk
        c, h, w = self.process.prior_centres(data, torch.arange(1)).shape[1:]
        self.keep = len(data) * c * h * w * 4 <= max_bytes
        self._cache: list[torch.Tensor] | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self._cache is not None:
            yield from self._cache
            return
        chunks = []
        for b0 in range(0, len(self.data), self.chunk):
            idx = torch.arange(b0, min(len(self.data), b0 + self.chunk))
            m = self.process.prior_centres(self.data, idx).to(self.device).flatten(1)  # (T, N)
            if self.keep:
                chunks.append(m)
            yield m
        if self.keep:
            self._cache = chunks


class HeatELBO:
    """Per-image negative-ELBO terms of IHDM and its variants (``HeatProcess.elbo``; any process with ``blur(x, k)``
    as its forward mean, ``cfg.sigma`` and ``cfg.delta``, and the residual training pair of Alg. 1).

    ``HeatELBO(process, train_data, device).terms(net, x0, rng)`` with x0: (B, C, H, W) float data (dequantised
    by the caller) returns {"L_K", "L_kl", "L_0", "const"}: (B,) float64 nats, additive (their sum is the
    per-image bound on -log p(x0)). The sampling noise is the process's ``cfg.delta``.
    """

    labels = LABELS
    convention = "dequantised"
    convention_detail = ("uniform dequantisation: a density bound on [0,1)^N, "
                         "x = (round(255 x_data) + U) / 256; bits/dim = (nats/N + log 256)/log 2")

    def __init__(self, process: ForwardProcess, train_data: Any, device: torch.device):
        if train_data is None or len(train_data) == 0:
            raise GenprocError("the heat ELBO needs the training images (L_K compares with the KDE prior); none were given")
        self.process = process
        self.bank = BlurredBank(process, train_data, device)

    @torch.no_grad()
    def terms(self, net: Net, x0: torch.Tensor, rng: SampleRNG) -> dict[str, torch.Tensor]:
        p = self.process
        sigma, delta = p.cfg.sigma, p.cfg.delta
        if sigma <= 0 or delta <= 0:
            raise GenprocError(f"the heat ELBO needs sigma > 0 and delta > 0 (got sigma={sigma}, delta={delta})")
        B, K, n = x0.shape[0], p.num_levels, x0[0].numel()
        sq_err = torch.zeros(K + 1, B, dtype=torch.float64, device=x0.device)  # row k = |mu(u_k,k) - F(t_{k-1})x0|^2
        for k in range(1, K + 1):
            kk = torch.full((B,), k, dtype=torch.long, device=x0.device)
            x_k, target = p.training_pair(x0, kk, rng.randn(tuple(x0.shape[1:])))  # x_k ~ q(x_k|x_0), Eq. (4)
            f = net(x_k, kk).float()  # mu(x_k, k) = x_k + f, so mu - F(t_{k-1}) x0 = f - target
            sq_err[k] = (f - target).double().flatten(1).pow(2).sum(1)
        mean_K = p.blur(x0, K).flatten(1)  # (B, N): mean of q(u_K | u_0)
        return {
            "L_K": kde_kl_upper_bound(mean_K, self.bank, sigma, delta),  # App. A.3
            "L_kl": sq_err[2:].sum(0) / (2 * delta**2),  # Eq. (10), k = 2..K
            "L_0": sq_err[1] / (2 * delta**2),  # Eq. (11), k = 1
            "const": torch.full((B,), heat_elbo_constant(n, K, sigma, delta), dtype=torch.float64, device=x0.device),
        }
