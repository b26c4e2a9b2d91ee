"""Power spectral densities along the forward and generative processes (the paper's Sec. 3.3, Fig. 4; App. B.6, Fig. 10).

Two entry points: :func:`analyze_spectra` on trained runs (forward and generative PSDs of each run's process), and
:func:`analyze_data_spectra` on a data set alone (its PSD and the forward marginal of every registered process, each
from its default config: Fig. 4's forward panels need no model).

Conventions (also written into ``spectra.json`` under ``"units"``):

- **PSD**: the squared coefficients of the orthonormal 2-D DCT-II (:func:`genproc.processes.dct.dct2`) of each
  image channel, averaged over the coefficients of an equal-frequency annulus, over images and over channels.
  With the orthonormal DCT, white noise of variance s^2 has PSD s^2 at every frequency, and the count-weighted
  mean of the PSD over all bins is the mean squared pixel value (Parseval).
- **Data scale**: every state is measured in the data's [0, 1] units through the process's ``to_data_scale``
  (IHDM states already are; a DDPM state x in [-1, 1] units is measured as (x + 1) / 2, so its white-noise floor is
  (1 - alpha_bar) / 4). States are *not* clamped (``to_image`` would clamp and cut DDPM's noise floor).
- **Frequency**, in **cycles per pixel** on each axis: DCT-II index u (rows) is a cosine of f_y = u / (2H) cycles
  per pixel down the image and index v (columns) one of f_x = v / (2W) across it (Nyquist 0.5 on both axes), so
  coefficient (u, v) of an H x W image has the radial frequency f = sqrt(f_y^2 + f_x^2). The annuli have width
  1 / (2S) cycles/pixel, S = min(H, W) (the coarser of the two axes' frequency steps, so no annulus below the
  shorter axis's Nyquist is empty): in index units of the shorter side, r = 2 S f = sqrt((u S / H)^2 + (v S / W)^2)
  (sqrt(u^2 + v^2) for square images, sqrt(u^2 + (v H / W)^2) for H <= W). The first bin is the DC term alone;
  every other bin b holds the non-DC coefficients with b <= r < b + 1 (b = 0 only for H != W: the longer axis's
  frequencies below 1 / (2S)). The frequency of a bin is the mean f of its coefficients. Annuli beyond r = S - 1,
  i.e. f > (S - 1) / (2S), are partial (the DCT's corner).
- **Levels**: the forward PSDs are taken at ``levels`` levels k_j = round(j K / levels), j = 1..levels (K = the
  process's ``num_levels``: IHDM's K, DDPM's T), i.e. at the same relative positions k / K in both chains.
  The generative PSDs are taken every ``max(1, S // levels)`` reverse steps (S = number of sampling steps).
- **Claim** (Sec. 3.3): on the high-frequency bins f >= ``HIGH_FREQ_MIN``, the forward marginal q(x_k | x0) at the
  halfway level k = round(K / 2) lies *below* the data PSD where the process removes high frequencies (IHDM's blur)
  and *above* it where it adds white noise (DDPM): the side holding the majority of those bins is the process's
  ``expected`` side, measured from the data, not looked up by process. The generative trajectory halfway through its
  reverse steps is then checked against that side (``holds``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.analysis.common import new_figure, run_info, save_figure, unique_labels, write_payload
from genproc.errors import GenprocError
from genproc.processes.dct import dct2
from genproc.recipe import DataConfig

HIGH_FREQ_MIN = 0.25  # cycles/pixel: the "high-frequency" bins of the claim check (upper half of 0..Nyquist)
FIT_FMAX = 0.5  # cycles/pixel: the power-law fit of the data PSD uses 0 < f <= Nyquist (the full annuli)
UNITS = {
    "psd": "mean squared orthonormal-DCT-II coefficient per equal-frequency annulus (pixel-value^2; [0, 1] image units); "
           "white noise of variance s^2 has PSD s^2",
    "freqs": "cycles per pixel: mean over the annulus of f = sqrt((u / 2H)^2 + (v / 2W)^2) (DCT-II index u of H rows, "
             "v of W columns); annuli 1 / (2 min(H, W)) wide; Nyquist = 0.5 per axis; first bin = DC",
    "states": "in data units via the process's to_data_scale (IHDM states as they are; DDPM states x as (x + 1) / 2); "
              "not clamped",
    "levels": "forward: k = round(j K / levels), j = 1..levels, K = the process's number of levels (IHDM K, DDPM T); "
              "relative = k / K (0 = data, 1 = prior end)",
    "claim": "expected side = where the forward marginal's PSD at k = round(K / 2) lies against the data PSD in the "
             "majority of bins f >= high_freq_min (below: high frequencies removed; above: a noise floor added)",
}


# ------------------------------------------------------------------ PSD and power law


@lru_cache(maxsize=16)
def radial_bins(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The equal-frequency annuli of an H x W DCT (module docstring, "Frequency").

    Returns ``(bin_index, freqs, counts)``: bin_index (H, W) int64, the annulus of each coefficient (0 = the DC term
    alone), annuli 1 / (2 min(H, W)) cycles/pixel wide; freqs (B,) float64, the mean over the annulus of the radial frequency
    f = sqrt((u / 2H)^2 + (v / 2W)^2) in cycles/pixel; counts (B,) int64 coefficients per annulus. Empty annuli
    (none for square images) are dropped and the indices renumbered.
    """
    s = min(h, w)
    u = np.arange(h, dtype=np.float64)[:, None] * (s / h)  # index units of the shorter side: r = 2 S f
    v = np.arange(w, dtype=np.float64)[None, :] * (s / w)
    r = np.sqrt(u**2 + v**2)  # (H, W)
    raw = np.floor(r + 1e-9).astype(np.int64)
    raw[0, 0] = -1  # DC alone (for H != W, coefficients with 0 < r < 1 form their own annulus)
    used, bin_index = np.unique(raw, return_inverse=True)
    bin_index = bin_index.reshape(h, w)
    counts = np.bincount(bin_index.ravel(), minlength=len(used))
    freqs = np.bincount(bin_index.ravel(), weights=r.ravel(), minlength=len(used)) / counts / (2 * s)
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


def forward_levels(num_levels: int, levels: int) -> list[int]:
    """k_j = round(j K / levels), j = 1..levels, at least 1, unique and increasing (K = ``num_levels``)."""
    if levels < 1:
        raise GenprocError(f"--levels must be >= 1, got {levels}")
    return sorted({max(1, min(num_levels, math.floor(j * num_levels / levels + 0.5))) for j in range(1, levels + 1)})


def halfway_level(num_levels: int) -> int:
    """k = round(K / 2) (halves up), at least 1: the level of the claim check."""
    return max(1, math.floor(num_levels / 2 + 0.5))


@torch.no_grad()
def forward_psds(process: Any, x0: torch.Tensor, levels: Sequence[int], seed: int = 0,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """PSDs of the forward-process states of the images ``x0`` (N, C, H, W) in [0, 1] at each level in ``levels``.

    The state is a draw of q(x_k | x0), ``process.forward_marginal(x0, k, eps)`` (IHDM: F(t_k) x0 + sigma eps; DDPM:
    sqrt(ab) (2 x0 - 1) + sqrt(1 - ab) eps), measured in data units (``process.to_data_scale``). The same noise eps
    (from ``seed``) is used at every level. Returns {"levels": [L], "relative": (L,) k / K, "freqs": (B,), "psd": (L, B)}.
    """
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    x0 = x0.to(device).float()
    rows, freqs = [], None
    for k in levels:
        state = process.forward_marginal(x0, torch.full((x0.shape[0],), int(k), dtype=torch.long), eps)
        freqs, psd = radial_psd(process.to_data_scale(state))
        rows.append(psd)
    return {"levels": [int(k) for k in levels], "relative": np.asarray(levels, dtype=np.float64) / process.num_levels,
            "freqs": freqs, "psd": np.stack(rows)}


class _DataScale:
    """A process whose ``to_image`` is its ``to_data_scale`` (no clamping); everything else is the wrapped one's.
    Lets the one sampler (:func:`genproc.engine.sampler.generate`) capture the unclamped states."""

    def __init__(self, process: Any):
        self._process = process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._process, name)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        return self._process.to_data_scale(x)


def generative_psds(run: Any, n: int = 64, seed: int = 0, levels: int = 8, batch_size: int = 64) -> dict[str, Any]:
    """PSDs of the states along ``run``'s generative trajectories (``n`` samples, ``seed``).

    Frames every ``max(1, S // levels)`` of the S reverse steps, plus prior and final; states in data units, not
    clamped (the sampler is :meth:`LoadedRun.sample` with an unclamped ``to_image``). Returns {"levels": [F] level of
    each frame (prior first, 0 = final), "steps": [F] reverse steps done, "relative": (F,) level / K, "freqs": (B,),
    "psd": (F, B), "alpha": power-law exponent of the final samples}.
    """
    from genproc.engine.sampler import generate

    sampler = run.sampler
    steps_total = len(sampler.levels(run.process))
    every = max(1, steps_total // max(1, levels))
    res = generate(_DataScale(run.process), run.net, n, sampler=sampler, shape=run.image_shape, data=run.prior_data(),
                   seed=seed, batch_size=batch_size, capture_every=every, device=run.device,
                   precision=run.recipe.train.precision)
    traj = res.trajectory  # (F, n, C, H, W)
    freqs, rows = None, []
    for frame in traj:
        freqs, psd = radial_psd(frame)
        rows.append(psd)
    steps = [min(i * every, steps_total) for i in range(traj.shape[0])]
    psd = np.stack(rows)
    return {"levels": [int(k) for k in res.levels], "steps": steps, "num_sampling_steps": steps_total,
            "relative": np.asarray(res.levels, dtype=np.float64) / run.process.num_levels, "freqs": freqs, "psd": psd,
            "alpha": fit_power_law(freqs, psd[-1], fmax=FIT_FMAX)[0]}


# ------------------------------------------------------------------ the claim: below or above the data


def claim_check(freqs: np.ndarray, data_psd: np.ndarray, psds: np.ndarray, index: int, expected: str | None,
                high_min: float = HIGH_FREQ_MIN) -> dict[str, Any]:
    """How the PSD of row ``index`` of ``psds`` (F, B) sits against the data PSD (B,) at high frequencies f >= high_min.

    Returns frac_below / frac_above (fraction of those bins where the state's PSD is below / above the data's),
    side ("below" / "above": the side with the majority, > 0.5, of the bins; None without one), holds (``side`` is
    the ``expected`` one; None when nothing is expected), and high_freq_log_ratio: (F,) the mean over those bins of
    log10(psd / data psd) for every row (< 0: below the data, > 0: above).
    """
    hi = np.asarray(freqs) >= high_min
    if not hi.any():
        raise GenprocError(f"no frequency bins at or above {high_min} cycles/pixel")
    row = psds[index, hi]
    below, above = float(np.mean(row < data_psd[hi])), float(np.mean(row > data_psd[hi]))
    side = "below" if below > 0.5 else "above" if above > 0.5 else None
    ratio = np.log10(np.maximum(psds[:, hi], 1e-30) / np.maximum(data_psd[hi], 1e-30)).mean(1)
    return {"expected": expected, "index": int(index), "high_freq_min": high_min, "n_bins": int(hi.sum()),
            "frac_below": below, "frac_above": above, "side": side,
            "holds": None if expected is None else side == expected, "high_freq_log_ratio": ratio}


def forward_halfway(process: Any, x0: torch.Tensor, freqs: np.ndarray, data_psd: np.ndarray, seed: int = 0,
                    device: torch.device | str = "cpu") -> dict[str, Any]:
    """The claim's reference: the forward marginal's PSD at k = round(K / 2) against the data PSD (:func:`claim_check`
    with nothing expected); its ``side`` is the process's expected side. Adds "level" and "psd" (B,)."""
    k = halfway_level(process.num_levels)
    fwd = forward_psds(process, x0, [k], seed, device)
    return {**claim_check(freqs, data_psd, fwd["psd"], 0, None), "level": k, "psd": fwd["psd"][0]}


# ------------------------------------------------------------------ data and processes


def dataset_images(data_cfg: Any, n: int, split: str = "train", data_root: str | None = None,
                   train: Any = None) -> torch.Tensor:
    """The first ``min(n, len)`` images (N, C, H, W) in [0, 1] of the ``split`` of the data set ``data_cfg``
    (a :class:`genproc.recipe.DataConfig`); ``train``: the training set if already loaded."""
    from genproc.data import build_dataset

    if n < 1:
        raise GenprocError(f"--n must be >= 1, got {n}")
    if split not in ("train", "test"):
        raise GenprocError(f"--data-split must be train or test, got {split!r}")
    data = train if split == "train" and train is not None else build_dataset(data_cfg, split, data_root)
    if len(data) == 0:
        raise GenprocError(f"the {split} split of data set '{data_cfg.name}' is empty")
    return data.get_batch(torch.arange(min(n, len(data))))


def data_images(run: Any, n: int, split: str = "train") -> torch.Tensor:
    """The first ``min(n, len)`` images (N, C, H, W) in [0, 1] of ``run``'s training set (``split='train'``) or test set."""
    return dataset_images(run.recipe.data, n, split, run.data_root, train=run.data if split == "train" else None)


def default_processes() -> tuple[dict[str, Any], dict[str, str]]:
    """Every registered process built from its default config: ({canonical name: process}, {name: why skipped} for
    a process whose config needs arguments or does not build)."""
    from genproc.processes import lookup, registered

    built, skipped = {}, {}
    for name in registered():
        reg = lookup(name)
        try:
            built[name] = reg.process_cls(reg.config_cls())
        except (TypeError, ValueError, GenprocError) as e:
            skipped[name] = f"no default config: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return built, skipped


def _data_spectrum(x0: torch.Tensor, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(freqs, data PSD, the "data" entry of a result) of images x0 (N, C, H, W) in [0, 1]."""
    freqs, data_psd = radial_psd(x0)
    alpha, amp = fit_power_law(freqs, data_psd, fmax=FIT_FMAX)
    return freqs, data_psd, {"split": split, "n": int(x0.shape[0]), "freqs": freqs, "psd": data_psd, "alpha": alpha,
                             "amplitude": amp, "fit_range": [float(freqs[1]), FIT_FMAX]}


def compute_forward_spectra(processes: Mapping[str, Any], x0: torch.Tensor, *, seed: int = 0, levels: int = 8,
                            split: str = "train", device: torch.device | str = "cpu") -> dict[str, Any]:
    """The data PSD of ``x0`` (N, C, H, W) in [0, 1] and, per process (label -> process), its forward PSDs and the
    claim's reference side (:func:`forward_halfway`). Returns {"data", "forward", "generative": {}, "claim":
    {label: {"expected", "forward_halfway"}}}."""
    forward_levels(1, levels)  # validates levels
    freqs, data_psd, data = _data_spectrum(x0, split)
    out: dict[str, Any] = {"data": data, "forward": {}, "generative": {}, "claim": {}}
    for lab, proc in processes.items():
        out["forward"][lab] = forward_psds(proc, x0, forward_levels(proc.num_levels, levels), seed, device)
        ref = forward_halfway(proc, x0, freqs, data_psd, seed, device)
        out["claim"][lab] = {"expected": ref["side"], "forward_halfway": ref}
    return out


def compute_spectra(runs: Sequence[Any], *, n: int = 64, seed: int = 0, levels: int = 8, batch_size: int = 64,
                    data_split: str = "train") -> dict[str, Any]:
    """Data PSD and its power law, and per run the forward and generative PSDs and the claim (arrays as numpy):
    {"data", "forward", "generative", "claim": {label: {"expected", "forward_halfway", "generative_halfway"}}}.

    The data images are the first ``n`` of the first run's ``data_split`` (all runs share a data set); the forward
    PSDs use those images, the generative ones ``n`` samples from ``seed``.
    """
    if not runs:
        raise GenprocError("give at least one run directory (written by 'genproc train')")
    if batch_size < 1:
        raise GenprocError(f"--batch-size must be >= 1, got {batch_size}")
    x0 = data_images(runs[0], n, data_split)
    labels = unique_labels(runs)
    for run in runs:
        if tuple(x0.shape[1:]) != tuple(run.image_shape):
            raise GenprocError(f"run {run.run_dir} makes {'x'.join(map(str, run.image_shape))} images, the data images "
                               f"are {'x'.join(map(str, x0.shape[1:]))}; analyse runs of one data set together")
    out = compute_forward_spectra({lab: r.process for lab, r in zip(labels, runs)}, x0, seed=seed, levels=levels,
                                  split=data_split, device=runs[0].device)
    freqs, data_psd = out["data"]["freqs"], out["data"]["psd"]
    for lab, run in zip(labels, runs):
        gen = generative_psds(run, n, seed, levels, batch_size)
        half = int(np.argmin(np.abs(np.asarray(gen["steps"]) - gen["num_sampling_steps"] / 2)))
        out["generative"][lab] = gen
        out["claim"][lab]["generative_halfway"] = {
            **claim_check(freqs, data_psd, gen["psd"], half, out["claim"][lab]["expected"]),
            "level": gen["levels"][half], "step": gen["steps"][half]}
    return out


# ------------------------------------------------------------------ figure and analyses


def _panel_title(lab: str, kind: str, check: dict[str, Any]) -> str:
    """'<label>: forward process / generative trajectory' and where the checked state sits against the data."""
    title = "forward process" if kind == "forward" else "generative trajectory"
    side = check["expected"] or check["side"]
    where = "no side" if side is None else f"{side} data in {check['frac_' + side]:.0%}"
    return f"{lab}: {title}\nat k={check['level']}: {where} of f ≥ {check['high_freq_min']:g}"


def plot_spectra(result: dict[str, Any], path: str | Path) -> Path:
    """Log-log PSDs: a row per process, columns forward process and (with runs) generative trajectory; lines coloured
    by relative level k / K (viridis, 0 = data, 1 = prior end), the data PSD thick black with its fitted power law
    dashed. DC is left out."""
    import matplotlib
    from matplotlib import cm
    from matplotlib.colors import Normalize
    from matplotlib.ticker import NullFormatter

    labs = list(result["forward"])
    kinds = ["forward", *(["generative"] if result["generative"] else [])]
    fig, axes = new_figure(len(labs), len(kinds), figsize=(5 * len(kinds), 3.8 * len(labs)), squeeze=False,
                           layout="constrained")
    data = result["data"]
    f = np.asarray(data["freqs"])[1:]
    norm, cmap = Normalize(0.0, 1.0), matplotlib.colormaps["viridis"]
    for row, lab in enumerate(labs):
        for col, kind in enumerate(kinds):
            ax, d = axes[row, col], result[kind][lab]
            for rel, psd in zip(d["relative"], d["psd"]):
                ax.loglog(f, np.maximum(np.asarray(psd)[1:], 1e-30), color=cmap(norm(float(rel))), lw=1.2)
            ax.loglog(f, np.asarray(data["psd"])[1:], color="black", lw=3, label=f"data ({data['split']})")
            fit = f[f <= data["fit_range"][1]]
            ax.loglog(fit, data["amplitude"] * fit ** -data["alpha"], "--", color="0.4", lw=1.5,
                      label=f"fit 1/f^{data['alpha']:.2f}")
            ax.set_title(_panel_title(lab, kind, result["claim"][lab][f"{kind}_halfway"]), fontsize=9)
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


def analyze_data_spectra(dataset: str, out: str | Path, *, image_size: int | tuple[int, int] = 28, channels: int = 1, n: int = 64,
                         seed: int = 0, levels: int = 8, data_split: str = "train", data_root: str | None = None,
                         processes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data set's PSD and the forward PSDs of ``processes`` (label -> process; default: every registered one from
    its default config, :func:`default_processes`), with no trained model. ``n`` images of ``data_split`` at
    ``image_size`` px (H = W, or (H, W)) and ``channels``. Writes ``out/spectra.png`` (a forward panel per process) and
    ``out/spectra.json`` ({settings, units, processes: {label: {label, num_levels, config}}, skipped, data, forward,
    claim: {label: {expected, forward_halfway}}, files}); returns the JSON payload."""
    skipped: dict[str, str] = {}
    if processes is None:
        processes, skipped = default_processes()
    if not processes:
        raise GenprocError("no process to analyse (none is registered with a default config)")
    cfg = DataConfig(name=dataset, image_size=image_size, channels=channels)
    x0 = dataset_images(cfg, n, data_split, data_root)
    result = compute_forward_spectra(processes, x0, seed=seed, levels=levels, split=data_split)
    out = Path(out)
    plot_spectra(result, out / "spectra.png")
    info = {lab: {"label": p.label, "num_levels": p.num_levels, "config": dataclasses.asdict(p.cfg)}
            for lab, p in processes.items()}
    payload = {"analysis": "spectra", "settings": {"dataset": dataset, "image_size": image_size, "channels": channels,
                                                  "n": n, "seed": seed, "levels": levels, "data_split": data_split,
                                                  "high_freq_min": HIGH_FREQ_MIN, "processes": "default configs"},
               "units": UNITS, "processes": info, "skipped": skipped, **result, "files": {"figure": "spectra.png"}}
    return write_payload(out, "spectra", payload)
