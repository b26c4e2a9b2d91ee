"""Power spectral densities along the forward and generative processes (the paper's Sec. 3.3, Fig. 4; App. B.6, Fig. 10).

Conventions (also written into ``spectra.json`` under ``"units"``):

- **PSD**: the squared coefficients of the orthonormal 2-D DCT-II (:func:`genproc.processes.dct.dct2`) of each
  image channel, averaged over the coefficients of an equal-frequency annulus, over images and over channels.
  With the orthonormal DCT, white noise of variance s^2 has PSD s^2 at every frequency, and the count-weighted
  mean of the PSD over all bins is the mean squared pixel value (Parseval).
- **Pixel units**: every state is measured as an image in [0, 1] units. IHDM (heat / blur) states already are;
  a DDPM state x (in [-1, 1] units) is measured as (x + 1) / 2, so its white-noise floor is (1 - alpha_bar) / 4.
  States are *not* clamped (``to_image`` would clamp and cut DDPM's noise floor).
- **Frequency**: coefficient (u, v) of an H x W image has radius r = sqrt(u^2 + (v H / W)^2) in DCT-index units
  (sqrt(u^2 + v^2) for square images); bin b holds the coefficients with b <= r < b + 1 (bin 0 is the DC term
  alone). The frequency of a bin is the mean r of its coefficients divided by 2H, in **cycles per pixel**
  (DCT index u is a cosine of u / (2H) cycles per pixel; Nyquist is 0.5). Bins with r > H - 1 are the partial
  annuli of the DCT's corner.
- **Levels**: the forward PSDs are taken at ``levels`` levels k_j = round(j K / levels), j = 1..levels (K = the
  process's number of steps: IHDM's K, DDPM's T), i.e. at the same relative positions k / K in both chains.
  The generative PSDs are taken every ``max(1, S // levels)`` reverse steps (S = number of sampling steps).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import typer

from genproc.analysis.common import (batch_size_option, checkpoint_option, data_root_option, new_figure, out_option,
                                     run_analysis, run_dirs_argument, run_info, sample_set_option, save_figure, unique_labels,
                                     write_payload)
from genproc.errors import GenprocError
from genproc.processes.dct import dct2

HIGH_FREQ_MIN = 0.25  # cycles/pixel: the "high-frequency" bins of the claim check (upper half of 0..Nyquist)
FIT_FMAX = 0.5  # cycles/pixel: the power-law fit of the data PSD uses 0 < f <= Nyquist (the full annuli)
UNITS = {
    "psd": "mean squared orthonormal-DCT-II coefficient per equal-frequency annulus (pixel-value^2; [0, 1] image units); "
           "white noise of variance s^2 has PSD s^2",
    "freqs": "cycles per pixel: mean DCT radius sqrt(u^2 + v^2) of the annulus / (2 H); Nyquist = 0.5; first bin = DC",
    "states": "IHDM/blur states as they are ([0, 1] units); DDPM states x as (x + 1) / 2; not clamped",
    "levels": "forward: k = round(j K / levels), j = 1..levels, K = the process's number of steps (IHDM K, DDPM T); "
              "relative = k / K (0 = data, 1 = prior end)",
}


# ------------------------------------------------------------------ PSD and power law


@lru_cache(maxsize=16)
def radial_bins(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The equal-frequency annuli of an H x W DCT.

    Returns ``(bin_index, freqs, counts)``: bin_index (H, W) int64, the annulus of each coefficient (0 = DC);
    freqs (B,) float64 in cycles/pixel (mean radius of the annulus / 2H); counts (B,) int64 coefficients per annulus.
    Empty annuli (none for square images) are dropped and the indices renumbered.
    """
    u = np.arange(h, dtype=np.float64)[:, None]
    v = np.arange(w, dtype=np.float64)[None, :] * (h / w)
    r = np.sqrt(u**2 + v**2)
    raw = np.floor(r + 1e-9).astype(np.int64)
    used, bin_index = np.unique(raw, return_inverse=True)
    bin_index = bin_index.reshape(h, w)
    counts = np.bincount(bin_index.ravel(), minlength=len(used))
    freqs = np.bincount(bin_index.ravel(), weights=r.ravel(), minlength=len(used)) / counts / (2 * h)
    for a in (bin_index, freqs, counts):
        a.setflags(write=False)
    return bin_index, freqs, counts


def radial_psd(images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged PSD of the orthonormal 2-D DCT (App. B.6).

    images: (N, C, H, W) (or (C, H, W) / (H, W)) in pixel units. Returns ``(freqs, psd)``, both (B,) float64:
    freqs in cycles/pixel (see :func:`radial_bins`; freqs[0] = 0 is DC), psd the mean of the squared coefficients
    over each annulus, all images and channels (see the module docstring for units).
    """
    x = torch.as_tensor(images).detach().to("cpu", torch.float64)
    if x.ndim < 2 or x.shape[-1] < 1 or x.shape[-2] < 1 or x.numel() == 0:
        raise GenprocError(f"radial_psd needs images (N, C, H, W) with at least one pixel, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    power = (dct2(x) ** 2).reshape(-1, h * w).mean(0).numpy()  # (H*W,) mean over images and channels
    bin_index, freqs, counts = radial_bins(h, w)
    psd = np.bincount(bin_index.ravel(), weights=power, minlength=len(counts)) / counts
    return freqs.copy(), psd


def fit_power_law(freqs: np.ndarray, psd: np.ndarray, fmin: float | None = None,
                  fmax: float | None = None) -> tuple[float, float]:
    """Least-squares fit of psd = amplitude / f^alpha in log-log over fmin <= f <= fmax (f > 0: DC excluded).

    freqs, psd: (B,) as from :func:`radial_psd`; bins with psd <= 0 are skipped. Returns ``(alpha, amplitude)``
    (amplitude: the PSD at f = 1 cycle/pixel of the fitted line).
    """
    f, p = np.asarray(freqs, dtype=np.float64), np.asarray(psd, dtype=np.float64)
    keep = (f > 0) & (p > 0) & np.isfinite(p)
    if fmin is not None:
        keep &= f >= fmin
    if fmax is not None:
        keep &= f <= fmax
    if keep.sum() < 2:
        raise GenprocError(f"power-law fit needs at least 2 non-DC bins with PSD > 0 in [{fmin}, {fmax}] cycles/pixel, "
                           f"got {int(keep.sum())}")
    slope, intercept = np.polyfit(np.log(f[keep]), np.log(p[keep]), 1)
    return float(-slope), float(np.exp(intercept))


# ------------------------------------------------------------------ along the processes


def to_pixel_units(process: Any, x: torch.Tensor) -> torch.Tensor:
    """A process state as an image in [0, 1] units, without clamping: DDPM's x -> (x + 1) / 2, others as they are."""
    from genproc.processes.ddpm import DDPMProcess

    return (x + 1) / 2 if isinstance(process, DDPMProcess) else x


def forward_levels(num_steps: int, levels: int) -> list[int]:
    """k_j = round(j K / levels), j = 1..levels, at least 1, unique and increasing (K = ``num_steps``)."""
    if levels < 1:
        raise GenprocError(f"--levels must be >= 1, got {levels}")
    return sorted({max(1, min(num_steps, math.floor(j * num_steps / levels + 0.5))) for j in range(1, levels + 1)})


@torch.no_grad()
def forward_psds(process: Any, x0: torch.Tensor, levels: Sequence[int], seed: int = 0,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """PSDs of the forward-process states of the images ``x0`` (N, C, H, W) in [0, 1] at each level in ``levels``.

    The state is ``process.training_pair(x0, k, eps)[0]`` (IHDM: F(t_k) x0 + sigma eps; DDPM: sqrt(ab) (2 x0 - 1) +
    sqrt(1 - ab) eps), in pixel units (:func:`to_pixel_units`). The same noise eps (from ``seed``) is used at every
    level. Returns {"levels": [L], "relative": (L,) k / K, "freqs": (B,), "psd": (L, B)}.
    """
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    x0 = x0.to(device).float()
    rows, freqs = [], None
    for k in levels:
        state, _ = process.training_pair(x0, torch.full((x0.shape[0],), int(k), dtype=torch.long), eps)
        freqs, psd = radial_psd(to_pixel_units(process, state))
        rows.append(psd)
    return {"levels": [int(k) for k in levels], "relative": np.asarray(levels, dtype=np.float64) / process.num_steps,
            "freqs": freqs, "psd": np.stack(rows)}


class _PixelUnits:
    """A process whose ``to_image`` is :func:`to_pixel_units` (no clamping); everything else is the wrapped one's.
    Lets the one sampler (:func:`genproc.engine.generate`) capture the unclamped states."""

    def __init__(self, process: Any):
        self._process = process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._process, name)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        return to_pixel_units(self._process, x)


def generative_psds(run: Any, n: int = 64, seed: int = 0, levels: int = 8, batch_size: int = 64) -> dict[str, Any]:
    """PSDs of the states along ``run``'s generative trajectories (``n`` samples, ``seed``).

    Frames every ``max(1, S // levels)`` of the S reverse steps, plus prior and final; states in pixel units, not
    clamped (the sampler is :meth:`LoadedRun.sample` with an unclamped ``to_image``). Returns {"levels": [F] level of
    each frame (prior first, 0 = final), "steps": [F] reverse steps done, "relative": (F,) level / K, "freqs": (B,),
    "psd": (F, B), "alpha": power-law exponent of the final samples}.
    """
    steps_total = len(run.process.sampling_levels())
    every = max(1, steps_total // max(1, levels))
    if getattr(run.process, "needs_data_for_prior", False):
        _ = run.data  # load once; the copy below shares it
    res = replace(run, process=_PixelUnits(run.process)).sample(n, seed=seed, capture_every=every, batch_size=batch_size)
    traj = res.trajectory  # (F, n, C, H, W)
    freqs, rows = None, []
    for frame in traj:
        freqs, psd = radial_psd(frame)
        rows.append(psd)
    steps = [min(i * every, steps_total) for i in range(traj.shape[0])]
    psd = np.stack(rows)
    return {"levels": [int(k) for k in res.levels], "steps": steps, "num_sampling_steps": steps_total,
            "relative": np.asarray(res.levels, dtype=np.float64) / run.process.num_steps, "freqs": freqs, "psd": psd,
            "alpha": fit_power_law(freqs, psd[-1], fmax=FIT_FMAX)[0]}


def expected_side(process: Any) -> str:
    """Sec. 3.3: 'below' (IHDM / blur: high frequencies missing, then filled in) or 'above' (DDPM: white-noise floor)."""
    from genproc.processes.ddpm import DDPMProcess

    return "above" if isinstance(process, DDPMProcess) else "below"


def claim_check(freqs: np.ndarray, data_psd: np.ndarray, psds: np.ndarray, index: int, expected: str,
                high_min: float = HIGH_FREQ_MIN) -> dict[str, Any]:
    """How the PSD of row ``index`` of ``psds`` (F, B) sits against the data PSD (B,) at high frequencies f >= high_min.

    Returns frac_below / frac_above (fraction of those bins where the state's PSD is below / above the data's),
    holds (the ``expected`` side has the majority, > 0.5), and high_freq_log_ratio: (F,) the mean over those bins
    of log10(psd / data psd) for every row (< 0: below the data, > 0: above).
    """
    hi = np.asarray(freqs) >= high_min
    if not hi.any():
        raise GenprocError(f"no frequency bins at or above {high_min} cycles/pixel")
    row = psds[index, hi]
    below, above = float(np.mean(row < data_psd[hi])), float(np.mean(row > data_psd[hi]))
    ratio = np.log10(np.maximum(psds[:, hi], 1e-30) / np.maximum(data_psd[hi], 1e-30)).mean(1)
    frac = below if expected == "below" else above
    return {"expected": expected, "index": int(index), "high_freq_min": high_min, "n_bins": int(hi.sum()),
            "frac_below": below, "frac_above": above, "holds": bool(frac > 0.5), "high_freq_log_ratio": ratio}


def data_images(run: Any, n: int, split: str = "train") -> torch.Tensor:
    """The first ``min(n, len)`` images (N, C, H, W) in [0, 1] of ``run``'s training set (``split='train'``) or test set."""
    if n < 1:
        raise GenprocError(f"--n must be >= 1, got {n}")
    if split == "train":
        data = run.data
    elif split == "test":
        from genproc.data import build_dataset

        data = build_dataset(run.recipe.data, "test", run.data_root)
    else:
        raise GenprocError(f"--data-split must be train or test, got {split!r}")
    if len(data) == 0:
        raise GenprocError(f"the {split} split of data set '{run.recipe.data.name}' is empty")
    return data.get_batch(torch.arange(min(n, len(data))))


def compute_spectra(runs: Sequence[Any], *, n: int = 64, seed: int = 0, levels: int = 8, batch_size: int = 64,
                    data_split: str = "train") -> dict[str, Any]:
    """Data PSD and its power law, and per run the forward and generative PSDs and the claim check (arrays as numpy).

    The data images are the first ``n`` of the first run's ``data_split`` (all runs share a data set); the forward
    PSDs use those images, the generative ones ``n`` samples from ``seed``.
    """
    if not runs:
        raise GenprocError("give at least one run directory (written by 'genproc train')")
    if batch_size < 1:
        raise GenprocError(f"--batch-size must be >= 1, got {batch_size}")
    forward_levels(1, levels)  # validates levels
    x0 = data_images(runs[0], n, data_split)
    freqs, data_psd = radial_psd(x0)
    alpha, amp = fit_power_law(freqs, data_psd, fmax=FIT_FMAX)
    out: dict[str, Any] = {"data": {"split": data_split, "n": int(x0.shape[0]), "freqs": freqs, "psd": data_psd, "alpha": alpha,
                                    "amplitude": amp, "fit_range": [float(freqs[1]), FIT_FMAX]},
                           "forward": {}, "generative": {}, "claim": {}}
    for lab, run in zip(unique_labels(runs), runs):
        if tuple(x0.shape[1:]) != (run.recipe.data.channels, run.recipe.data.image_size, run.recipe.data.image_size):
            raise GenprocError(f"run {run.run_dir} makes {run.recipe.data.channels}x{run.recipe.data.image_size}^2 images, "
                               f"the data images are {tuple(x0.shape[1:])}; analyse runs of one data set together")
        proc = run.process
        fwd = forward_psds(proc, x0, forward_levels(proc.num_steps, levels), seed, run.device)
        gen = generative_psds(run, n, seed, levels, batch_size)
        side = expected_side(proc)
        half = int(np.argmin(np.abs(np.asarray(gen["steps"]) - gen["num_sampling_steps"] / 2)))
        mid = int(np.argmin(np.abs(fwd["relative"] - 0.5)))
        out["forward"][lab], out["generative"][lab] = fwd, gen
        out["claim"][lab] = {"generative_halfway": {**claim_check(freqs, data_psd, gen["psd"], half, side),
                                                    "level": gen["levels"][half], "step": gen["steps"][half]},
                             "forward_mid": {**claim_check(freqs, data_psd, fwd["psd"], mid, side), "level": fwd["levels"][mid]}}
    return out


# ------------------------------------------------------------------ figure and command


def plot_spectra(result: dict[str, Any], path: str | Path) -> Path:
    """Log-log PSDs: a row per run, columns forward process / generative trajectory; lines coloured by relative
    level k / K (viridis, 0 = data, 1 = prior end), the data PSD thick black with its fitted power law dashed.
    DC is left out."""
    import matplotlib
    import matplotlib.cm as cm
    from matplotlib.colors import Normalize
    from matplotlib.ticker import NullFormatter

    labs = list(result["forward"])
    fig, axes = new_figure(len(labs), 2, figsize=(10, 3.8 * len(labs)), squeeze=False, layout="constrained")
    data = result["data"]
    f = np.asarray(data["freqs"])[1:]
    norm, cmap = Normalize(0.0, 1.0), matplotlib.colormaps["viridis"]
    for row, lab in enumerate(labs):
        for col, (kind, title) in enumerate((("forward", "forward process"), ("generative", "generative trajectory"))):
            ax, d = axes[row, col], result[kind][lab]
            for rel, psd in zip(d["relative"], d["psd"]):
                ax.loglog(f, np.maximum(np.asarray(psd)[1:], 1e-30), color=cmap(norm(float(rel))), lw=1.2)
            ax.loglog(f, np.asarray(data["psd"])[1:], color="black", lw=3, label=f"data ({data['split']})")
            fit = f[f <= data["fit_range"][1]]
            ax.loglog(fit, data["amplitude"] * fit ** -data["alpha"], "--", color="0.4", lw=1.5,
                      label=f"fit 1/f^{data['alpha']:.2f}")
            check = result["claim"][lab]["generative_halfway" if kind == "generative" else "forward_mid"]
            frac = check["frac_below"] if check["expected"] == "below" else check["frac_above"]
            ax.set_title(f"{lab}: {title}\nat k={check['level']}: {check['expected']} data in {frac:.0%} of f ≥ "
                         f"{check['high_freq_min']:g}", fontsize=9)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("frequency (cycles / pixel)")
            ax.set_ylabel("PSD (pixel value²)")
            ax.legend(fontsize=7, loc="lower left")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), label="relative level k / K (1 = prior)")
    return save_figure(fig, path)


def analyze_spectra(runs: Sequence[Any], out: str | Path, *, n: int = 64, seed: int = 0, levels: int = 8, batch_size: int = 64,
                    data_split: str = "train") -> dict[str, Any]:
    """Write ``out/spectra.png`` and ``out/spectra.json`` (see :func:`compute_spectra`); returns the JSON payload."""
    result = compute_spectra(runs, n=n, seed=seed, levels=levels, batch_size=batch_size, data_split=data_split)
    out = Path(out)
    plot_spectra(result, out / "spectra.png")
    payload = {"analysis": "spectra", "settings": {"n": n, "seed": seed, "levels": levels, "batch_size": batch_size,
                                                  "data_split": data_split, "high_freq_min": HIGH_FREQ_MIN},
               "units": UNITS, "runs": run_info(runs), **result, "files": {"figure": "spectra.png"}}
    return write_payload(out, "spectra", payload)


def spectra_command(
    run_dirs: list[Path] = run_dirs_argument("Run directories written by 'genproc train' (e.g. an IHDM and a DDPM run on "
                                             "one data set)."),
    out: Path = out_option("spectra", "Output folder for spectra.png and spectra.json."),
    n: int = typer.Option(64, "--n", help="Data images (PSD, forward process) and generated samples (generative PSDs)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the forward-process noise and of the samples."),
    levels: int = typer.Option(8, "--levels", help="About this many levels per process (forward: k = round(j K / levels); "
                                                   "generative: every S // levels of the S sampling steps)."),
    batch_size: int = batch_size_option("Samples per forward pass (does not change the results)."),
    data_split: str = typer.Option("train", "--data-split", help="Data images from the train or test split."),
    checkpoint: Optional[str] = checkpoint_option(),
    data_root: Optional[str] = data_root_option(),
    sample_set: list[str] = sample_set_option(),
) -> None:
    """Power spectral densities (Fig. 4): data PSD and 1/f^alpha fit, PSDs along the forward process and the generative
    trajectory of each run, and whether IHDM approaches the data PSD from below and DDPM from above."""
    res = run_analysis(run_dirs, lambda runs: analyze_spectra(runs, out, n=n, seed=seed, levels=levels, batch_size=batch_size,
                                                              data_split=data_split),
                       checkpoint=checkpoint, data_root=data_root, sample_set=sample_set)
    typer.echo(f"data PSD ~ 1/f^{res['data']['alpha']:.2f} ({res['data']['n']} {data_split} images)")
    for lab, c in res["claim"].items():
        g = c["generative_halfway"]
        typer.echo(f"{lab}: samples 1/f^{res['generative'][lab]['alpha']:.2f}; halfway (k={g['level']}) the PSD is below the "
                   f"data in {g['frac_below']:.0%} and above in {g['frac_above']:.0%} of bins f >= {g['high_freq_min']:g} "
                   f"(expected {g['expected']}: {'yes' if g['holds'] else 'no'})")
    typer.echo(f"wrote {out / 'spectra.png'}, {out / 'spectra.json'}")


COMMANDS = {"spectra": spectra_command}
