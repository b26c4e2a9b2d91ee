"""How blurred and how noisy is an image? A maximum-likelihood estimate of its heat-blur time and noise from its DCT
spectrum, against the training data's mean power spectrum.

Model (per image, per channel, per orthonormal-DCT frequency f with Laplacian eigenvalue λ_f, genproc's basis):

    u_f = e^{-λ_f τ} a_f + n_f,    a_f ~ N(0, A P_f),    n_f ~ N(0, s² + q²)

- τ: the blur as heat-equation time (σ_B = √(2τ) pixels); a heat blur multiplies coefficient f by e^{-λ_f τ}
  exactly, and a spatial Gaussian of std σ_B is the same away from the borders.
- P_f: the training images' mean power E[u_f²] at f (:func:`genproc.processes.dct.mean_power`); A: the image's own contrast relative to it.
- s: white observation noise (std, in [0, 1] pixel units; orthonormal: the same per frequency); q² = 1/(12·255²) the
  8-bit quantisation noise every stored image has.

So u_f ~ N(0, v_f) with v_f = A e^{-2 λ_f τ} P_f + s² + q², and the estimate is the (τ, s, A) minimising
½ Σ_f (log v_f + u_f² / v_f), summed over channels, found on a coarse log grid and refined on a fine one around the
best point (:func:`estimate_blur`). The noise is what makes this work on noisy inputs: where the blurred signal
falls under s, the likelihood prefers the noise floor instead of a stronger blur. For speed the frequencies are pooled
into at most ``BINS`` bins of nearly equal λ (quantiles of log λ; the DC term alone), each with its summed u², its
count and its mean P: exact when every bin holds frequencies of one λ and one P, and the cost no longer grows with
the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genproc.processes.dct import dct2, laplacian_eigenvalues

Q2 = 1.0 / (12 * 255.0**2)  # the variance of 8-bit quantisation, [0, 1] units
TAU_MIN = 0.01  # the smallest blur on the grid (σ_B ≈ 0.14 px); τ = 0 is on the grid too
BINS = 192  # frequency bins of the likelihood


@dataclass
class BlurEstimate:
    """Per image: ``tau`` (N,) heat time (pixels²), ``sigma_blur`` (N,) = √(2 τ) pixels, ``noise`` (N,) std in [0, 1]
    units, ``contrast`` (N,) the fitted A."""

    tau: torch.Tensor
    noise: torch.Tensor
    contrast: torch.Tensor

    @property
    def sigma_blur(self) -> torch.Tensor:
        return (2 * self.tau).sqrt()


def _bins(h: int, w: int, bins: int = BINS) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(bin index (H*W,) int64, each bin's λ (B',) float64, number of bins B'): the DC frequency alone in bin 0, the
    others in up to ``bins - 1`` quantile bins of log λ (a bin per distinct λ when there are fewer)."""
    lam = laplacian_eigenvalues(h, w).double().flatten()
    vals = torch.unique(lam)
    if vals.numel() <= bins:
        idx = torch.searchsorted(vals, lam)
    else:
        pos = lam[lam > 0].log()
        edges = torch.quantile(pos, torch.linspace(0, 1, bins, dtype=torch.float64)[1:-1])
        idx = torch.where(lam > 0, 1 + torch.bucketize(lam.clamp_min(1e-300).log(), edges), torch.zeros_like(lam).long())
        idx = torch.unique(idx, return_inverse=True)[1]
    n = int(idx.max()) + 1
    lam_b = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, lam) / torch.bincount(idx, minlength=n)
    return idx, lam_b, n


def _pool(x: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Sum (..., H, W) over the frequency bins: (..., n)."""
    flat = x.flatten(-2)
    return torch.zeros(*flat.shape[:-1], n, dtype=flat.dtype).index_add_(-1, idx, flat)


def _nll(u2: torch.Tensor, count: torch.Tensor, decay: torch.Tensor, power: torch.Tensor, tau: torch.Tensor,
         s: torch.Tensor, amp: torch.Tensor) -> torch.Tensor:
    """½ Σ_bins (count log v + U / v) for every image and every (τ, s, A) of the grids: u2 (B, C, F) pooled u² sums;
    count (F,) frequencies per bin; decay (F,) = 2λ; power (C, F) mean P per bin; tau (B, T), s (B, S), amp (B, A)
    -> (B, T, S, A)."""
    att = torch.exp(-decay[None, None] * tau[..., None])  # (B, T, F)
    sig = att[:, :, None] * power[None, None]  # (B, T, C, F)
    v = (amp[:, None, None, :, None, None] * sig[:, :, None, None]
         + (s**2)[:, None, :, None, None, None] + Q2)  # (B, T, S, A, C, F)
    return 0.5 * (count * torch.log(v) + u2[:, None, None, None] / v).sum((-2, -1))


def estimate_blur(images: torch.Tensor, power: torch.Tensor, tau_max: float, *, chunk: int = 16) -> BlurEstimate:
    """Maximum-likelihood heat time, noise std and contrast of each image (see the module docstring).

    images: (N, C, H, W) in [0, 1]; power: (C, H, W) from :func:`genproc.processes.dct.mean_power` on training images of the same size;
    tau_max: the largest blur to consider (e.g. the model's last level's). Returns a :class:`BlurEstimate`."""
    h, w = images.shape[-2:]
    idx, lam_b, nb = _bins(h, w)
    count = torch.bincount(idx, minlength=nb).double()
    decay = 2 * lam_b
    power = _pool(power.double().clamp_min(1e-12), idx, nb) / count  # (C, F) mean P per bin
    u2_all = _pool(dct2(images.float()).double().pow(2), idx, nb)  # (N, C, F)
    # coarse grids: log-spaced, with the zero ends included
    taus = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(math.log10(TAU_MIN), math.log10(tau_max), 48,
                                                                           dtype=torch.float64)])
    ss = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-3, -0.3, 16, dtype=torch.float64)])
    amps = torch.logspace(-1, 1, 9, dtype=torch.float64)
    out_t, out_s, out_a = [], [], []
    for b0 in range(0, u2_all.shape[0], chunk):
        u2 = u2_all[b0:b0 + chunk]
        B, rows = u2.shape[0], torch.arange(u2.shape[0])
        t, s, a = taus.expand(B, -1), ss.expand(B, -1), amps.expand(B, -1)
        for step in range(4):  # coarse, then three times finer around the best point
            nll = _nll(u2, count, decay, power, t, s, a).flatten(1)  # (B, T*S*A)
            i = nll.argmin(1)
            ti, rest = i // (s.shape[1] * a.shape[1]), i % (s.shape[1] * a.shape[1])
            si, ai = rest // a.shape[1], rest % a.shape[1]
            if step == 3:
                break
            t, s, a = _refine(t, ti, 11), _refine(s, si, 7), _refine(a, ai, 7)
        out_t.append(t[rows, ti]), out_s.append(s[rows, si]), out_a.append(a[rows, ai])
    return BlurEstimate(torch.cat(out_t).float(), torch.cat(out_s).float(), torch.cat(out_a).float())


def _refine(grid: torch.Tensor, idx: torch.Tensor, points: int) -> torch.Tensor:
    """A finer grid (B, points) between each row's neighbours of its best point (linear where a neighbour is 0)."""
    B, G = grid.shape
    rows = torch.arange(B)
    lo = grid[rows, (idx - 1).clamp_min(0)]
    hi = grid[rows, (idx + 1).clamp_max(G - 1)]
    f = torch.linspace(0, 1, points, dtype=torch.float64)
    lin = lo[:, None] + (hi - lo)[:, None] * f[None]
    geo = torch.exp(torch.log(lo.clamp_min(1e-300))[:, None] + (torch.log(hi) - torch.log(lo.clamp_min(1e-300)))[:, None] * f)
    return torch.where((lo > 0)[:, None], geo, lin)
