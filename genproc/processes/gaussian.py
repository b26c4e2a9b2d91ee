"""Closed-form Gaussian pieces of the ELBO (pure functions, no networks).

Every Gaussian here is isotropic: ``N(m, s^2 I_n)`` over ``n`` dimensions. Distances are
accumulated in float64: with delta ~ 0.01 a squared distance of 1 is 5e3 nats, so float32
cancellation in ``|a|^2 + |b|^2 - 2ab`` would cost whole nats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def normal_kl(m1: torch.Tensor | float, v1: torch.Tensor | float, m2: torch.Tensor | float,
              v2: torch.Tensor | float) -> torch.Tensor:
    """Elementwise KL(N(m1, v1) || N(m2, v2)) in nats (v: variances), broadcasting, float64:

        1/2 (log(v2/v1) + (v1 + (m1 - m2)^2) / v2 - 1).
    """
    v1, v2 = torch.as_tensor(v1, dtype=torch.float64), torch.as_tensor(v2, dtype=torch.float64)
    m1, m2 = torch.as_tensor(m1, dtype=torch.float64), torch.as_tensor(m2, dtype=torch.float64)
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def gaussian_kl_iso(sq_dist: torch.Tensor | float, n: int, sigma_q: float, sigma_p: float) -> torch.Tensor | float:
    """KL[N(m_q, sigma_q^2 I_n) || N(m_p, sigma_p^2 I_n)] in nats, the form of Eq. (10): :func:`normal_kl` summed
    over n dimensions, written with the squared distance of the means,

        1/2 (n sigma_q^2/sigma_p^2 - n + |m_q - m_p|^2 / sigma_p^2 + 2 n log(sigma_p/sigma_q)).

    sq_dist: |m_q - m_p|^2, a float or a tensor of any shape (the result has its shape).
    """
    per_dim = float(normal_kl(0.0, sigma_q**2, 0.0, sigma_p**2))  # the KL with equal means, one dimension
    return n * per_dim + sq_dist / (2 * sigma_p**2)


def gaussian_nll_iso(sq_dist: torch.Tensor | float, n: int, sigma: float) -> torch.Tensor | float:
    """-log N(x | m, sigma^2 I_n) in nats, the form of Eq. (11): |x - m|^2 / (2 sigma^2) + n log(sigma sqrt(2 pi))."""
    return sq_dist / (2 * sigma**2) + n * math.log(sigma * math.sqrt(2 * math.pi))


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances in float64. a: (B, D), b: (T, D) -> (B, T) >= 0."""
    a, b = a.double(), b.double()
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T  # (B, T)
    return d.clamp_min_(0.0)


def kde_kl_upper_bound(mean_q: torch.Tensor, bank: Iterable[torch.Tensor], sigma_q: float, sigma_p: float) -> torch.Tensor:
    """App. A.3, Eqs. (36)-(42): an upper bound on L_K = KL[q(u_K|u_0) || p(u_K)] for a KDE prior.

    q(u_K | u_0) = N(mean_q, sigma_q^2 I) and p(u_K) = 1/N_T sum_i N(u_K | m_i, sigma_p^2 I).
    With phi_i at its optimum (Eq. 42, phi = softmax(-KL_i)) the bound of Eq. (41) collapses to

        L_K <= log N_T - logsumexp_i(-KL_i),   KL_i = KL[q(u_K|u_0) || N(m_i, sigma_p^2 I)]   (Eq. 10 form),

    which is exact when N_T = 1. ``bank`` yields the components m_i in chunks (T, D), so memory
    stays at (B, T) however large the training set; a running log-sum-exp merges the chunks.

    mean_q: (B, D). Returns (B,) float64 nats.
    """
    n = mean_q.shape[1]
    lse = torch.full((mean_q.shape[0],), -math.inf, dtype=torch.float64, device=mean_q.device)  # (B,)
    count = 0
    for m in bank:
        neg_kl = -gaussian_kl_iso(sq_dists(mean_q, m.to(mean_q.device)), n, sigma_q, sigma_p)  # (B, T)
        lse = torch.logaddexp(lse, torch.logsumexp(neg_kl, dim=1))
        count += m.shape[0]
    if count == 0:
        raise ValueError("the KDE prior has no components (empty training set)")
    return math.log(count) - lse
