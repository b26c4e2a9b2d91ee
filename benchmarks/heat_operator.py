"""Benchmark the IHDM heat operator F(t) x = IDCT(exp(-Lambda t) * DCT(x)) (paper Eq. 2, App. A.1).

Times one full application (forward 2-D DCT, per-sample decay, inverse DCT) on a batch,
for the batch shapes of the MNIST, CIFAR-10 and 256x256 recipes, with:

* genproc ``heat_forward`` with ``method`` = auto | matmul | fft | scipy;
* scipy: ``scipy.fft.dctn/idctn(norm="ortho")`` on float32 numpy, ``workers=1``
  (scipy's default) and ``workers=-1`` (all cores);
* genproc's spatial-domain operator of the ``blur`` process (``gaussian_blur``: a separable Gaussian
  convolution with sigma_B = sqrt(2 t), reflect padding, kernel capped at the image size). It is a
  different operator at the borders and for kernels wider than the image, so its error column is its
  distance from the heat equation, not float error;
* the "torch-dct approach": the FFT algorithm of the torch-dct package (Makhoul's
  even/odd reordering, an N-point complex FFT, a twiddle by exp(-i pi k / 2N), 'ortho'
  scaling; the inverse through irfft; 2-D as two 1-D passes on flattened (-1, N) rows),
  written here from the formulas.

Every result is compared with a float64 scipy reference (max abs error). Pixel data is
uniform in [0, 1]; diffusion times are per sample, drawn from the IHDM schedule
(sigma_B log-spaced in [0.5, 20], t = sigma_B^2 / 2).

    python benchmarks/heat_operator.py --repeats 20
    python benchmarks/heat_operator.py --sweep          # every method by image side, and auto / best
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import scipy.fft
import torch

from genproc.processes import dct as gdct
from genproc.processes.blur import gaussian_blur
from genproc.processes.dct import heat_forward, laplacian_eigenvalues

SHAPES = [(128, 1, 28, 28), (128, 3, 32, 32), (16, 3, 256, 256)]


# ------------------------------------------------------------------ torch-dct approach, from the formulas


def _tdct_dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II of the last axis: X_k = Re(e^{-i pi k/2N} FFT(v)_k), v = [x_even, reversed x_odd]."""
    shape, n = x.shape, x.shape[-1]
    x = x.contiguous().view(-1, n)  # (M, N) rows
    v = torch.cat([x[:, ::2], x[:, 1::2].flip(1)], dim=1)
    vc = torch.view_as_real(torch.fft.fft(v, dim=1))  # (M, N, 2)
    k = -torch.arange(n, dtype=x.dtype, device=x.device) * (math.pi / (2 * n))
    out = vc[..., 0] * torch.cos(k) - vc[..., 1] * torch.sin(k)  # real part of the twiddled FFT
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=x.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return (out * scale).view(shape)


def _tdct_idct(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_tdct_dct`: V_k = e^{i pi k/2N} (X_k - i X_{N-k}), v = irfft(V), un-reorder."""
    shape, n = y.shape, y.shape[-1]
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=y.dtype, device=y.device)
    scale[0] = math.sqrt(1.0 / n)
    xk = y.contiguous().view(-1, n) / scale  # un-normalised coefficients
    x_rev = torch.cat([torch.zeros_like(xk[:, :1]), -xk[:, 1:].flip(1)], dim=1)  # -X_{N-k}, X_N = 0
    k = torch.arange(n, dtype=y.dtype, device=y.device) * (math.pi / (2 * n))
    c, s = torch.cos(k), torch.sin(k)
    vr, vi = xk * c - x_rev * s, xk * s + x_rev * c  # (X_k + i x_rev) e^{ik}
    v = torch.fft.irfft(torch.complex(vr, vi)[:, : n // 2 + 1], n=n, dim=1)  # v is real: half spectrum
    out = torch.empty_like(v)
    out[:, ::2] = v[:, : (n + 1) // 2]
    out[:, 1::2] = v[:, (n + 1) // 2 :].flip(1)
    return out.view(shape)


def _tdct_2d(x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return f(f(x).transpose(-1, -2)).transpose(-1, -2)


def heat_torch_dct(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    decay = torch.exp(-laplacian_eigenvalues(h, w, x.device)[None, None] * t.reshape(-1, 1, 1, 1))
    return _tdct_2d(_tdct_2d(x, _tdct_dct) * decay, _tdct_idct)


# ------------------------------------------------------------------ scipy


def _decay_np(h: int, w: int, t: np.ndarray, dtype: type) -> np.ndarray:
    n, m = np.arange(h, dtype=np.float64) / h, np.arange(w, dtype=np.float64) / w
    lam = np.pi**2 * (n[:, None] ** 2 + m[None, :] ** 2)
    return np.exp(-lam[None, None] * t.reshape(-1, 1, 1, 1)).astype(dtype)


def heat_scipy(x: np.ndarray, t: np.ndarray, workers: int | None) -> np.ndarray:
    kw = dict(type=2, axes=(-2, -1), norm="ortho", workers=workers)
    return scipy.fft.idctn(scipy.fft.dctn(x, **kw) * _decay_np(*x.shape[-2:], t, x.dtype), **kw)


# ------------------------------------------------------------------ timing


def _time(fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None]) -> float:
    """Median wall time of one call, in ms."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                      sync: Callable[[], None]) -> dict[str, float]:
    """Median wall time (ms) of one call of each function, the calls taken round-robin (a, b, c, a, b, c, ...) so that
    a slow spell of a shared machine falls on every method alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    sigma_b = torch.exp(torch.empty(shape[0]).uniform_(math.log(0.5), math.log(20.0), generator=g))
    return x, sigma_b**2 / 2


def run_table(repeats: int, warmup: int, device: torch.device) -> None:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rows, speedups = [], []
    for shape in SHAPES:
        x, t = _inputs(shape)
        ref = heat_scipy(x.double().numpy(), t.double().numpy(), workers=-1)  # float64 reference
        xd, td = x.to(device), t.to(device)
        xn, tn = x.numpy(), t.numpy()
        cands: dict[str, Callable[[], object]] = {
            "genproc auto": partial(heat_forward, xd, td, "auto"),
            "genproc matmul": partial(heat_forward, xd, td, "matmul"),
            "genproc fft": partial(heat_forward, xd, td, "fft"),
            **({"genproc scipy": partial(heat_forward, xd, td, "scipy")} if device.type == "cpu" else {}),
            "torch-dct approach": partial(heat_torch_dct, xd, td),
            "genproc blur (spatial)": partial(gaussian_blur, xd, (2 * td).sqrt()),
        }
        if device.type == "cpu":
            cands["scipy workers=1"] = partial(heat_scipy, xn, tn, 1)
            cands["scipy workers=-1"] = partial(heat_scipy, xn, tn, -1)
        ms = {}
        for name, fn in cands.items():
            out = fn()
            out = out.cpu().numpy() if isinstance(out, torch.Tensor) else out
            assert out.dtype == np.float32, (name, out.dtype)
            err = float(np.abs(out.astype(np.float64) - ref).max())
            ms[name] = _time(fn, repeats, warmup, sync)
            rows.append(("x".join(map(str, shape)), name, ms[name], shape[0] / ms[name] * 1e3, err))
        speedups.append(("x".join(map(str, shape)), ms["torch-dct approach"] / ms["genproc auto"],
                         ms["genproc blur (spatial)"] / ms["genproc auto"]))

    print("| shape (N×C×H×W) | method | ms/call | images/s | max abs err vs scipy f64 |")
    print("|---|---|---:|---:|---:|")
    for shape, name, m, ips, err in rows:
        print(f"| {shape} | {name} | {m:.3f} | {ips:,.0f} | {err:.1e} |")
    print()
    print("| shape | speedup of genproc auto over the torch-dct approach | over the spatial blur |")
    print("|---|---:|---:|")
    for shape, s, b in speedups:
        print(f"| {shape} | {s:.2f}× | {b:.2f}× |")


def run_sweep(repeats: int, warmup: int, device: torch.device, elems: int) -> list[float]:
    """Every method per image side (timed round-robin), at a fixed number of pixels per call (what sets the ``auto``
    thresholds), and the
    ratio of ``auto`` to the best of (dense matmul, scipy called directly with torch's thread count) on the CPU, or to
    the best of (matmul, fft) on other devices. Returns those ratios."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    cpu = device.type == "cpu"
    limit = gdct.CPU_MATMUL_MAX_SIDE if cpu else gdct.CUDA_MATMUL_MAX_SIDE
    ref_name = "best of (matmul, scipy)" if cpu else "best of (matmul, fft)"
    print(f"heat operator F(t) x per image side, {elems:,} pixels per call; auto: matmul up to side {limit}, then "
          f"{'scipy' if cpu else 'fft'}")
    print(f"| side | batch (N×C) | matmul ms | fft ms | {'scipy ms (direct) | ' if cpu else ''}auto ms | auto picks | "
          f"auto / {ref_name} |")
    print("|---:|---:|---:|---:|" + ("---:|" if cpu else "") + "---:|---|---:|")
    ratios = []
    for side in (16, 28, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        nc = max(1, elems // (side * side))
        x, t = _inputs((nc, 1, side, side))
        xn, tn = x.numpy(), t.numpy()
        x, t = x.to(device), t.to(device)
        fns = {m: partial(heat_forward, x, t, m) for m in ("matmul", "fft", "auto")}
        if cpu:
            fns["scipy"] = partial(heat_scipy, xn, tn, torch.get_num_threads())
        ms = _time_interleaved(fns, repeats, warmup, sync)
        best = min(ms["matmul"], ms["scipy"] if cpu else ms["fft"])
        ratios.append(ms["auto"] / best)
        pick = "matmul" if side <= limit else ("scipy" if cpu else "fft")
        print(f"| {side} | {nc} | {ms['matmul']:.3f} | {ms['fft']:.3f} | " + (f"{ms['scipy']:.3f} | " if cpu else "")
              + f"{ms['auto']:.3f} | {pick} | {ratios[-1]:.2f} |")
    print(f"\nauto / {ref_name}: worst {max(ratios):.2f}, median {statistics.median(ratios):.2f} "
          f"(target: within 1.2 at every side)")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per entry (the median is reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (scipy rows only on cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--sweep", action="store_true", help="also time matmul vs fft over image sides")
    ap.add_argument("--sweep-elems", type=int, default=1 << 20, help="pixels per call in the sweep")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, scipy {scipy.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"torch threads {torch.get_num_threads()}, repeats {args.repeats} (median)\n"
    )
    torch.set_grad_enabled(False)
    run_table(args.repeats, args.warmup, device)
    if args.sweep:
        print()
        run_sweep(args.repeats, args.warmup, device, args.sweep_elems)


if __name__ == "__main__":
    main()
