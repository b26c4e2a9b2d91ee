"""Input gradients of the network, how local and how circularly symmetric they are (the paper's Sec. 4, Fig. 8).

For an output pixel (c, i, j) of the network at level k, the gradient map d net(x, k)[c, i, j] / d x is (C, H, W).
IHDM's learned reverse step is close to a local convolution (Eq. 13), so its maps are small and round; DDPM's
are wider and more irregular. Conventions (also in ``gradients.json`` under ``"settings"``):

- **State**: x is the forward-process state of real data images at level k, ``process.forward_marginal(x0, k, eps)``
  (IHDM: F(t_k) x0 + sigma eps in [0, 1] units; DDPM: sqrt(ab) (2 x0 - 1) + sqrt(1 - ab) eps), exactly at its level and
  cheap (no sampling). Gradients in fp32, eval mode.
- **Quantity** (``quantity``): ``"step"`` (the default) differentiates each model's one-step estimate of the state
  one level less blurred / noisy: the step of the run's sampler from k to k - 1 with no noise
  (:func:`genproc.samplers.base.first_step`; IHDM: the mean x + f(x, k) of Eq. 8; DDPM: the posterior mean from ε̂;
  BDM: its per-frequency posterior mean; with the sampler's x̂₀ clip, ``--sampling clip=none`` for the plain mean),
  the same kind of quantity for every process; ``"output"`` differentiates the raw network output (IHDM's residual f, DDPM's ε̂), which
  is not comparable across parametrisations: ε̂ carries an identity-like term (at t = 900 half a DDPM map's mass sits
  on the pixel itself).
- **Centre** (``exclude_centre``, default True): the radii leave out the output pixel's own position (all channels), as
  the symmetry score does, so that the identity part of a step (x itself, or ε̂'s dependence on its own pixel) does
  not count as locality: r_m is then where m of the *other* pixels' |gradient| mass lies.
- **Levels**: a fraction ``frac`` of the chain is level k = round(frac K), at least 1, with K the process's number of
  levels ``process.num_levels`` (IHDM's K, DDPM's T): frac 1 is the prior end, 0 the data, so fractions
  0.9, 0.5, 0.1, 0.02 are early to late
  in generation, at the same relative positions in both chains.
- **Locality radii** (:func:`locality_radii`): for each mass m in ``MASSES`` (0.5, 0.9), r_m is the smallest Euclidean
  distance (pixels) from the output pixel such that the input pixels within r_m hold m of the total |gradient| (summed
  over input channels); reported as r50 and r90. On real 28x28 models r90 sits near its maximum for every process,
  because a thin diffuse background of small gradients over the whole image holds much of the |gradient| mass; r50
  follows the compact core.
- **Circular symmetry** (:func:`circular_symmetry`): with the output pixel as centre, R the radius of the largest disc
  around it that fits in the image (R = min(i, j, H-1-i, W-1-j)) and rings of pixels at the same rounded distance
  round(sqrt(di^2 + dj^2)) = 1..R (whole rings, all inside the image; the centre pixel is left out, as a one-pixel
  ring is symmetric by definition and would make any centre-dominated map score high), g_rad is each channel's signed map replaced by
  its mean over its ring, and symmetry = 1 - ||g - g_rad||^2 / ||g||^2 over the disc's pixels and all channels (the
  per-channel scores averaged with weights ||g_c||^2; one channel: exactly the formula). g_rad is the least-squares
  projection of g on ring-constant maps, so the score is in [0, 1]: 1 = circularly symmetric (a function of the
  rounded distance only), about (rings / pixels) for white noise, ~0 = no radial structure; it is invariant to the
  map's scale and sign, and ignores everything outside the disc (so borders don't bias it). NaN for a zero map or an
  output pixel on the border (R = 0).
- **Centre share** (:func:`centre_share`): the output pixel's own position's share of the map's |gradient| mass (all
  input channels), in [0, 1]. It says how much of a step is the identity-like part the radii leave out: a step that is
  mostly its own pixel plus a faint, wide remainder has a large share and large radii.
- **Figure**: the map of the first image for input channel c (the output pixel's channel), symlog colours with a linear
  range of ``LINTHRESH_REL`` (0.01) of the panel's largest |gradient| off the output pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.analysis.common import new_figure, run_info, save_figure, unique_labels, write_payload
from genproc.errors import GenprocError

DEFAULT_FRACTIONS = (0.9, 0.5, 0.1, 0.02)
MASS = 0.9  # the default of :func:`locality_radius`
MASSES = (0.5, 0.9)  # the radii reported: r50 and r90
SYMMETRY = "symmetry"  # the name of the circular-symmetry measure, beside the radii "r50", "r90"
CENTRE = "centre_share"  # the output pixel's own share of the |gradient| mass
LINTHRESH_REL = 0.01  # symlog linear range, relative to each panel's max |gradient|
Pixel = tuple[int, int, int]  # (channel, row, column) of an output pixel


# ------------------------------------------------------------------ gradients, radii and symmetry


QUANTITIES = ("step", "output")


def input_gradients(run: Any, x: torch.Tensor, k: int, pixels: Sequence[Pixel], quantity: str = "output") -> torch.Tensor:
    """Gradients of the network output (``quantity="output"``), or of the noise-free reverse step from level k to
    k - 1 built on it (``"step"``: the run's sampler's noise-free step from k to k - 1), at each pixel (c, i, j)
    w.r.t. the state ``x`` at level ``k``.

    run: anything with ``.net(x, k)`` (x (N, C, H, W), k (N,) int64) and ``.device`` (and ``.process`` for "step");
    x: (N, C, H, W) model state.
    The output is summed over the batch before differentiating, which gives every image's own map (the images are
    independent in the net: GroupNorm and attention act within an image). Returns (P, N, C, H, W) float32 on CPU:
    [p, b] = d net(x, k)[b, c_p, i_p, j_p] / d x[b].
    """
    if quantity not in QUANTITIES:
        raise GenprocError(f"gradient quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")
    n, c, h, w = x.shape
    for p in pixels:
        if len(p) != 3 or not (0 <= p[0] < c and 0 <= p[1] < h and 0 <= p[2] < w):
            raise GenprocError(f"pixel {tuple(p)} is outside the (channel, row, column) ranges of a {c}x{h}x{w} image")
    device = run.device
    xx = x.detach().to(device).float().requires_grad_(True)
    kk = torch.full((n,), int(k), dtype=torch.long, device=device)
    grads = []
    with torch.enable_grad():
        if quantity == "step":
            from genproc.samplers.base import first_step

            out = first_step(run.sampler, run.process, lambda y, kk: run.net(y, kk).float(), xx, int(k), int(k) - 1)
        else:
            out = run.net(xx, kk).float()
        for idx, (pc, pi, pj) in enumerate(pixels):
            (g,) = torch.autograd.grad(out[:, pc, pi, pj].sum(), xx, retain_graph=idx < len(pixels) - 1)
            grads.append(g.detach().cpu())
    return torch.stack(grads) if grads else torch.zeros((0, n, c, h, w))


def mass_key(mass: float) -> str:
    """The name of the radius holding ``mass`` of the |gradient|: 0.5 -> "r50", 0.9 -> "r90", 0.95 -> "r95"."""
    return f"r{100 * mass:.6g}"


def _as_map(grad_map: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) tensor/array -> (C, H, W) float64 numpy."""
    g = np.asarray(torch.as_tensor(grad_map).detach().cpu(), dtype=np.float64)
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3:
        raise GenprocError(f"gradient map must be (C, H, W) or (H, W), got shape {g.shape}")
    return g


def locality_radii(grad_map: torch.Tensor | np.ndarray, center: Sequence[int],
                   masses: Sequence[float] = MASSES, exclude_centre: bool = False) -> tuple[float, ...]:
    """For each m in ``masses``, the smallest radius r (pixels, Euclidean from ``center``) whose disc holds m of the
    total |gradient|, all from one sorted cumulative mass; with ``exclude_centre`` the centre pixel's own mass is left
    out of both (so r >= 1).

    grad_map: (C, H, W) or (H, W); |values| are summed over channels. center: (i, j) or (c, i, j) (the last two are
    used). Each r is one of the pixel distances (0, 1, sqrt 2, 2, ...); a disc includes the pixels at distance exactly
    r. Returns a tuple of len(masses) radii in pixels, all NaN for an all-zero (or non-finite) map.
    """
    masses = tuple(float(m) for m in masses)
    if not masses or not all(0 < m <= 1 for m in masses):
        raise GenprocError(f"locality masses must be in (0, 1], got {masses}")
    g = np.abs(_as_map(grad_map)).sum(0)  # (H, W)
    ci, cj = int(center[-2]), int(center[-1])
    if exclude_centre:
        g[ci, cj] = 0.0
    total = g.sum()
    if not np.isfinite(total) or total <= 0:
        return tuple(float("nan") for _ in masses)
    ii, jj = np.indices(g.shape)
    dist = np.hypot(ii - ci, jj - cj).ravel()
    order = np.argsort(dist, kind="stable")
    d_sorted, cum = dist[order], np.cumsum(g.ravel()[order])
    radii, first = np.unique(d_sorted, return_index=True)
    cum_at = cum[np.r_[first[1:] - 1, len(d_sorted) - 1]]  # mass within each distinct radius (inclusive)
    return tuple(float(radii[np.argmax(cum_at >= m * total * (1 - 1e-9))]) for m in masses)


def locality_radius(grad_map: torch.Tensor | np.ndarray, center: Sequence[int], mass: float = MASS) -> float:
    """The smallest radius r (pixels, Euclidean from ``center``) whose disc holds ``mass`` of the total |gradient|.

    grad_map: (C, H, W) or (H, W); |values| are summed over channels. center: (i, j) or (c, i, j) (the last two are
    used). r is one of the pixel distances (0, 1, sqrt 2, 2, ...); a disc includes the pixels at distance exactly r.
    Returns NaN for an all-zero map. One mass of :func:`locality_radii`.
    """
    if not 0 < mass <= 1:
        raise GenprocError(f"locality mass must be in (0, 1], got {mass}")
    return locality_radii(grad_map, center, (mass,))[0]


def centre_share(grad_map: torch.Tensor | np.ndarray, center: Sequence[int]) -> float:
    """|g| at the output pixel's own position (summed over input channels) / the map's total |g|, in [0, 1]; NaN for a
    zero map. grad_map: (C, H, W); center: (row, col)."""
    a = np.abs(np.asarray(grad_map, dtype=np.float64))
    total = a.sum()
    return float(a[:, center[0], center[1]].sum() / total) if total > 0 else float("nan")


def circular_symmetry(grad_map: torch.Tensor | np.ndarray, center: Sequence[int]) -> float:
    """Circular symmetry of a signed gradient map around ``center``: 1 - ||g - g_rad||^2 / ||g||^2 in [0, 1].

    grad_map: (C, H, W) or (H, W) signed gradients; center: (i, j) or (c, i, j) (the last two are used). Only the
    pixels at rounded distance 1 <= round(sqrt(di^2 + dj^2)) <= R = min(i, j, H-1-i, W-1-j) count (the largest disc
    around the centre that fits in the image, whole rings; the centre pixel itself is left out, since a ring of one
    pixel is symmetric by definition and would make any map dominated by its centre look symmetric); g_rad replaces
    each channel's values by their mean over the ring
    of the same rounded distance, and the squared norms are summed over those pixels and all channels. 1 = circularly
    symmetric, about rings / pixels for white noise, ~0 = no radial structure. Dimensionless; NaN for a map that is
    zero (or non-finite) on the disc, or a centre on the border (R = 0).
    """
    g = _as_map(grad_map)  # (C, H, W)
    _, h, w = g.shape
    ci, cj = int(center[-2]), int(center[-1])
    if not (0 <= ci < h and 0 <= cj < w):
        raise GenprocError(f"center ({ci}, {cj}) is outside the {h}x{w} gradient map")
    rmax = min(ci, cj, h - 1 - ci, w - 1 - cj)
    if rmax < 1:
        return float("nan")
    ii, jj = np.indices((h, w))
    ring = np.rint(np.hypot(ii - ci, jj - cj)).astype(np.int64)  # (H, W) rounded distance (no ties: sqrt(int) != n + 1/2)
    inside = (ring <= rmax) & (ring >= 1)  # the disc without its centre pixel
    ring_in, vals = ring[inside], g[:, inside]  # (Q,), (C, Q): the disc's pixels
    counts = np.maximum(np.bincount(ring_in, minlength=rmax + 1), 1)  # (R + 1,) pixels per ring (ring 0 unused)
    means = np.stack([np.bincount(ring_in, weights=v, minlength=rmax + 1) for v in vals]) / counts  # (C, R + 1)
    energy = float((vals ** 2).sum())
    if not np.isfinite(energy) or energy <= 0:
        return float("nan")
    return float(1.0 - ((vals - means[:, ring_in]) ** 2).sum() / energy)


def level_for_fraction(frac: float, num_levels: int) -> int:
    """k = round(frac K) (halves up), clipped to 1..K (K = ``num_levels``)."""
    if not 0 < frac <= 1:
        raise GenprocError(f"fractions of the chain must be in (0, 1], got {frac}")
    return int(min(num_levels, max(1, math.floor(frac * num_levels + 0.5))))


def default_pixels(c: int, h: int, w: int) -> list[Pixel]:
    """The center pixel (0, H//2, W//2) and an off-center one (0, H//4, W//4) of channel 0."""
    return [(0, h // 2, w // 2), (0, h // 4, w // 4)]


def compute_gradients(run: Any, *, n: int = 16, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      pixels: Sequence[Pixel] | None = None, masses: Sequence[float] = MASSES, batch_size: int = 64,
                      keep_maps: bool = True, quantity: str = "step", exclude_centre: bool = True) -> dict[str, Any]:
    """Input gradients, locality radii and circular symmetry of ``run`` at each fraction of its chain, on its first
    ``n`` training images (``quantity`` and ``exclude_centre``: see the module docstring).

    Returns {"num_levels", "image_size" (H = W, or [H, W] when H != W), "pixels": [P], "fractions": [F], "levels": [F], "masses": [M],
    "measures": {"r50": (F, P, N) pixels, "r90": (F, P, N) pixels (one per mass, :func:`mass_key`), "symmetry": (F, P, N)
    in [0, 1]}, "means": {name: mean over fractions, pixels and images (NaN ignored; None if all NaN)}}; with
    ``keep_maps`` also "maps": (F, P, C, H, W) the first image's gradient maps and "states": (F, C, H, W) its states as
    images in [0, 1].
    """
    if n < 1:
        raise GenprocError(f"--n must be >= 1, got {n}")
    if batch_size < 1:
        raise GenprocError(f"--batch-size must be >= 1, got {batch_size}")
    if not fractions:
        raise GenprocError("give at least one fraction of the chain, e.g. 0.9,0.5,0.1,0.02")
    masses = [float(m) for m in masses]
    keys = [mass_key(m) for m in masses]
    if not masses or len(set(keys)) != len(keys):
        raise GenprocError(f"give distinct locality masses in (0, 1], got {masses}")
    data = run.data
    x0 = data.get_batch(torch.arange(min(n, len(data)))).float()
    nimg, c, h, w = x0.shape
    pixels = [tuple(int(v) for v in p) for p in (pixels or default_pixels(c, h, w))]
    levels = [level_for_fraction(float(f), run.process.num_levels) for f in fractions]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    measures = {key: np.zeros((len(levels), len(pixels), nimg)) for key in [*keys, SYMMETRY, CENTRE]}
    maps, states = [], []
    for fi, k in enumerate(levels):
        for b0 in range(0, nimg, batch_size):
            xb, eb = x0[b0:b0 + batch_size].to(run.device), eps[b0:b0 + batch_size].to(run.device)
            state = run.process.forward_marginal(xb, torch.full((xb.shape[0],), k, dtype=torch.long), eb)
            g = input_gradients(run, state, k, pixels, quantity)  # (P, B, C, H, W)
            for pi, p in enumerate(pixels):
                for b, gm in enumerate(g[pi], start=b0):
                    for key, r in zip(keys, locality_radii(gm, p[1:], masses, exclude_centre)):
                        measures[key][fi, pi, b] = r
                    measures[SYMMETRY][fi, pi, b] = circular_symmetry(gm, p[1:])
                    measures[CENTRE][fi, pi, b] = centre_share(gm, p[1:])
            if keep_maps and b0 == 0:
                maps.append(g[:, 0])
                states.append(run.process.to_image(state[:1]).cpu()[0])
    means = {key: float(np.nanmean(v)) if np.isfinite(v).any() else None for key, v in measures.items()}
    out = {"quantity": quantity, "exclude_centre": bool(exclude_centre),
           "num_levels": int(run.process.num_levels), "image_size": int(h) if h == w else [int(h), int(w)], "pixels": pixels,
           "fractions": [float(f) for f in fractions], "levels": levels, "masses": masses, "measures": measures, "means": means}
    if keep_maps:
        out.update(maps=torch.stack(maps).numpy(), states=torch.stack(states).numpy())
    return out


def _stats(r: np.ndarray) -> dict[str, Any]:
    """{"mean", "std", "n"} of the finite values of ``r`` (mean and std None if there are none)."""
    finite = r[np.isfinite(r)]
    return {"mean": float(finite.mean()) if finite.size else None, "std": float(finite.std()) if finite.size else None,
            "n": int(finite.size)}


def _per_image_mean(v: np.ndarray) -> np.ndarray:
    """(..., N) -> (N',): each image's mean of its finite values over the leading axes (images with none dropped)."""
    v = v.reshape(-1, v.shape[-1])
    ok = np.isfinite(v)
    cnt = ok.sum(0)
    return np.where(ok, v, 0.0).sum(0)[cnt > 0] / cnt[cnt > 0]


def locality_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fraction: level, and for each measure (r50, r90 in pixels; symmetry in [0, 1]) its mean ± std over images and
    pixels, and per pixel ("c,i,j") its mean ± std over images and the per-image "values" (N,)."""
    ms = res["measures"]
    return [{"fraction": f, "level": k, **{key: _stats(v[fi].ravel()) for key, v in ms.items()},
             "per_pixel": {",".join(map(str, p)): {key: {**_stats(v[fi, pi]), "values": v[fi, pi]} for key, v in ms.items()}
                           for pi, p in enumerate(res["pixels"])}}
            for fi, (f, k) in enumerate(zip(res["fractions"], res["levels"]))]


def gradient_locality_summary(run: Any, n: int = 8, seed: int = 0,
                              fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, Any]:
    """A cheap summary for ``genproc compare``: for each measure m of :func:`compute_gradients` (r50 and r90: radii in
    pixels holding 50% / 90% of the |gradient| mass; symmetry: circular symmetry in [0, 1]), "grad_<m>": its mean over
    fractions, the two default pixels and ``n`` images, "grad_<m>_std": the std over images of each image's mean, and
    "grad_<m>_by_fraction": {fraction: mean}; None where no map was non-zero. One forward and two backward passes of n
    images per fraction."""
    res = compute_gradients(run, n=n, seed=seed, fractions=fractions, keep_maps=False)
    out: dict[str, Any] = {}
    for key, v in res["measures"].items():
        per_image = _per_image_mean(v)
        out |= {f"grad_{key}": res["means"][key], f"grad_{key}_std": float(np.std(per_image)) if per_image.size else None,
                f"grad_{key}_by_fraction": {str(f): _stats(v[fi].ravel())["mean"] for fi, f in enumerate(res["fractions"])}}
    return out


# ------------------------------------------------------------------ figure and analysis


def fmt_mean_std(s: dict[str, Any], fmt: str) -> str:
    """'mean±std' of a :func:`_stats` dict in ``fmt``, or '–'."""
    return "–" if s["mean"] is None else f"{s['mean']:{fmt}}±{s['std']:{fmt}}"


def plot_gradients(result: dict[str, Any], path: str | Path) -> Path:
    """Gradient maps of the first image at the marked pixel: a row per run, a column per fraction of the chain.

    Each map is divided by its largest |gradient| off the output pixel (the pixel's own, identity-like value may then
    saturate) and drawn in symlog colours, linear within ``LINTHRESH_REL`` (one shared colour bar); the output pixel is
    marked by a square, the first image's radii by circles (r50 dotted, r90 dashed); titles give r50, r90 (pixels), the
    circular symmetry and the centre share, mean ± std over images and pixels."""
    from matplotlib import cm
    from matplotlib.colors import SymLogNorm
    from matplotlib.patches import Circle, Rectangle

    labs = list(result["locality"])
    ncol = max(len(result["locality"][lab]["fractions"]) for lab in labs)
    fig, axes = new_figure(len(labs), ncol, figsize=(2.5 * ncol + 1, 3.0 * len(labs)), squeeze=False, layout="constrained")
    norm = SymLogNorm(linthresh=LINTHRESH_REL, vmin=-1.0, vmax=1.0, base=10)
    for row, lab in enumerate(labs):
        res = result["locality"][lab]
        pc, pi, pj = res["pixels"][0]
        rkeys = [mass_key(m) for m in res["masses"]]
        for col in range(ncol):
            ax = axes[row, col]
            ax.set_xticks([]), ax.set_yticks([])
            if col >= len(res["fractions"]):
                ax.axis("off")
                continue
            g = np.asarray(res["maps"][col][0][pc], dtype=np.float64)  # (H, W): first pixel, input channel = output channel
            off = np.abs(g).copy()
            off[pi, pj] = 0.0  # scaled by the largest off-centre |gradient|: the centre (identity-like) may saturate
            vmax = float(off.max())
            ax.imshow(g / (vmax or 1.0), cmap="RdBu_r", norm=norm)
            ax.add_patch(Rectangle((pj - 0.5, pi - 0.5), 1, 1, fill=False, edgecolor="lime", lw=1.5))
            for key, ls in zip(rkeys, (":", "--", "-.", "-")):
                r = res["measures"][key][col][0][0]
                if np.isfinite(r):
                    ax.add_patch(Circle((pj, pi), r, fill=False, edgecolor="black", ls=ls, lw=1))
            table = res["table"][col]
            radii = ", ".join(f"{key} {fmt_mean_std(table[key], '.1f')}" for key in rkeys)
            ax.set_title(f"{lab} k={res['levels'][col]} ({res['fractions'][col]:g}), off-centre max {vmax:.1e}\n{radii} px\n"
                         f"symmetry {fmt_mean_std(table[SYMMETRY], '.2f')}, centre "
                         f"{fmt_mean_std(table[CENTRE], '.2f')}", fontsize=8)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap="RdBu_r"), ax=axes.ravel().tolist(), shrink=0.8,
                 label=f"gradient / max off-centre |gradient| (symlog, linear within ±{LINTHRESH_REL:g})")
    return save_figure(fig, path)


def analyze_gradients(runs: Sequence[Any], out: str | Path, *, n: int = 16, seed: int = 0,
                      fractions: Sequence[float] = DEFAULT_FRACTIONS, pixel: Pixel | None = None,
                      batch_size: int = 64, quantity: str = "step", exclude_centre: bool = True) -> dict[str, Any]:
    """Write ``out/gradients.png`` and ``out/gradients.json``; returns the JSON payload.

    Per run and fraction, the locality radii r50 and r90 (pixels) and the circular symmetry ([0, 1]), mean ± std over
    ``n`` images and pixels, and per pixel, at ``pixel`` (default: the center; the one drawn in the figure) and the
    default off-center pixel; ``summary`` holds each run's {"r50", "r90", "symmetry"} means over fractions, pixels and
    images (the numbers ``genproc compare`` can show).
    """
    if not runs:
        raise GenprocError("give at least one run directory (written by 'genproc train')")
    locality: dict[str, Any] = {}
    for lab, run in zip(unique_labels(runs), runs):
        pixels = default_pixels(*run.image_shape)
        if pixel is not None:
            pixels = [tuple(pixel), *[p for p in pixels[1:] if p != tuple(pixel)]]
        res = compute_gradients(run, n=n, seed=seed, fractions=fractions, pixels=pixels, batch_size=batch_size,
                                quantity=quantity, exclude_centre=exclude_centre)
        res["table"] = locality_table(res)
        locality[lab] = res
    out = Path(out)
    plot_gradients({"locality": locality}, out / "gradients.png")
    payload = {"analysis": "gradients",
               "settings": {"n": n, "seed": seed, "fractions": list(fractions), "masses": list(MASSES),
                            "linthresh_rel": LINTHRESH_REL,
                            "state": "forward-process state u_k = forward_marginal(x0, k, eps) of the first n training images",
                            "quantity": quantity + (": the noise-free reverse step of the run's sampler from u_k to level k - 1"
                                                    if quantity == "step" else ": the raw network output net(u_k, k)"),
                            "exclude_centre": exclude_centre,
                            "levels": "k = round(fraction * K), K = the process's number of levels (IHDM K, DDPM T); "
                                      "1 = prior end",
                            "radius": "r50, r90: smallest Euclidean radius (pixels) holding 0.5, 0.9 of the |gradient| "
                                      "mass, summed over input channels"
                                      + (", the output pixel's own position left out" if exclude_centre else ""),
                            "symmetry": "1 - ||g - g_rad||^2 / ||g||^2 over the largest disc around the output pixel that "
                                        "fits in the image, g the signed map per input channel, g_rad its mean over rings of "
                                        "equal rounded distance (1 = circularly symmetric, ~0 = no radial structure)",
                            "centre_share": "|gradient| at the output pixel's own position / the map's total |gradient| "
                                            "(all input channels)"},
               "runs": run_info(runs),
               "locality": {lab: {k: r[k] for k in ("num_levels", "image_size", "pixels", "fractions", "levels", "masses",
                                                     "means")} | {"by_fraction": r["table"]} for lab, r in locality.items()},
               "summary": {lab: r["means"] for lab, r in locality.items()},
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
