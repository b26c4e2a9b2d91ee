"""Orthonormal DCT-II along the last two axes, and the heat operator built on it.

Three exact implementations of the same transform:

* ``matmul``: dense orthonormal DCT matrices, ``X = C_H x C_Wᵀ`` (fastest for small images: a 28×28 transform is
  two tiny GEMMs);
* ``fft``: the 2-D transform from ONE real 2-D FFT of the reordered image (Makhoul 1980, "A fast cosine transform in
  one and multiple dimensions", IEEE TASSP 28(1): v = x with each axis reordered [even samples, odd samples
  reversed], V = FFT2(v); then C(k1, k2) = Re{w1 (w2 V(k1, k2) + w2* V(k1, -k2))} / 2 with w = e^{-iπk/2N}), and
  its inverse from one inverse real 2-D FFT, V(k1, k2) = w1* w2* [(c(k1,k2) − c(-k1,-k2)) − i (c(-k1,k2) + c(k1,-k2))]
  (c at index N is 0). O(N log N) on any device;
* ``scipy``: scipy.fft's pocketfft DCT (CPU only; ``torch.get_num_threads()`` workers), wrapped as an autograd
  function whose backward is the inverse transform (the DCT is orthonormal, so its adjoint is its inverse).

:func:`dct2` / :func:`idct2` pick the method per size and device (``method="auto"``): matmul up to
:data:`CPU_MATMUL_MAX_SIDE` (CPU) / :data:`CUDA_MATMUL_MAX_SIDE` (other devices), then scipy on the CPU and fft
elsewhere (the thresholds are measured by ``benchmarks/heat_operator.py --sweep``). All run in the input's float
dtype, batched over any leading axes, and are differentiable.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from genproc.errors import GenprocError

# "auto" uses the dense matmul path up to these image sides (the larger of H, W), see benchmarks/README.md
CPU_MATMUL_MAX_SIDE = 128
CUDA_MATMUL_MAX_SIDE = 256
METHODS = ("auto", "matmul", "fft", "scipy")


@lru_cache(maxsize=32)
def _dct_matrix_cpu(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n, n) float64: C[k, j] = a_k cos(pi (2j+1) k / (2n))."""
    j = torch.arange(n, dtype=torch.float64)
    k = j[:, None]
    c = torch.cos(math.pi * (2 * j[None, :] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


_DEVICE_CACHE: dict[tuple, object] = {}


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n) on ``device`` (cached)."""
    key = (n, str(device), dtype)
    if key not in _DEVICE_CACHE:
        _DEVICE_CACHE[key] = _dct_matrix_cpu(n).to(device=device, dtype=dtype)
    return _DEVICE_CACHE[key]  # type: ignore[return-value]


# ------------------------------------------------------------------ FFT path


def _makhoul_order(n: int) -> torch.Tensor:
    """v[j] = x[p[j]]: the even samples, then the odd ones reversed."""
    return torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2).flip(0)])


def _fft_constants(h: int, w: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Index maps, twiddles and scales of the 2-D FFT path for (h, w) images (cached per device and dtype)."""
    key = ("fft", h, w, str(device), dtype)
    if key not in _DEVICE_CACHE:
        half = w // 2 + 1
        p1, p2 = _makhoul_order(h), _makhoul_order(w)
        w1 = torch.exp(-1j * math.pi * torch.arange(h, dtype=torch.float64) / (2 * h))[:, None]  # (h, 1)
        w2 = torch.exp(-1j * math.pi * torch.arange(half, dtype=torch.float64) / (2 * w))[None, :]  # (1, w//2+1)
        s1, s2 = torch.full((h,), math.sqrt(2.0 / h), dtype=torch.float64), torch.full((w,), math.sqrt(2.0 / w),
                                                                                     dtype=torch.float64)
        s1[0], s2[0] = math.sqrt(1.0 / h), math.sqrt(1.0 / w)
        cd = torch.complex128 if dtype == torch.float64 else torch.complex64
        _DEVICE_CACHE[key] = {
            "p1": p1[:, None].to(device), "p2": p2[None, :].to(device),
            "inv1": torch.argsort(p1)[:, None].to(device), "inv2": torch.argsort(p2)[None, :].to(device),
            "neg1": ((-torch.arange(h)) % h).to(device),  # index of -k1 (mod h)
            "w1": w1.to(device, cd), "w2": w2.to(device, cd), "w2c": w2.conj().to(device, cd),
            "w12c": (w1.conj() * w2.conj()).to(device, cd),
            "scale": (s1[:, None] * s2[None, :] / 2).to(device, dtype),  # orthonormal scaling and the formula's 1/2
        }
    return _DEVICE_CACHE[key]  # type: ignore[return-value]


def _dct2_fft(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II from one rfft2 (module docstring). Columns k2 <= w/2 come from V(k1, ±k2) directly, the
    columns w - k2 from the same products: C(k1, w - k2) = -Im{w1 (w2 V(k1, k2) - w2* V(k1, -k2))} / 2."""
    h, w = x.shape[-2:]
    c = _fft_constants(h, w, x.device, x.dtype)
    half = w // 2 + 1
    big_v = torch.fft.rfft2(x[..., c["p1"], c["p2"]])  # (..., h, w//2+1)
    a = c["w2"] * big_v
    b = c["w2c"] * big_v.index_select(-2, c["neg1"]).conj()  # w2* V(k1, -k2) = w2* conj(V(-k1, k2)) (real input)
    out = torch.empty_like(x)
    out[..., :half] = (c["w1"] * (a + b)).real
    if w - half > 0:
        out[..., half:] = (c["w1"] * (b[..., 1:w - half + 1] - a[..., 1:w - half + 1])).imag.flip(-1)
    return out * c["scale"]


def _idct2_fft(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dct2_fft` (orthonormal 2-D DCT-III) from one irfft2 (module docstring)."""
    h, w = y.shape[-2:]
    c = _fft_constants(h, w, y.device, y.dtype)
    half = w // 2 + 1
    u = y / (2 * c["scale"])  # the un-normalised coefficients c(k1, k2)

    def neg(t: torch.Tensor, dim: int) -> torch.Tensor:  # t at index -k along dim, 0 at k = 0 (c(N) = 0)
        return torch.cat([torch.zeros_like(t.narrow(dim, 0, 1)), t.narrow(dim, 1, t.shape[dim] - 1).flip(dim)], dim)

    u_1 = neg(u, -2)  # c(-k1, k2)
    big_v = torch.complex(u[..., :half] - neg(u_1, -1)[..., :half], -(neg(u, -1)[..., :half] + u_1[..., :half]))
    v = torch.fft.irfft2(big_v * c["w12c"], s=(h, w))
    return v[..., c["inv1"], c["inv2"]]


# ------------------------------------------------------------------ scipy (pocketfft) path, CPU


class _ScipyDCT(torch.autograd.Function):
    """Orthonormal 2-D DCT-II (``inverse``: DCT-III) of a CPU tensor by scipy.fft; the gradient is the other one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inverse: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.inverse = inverse
        return _scipy(x, inverse)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _scipy(g, not ctx.inverse), None


def _scipy(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    import scipy.fft

    fn = scipy.fft.idctn if inverse else scipy.fft.dctn
    arr = x.detach().contiguous().numpy()
    return torch.from_numpy(fn(arr, type=2, axes=(-2, -1), norm="ortho", workers=torch.get_num_threads()))


def _choose(h: int, w: int, method: str, device: torch.device) -> str:
    if method not in METHODS:
        raise ValueError(f"DCT method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "scipy" and device.type != "cpu":
        raise GenprocError(f"DCT method 'scipy' (process.dct) runs on the CPU only, the model is on {device}; "
                           f"use auto or fft")
    if method == "auto":
        if device.type == "cpu":
            return "matmul" if max(h, w) <= CPU_MATMUL_MAX_SIDE else "scipy"
        return "matmul" if max(h, w) <= CUDA_MATMUL_MAX_SIDE else "fft"
    return method


def dct2(x: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes.

    x: (..., H, W) float -> (..., H, W) coefficients, [n, m] = frequency (row, col).
    """
    h, w = x.shape[-2:]
    m = _choose(h, w, method, x.device)
    if m == "matmul":
        ch, cw = dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)
        return ch @ x @ cw.T
    return _dct2_fft(x) if m == "fft" else _ScipyDCT.apply(x, False)


def idct2(y: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Inverse of :func:`dct2`. y: (..., H, W) coefficients -> (..., H, W) image."""
    h, w = y.shape[-2:]
    m = _choose(h, w, method, y.device)
    if m == "matmul":
        ch, cw = dct_matrix(h, y.device, y.dtype), dct_matrix(w, y.device, y.dtype)
        return ch.T @ y @ cw
    return _idct2_fft(y) if m == "fft" else _ScipyDCT.apply(y, True)


# ------------------------------------------------------------------ heat operator


def laplacian_eigenvalues(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Eq. (21): lambda_nm = pi^2 (n^2/H^2 + m^2/W^2), shape (H, W) float32."""
    n = torch.arange(h, device=device, dtype=torch.float32) / h
    m = torch.arange(w, device=device, dtype=torch.float32) / w
    return math.pi**2 * (n[:, None] ** 2 + m[None, :] ** 2)


# exp(-30) = 9.4e-14: a coefficient damped further (by either factor of the decay) contributes < 1e-10 to any pixel
# of an image in [0, 1] up to 512², far below float32 resolution, and is set to 0 instead. Otherwise exp(-λt)
# reaches float32's subnormal range (below 1.2e-38), where x86 arithmetic takes a slow path: for a 64-image 64×64
# batch with the IHDM schedule's times, 7% of the decays were subnormal and their exp took 2.4-6.4 ms instead of
# 1.1 ms (one thread, this CPU).
DECAY_CUTOFF = 30.0


def heat_decay(lam_t: torch.Tensor) -> torch.Tensor:
    """exp(-λt) per frequency, exactly 0 where λt > :data:`DECAY_CUTOFF` (no subnormal floats)."""
    return torch.exp(-lam_t.clamp(max=DECAY_CUTOFF)).masked_fill(lam_t > DECAY_CUTOFF, 0.0)


def heat_forward(x: torch.Tensor, t: torch.Tensor | float, method: str = "auto") -> torch.Tensor:
    """Eq. (2)/(23): F(t) x = V exp(-Lambda t) V^T x, Neumann boundaries.

    x: (N, C, H, W) float; t: float or (N,) per-sample diffusion time (t = sigma_B^2 / 2).
    Returns (N, C, H, W) float32. Runs in float32 even inside an autocast region. The decay is applied as its two
    factors, exp(-λ_nm t) = exp(-π² n² t / H²) exp(-π² m² t / W²) (Eq. 21): N (H + W) exponentials instead of N H W.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        h, w = x.shape[-2:]
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        t = t.reshape(-1, 1, 1, 1) if t.ndim else t
        lam_rows = (math.pi * torch.arange(h, device=x.device, dtype=torch.float32) / h) ** 2  # (H,)
        lam_cols = (math.pi * torch.arange(w, device=x.device, dtype=torch.float32) / w) ** 2  # (W,)
        rows = heat_decay(lam_rows[:, None] * t)  # (N, 1, H, 1), or (H, 1) for one t
        cols = heat_decay(lam_cols[None, :] * t)  # (N, 1, 1, W), or (1, W)
        coef = dct2(x, method)  # (N, C, H, W)
        return idct2((coef * rows).mul_(cols), method)  # one temporary: the product, scaled in place


def mean_power(images: torch.Tensor) -> torch.Tensor:
    """E[u_f²] over images (N, C, H, W): the mean orthonormal-DCT power per frequency, (C, H, W) float64."""
    return dct2(images.float()).double().pow(2).mean(0)


def noise_left(noise_std: torch.Tensor, dt: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Per-pixel std of white noise of std ``noise_std`` (B,) after a heat blur of time ``dt`` (B,) on (H, W) images:
    s √(mean_f e^{-2 λ_f dt}) (orthonormal DCT: white noise has std s at every frequency). float64 (B,)."""
    lam = laplacian_eigenvalues(*hw).double().flatten()
    return noise_std.double() * torch.exp(-2 * lam[None] * dt.double()[:, None]).mean(1).sqrt()
