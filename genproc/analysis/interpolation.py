"""Interpolation between generated samples (paper Sec. 4 "Smooth interpolation", Fig. 7b, App. D / D.2).

A sample of any process is a deterministic function of its prior state and of the noise added at every
reverse step (:func:`genproc.analysis.common.reverse_chain`). Interpolating between two samples means
interpolating both:

- IHDM (heat and blur): the prior state u_K (a blurred training image plus delta noise, a point of
  a data KDE) is interpolated **linearly**, and the per-step noise **spherically** (App. D). The paper
  writes the noise interpolation as ``sin(phi) nu1 + cos(pi/2 - phi) nu2``; since cos(pi/2 - phi) = sin(phi)
  that is a typo (both weights would be sin phi, and phi = 0 would give 0, not nu1). The stated intent —
  keep the norm of two orthogonal, equal-norm Gaussian vectors constant along the path — is
  ``cos(phi) nu1 + sin(phi) nu2``, phi in [0, pi/2], which is exactly :func:`~genproc.analysis.common.slerp`
  for orthogonal vectors (slerp also handles the small non-orthogonality of two random draws).
- DDPM: the Gaussian prior x_T is interpolated spherically too (a linear mix of two N(0, I) draws has a
  too-small norm half-way, an atypical x_T), and so is every ancestral step's noise. With DDIM and
  eta = 0 the noise is not used and only x_T matters (``noise_used`` is False in the results:
  ``run.sampler.stochastic(run.process)``).

Which interpolation the prior gets follows from the contract: a prior drawn from the (blurred) training data
(``process.needs_data_for_prior``, a KDE) is interpolated linearly, any other (a Gaussian) spherically.

The endpoints of pair p are exactly the normal sampler's samples 2p and 2p + 1 of ``seed``
(``run.sample(2 * pairs, seed=seed)``): their prior states and per-step noises are drawn from the same
per-sample generators (:class:`genproc.processes.rng.SampleRNG`, one ``torch.Generator`` per sample) as
:func:`genproc.engine.sampler.generate` draws them, so everything is reproducible from ``seed``.

Smoothness, per pair, from the frames f_0 .. f_{F-1} (images in [0, 1]) at evenly spaced lambda:

- step sizes d_i = ||f_{i+1} - f_i||_2 (over all pixels and channels);
- **jump ratio** = max_i d_i / mean_i d_i: 1 when every step changes the image equally, up to F - 1 when
  the whole change happens in one step (a jump). It is scale-free, so it compares processes whose endpoint
  pairs differ by different amounts; it only compares runs at the same number of frames.
- **path ratio** = sum_i d_i / ||f_{F-1} - f_0||_2 >= 1 (triangle inequality): 1 for a straight line from
  one endpoint to the other, large when the path detours through images unlike either endpoint (the
  "features not present in either endpoint" of the paper's DDPM interpolations).

Both are also computed in a **shape** feature space that needs no downloaded network: each image is
low-passed by the heat equation at a fixed sigma_B (default min(H, W) / 16, at least 1 px; the operator of
:func:`genproc.processes.dct.heat_forward`, i.e. a Gaussian weighting of the DCT coefficients) and its
per-channel mean is removed. The low-pass makes distances tolerant of small edge shifts (in pixel space a
one-pixel translation of a sharp stroke costs as much as a new stroke), and removing the mean (the DC
coefficient, the overall colour / intensity that IHDM's prior carries and interpolates linearly by
construction) leaves the coarse layout, i.e. whether the *shape* moves evenly. Suffixes ``_shape``.

Aggregates over pairs: mean, median, std, standard error and a percentile bootstrap 95% interval of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.analysis.common import (
    new_figure,
    reverse_chain,
    run_info,
    save_figure,
    slerp,
    unique_labels,
    write_payload,
)
from genproc.errors import GenprocError
from genproc.imagesize import as_hw

MEASURES = ("jump_ratio", "path_ratio", "jump_ratio_shape", "path_ratio_shape")


# -- the normal sampler's randomness, reproduced per sample
def prior_states(run: Any, indices: Sequence[int], seed: int) -> torch.Tensor:
    """The prior states (N, C, H, W) (model units) of the normal sampler's samples ``indices`` under ``seed``
    (IHDM: a training image blurred to level K plus delta noise; DDPM: x_T ~ N(0, I)). On the CPU."""
    from genproc.engine.sampler import INIT_STREAM
    from genproc.processes import SampleRNG

    return run.process.prior(SampleRNG(seed, list(indices), INIT_STREAM), run.image_shape, run.prior_data()).float().cpu()


class StepNoise:
    """The per-step noise of the normal sampler's samples ``indices`` under ``seed``, made on demand.

    ``noise(j)`` -> (N, C, H, W) standard normal for step j (0-based over ``process.reverse_levels()``),
    the same draws :func:`genproc.engine.sampler.generate` uses, so
    ``reverse_chain(run, prior_states(run, idx, s), StepNoise(run, idx, s))`` reproduces ``run.sample(seed=s)[idx]``.
    Steps must be asked in order; asking an earlier step restarts the generators (memory: one step).
    """

    def __init__(self, run: Any, indices: Sequence[int], seed: int):
        self.seed, self.indices, self.shape = seed, list(indices), run.image_shape
        self._restart()

    def _restart(self) -> None:
        from genproc.engine.sampler import NOISE_STREAM
        from genproc.processes import SampleRNG

        self._rng, self._j, self._cur = SampleRNG(self.seed, self.indices, NOISE_STREAM), -1, None

    def __call__(self, j: int) -> torch.Tensor:
        if j < self._j:
            self._restart()
        while self._j < j:
            self._cur, self._j = self._rng.randn(self.shape), self._j + 1
        return self._cur


def prior_interpolation(process: Any) -> str:
    """'linear' for a prior drawn from the (blurred) training data (``needs_data_for_prior``: IHDM's KDE, paper
    App. D), 'slerp' for any other prior (a Gaussian, DDPM)."""
    return "linear" if process.needs_data_for_prior else "slerp"


# -- interpolation
def _check(pairs: int, frames: int) -> None:
    if pairs < 1:
        raise GenprocError(f"pairs must be >= 1, got {pairs}")
    if frames < 2:
        raise GenprocError(f"frames must be >= 2 (the two endpoints at least), got {frames}")


@torch.no_grad()
def interpolate(run: Any, n_pairs: int, n_frames: int, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Interpolations between the sampler's samples 2p and 2p + 1 of ``seed``, p < n_pairs.

    Frame i uses lambda_i = i / (n_frames - 1): prior state lerp (IHDM) or slerp (DDPM), every step's noise slerp.
    Returns (n_pairs, n_frames, C, H, W) float32 images in [0, 1]; frames 0 and n_frames - 1 are the endpoint
    samples. ``batch_size`` bounds the images per forward pass (results do not depend on it).
    """
    _check(n_pairs, n_frames)
    lam = torch.linspace(0.0, 1.0, n_frames)
    linear = prior_interpolation(run.process) == "linear"
    per_chunk = max(1, batch_size // n_frames)
    out = []
    for p0 in range(0, n_pairs, per_chunk):
        ps = range(p0, min(n_pairs, p0 + per_chunk))
        idx = [i for p in ps for i in (2 * p, 2 * p + 1)]
        prior = prior_states(run, idx, seed)  # (2n, C, H, W): a0, b0, a1, b1, ...
        n = len(ps)
        lam_n = lam.repeat(n)  # (n F,)

        def both(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[0::2].repeat_interleave(n_frames, 0), x[1::2].repeat_interleave(n_frames, 0)

        a, b = both(prior)
        w = lam_n.reshape(-1, 1, 1, 1)
        x = (1 - w) * a + w * b if linear else slerp(a, b, lam_n)
        step_noise = StepNoise(run, idx, seed)
        images, _ = reverse_chain(run, x, lambda j, sn=step_noise, lam_n=lam_n: slerp(*both(sn(j)), lam_n),
                                  batch_size=batch_size)
        out.append(images.reshape(n, n_frames, *images.shape[1:]))
    return torch.cat(out)


# -- smoothness measures
def step_distances(frames: torch.Tensor) -> torch.Tensor:
    """d_i = ||f_{i+1} - f_i||_2 over (C, H, W). frames: (..., F, C, H, W) -> (..., F - 1) float64."""
    diff = (frames[..., 1:, :, :, :] - frames[..., :-1, :, :, :]).double()
    return diff.flatten(-3).norm(dim=-1)


def jump_ratio(d: torch.Tensor) -> torch.Tensor:
    """max_i d_i / mean_i d_i over the last dim (1: even steps; F - 1: one jump); NaN where every d_i is 0. (...)"""
    mean = d.mean(-1)
    return torch.where(mean > 0, d.max(-1).values / mean.clamp_min(1e-300), torch.full_like(mean, float("nan")))


def path_ratio(frames: torch.Tensor) -> torch.Tensor:
    """sum_i d_i / ||f_last - f_first|| (1: a straight line; >= 1 always); NaN where the endpoints coincide.
    frames: (..., F, C, H, W) -> (...)."""
    chord = (frames[..., -1, :, :, :] - frames[..., 0, :, :, :]).double().flatten(-3).norm(dim=-1)
    length = step_distances(frames).sum(-1)
    return torch.where(chord > 1e-9, length / chord.clamp_min(1e-300), torch.full_like(chord, float("nan")))


def default_lowpass_sigma(image_size: int | Sequence[int]) -> float:
    """sigma_B (pixels) of the shape features: the shorter side / 16, at least 1 (``image_size``: H = W or (H, W))."""
    return max(1.0, min(as_hw(image_size)) / 16)


def shape_features(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Heat-equation low-pass at sigma_B = ``sigma`` px (t = sigma^2 / 2, Neumann borders), minus each image's
    per-channel mean: the coarse layout without the overall colour. images: (..., C, H, W) -> same shape."""
    from genproc.processes.dct import heat_forward

    shape = images.shape
    x = heat_forward(images.reshape(-1, *shape[-3:]).float(), sigma**2 / 2)
    return (x - x.mean(dim=(-2, -1), keepdim=True)).reshape(shape)


def smoothness(frames: torch.Tensor, lowpass_sigma: float | None = None) -> dict[str, np.ndarray]:
    """Per-pair measures (module docstring) of frames (P, F, C, H, W) in [0, 1]: name -> (P,) float64 arrays,
    names in :data:`MEASURES`; ``lowpass_sigma`` defaults to :func:`default_lowpass_sigma`."""
    if frames.ndim != 5 or frames.shape[1] < 2:
        raise GenprocError(f"frames must be (pairs, frames >= 2, C, H, W), got {tuple(frames.shape)}")
    sigma = default_lowpass_sigma(tuple(frames.shape[-2:])) if lowpass_sigma is None else lowpass_sigma
    feats = shape_features(frames, sigma)
    return {"jump_ratio": jump_ratio(step_distances(frames)).numpy(), "path_ratio": path_ratio(frames).numpy(),
            "jump_ratio_shape": jump_ratio(step_distances(feats)).numpy(), "path_ratio_shape": path_ratio(feats).numpy()}


def aggregate(values: Sequence[float] | np.ndarray, seed: int = 0, n_boot: int = 2000) -> dict[str, float]:
    """mean, median, std, sem (std / sqrt(n)) and a percentile-bootstrap 95% interval of the mean (ci95_low/high)
    of the finite ``values``; n counts them. NaN entries where undefined."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"n": 0, **{k: float("nan") for k in ("mean", "median", "std", "sem", "ci95_low", "ci95_high")}}
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    boot = v[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))].mean(1)
    return {"n": n, "mean": float(v.mean()), "median": float(np.median(v)), "std": std, "sem": float(std / np.sqrt(n)),
            "ci95_low": float(np.percentile(boot, 2.5)), "ci95_high": float(np.percentile(boot, 97.5))}


def compute_interpolation(run: Any, pairs: int = 16, frames: int = 11, seed: int = 0, *, lowpass_sigma: float | None = None,
                          batch_size: int = 64) -> dict[str, Any]:
    """Interpolate ``pairs`` pairs in ``frames`` frames and measure them.

    Returns {"frames": (pairs, frames, C, H, W) tensor in [0, 1], "lambdas": (frames,) list, "endpoint_samples":
    [[2p, 2p + 1], ...], "prior_interpolation": 'linear' | 'slerp', "noise_interpolation": 'slerp', "noise_used",
    "lowpass_sigma", "per_pair": {measure: (pairs,) list}, "aggregates": {measure: aggregate dict}}.
    """
    sigma = default_lowpass_sigma(run.recipe.data.image_hw) if lowpass_sigma is None else float(lowpass_sigma)
    if not sigma > 0:
        raise GenprocError(f"lowpass_sigma must be > 0 (pixels), got {sigma}")
    imgs = interpolate(run, pairs, frames, seed, batch_size)
    per_pair = smoothness(imgs, sigma)
    return {"frames": imgs, "lambdas": torch.linspace(0.0, 1.0, frames).tolist(),
            "endpoint_samples": [[2 * p, 2 * p + 1] for p in range(pairs)],
            "prior_interpolation": prior_interpolation(run.process), "noise_interpolation": "slerp",
            "noise_used": run.sampler.stochastic(run.process), "lowpass_sigma": sigma,
            "per_pair": {k: v.tolist() for k, v in per_pair.items()},
            "aggregates": {k: aggregate(v, seed) for k, v in per_pair.items()}}


def interpolation_smoothness_summary(run: Any, pairs: int = 8, frames: int = 9, seed: int = 0) -> dict[str, float]:
    """Columns for ``genproc compare``: {measure}_mean and {measure}_median for every measure in :data:`MEASURES`
    (jump_ratio_mean, path_ratio_mean, jump_ratio_shape_mean, ...), plus interp_pairs / interp_frames."""
    res = compute_interpolation(run, pairs, frames, seed)
    row: dict[str, float] = {"interp_pairs": pairs, "interp_frames": frames}
    for k, agg in res["aggregates"].items():
        row[f"{k}_mean"], row[f"{k}_median"] = agg["mean"], agg["median"]
    return row


# -- figures
def image_mosaic(tiles: torch.Tensor, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tiles (R, K, C, H, W) in [0, 1] -> one image with R rows of K tiles (torchvision's ``make_grid``), as an
    (H', W') array for C = 1, else (H', W', C)."""
    from torchvision.utils import make_grid

    r, k = tiles.shape[:2]
    canvas = make_grid(tiles.reshape(r * k, *tiles.shape[2:]).float().clamp(0, 1), nrow=k, padding=pad, pad_value=pad_value)
    return canvas[0].numpy() if tiles.shape[2] == 1 else canvas.permute(1, 2, 0).numpy()


def show_mosaic(ax: Any, mosaic: np.ndarray, title: str) -> None:
    """imshow a mosaic (gray for one channel) with a title and no ticks."""
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_interpolation(result: dict[str, dict[str, Any]], path: str | Path, *, show: int = 4) -> Path:
    """Image strips: one block per run (label -> :func:`compute_interpolation` result), the first ``show`` pairs
    as rows, lambda = 0 .. 1 left to right, titled with the mean jump and path ratios."""
    labels = list(result)
    if not labels:
        raise GenprocError("nothing to plot: no interpolation results")
    n_show = [min(show, r["frames"].shape[0]) for r in result.values()]
    n_frames = max(r["frames"].shape[1] for r in result.values())
    size = (max(4.0, 0.55 * n_frames + 1), sum(0.55 * s + 0.6 for s in n_show))
    fig, axes = new_figure(len(labels), 1, squeeze=False, figsize=size, gridspec_kw={"height_ratios": n_show})
    for ax, lab, s in zip(axes[:, 0], labels, n_show):
        r = result[lab]
        agg = r["aggregates"]
        title = (f"{lab}: prior {r['prior_interpolation']}, noise slerp{'' if r['noise_used'] else ' (unused)'} | "
                 f"jump ratio {agg['jump_ratio']['mean']:.2f}, path ratio {agg['path_ratio']['mean']:.2f} "
                 f"(mean of {agg['jump_ratio']['n']} pairs)")
        show_mosaic(ax, image_mosaic(r["frames"][:s]), title)
    axes[-1, 0].set_xlabel("lambda = 0 (sample 2p) ... 1 (sample 2p+1)")
    return save_figure(fig, path)


def analyze_interpolation(runs: Sequence[Any], out: str | Path, *, pairs: int = 16, frames: int = 11, seed: int = 0,
                          show: int = 4, lowpass_sigma: float | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Interpolate ``pairs`` pairs of every run; write out/interpolation.png (strips of the first ``show`` pairs) and
    out/interpolation.json ({settings, runs, results: {label: per_pair, aggregates, ...}, files}); returns the JSON payload."""
    _check(pairs, frames)
    if show < 1:
        raise GenprocError(f"show must be >= 1, got {show}")
    out = Path(out)
    results = {lab: compute_interpolation(r, pairs, frames, seed, lowpass_sigma=lowpass_sigma, batch_size=batch_size)
               for lab, r in zip(unique_labels(runs), runs)}
    fig = plot_interpolation(results, out / "interpolation.png", show=show)
    payload = {"analysis": "interpolation",
               "settings": {"pairs": pairs, "frames": frames, "seed": seed, "show": show, "lowpass_sigma": lowpass_sigma},
               "measures": {"jump_ratio": "max_i d_i / mean_i d_i, d_i = ||f_{i+1} - f_i||_2 in pixels; "
                                          "1 = even steps, frames - 1 = one jump",
                            "path_ratio": "sum_i d_i / ||f_last - f_first||_2; 1 = straight line",
                            "_shape": "the same on heat-low-passed (sigma_B = lowpass_sigma px), mean-removed images"},
               "runs": run_info(runs),
               "results": {lab: {k: v for k, v in r.items() if k != "frames"} for lab, r in results.items()},
               "files": {"figure": str(fig)}}
    return write_payload(out, "interpolation", payload)
