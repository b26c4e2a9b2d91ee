"""Orthonormal DCT-II along the last two axes, and the heat operator built on it.

Two exact implementations of the same transform:

* ``matmul``: dense orthonormal DCT matrices, ``X = C_H x C_Wᵀ`` (fastest for small
  images: a 28×28 transform is two tiny GEMMs);
* ``fft``: Makhoul's reordering + one real FFT per axis, O(N log N) (wins for large
  images, e.g. 256×256).

:func:`dct2` / :func:`idct2` pick the method per size (``method="auto"``); both run in
float32, batched over any leading axes, on any device, and are differentiable.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

# Above this side length the FFT path is used by "auto" (see benchmarks/README.md).
MATMUL_MAX_SIDE = 256


@lru_cache(maxsize=32)
def _dct_matrix_cpu(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n, n) float64: C[k, j] = a_k cos(pi (2j+1) k / (2n))."""
    j = torch.arange(n, dtype=torch.float64)
    k = j[:, None]
    c = torch.cos(math.pi * (2 * j[None, :] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


_DEVICE_CACHE: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n) on ``device`` (cached)."""
    key = (n, str(device), dtype)
    if key not in _DEVICE_CACHE:
        _DEVICE_CACHE[key] = _dct_matrix_cpu(n).to(device=device, dtype=dtype)
    return _DEVICE_CACHE[key]


# ------------------------------------------------------------------ FFT path


def _twiddle(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of π k / (2n), k = 0..n-1."""
    k = torch.arange(n, device=device, dtype=torch.float64) * (math.pi / (2 * n))
    return torch.cos(k).to(dtype), torch.sin(k).to(dtype)


def _dct_fft_lastdim(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis via Makhoul's reordering and one real FFT (rfft: half the complex work;
    V_k for k > n/2 is conj(V_{n-k}))."""
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    big_v = torch.fft.rfft(v, dim=-1)  # (..., n//2 + 1)
    k = torch.arange(n, device=x.device)
    mirror = k > n // 2
    idx = torch.where(mirror, n - k, k)
    re = big_v.real[..., idx]
    im = big_v.imag[..., idx] * torch.where(mirror, -1.0, 1.0).to(x.dtype)
    cos, sin = _twiddle(n, x.device, x.dtype)
    out = (re * cos + im * sin) * math.sqrt(2.0 / n)  # Re(V_k e^{-iπk/2n})
    out[..., 0] = out[..., 0] / math.sqrt(2.0)
    return out


def _idct_fft_lastdim(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dct_fft_lastdim` (orthonormal DCT-III) via one inverse real FFT: only V_0..V_{n/2} are formed,
    V_k = (c_k - i c_{n-k}) e^{iπk/2n} with c_n = 0."""
    n = y.shape[-1]
    half = n // 2 + 1
    scale = torch.full((n,), math.sqrt(2.0 / n), device=y.device, dtype=y.dtype)
    scale[0] = math.sqrt(1.0 / n)
    c = y / scale  # un-normalised coefficients X_k
    c_rev = torch.cat([torch.zeros_like(c[..., :1]), c[..., 1:].flip(-1)], dim=-1)[..., :half]  # c_{n-k}
    cos, sin = _twiddle(n, y.device, y.dtype)
    a, b, co, si = c[..., :half], -c_rev, cos[:half], sin[:half]
    big_v = torch.complex(a * co - b * si, a * si + b * co)  # (a + i b) e^{iπk/2n}
    v = torch.fft.irfft(big_v, n=n, dim=-1)
    out = torch.empty_like(v)
    h = (n + 1) // 2
    out[..., ::2] = v[..., :h]
    out[..., 1::2] = v[..., h:].flip(-1)
    return out


def _choose(h: int, w: int, method: str) -> str:
    if method == "auto":
        return "matmul" if max(h, w) <= MATMUL_MAX_SIDE else "fft"
    if method not in ("matmul", "fft"):
        raise ValueError(f"DCT method must be 'auto', 'matmul' or 'fft', got {method!r}")
    return method


def dct2(x: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes.

    x: (..., H, W) float32 -> (..., H, W) float32 coefficients, [n, m] = frequency (row, col).
    """
    h, w = x.shape[-2:]
    if _choose(h, w, method) == "matmul":
        ch, cw = dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)
        return ch @ x @ cw.T
    y = _dct_fft_lastdim(x)  # along W
    return _dct_fft_lastdim(y.transpose(-1, -2)).transpose(-1, -2)  # along H


def idct2(y: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Inverse of :func:`dct2`. y: (..., H, W) coefficients -> (..., H, W) image."""
    h, w = y.shape[-2:]
    if _choose(h, w, method) == "matmul":
        ch, cw = dct_matrix(h, y.device, y.dtype), dct_matrix(w, y.device, y.dtype)
        return ch.T @ y @ cw
    x = _idct_fft_lastdim(y)
    return _idct_fft_lastdim(x.transpose(-1, -2)).transpose(-1, -2)


# ------------------------------------------------------------------ heat operator


def laplacian_eigenvalues(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Eq. (21): lambda_nm = pi^2 (n^2/H^2 + m^2/W^2), shape (H, W) float32."""
    n = torch.arange(h, device=device, dtype=torch.float32) / h
    m = torch.arange(w, device=device, dtype=torch.float32) / w
    return math.pi**2 * (n[:, None] ** 2 + m[None, :] ** 2)


def heat_forward(x: torch.Tensor, t: torch.Tensor | float, method: str = "auto") -> torch.Tensor:
    """Eq. (2)/(23): F(t) x = V exp(-Lambda t) V^T x, Neumann boundaries.

    x: (N, C, H, W) float; t: float or (N,) per-sample diffusion time (t = sigma_B^2 / 2).
    Returns (N, C, H, W) float32. Runs in float32 even inside an autocast region.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        h, w = x.shape[-2:]
        lam = laplacian_eigenvalues(h, w, x.device)  # (H, W)
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        if t.ndim == 0:
            decay = torch.exp(-lam * t)  # (H, W)
        else:
            decay = torch.exp(-lam[None, None] * t.reshape(-1, 1, 1, 1))  # (N, 1, H, W)
        return idct2(dct2(x, method) * decay, method)


def mean_power(images: torch.Tensor) -> torch.Tensor:
    """E[u_f²] over images (N, C, H, W): the mean orthonormal-DCT power per frequency, (C, H, W) float64."""
    return dct2(images.float()).double().pow(2).mean(0)


def noise_left(noise_std: torch.Tensor, dt: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Per-pixel std of white noise of std ``noise_std`` (B,) after a heat blur of time ``dt`` (B,) on (H, W) images:
    s √(mean_f e^{-2 λ_f dt}) (orthonormal DCT: white noise has std s at every frequency). float64 (B,)."""
    lam = laplacian_eigenvalues(*hw).double().flatten()
    return noise_std.double() * torch.exp(-2 * lam[None] * dt.double()[:, None]).mean(1).sqrt()
