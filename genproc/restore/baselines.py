"""Classical deconvolution baselines for :func:`genproc.restore.restore`, each given the known blur (and noise):

- ``wiener``: scikit-image's Wiener-Hunt deconvolution (``skimage.restoration.wiener``) with the Gaussian PSF of
  σ_B = √(2 τ), Laplacian regulariser, balance = the noise-to-signal power ratio (s² + q²) / mean P. Its FFT assumes
  periodic borders.
- ``richardson_lucy``: scikit-image's Richardson-Lucy (``skimage.restoration.richardson_lucy``) with that PSF,
  ``RL_ITERATIONS`` iterations (the iteration count is its regulariser).
- ``dct_wiener``: the Wiener filter of the heat operator itself, exact in genproc's DCT basis (Neumann borders, the
  model's own forward operator): û_f = d_f P_f / (d_f² P_f + s² + q²) u_f with d_f = e^{-λ_f τ} and P_f the
  training images' mean power: the linear MMSE estimate under the Gaussian model of :mod:`genproc.restore.levels`.
"""

from __future__ import annotations

import numpy as np
import torch

from genproc.processes.dct import dct2, idct2, laplacian_eigenvalues
from genproc.restore.levels import Q2

RL_ITERATIONS = 30
BASELINES = ("wiener", "richardson_lucy", "dct_wiener")


def gaussian_psf(sigma: float, size: int) -> np.ndarray:
    """A normalised isotropic Gaussian kernel of std ``sigma`` pixels, (2r+1, 2r+1) with r = min(ceil(4 σ), (size - 1) // 2)
    (scikit-image needs the PSF no larger than the image)."""
    r = int(min(max(1, np.ceil(4 * sigma)), (size - 1) // 2))
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * max(sigma, 1e-6) ** 2))
    return k / k.sum()


def wiener(y: torch.Tensor, tau: torch.Tensor, noise: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """scikit-image Wiener-Hunt per image and channel: y (N, C, H, W) in [0, 1]; tau, noise (N,); power (C, H, W)."""
    from skimage.restoration import wiener as sk_wiener

    out = torch.empty_like(y, dtype=torch.float32)
    mean_p = float(power.double().mean())
    for i in range(y.shape[0]):
        psf = gaussian_psf(float((2 * tau[i]).sqrt()), min(y.shape[-2:]))
        balance = (float(noise[i]) ** 2 + Q2) / mean_p
        for c in range(y.shape[1]):
            out[i, c] = torch.from_numpy(sk_wiener(y[i, c].double().numpy(), psf, balance, clip=False))
    return out.clamp(0, 1)


def richardson_lucy(y: torch.Tensor, tau: torch.Tensor, iterations: int = RL_ITERATIONS) -> torch.Tensor:
    """scikit-image Richardson-Lucy per image and channel, ``iterations`` iterations, the Gaussian PSF of √(2 τ)."""
    from skimage.restoration import richardson_lucy as sk_rl

    out = torch.empty_like(y, dtype=torch.float32)
    for i in range(y.shape[0]):
        psf = gaussian_psf(float((2 * tau[i]).sqrt()), min(y.shape[-2:]))
        for c in range(y.shape[1]):
            out[i, c] = torch.from_numpy(sk_rl(y[i, c].double().numpy(), psf, num_iter=iterations, clip=False))
    return out.clamp(0, 1)


def dct_wiener(y: torch.Tensor, tau: torch.Tensor, noise: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """The exact heat operator's Wiener filter in the DCT basis (see the module docstring)."""
    lam = laplacian_eigenvalues(*y.shape[-2:]).double()
    d = torch.exp(-lam[None, None] * tau.double()[:, None, None, None])  # (N, 1, H, W)
    p = power.double()[None]  # (1, C, H, W)
    gain = d * p / (d**2 * p + noise.double()[:, None, None, None] ** 2 + Q2)
    return idct2((gain * dct2(y.float()).double()).float()).clamp(0, 1)


def run_baselines(y: torch.Tensor, tau: torch.Tensor, noise: torch.Tensor, power: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every baseline of :data:`BASELINES` on the observations y with their (estimated or known) blur and noise."""
    return {"wiener": wiener(y, tau, noise, power), "richardson_lucy": richardson_lucy(y, tau),
            "dct_wiener": dct_wiener(y, tau, noise, power)}
