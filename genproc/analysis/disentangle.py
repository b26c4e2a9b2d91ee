"""Disentangling colour and shape by fixing the sampling noise (paper Sec. 4, Fig. 7a, App. D.3 / Fig. 29;
shared initial states: Fig. 15, 17).

A sample is a deterministic function of its prior state and of its per-step noise
(:func:`genproc.analysis.common.reverse_chain`). Two constructions separate their roles:

- **shared noise** (Fig. 7a, 29): a rows x cols grid, cell (r, c) = chain(prior_r, noise_c): every *column*
  shares the whole per-step noise sequence, every *row* one prior state. For IHDM with a prior blurred to
  (about) a constant image (sigma_B,max ~ image size, so u_K holds little more than the average colour), the
  paper finds that a column carves "essentially the same image" in different average colours: rows then vary
  colour, columns shape. On grayscale data such as MNIST "colour" is only the mean intensity: a column is the
  same digit shape drawn brighter/darker or thicker/thinner, nothing more. With sigma_B,max much smaller than
  the image, u_K keeps a coarse layout and the prior decides more than colour.
- **shared prior** (Fig. 15, 17): every sample starts from prior state 0 with its own noise (``genproc sample
  --same-init``): how much the noise alone can vary.

DDPM gets the analogous construction: x_T in place of u_K and the ancestral step noise (with DDIM and eta = 0 the
noise is not used: a shared-prior grid is one image repeated and ``noise_used``, the process's
``reverse_is_stochastic``, is False).

Prior r and noise c are those of the normal sampler's samples r and c under ``seed``
(:func:`genproc.analysis.interpolation.prior_states`, :class:`~genproc.analysis.interpolation.StepNoise`), so the
diagonal cell (r, r) is ``run.sample(seed=seed)`` sample r and the shared-prior grid is
``run.sample(rows * cols, seed=seed, same_init=True)``.

Numbers (images in [0, 1]). "Shape" is an image's luminance (Rec. 601: 0.299 R + 0.587 G + 0.114 B; the image
itself for one channel, the channel mean for other counts) minus its mean; "colour" is its mean per channel. For pairs
of cells with the same noise (same column), the same prior (same row) or neither: the mean RMS distance between
shapes and the mean centred correlation (cosine of the shapes: invariant to a change of contrast, so "the same
digit at another intensity" scores 1); ``shape_ratio`` = dist(same noise) / dist(neither) (< 1: the noise fixes the
shape; about 1: it does not); a two-way split of the colour variance over the grid (summed over channels) into the
part explained by the prior (rows), by the noise (columns) and their interaction (fractions summing to 1); and
whether a sample's colour follows its prior's (Sec. 4, "the colour mass in the prior image is effectively
redistributed to form a random image with the same average colour"): per channel, the correlation over all cells
of the prior's mean colour with the sample's (``colour_prior_corr``), and the mean absolute difference between a
sample's mean colour and its own prior's (``colour_prior_mae``) against that to the other rows' priors
(``colour_prior_mae_other``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.analysis.common import new_figure, reverse_chain, run_info, save_figure, unique_labels, write_payload
from genproc.analysis.interpolation import StepNoise, image_mosaic, prior_states, show_mosaic
from genproc.errors import GenprocError


def _check(rows: int, cols: int) -> None:
    if rows < 2 or cols < 2:
        raise GenprocError(f"rows and cols must be >= 2 (pairs within a row and a column are compared), got {rows} x {cols}")


@torch.no_grad()
def shared_noise_grid(run: Any, rows: int, cols: int, seed: int = 0, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell (r, c) = the reverse chain from the sampler's prior state r with the sampler's noise sequence c.

    Returns (grid (rows, cols, C, H, W), priors (rows, C, H, W)), both images in [0, 1] (priors via ``to_image``).
    """
    _check(rows, cols)
    priors = prior_states(run, range(rows), seed)  # (rows, C, H, W)
    noise = StepNoise(run, range(cols), seed)
    x = priors.repeat_interleave(cols, 0)  # cell n = r * cols + c
    images, _ = reverse_chain(run, x, lambda j: noise(j).repeat(rows, 1, 1, 1), batch_size=batch_size)
    return images.reshape(rows, cols, *images.shape[1:]), run.process.to_image(priors)


@torch.no_grad()
def shared_prior_grid(run: Any, rows: int, cols: int, seed: int = 0, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """rows * cols samples that all start from the sampler's prior state 0 (noise n for sample n), as
    ``genproc sample --same-init``. Returns (grid (rows, cols, C, H, W), prior (C, H, W)), images in [0, 1]."""
    _check(rows, cols)
    res = run.sample(rows * cols, seed=seed, same_init=True, capture_every=-1, batch_size=batch_size)
    prior = run.process.to_image(prior_states(run, [0], seed))[0]
    return res.images.reshape(rows, cols, *res.images.shape[1:]), prior


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (..., H, W): Rec. 601 luma for C = 3, the image for C = 1, the channel mean otherwise."""
    c = images.shape[-3]
    if c == 3:
        return torch.einsum("...chw,c->...hw", images, images.new_tensor(LUMA))
    return images.mean(dim=-3)


def shapes_and_colours(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """grid (R, K, C, H, W) -> (shapes (R, K, H*W) float64: each image's luminance minus its mean,
    colours (R, K, C) float64: each image's mean per channel)."""
    g = grid.double()
    lum = luminance(g)
    return (lum - lum.mean(dim=(-2, -1), keepdim=True)).flatten(2), g.mean(dim=(-2, -1))


def _pairwise(shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """shapes (N, D) -> (RMS distances (N, N), centred correlations (N, N); NaN for a flat image)."""
    d = torch.cdist(shapes, shapes) / shapes.shape[1] ** 0.5
    norm = shapes.norm(dim=1)
    corr = (shapes @ shapes.T) / (norm[:, None] * norm[None, :])
    corr = torch.where((norm[:, None] > 1e-12) & (norm[None, :] > 1e-12), corr, torch.full_like(corr, float("nan")))
    return d, corr


def _mean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else float("nan")


def prior_colour_stats(colours: torch.Tensor, prior_colours: torch.Tensor) -> dict[str, Any]:
    """Does a sample's colour follow its prior's? ``colours`` (R, K, C): the samples' mean colours, row r made from
    prior r; ``prior_colours`` (R, C): the priors' mean colours, in the same units as ``colours``.

    Keys: colour_prior_corr (per channel: Pearson correlation over the R*K cells of the prior's mean with the
    sample's), colour_prior_corr_mean (its mean over channels), colour_prior_mae (mean |sample - own prior| over
    cells and channels), colour_prior_mae_other (the same against the priors of the other rows; needs R >= 2).
    """
    r, k, c = colours.shape
    col, pri = colours.double(), prior_colours.double()
    per_cell = pri[:, None, :].expand(r, k, c)
    corr = [float(torch.corrcoef(torch.stack([per_cell[..., ch].flatten(), col[..., ch].flatten()]))[0, 1])
            for ch in range(c)]  # NaN where either is constant
    diff = (col[:, :, None, :] - pri[None, None, :, :]).abs().mean(-1)  # (R, K, R'): |sample (r, k) - prior r'|
    own = torch.eye(r, dtype=torch.bool)[:, None, :].expand(r, k, r)
    return {"colour_prior_corr": corr, "colour_prior_corr_mean": _mean(torch.tensor(corr)),
            "colour_prior_mae": float(diff[own].mean()),
            "colour_prior_mae_other": float(diff[~own].mean()) if r > 1 else float("nan")}


def shared_noise_stats(grid: torch.Tensor, prior_colours: torch.Tensor | None = None) -> dict[str, Any]:
    """Numbers of a shared-noise grid (R, K, C, H, W) in [0, 1] (rows: prior, columns: noise); see the module docstring.

    Keys: shape_dist_{same_noise,same_prior,independent} (RMS, [0, 1] units), shape_corr_{...} (centred correlation),
    shape_ratio, shape_ratio_same_prior (each dist / independent dist), colour_var_{prior,noise,interaction}_frac,
    colour_std_{same_noise,same_prior} (mean within-column / within-row std of the image means, averaged over
    channels); with ``prior_colours`` (R, C), the priors' mean colours in [0, 1], also :func:`prior_colour_stats`.
    """
    r, k = grid.shape[:2]
    shapes, colours = shapes_and_colours(grid)
    d, corr = _pairwise(shapes.reshape(r * k, -1))
    ri, ci = torch.arange(r).repeat_interleave(k), torch.arange(k).repeat(r)
    same_r, same_c = ri[:, None] == ri[None, :], ci[:, None] == ci[None, :]
    masks = {"same_noise": same_c & ~same_r, "same_prior": same_r & ~same_c, "independent": ~same_r & ~same_c}
    out: dict[str, Any] = {}
    for name, m in masks.items():
        out[f"shape_dist_{name}"], out[f"shape_corr_{name}"] = _mean(d[m]), _mean(corr[m])
    ind = out["shape_dist_independent"]
    out["shape_ratio"] = out["shape_dist_same_noise"] / ind if ind > 0 else float("nan")
    out["shape_ratio_same_prior"] = out["shape_dist_same_prior"] / ind if ind > 0 else float("nan")
    total = float(colours.var(dim=(0, 1), correction=0).sum())
    row_eff = float(colours.mean(1).var(dim=0, correction=0).sum())
    col_eff = float(colours.mean(0).var(dim=0, correction=0).sum())
    fr = (lambda v: v / total) if total > 0 else (lambda v: float("nan"))
    out.update(colour_var_prior_frac=fr(row_eff), colour_var_noise_frac=fr(col_eff),
               colour_var_interaction_frac=fr(total - row_eff - col_eff),
               colour_std_same_noise=float(colours.std(0, correction=0).mean()),
               colour_std_same_prior=float(colours.std(1, correction=0).mean()))
    if prior_colours is not None:
        out.update(prior_colour_stats(colours, prior_colours))
    return out


def shared_prior_stats(grid: torch.Tensor, prior_colour: torch.Tensor | None = None) -> dict[str, Any]:
    """Numbers of a shared-prior grid (R, K, C, H, W): mean pairwise shape_dist / shape_corr over all its samples and
    colour_std (std of the image means, averaged over channels), to set against the shared-noise grid's independent
    pairs and colour_std_same_noise; with ``prior_colour`` (C,), the prior's mean colour in [0, 1], also
    colour_prior_mae (mean |sample colour - prior colour| over samples and channels)."""
    shapes, colours = shapes_and_colours(grid)
    n = shapes.shape[0] * shapes.shape[1]
    d, corr = _pairwise(shapes.reshape(n, -1))
    off = ~torch.eye(n, dtype=torch.bool)
    out: dict[str, Any] = {"shape_dist": _mean(d[off]), "shape_corr": _mean(corr[off]),
                           "colour_std": float(colours.reshape(n, -1).std(0, correction=0).mean())}
    if prior_colour is not None:
        out["colour_prior_mae"] = float((colours - prior_colour.double()).abs().mean())
    return out


def compute_disentangle(run: Any, rows: int = 6, cols: int = 6, seed: int = 0, *, batch_size: int = 64) -> dict[str, Any]:
    """Both grids and their numbers for one run.

    Returns {"shared_noise": {"grid": (rows, cols, C, H, W), "priors": (rows, C, H, W), "stats": dict},
    "shared_prior": {"grid": (rows, cols, C, H, W), "prior": (C, H, W), "stats": dict},
    "noise_used": bool (``run.sampler.stochastic(run.process)``)}; images in [0, 1]. How much the prior keeps (for IHDM,
    sigma_B,max against the image size) is read from the process config and image shape that :func:`run_info` records.
    The priors' colours are those of the prior images as shown (``process.to_image``, clamped to [0, 1]).
    """
    grid, priors = shared_noise_grid(run, rows, cols, seed, batch_size)
    pgrid, prior = shared_prior_grid(run, rows, cols, seed, batch_size)
    return {"shared_noise": {"grid": grid, "priors": priors,
                             "stats": shared_noise_stats(grid, priors.double().mean(dim=(-2, -1)))},
            "shared_prior": {"grid": pgrid, "prior": prior,
                             "stats": shared_prior_stats(pgrid, prior.double().mean(dim=(-2, -1)))},
            "noise_used": run.sampler.stochastic(run.process)}


def _beside(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two mosaics (H, W) or (H, W, C) side by side, top-aligned, on white with a small gap between them."""
    gap = max(3, right.shape[0] // 12)
    h = max(left.shape[0], right.shape[0])
    pad = [(0, h - left.shape[0]), (0, gap)] + [(0, 0)] * (left.ndim - 2)
    left = np.pad(left, pad, constant_values=1.0)
    right = np.pad(right, [(0, h - right.shape[0])] + [(0, 0)] * (right.ndim - 1), constant_values=1.0)
    return np.concatenate([left, right], axis=1)


def _figure(n: int, rows: int, cols: int) -> tuple[Any, Any]:
    return new_figure(1, n, squeeze=False, figsize=(n * max(3.2, 0.42 * (cols + 1.3) + 0.6), 0.42 * rows + 1.7))


def _plot_panels(result: dict[str, dict[str, Any]], key: str, path: str | Path,
                 panel: Callable[[str, dict[str, Any]], tuple[np.ndarray, str]]) -> Path:
    """One panel per run: ``panel(label, result[label][key])`` gives its mosaic and title."""
    if not result:
        raise GenprocError("nothing to plot: no disentangle results")
    first = next(iter(result.values()))[key]["grid"]
    fig, axes = _figure(len(result), first.shape[0], first.shape[1])
    for ax, (lab, r) in zip(axes[0], result.items()):
        show_mosaic(ax, *panel(lab, r[key]))
    return save_figure(fig, path)


def plot_shared_noise(result: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """One panel per run (label -> :func:`compute_disentangle` result): the prior states (left column, one per row)
    and the grid whose columns share the noise."""
    def panel(lab: str, r: dict[str, Any]) -> tuple[np.ndarray, str]:
        st = r["stats"]
        return (_beside(image_mosaic(r["priors"][:, None]), image_mosaic(r["grid"])),
                (f"{lab}: each column shares the noise,\neach row the prior state (left)\n"
                 f"shape ratio {st['shape_ratio']:.2f}, colour var. from prior {st['colour_var_prior_frac']:.0%}\n"
                 f"colour corr. with prior {st['colour_prior_corr_mean']:.2f}"))

    return _plot_panels(result, "shared_noise", path, panel)


def plot_shared_prior(result: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """One panel per run: the shared prior state (top left) and the samples that all start from it."""
    def panel(lab: str, r: dict[str, Any]) -> tuple[np.ndarray, str]:
        st = r["stats"]
        return (_beside(image_mosaic(r["prior"][None, None]), image_mosaic(r["grid"])),
                (f"{lab}: every sample starts from\nthe one prior state (top left)\n"
                 f"shape corr {st['shape_corr']:.2f}, colour std {st['colour_std']:.3f}"))

    return _plot_panels(result, "shared_prior", path, panel)


def analyze_disentangle(runs: Sequence[Any], out: str | Path, *, rows: int = 6, cols: int = 6, seed: int = 0,
                        batch_size: int = 64) -> dict[str, Any]:
    """Write out/disentangle_shared_noise.png, out/disentangle_shared_prior.png and out/disentangle.json
    ({settings, runs, results: {label: {shared_noise: stats, shared_prior: stats, noise_used}}, files}; ``runs``
    holds each run's process config and image shape); returns the JSON payload."""
    _check(rows, cols)
    out = Path(out)
    results = {lab: compute_disentangle(r, rows, cols, seed, batch_size=batch_size) for lab, r in zip(unique_labels(runs), runs)}
    files = {"shared_noise": str(plot_shared_noise(results, out / "disentangle_shared_noise.png")),
             "shared_prior": str(plot_shared_prior(results, out / "disentangle_shared_prior.png"))}
    payload = {"analysis": "disentangle", "settings": {"rows": rows, "cols": cols, "seed": seed},
               "measures": {"shape": "luminance (Rec. 601 for 3 channels) minus its mean", "colour": "mean per channel",
                            "prior colour": "mean per channel of the prior image as shown (to_image, in [0, 1])"},
               "layout": {"shared_noise": "cell (r, c) = chain(prior of sample r, noise of sample c)",
                          "shared_prior": "cell (r, c) = chain(prior of sample 0, noise of sample r * cols + c)"},
               "runs": run_info(runs),
               "results": {lab: {"shared_noise": r["shared_noise"]["stats"], "shared_prior": r["shared_prior"]["stats"],
                                 "noise_used": r["noise_used"]}
                           for lab, r in results.items()},
               "files": files}
    return write_payload(out, "disentangle", payload)
