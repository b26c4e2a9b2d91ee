"""Restoration with a trained model: deblurring and super-resolution as posterior sampling from a blurred level.

An image blurred by the heat equation to time τ (plus a little noise) is, for IHDM, a draw of the level-k state
u_k = F(t_k) u_0 + σ ε with t_k ≈ τ; running the learned reverse chain from k samples sharp images consistent with it.
:func:`restore` does this for any process with the contract's restoration members
(``degradation_time``, ``level_noise_std``, ``observe``): IHDM and its spatial-blur variant, BDM (its chain started at
the t whose blur matches), and DDPM through SDEdit (Meng et al. 2022: noise the image to a level, run the chain back).

``level="auto"`` estimates each image's blur and noise from its DCT spectrum (:mod:`genproc.restore.levels`) and
starts at the level whose blur is nearest to it in σ_B (log scale). A noisier image than the level holds is blurred
further (the heat semigroup thins white noise) until the noise left fits the level: the next levels are tried in
turn (``observe``). For a process that does not blur (DDPM) the level is the first whose noise hides both the
observation's noise and the detail the blur removed (estimated from the training spectrum): SDEdit's condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from genproc.engine.sampler import NOISE_STREAM, run_chain
from genproc.errors import GenprocError
from genproc.processes.dct import laplacian_eigenvalues, mean_power
from genproc.processes.rng import SampleRNG
from genproc.restore.levels import BlurEstimate, estimate_blur

OBSERVE_STREAM = 3  # the noise that tops an observation up to its level's (streams 1, 2: the sampler's)
POWER_IMAGES = 5000  # training images in the reference spectrum


@dataclass
class RestoreResult:
    """``inputs`` (N, C, H, W): the observations at the model's size; ``samples`` (N, n, C, H, W): n restorations of
    each; ``mean`` (N, C, H, W): their mean; ``levels`` (N,) the level each chain started at; ``estimate`` the blur
    and noise estimated (or given) per image; all in [0, 1], on the CPU."""

    inputs: torch.Tensor
    samples: torch.Tensor
    levels: torch.Tensor
    estimate: BlurEstimate

    @property
    def mean(self) -> torch.Tensor:
        return self.samples.mean(1)


def reference_power(run: Any) -> torch.Tensor:
    """The mean DCT power of (up to ``POWER_IMAGES``) training images of ``run``: (C, H, W) float64; the one stored in
    its checkpoint (``data_stats.safetensors``) when there is one, so a released model needs no data set."""
    stats = getattr(run, "data_stats", None)
    if stats is not None and "power" in stats:
        return stats["power"].double()
    data = run.data
    return mean_power(data.get_batch(torch.arange(min(len(data), POWER_IMAGES))))


def upsample(y: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling of low-resolution images (N, C, h, w) to (N, C, H, W), clamped to [0, 1]."""
    return F.interpolate(y.float(), size=hw, mode="bicubic", align_corners=False).clamp(0, 1)


def _removed_rms(power: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Per-pixel RMS of what a heat blur of time tau (B,) removes from an average training image: (B,)
    √(mean_f P_f (1 - e^{-λ_f τ})²) (orthonormal DCT: mean over frequencies = mean over pixels)."""
    lam = laplacian_eigenvalues(*power.shape[-2:]).double().flatten()
    p = power.double().flatten(1).mean(0)  # (HW,) mean over channels
    return (p[None] * (1 - torch.exp(-lam[None] * tau.double()[:, None])) ** 2).mean(1).sqrt()


def first_level(process: Any, tau: float, noise: float, removed_rms: float, times: torch.Tensor) -> int:
    """The level ``level="auto"`` starts from for one image: for a blurring process the level nearest in log σ_B to
    √(2 τ) (level 1 for an unblurred image); otherwise the first level whose noise std covers the observation's noise
    and the removed detail together (√(noise² + removed_rms²)). times: (K,) the process's degradation_time(1..K)."""
    K = process.num_levels
    if float(times.max()) > 0:
        if tau <= 0:
            return 1
        return 1 + int((torch.log(times.clamp_min(1e-12)) - math.log(tau)).abs().argmin())
    need = math.hypot(noise, removed_rms)
    for k in range(1, K + 1):
        if process.level_noise_std(k) >= need:
            return k
    return K


def restore(run: Any, y: torch.Tensor, *, level: str | int = "auto", n: int = 1, seed: int = 0,
            scale: int | None = None, noise: float | None = None, power: torch.Tensor | None = None,
            batch_size: int = 64, progress: Any = None) -> RestoreResult:
    """Restore images ``y`` (N, C, H, W) in [0, 1] at the model's size (or (N, C, H/scale, W/scale) with ``scale``)
    with the trained ``run`` (a :class:`genproc.LoadedRun`).

    level: "auto" (per image, see the module docstring) or a level k in 1..K used for every image. n: restorations
    per image (restoration j of image i depends only on (seed, i, j)). noise: the observations' noise std in [0, 1]
    units, if known (default: estimated). power: the reference spectrum (default: the training set's,
    :func:`reference_power`). Returns a :class:`RestoreResult`."""
    process, K = run.process, run.process.num_levels
    c, h, w = run.image_shape
    if y.ndim != 4 or y.shape[1] != c:
        raise GenprocError(f"images must be (N, {c}, H, W) for this model, got {tuple(y.shape)}")
    if scale is not None:
        if scale < 1:
            raise GenprocError(f"--scale must be >= 1, got {scale}")
        y = upsample(y, (h, w))
    if tuple(y.shape[-2:]) != (h, w):
        raise GenprocError(f"images are {y.shape[-2]}x{y.shape[-1]}, the model's are {h}x{w} "
                           f"(give low-resolution images with scale = {h}/{y.shape[-2]}, or resize them)")
    if n < 1:
        raise GenprocError(f"--n must be >= 1, got {n}")
    if level != "auto" and not (isinstance(level, int) and 1 <= level <= K):
        raise GenprocError(f"--level must be 'auto' or a level in 1..{K} of this {process.label} model, got {level!r}")
    y = y.float().clamp(0, 1)
    N = y.shape[0]
    if level == "auto" or noise is None:
        power = reference_power(run) if power is None else power
        tau_max = max(process.degradation_time(K), 4.0 * max(h, w) ** 2)
        est = estimate_blur(y, power, tau_max)
    else:
        est = BlurEstimate(torch.full((N,), process.degradation_time(int(level))), torch.zeros(N), torch.ones(N))
    if noise is not None:
        est = BlurEstimate(est.tau, torch.full((N,), float(noise)), est.contrast)
    removed = _removed_rms(power, est.tau) if power is not None else torch.zeros(N)
    times = torch.tensor([process.degradation_time(k) for k in range(1, K + 1)], dtype=torch.float64)
    starts = torch.tensor([first_level(process, float(est.tau[i]), float(est.noise[i]), float(removed[i]), times)
                           if level == "auto" else int(level) for i in range(N)])
    states, levels = [], torch.zeros(N, dtype=torch.long)
    for i in range(N):
        idx = [i * n + j for j in range(n)]
        eps = SampleRNG(seed, idx, OBSERVE_STREAM).randn((c, h, w))
        yi, ti, si = y[i:i + 1].expand(n, -1, -1, -1), est.tau[i:i + 1].expand(n), est.noise[i:i + 1].expand(n)
        for k in range(int(starts[i]), K + 1 if level == "auto" else int(starts[i]) + 1):
            x = process.observe(yi, ti, si, k, eps)
            if x is not None:
                states.append(x)
                levels[i] = k
                break
        else:
            raise GenprocError(f"image {i}: its noise (std {float(est.noise[i]):.3g}) is above what level {int(starts[i])} "
                               f"holds (std {process.level_noise_std(int(starts[i])):.3g})"
                               + ("; try --level auto" if level != "auto" else " or any later level"))
    samples = torch.empty(N, n, c, h, w)
    device, sampler = run.device, run.sampler
    for k in sorted(set(levels.tolist())):
        members = [i for i in range(N) if int(levels[i]) == k]
        chain = sampler.levels(process, k)
        for b0 in range(0, len(members) * n, batch_size):
            rows = [(members[r // n], r % n) for r in range(b0, min(len(members) * n, b0 + batch_size))]
            x = torch.stack([states[i][j] for i, j in rows]).to(device)
            rng = SampleRNG(seed, [i * n + j for i, j in rows], NOISE_STREAM, device)
            out = run_chain(process, sampler, run.net, x, lambda _j, rng=rng: rng.randn((c, h, w)), device=device,
                            precision=run.recipe.train.precision, levels=chain)
            for (i, j), img in zip(rows, process.to_image(out).cpu()):
                samples[i, j] = img
            if progress is not None:
                progress.update(len(rows))
    return RestoreResult(y, samples, levels, est)


def psnr_ssim(restored: torch.Tensor, reference: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per image PSNR (dB) and SSIM of ``restored`` against ``reference`` (both (N, C, H, W) in [0, 1]), by
    scikit-image (``peak_signal_noise_ratio``, ``structural_similarity`` with data_range 1, 7x7 windows, channels
    averaged: Wang et al. 2004's definition as scikit-image implements it)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if restored.shape != reference.shape:
        raise GenprocError(f"reference images are {tuple(reference.shape[1:])}, the restored ones {tuple(restored.shape[1:])}")
    a, b = restored.double().numpy(), reference.double().numpy()
    psnr = [float(peak_signal_noise_ratio(r, x, data_range=1.0)) for r, x in zip(b, a)]
    win = min(7, *a.shape[-2:]) | 1  # odd, at most the image
    ssim = [float(structural_similarity(r, x, data_range=1.0, channel_axis=0, win_size=win)) for r, x in zip(b, a)]
    return psnr, ssim

