"""Input gradients of the network and how local they are (the paper's Sec. 4, Fig. 8).

For an output pixel (c, i, j) of the network at level k, the gradient map d net(x, k)[c, i, j] / d x is (C, H, W).
IHDM's learned reverse step is close to a local convolution (Eq. 13), so its maps are small and round; DDPM's
are wider. Conventions (also in ``gradients.json`` under ``"settings"``):

- **State**: x is the forward-process state of real data images at level k, ``process.training_pair(x0, k, eps)[0]``
  (IHDM: F(t_k) x0 + sigma eps in [0, 1] units; DDPM: sqrt(ab) (2 x0 - 1) + sqrt(1 - ab) eps), exactly at its level and
  cheap (no sampling); the network output is IHDM's residual f(u_k, k) or DDPM's epsilon. Gradients in fp32, eval mode.
- **Levels**: a fraction ``frac`` of the chain is level k = round(frac K), at least 1, with K the process's number of
  steps (IHDM's K, DDPM's T): frac 1 is the prior end, 0 the data, so fractions 0.9, 0.5, 0.1, 0.02 are early to late
  in generation, at the same relative positions in both chains.
- **Locality radius** (:func:`locality_radius`): the smallest Euclidean distance r (pixels) from the output pixel such
  that the input pixels within r hold ``mass`` (0.9) of the total |gradient| (summed over input channels).
- **Figure**: the map of the first image for input channel c (the output pixel's channel), symlog colours with a linear
  range of ``LINTHRESH_REL`` (0.01) of the panel's max |gradient|.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import typer

from genproc.analysis.common import (batch_size_option, checkpoint_option, data_root_option, new_figure, out_option,
                                     run_analysis, run_dirs_argument, run_info, save_figure, unique_labels, write_payload)
from genproc.errors import GenprocError

DEFAULT_FRACTIONS = (0.9, 0.5, 0.1, 0.02)
MASS = 0.9
LINTHRESH_REL = 0.01  # symlog linear range, relative to each panel's max |gradient|
Pixel = tuple[int, int, int]  # (channel, row, column) of an output pixel


# ------------------------------------------------------------------ gradients and radius


def input_gradients(run: Any, x: torch.Tensor, k: int, pixels: Sequence[Pixel]) -> torch.Tensor:
    """Gradients of the network output at each pixel (c, i, j) w.r.t. its input ``x`` at level ``k``.

    run: anything with ``.net(x, k)`` (x (N, C, H, W), k (N,) int64) and ``.device``; x: (N, C, H, W) model state.
    The output is summed over the batch before differentiating, which gives every image's own map (the images are
    independent in the net: GroupNorm and attention act within an image). Returns (P, N, C, H, W) float32 on CPU:
    [p, b] = d net(x, k)[b, c_p, i_p, j_p] / d x[b].
    """
    n, c, h, w = x.shape
    for p in pixels:
        if len(p) != 3 or not (0 <= p[0] < c and 0 <= p[1] < h and 0 <= p[2] < w):
            raise GenprocError(f"pixel {tuple(p)} is outside the (channel, row, column) ranges of a {c}x{h}x{w} image")
    device = getattr(run, "device", x.device)
    xx = x.detach().to(device).float().requires_grad_(True)
    kk = torch.full((n,), int(k), dtype=torch.long, device=device)
    grads = []
    with torch.enable_grad():
        out = run.net(xx, kk).float()
        for idx, (pc, pi, pj) in enumerate(pixels):
            (g,) = torch.autograd.grad(out[:, pc, pi, pj].sum(), xx, retain_graph=idx < len(pixels) - 1)
            grads.append(g.detach().cpu())
    return torch.stack(grads) if grads else torch.zeros((0, n, c, h, w))


def locality_radius(grad_map: torch.Tensor | np.ndarray, center: Sequence[int], mass: float = MASS) -> float:
    """The smallest radius r (pixels, Euclidean from ``center``) whose disc holds ``mass`` of the total |gradient|.

    grad_map: (C, H, W) or (H, W); |values| are summed over channels. center: (i, j) or (c, i, j) (the last two are
    used). r is one of the pixel distances (0, 1, sqrt 2, 2, ...); a disc includes the pixels at distance exactly r.
    Returns NaN for an all-zero map.
    """
    if not 0 < mass <= 1:
        raise GenprocError(f"locality mass must be in (0, 1], got {mass}")
    g = np.abs(np.asarray(torch.as_tensor(grad_map).detach().cpu(), dtype=np.float64))
    if g.ndim == 3:
        g = g.sum(0)
    if g.ndim != 2:
        raise GenprocError(f"gradient map must be (C, H, W) or (H, W), got shape {g.shape}")
    ci, cj = int(center[-2]), int(center[-1])
    total = g.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    ii, jj = np.indices(g.shape)
    dist = np.hypot(ii - ci, jj - cj).ravel()
    order = np.argsort(dist, kind="stable")
    d_sorted, cum = dist[order], np.cumsum(g.ravel()[order])
    radii, first = np.unique(d_sorted, return_index=True)
    cum_at = cum[np.r_[first[1:] - 1, len(d_sorted) - 1]]  # mass within each distinct radius (inclusive)
    return float(radii[np.argmax(cum_at >= mass * total * (1 - 1e-9))])


def level_for_fraction(frac: float, num_steps: int) -> int:
    """k = round(frac K) (halves up), clipped to 1..K."""
    if not 0 < frac <= 1:
        raise GenprocError(f"fractions of the chain must be in (0, 1], got {frac}")
    return int(min(num_steps, max(1, math.floor(frac * num_steps + 0.5))))


def default_pixels(c: int, h: int, w: int) -> list[Pixel]:
    """The center pixel (0, H//2, W//2) and an off-center one (0, H//4, W//4) of channel 0."""
    return [(0, h // 2, w // 2), (0, h // 4, w // 4)]


def compute_gradients(run: Any, *, n: int = 16, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      pixels: Sequence[Pixel] | None = None, mass: float = MASS, batch_size: int = 64,
                      keep_maps: bool = True) -> dict[str, Any]:
    """Input gradients and locality radii of ``run`` at each fraction of its chain, on its first ``n`` training images.

    Returns {"num_steps", "image_size", "pixels": [P], "fractions": [F], "levels": [F], "radii": (F, P, N) pixels,
    "mean_radius": mean over fractions, pixels and images}; with ``keep_maps`` also "maps": (F, P, C, H, W) the first
    image's gradient maps and "states": (F, C, H, W) its states as images in [0, 1].
    """
    if n < 1:
        raise GenprocError(f"--n must be >= 1, got {n}")
    if batch_size < 1:
        raise GenprocError(f"--batch-size must be >= 1, got {batch_size}")
    if not fractions:
        raise GenprocError("give at least one fraction of the chain, e.g. 0.9,0.5,0.1,0.02")
    data = run.data
    x0 = data.get_batch(torch.arange(min(n, len(data)))).float()
    nimg, c, h, w = x0.shape
    pixels = [tuple(int(v) for v in p) for p in (pixels or default_pixels(c, h, w))]
    levels = [level_for_fraction(float(f), run.process.num_steps) for f in fractions]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    radii = np.zeros((len(levels), len(pixels), nimg))
    maps, states = [], []
    for fi, k in enumerate(levels):
        for b0 in range(0, nimg, batch_size):
            xb, eb = x0[b0:b0 + batch_size].to(run.device), eps[b0:b0 + batch_size].to(run.device)
            state, _ = run.process.training_pair(xb, torch.full((xb.shape[0],), k, dtype=torch.long), eb)
            g = input_gradients(run, state, k, pixels)  # (P, B, C, H, W)
            for pi, p in enumerate(pixels):
                radii[fi, pi, b0:b0 + xb.shape[0]] = [locality_radius(gm, p[1:], mass) for gm in g[pi]]
            if keep_maps and b0 == 0:
                maps.append(g[:, 0])
                states.append(run.process.to_image(state[:1]).cpu()[0])
    mean = float(np.nanmean(radii)) if np.isfinite(radii).any() else None
    out = {"num_steps": int(run.process.num_steps), "image_size": int(h), "pixels": pixels,
           "fractions": [float(f) for f in fractions], "levels": levels, "mass": mass, "radii": radii, "mean_radius": mean}
    if keep_maps:
        out.update(maps=torch.stack(maps).numpy(), states=torch.stack(states).numpy())
    return out


def _stats(r: np.ndarray) -> dict[str, Any]:
    finite = r[np.isfinite(r)]
    return {"mean": float(finite.mean()) if finite.size else None, "std": float(finite.std()) if finite.size else None,
            "n": int(finite.size)}


def locality_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fraction: level, mean ± std of the radius over images and pixels, and per pixel ("c,i,j")."""
    return [{"fraction": f, "level": k, **_stats(res["radii"][fi].ravel()),
             "per_pixel": {",".join(map(str, p)): {**_stats(res["radii"][fi, pi]), "radii": res["radii"][fi, pi]}
                           for pi, p in enumerate(res["pixels"])}}
            for fi, (f, k) in enumerate(zip(res["fractions"], res["levels"]))]


def gradient_locality_summary(run: Any, n: int = 8, seed: int = 0,
                              fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, Any]:
    """A cheap summary for ``genproc compare``: {"grad_r90": mean 90%-mass radius (pixels) over fractions, the two
    default pixels and ``n`` images, "grad_r90_by_fraction": {fraction: mean}, "grad_r90_std": std over images of
    each image's mean radius}. One forward and two backward passes of n images per fraction."""
    res = compute_gradients(run, n=n, seed=seed, fractions=fractions, keep_maps=False)
    per_image = np.nanmean(res["radii"].reshape(-1, res["radii"].shape[-1]), axis=0) if np.isfinite(res["radii"]).any() else None
    return {"grad_r90": res["mean_radius"], "grad_r90_std": float(np.std(per_image)) if per_image is not None else None,
            "grad_r90_by_fraction": {str(f): _stats(res["radii"][fi].ravel())["mean"] for fi, f in enumerate(res["fractions"])}}


def compare_measure(entry: Any) -> dict[str, Any]:
    """For ``genproc.compare.MEASURES``: the :func:`gradient_locality_summary` of ``entry.run``."""
    return gradient_locality_summary(entry.run)


COMPARE_COLUMN = ("grad r90 px", lambda r: "–" if r.get("grad_r90") is None else f"{r['grad_r90']:.2f}")  # for compare.COLUMNS


# ------------------------------------------------------------------ figure and command


def plot_gradients(result: dict[str, Any], path: str | Path) -> Path:
    """Gradient maps of the first image at the marked pixel: a row per run, a column per fraction of the chain.

    Each map is divided by its max |gradient| and drawn in symlog colours, linear within ``LINTHRESH_REL`` (one
    shared colour bar); the output pixel is marked by a square, the first image's 90%-mass radius by a dashed circle."""
    import matplotlib.cm as cm
    from matplotlib.colors import SymLogNorm
    from matplotlib.patches import Circle, Rectangle

    labs = list(result["locality"])
    ncol = max(len(result["locality"][lab]["fractions"]) for lab in labs)
    fig, axes = new_figure(len(labs), ncol, figsize=(2.5 * ncol + 1, 2.7 * len(labs)), squeeze=False, layout="constrained")
    norm = SymLogNorm(linthresh=LINTHRESH_REL, vmin=-1.0, vmax=1.0, base=10)
    for row, lab in enumerate(labs):
        res = result["locality"][lab]
        pc, pi, pj = res["pixels"][0]
        for col in range(ncol):
            ax = axes[row, col]
            ax.set_xticks([]), ax.set_yticks([])
            if col >= len(res["fractions"]):
                ax.axis("off")
                continue
            g = np.asarray(res["maps"][col][0][pc], dtype=np.float64)  # (H, W): first pixel, input channel = output channel
            vmax = float(np.abs(g).max())
            ax.imshow(g / (vmax or 1.0), cmap="RdBu_r", norm=norm)
            ax.add_patch(Rectangle((pj - 0.5, pi - 0.5), 1, 1, fill=False, edgecolor="lime", lw=1.5))
            r = res["radii"][col][0][0]
            if r is not None and np.isfinite(r):
                ax.add_patch(Circle((pj, pi), r, fill=False, edgecolor="black", ls="--", lw=1))
            table = res["table"][col]
            spread = "" if table["mean"] is None else f"r90 {table['mean']:.1f}±{table['std']:.1f} px"
            ax.set_title(f"{lab} k={res['levels'][col]} ({res['fractions'][col]:g}), max {vmax:.1e}\n{spread}", fontsize=8)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap="RdBu_r"), ax=axes.ravel().tolist(), shrink=0.8,
                 label=f"gradient / max |gradient| (symlog, linear within ±{LINTHRESH_REL:g})")
    return save_figure(fig, path)


def analyze_gradients(runs: Sequence[Any], out: str | Path, *, n: int = 16, seed: int = 0,
                      fractions: Sequence[float] = DEFAULT_FRACTIONS, pixel: Pixel | None = None,
                      batch_size: int = 64) -> dict[str, Any]:
    """Write ``out/gradients.png`` and ``out/gradients.json``; returns the JSON payload.

    Per run and fraction, the locality radius (mean ± std over ``n`` images and pixels, and per pixel) at ``pixel``
    (default: the center; the one drawn in the figure) and the default off-center pixel; ``summary`` holds each run's
    mean radius over fractions (the number ``genproc compare`` can show).
    """
    if not runs:
        raise GenprocError("give at least one run directory (written by 'genproc train')")
    locality: dict[str, Any] = {}
    for lab, run in zip(unique_labels(runs), runs):
        c, s = run.recipe.data.channels, run.recipe.data.image_size
        pixels = default_pixels(c, s, s)
        if pixel is not None:
            pixels = [tuple(pixel), *[p for p in pixels[1:] if p != tuple(pixel)]]
        res = compute_gradients(run, n=n, seed=seed, fractions=fractions, pixels=pixels, batch_size=batch_size)
        res["table"] = locality_table(res)
        locality[lab] = res
    out = Path(out)
    plot_gradients({"locality": locality}, out / "gradients.png")
    payload = {"analysis": "gradients",
               "settings": {"n": n, "seed": seed, "fractions": list(fractions), "mass": MASS, "linthresh_rel": LINTHRESH_REL,
                            "state": "forward-process state u_k = training_pair(x0, k, eps) of the first n training images",
                            "levels": "k = round(fraction * K), K = the process's number of steps (IHDM K, DDPM T); "
                                      "1 = prior end",
                            "radius": f"smallest Euclidean radius (pixels) holding {MASS:g} of the |gradient| mass, summed over "
                                      "input channels"},
               "runs": run_info(runs),
               "locality": {lab: {k: r[k] for k in ("num_steps", "image_size", "pixels", "fractions", "levels", "mean_radius")}
                            | {"by_fraction": r["table"]} for lab, r in locality.items()},
               "summary": {lab: r["mean_radius"] for lab, r in locality.items()},
               "files": {"figure": "gradients.png"}}
    return write_payload(out, "gradients", payload)


def parse_pixel(text: str | None) -> Pixel | None:
    """'I,J' (channel 0) or 'C,I,J' -> (c, i, j); None stays None."""
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (2, 3):
        raise GenprocError(f"--pixel expects ROW,COL or CHANNEL,ROW,COL (integers), got {text!r}")
    return (0, *vals) if len(vals) == 2 else tuple(vals)  # type: ignore[return-value]


def parse_fractions(text: str) -> list[float]:
    """'0.9,0.5,0.1' -> [0.9, 0.5, 0.1], each in (0, 1]."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GenprocError(f"--fractions expects comma-separated numbers in (0, 1], got {text!r}") from None
    if not vals or not all(0 < v <= 1 for v in vals):
        raise GenprocError(f"--fractions expects comma-separated numbers in (0, 1], got {text!r}")
    return vals


def gradients_command(
    run_dirs: list[Path] = run_dirs_argument(),
    out: Path = out_option("gradients", "Output folder for gradients.png and gradients.json."),
    n: int = typer.Option(16, "--n", help="Training images whose forward-process states are probed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the forward-process noise."),
    fractions: str = typer.Option(",".join(map(str, DEFAULT_FRACTIONS)), "--fractions",
                                  help="Positions in the chain, k = round(fraction * K) (1 = prior end, 0 = data), "
                                       "comma-separated."),
    pixel: Optional[str] = typer.Option(None, "--pixel", help="Output pixel ROW,COL or CHANNEL,ROW,COL drawn in the figure "
                                                              "(default: the center; statistics also use (0, H//4, W//4))."),
    batch_size: int = batch_size_option(),
    checkpoint: Optional[str] = checkpoint_option(),
    data_root: Optional[str] = data_root_option(),
) -> None:
    """Input gradients of the network (Fig. 8): maps for one output pixel at several points of each chain, and the
    radius holding 90% of the |gradient| (small and round for IHDM, wider for DDPM)."""
    res = run_analysis(run_dirs, lambda runs: analyze_gradients(runs, out, n=n, seed=seed, fractions=parse_fractions(fractions),
                                                                pixel=parse_pixel(pixel), batch_size=batch_size),
                       checkpoint=checkpoint, data_root=data_root)
    for lab, loc in res["locality"].items():
        parts = [f"k={t['level']}: {t['mean']:.2f}±{t['std']:.2f}" if t["mean"] is not None else f"k={t['level']}: –"
                 for t in loc["by_fraction"]]
        mean = "–" if loc["mean_radius"] is None else f"{loc['mean_radius']:.2f}"
        typer.echo(f"{lab}: 90%-mass gradient radius (px) {', '.join(parts)}; mean {mean}")
    typer.echo(f"wrote {out / 'gradients.png'}, {out / 'gradients.json'}")


COMMANDS = {"gradients": gradients_command}
