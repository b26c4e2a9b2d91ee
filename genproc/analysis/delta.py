"""The sampling-noise sweep of IHDM (Sec. 4 "The effect of noise δ", Fig. 6; App. C.1, Fig. 11).

For a run whose process has the sampling-time key ``delta`` (IHDM: heat or blur), δ is the std of the reverse-step
noise p(u_{k-1}|u_k) = N(μ, δ² I) and of the KDE prior; it can be changed after training
(``run.with_sampling(delta=d)``). For each δ in a list this draws a sample grid with one seed (the same prior images
and the same noise draws, only scaled by δ, so the effect of δ is what changes: δ = 0 sharpens the blurred prior into
a smooth shape, more detail appears as δ grows past σ, and too large a δ gives noise), the FID of ``n`` samples and
the NLL upper bound in bits/dim with its breakdown (via :func:`genproc.metrics.evaluate` on
``run.with_sampling(delta=d)``). The training noise σ that δ is compared with is the process config's field
``sigma`` (None, and no comparison, for a process without one). The paper's finding to compare with (CIFAR-10,
σ = 0.01): the NLL is lowest near δ = σ, FID lowest a bit above, near δ ≈ 1.25–1.33 σ (0.0125–0.01325). At δ = 0
the NLL bound is infinite (the Gaussian reverse steps collapse to point masses), so it is not measured there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.analysis.common import new_figure, run_info, save_figure, unique_labels, write_payload
from genproc.errors import GenprocError

DEFAULT_DELTAS = (0.0, 0.005, 0.01, 0.0125, 0.015, 0.02)
SWEEP_METRICS = ("fid", "kid", "nll")
NLL_AT_ZERO = ("not measured at delta = 0: the bound is infinite there (p(u_{k-1}|u_k) = N(mu, delta^2 I) and the "
               "KDE prior collapse to point masses, so -log p = +inf for almost every image)")
PAPER = {
    "source": "Sec. 4 'The effect of noise delta' (Fig. 6) and App. C.1 (Fig. 11, CIFAR-10, sigma = 0.01)",
    "nll_argmin_over_sigma": [1.0, 1.0],
    "fid_argmin_over_sigma": [1.25, 1.33],
    "claim": "the NLL is lowest near delta = sigma; FID is lowest a bit above sigma, near delta = 1.25-1.33 sigma "
             "(0.0125-0.01325); detail grows past delta = sigma and images turn noisy beyond about 0.013",
}


def parse_deltas(spec: str | Sequence[float]) -> list[float]:
    """'0,0.01,0.0125' (or numbers) -> sorted distinct floats >= 0; a bad entry is a one-line GenprocError."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for s in items:
        if s == "":
            continue
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise GenprocError(f"--deltas: '{s}' is not a number (expected a comma-separated list like 0,0.01,0.0125)") from None
        if not math.isfinite(v) or v < 0:
            raise GenprocError(f"--deltas: every delta must be a finite number >= 0, got {s}")
        out.append(v)
    if not out:
        raise GenprocError("--deltas: no values given (expected a comma-separated list like 0,0.01,0.0125)")
    return sorted(set(out))


def parse_sweep_metrics(spec: str | Sequence[str]) -> list[str]:
    """'fid,nll' -> ['fid', 'nll']; only fid, kid and nll are swept."""
    from genproc.metrics.evaluate import parse_metrics

    names = parse_metrics(spec)
    bad = [m for m in names if m not in SWEEP_METRICS]
    if bad:
        raise GenprocError(f"--metrics: {', '.join(bad)} not available in the delta sweep (use: {', '.join(SWEEP_METRICS)})")
    return names


def has_delta(run: Any) -> bool:
    """Whether the run's process has the sampling noise δ as a sampling-time key (heat and blur do; DDPM does not)."""
    return "delta" in type(run.recipe.process).SAMPLING_KEYS


def training_sigma(run: Any) -> float | None:
    """The training noise σ the paper relates δ to: the process config's field ``sigma`` (None without one)."""
    sigma = dataclasses.asdict(run.recipe.process).get("sigma")
    return None if sigma is None else float(sigma)


def argmin_delta(deltas: Sequence[float], values: Sequence[float | None]) -> float | None:
    """The δ with the smallest finite value (the first on ties); None when no value is finite."""
    best = [(v, d) for d, v in zip(deltas, values) if v is not None and math.isfinite(v)]
    return min(best, key=lambda t: t[0])[1] if best else None


def agrees_with_paper(deltas: Sequence[float], argmin: float | None, sigma: float | None, lo: float,
                      hi: float) -> bool | None:
    """Whether ``argmin`` is what the paper's range [lo σ, hi σ] predicts on this δ grid: inside the range, or the
    grid point nearest to one of its ends. None when it cannot be judged (no argmin, no σ or σ = 0)."""
    if argmin is None or sigma is None or sigma <= 0:
        return None
    if lo * sigma - 1e-12 <= argmin <= hi * sigma + 1e-12:
        return True
    nearest = {min(deltas, key=lambda d: abs(d - t * sigma)) for t in (lo, hi)}
    return argmin in nearest


@torch.no_grad()
def compute_delta_grids(run: Any, deltas: Sequence[float], n: int = 8, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """(len(deltas), n, C, H, W) samples in [0, 1], one set per δ, all with seed ``seed`` (same prior images and noise)."""
    return torch.stack([run.with_sampling(delta=d).sample(n, seed=seed, batch_size=batch_size, capture_every=-1).images
                        for d in deltas])


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """The parts of an evaluate() record worth keeping per δ (value, uncertainty, NLL breakdown, the sampling settings
    it ran with, provenance)."""
    keys = ("value", "std", "unit", "n_samples", "extractor", "reference", "std_error_bits_per_dim", "nats_per_image",
            "terms_nats", "terms_bits_per_dim", "term_labels", "dequantization_bits_per_dim", "convention", "sampling",
            "json")
    return {k: rec[k] for k in keys if k in rec}


def compute_delta_sweep(run: Any, deltas: Sequence[float], metrics: Sequence[str], *, n: int = 500, seed: int = 0,
                        n_ref: int | None = None, batch_size: int = 64, inception_weights: str | Path | None = None,
                        extractor: str | None = None, cache_dir: str | Path | None = None,
                        log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Each metric at each δ for one run: ``{"values": {metric: [value or None per δ]}, "records": {metric: [...]},
    "argmin": {metric: δ}, "notes": [...]}``. FID/KID from ``n`` samples, NLL (bits/dim) on the first ``n`` test
    images; NLL is skipped at δ = 0 (see NLL_AT_ZERO), and an error from one evaluation is recorded, not raised."""
    from genproc.metrics import evaluate
    from genproc.metrics.inception import INCEPTION

    values: dict[str, list[float | None]] = {m: [] for m in metrics}
    records: dict[str, list[dict[str, Any] | None]] = {m: [] for m in metrics}
    notes: list[str] = []
    for d in deltas:
        todo = [m for m in metrics if not (m == "nll" and d == 0)]
        if "nll" in metrics and d == 0:
            values["nll"].append(None)
            records["nll"].append({"skipped": NLL_AT_ZERO})
        fidelity, nll = [m for m in todo if m != "nll"], [m for m in todo if m == "nll"]
        for group in (fidelity, nll):
            if not group:
                continue
            log(f"delta {d:g}: {','.join(group)}")
            try:
                recs = evaluate(run.with_sampling(delta=d), group, n=n, n_ref=n_ref, seed=seed, batch_size=batch_size,
                                inception_weights=inception_weights, extractor=extractor or INCEPTION, cache_dir=cache_dir,
                                log=log)
            except GenprocError as e:
                if group is fidelity:
                    raise  # weights, data: the same at every δ
                notes.append(f"nll at delta {d:g}: {e}")
                values["nll"].append(None)
                records["nll"].append({"error": str(e)})
                continue
            by = {r["metric"]: r for r in recs}
            for m in group:
                v = float(by[m]["value"])
                values[m].append(v if math.isfinite(v) else None)
                records[m].append(_slim(by[m]))
    return {"values": values, "records": records, "argmin": {m: argmin_delta(deltas, values[m]) for m in metrics},
            "notes": notes}


def plot_delta_metrics(result: dict[str, Any], path: str | Path) -> Path:
    """Fig. 11: FID (left axis, solid) and NLL bits/dim (right axis, dashed) vs δ, one colour per run, σ marked."""
    fig, ax = new_figure(figsize=(6.5, 4))
    deltas = result["deltas"]
    left = next((m for m in ("fid", "kid") if m in result["metrics"]), None)
    right = ax.twinx() if "nll" in result["metrics"] else None
    handles = []
    for i, (lab, r) in enumerate(result["runs_swept"].items()):
        colour = f"C{i}"
        for m, axis, style in ((left, ax, "-o"), ("nll" if right is not None else None, right, "--s")):
            if m is None:
                continue
            xs = [d for d, v in zip(deltas, r["values"][m]) if v is not None]
            ys = [v for v in r["values"][m] if v is not None]
            (h,) = axis.plot(xs, ys, style, color=colour, ms=4, label=f"{lab} {m.upper()}")
            handles.append(h)
            if r["argmin"][m] is not None:
                axis.plot([r["argmin"][m]], [min(ys)], "*", color=colour, ms=12, mec="k")
        if r["sigma"]:
            ax.axvline(r["sigma"], color=colour, ls=":", lw=1)
    ax.set_xlabel("sampling noise δ (dotted: training noise σ; stars: minima)")
    if left is not None:
        ax.set_ylabel(f"{left.upper()} (solid)")
    if right is not None:
        right.set_ylabel("NLL bound, bits/dim (dashed)")
    ax.set_title("Sampling noise δ vs sample quality and likelihood (cf. Fig. 11)", fontsize=9)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper center")
    return save_figure(fig, path)


def plot_delta_grids(grids: dict[str, torch.Tensor], deltas: Sequence[float], path: str | Path,
                     sigmas: dict[str, float] | None = None) -> Path:
    """Fig. 6: one sample grid per δ (columns) and run (rows), same seed throughout.
    grids: label -> (len(deltas), n, C, H, W) in [0, 1]."""
    from torchvision.utils import make_grid

    labs = list(grids)
    fig, axes = new_figure(len(labs), len(deltas), figsize=(1.8 * len(deltas) + 0.6, 1.9 * len(labs) + 0.4), squeeze=False)
    for i, lab in enumerate(labs):
        g = grids[lab]
        nrow = max(1, math.ceil(math.sqrt(g.shape[1])))
        for j, d in enumerate(deltas):
            img = make_grid(g[j].float().clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0).permute(1, 2, 0).numpy()
            ax = axes[i][j]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            sig = (sigmas or {}).get(lab)
            ax.set_title(f"δ = {d:g}" + (f" ({d / sig:.3g}σ)" if sig else ""), fontsize=8)
            if j == 0:
                ax.set_ylabel(lab, fontsize=8)
    fig.suptitle("Same seed, growing sampling noise δ (cf. Fig. 6)", fontsize=9)
    return save_figure(fig, path)


def analyze_delta(runs: Sequence[Any], out: str | Path, *, deltas: Sequence[float] = DEFAULT_DELTAS, n: int = 500,
                  metrics: str | Sequence[str] = "fid,nll", seed: int = 0, inception_weights: str | Path | None = None,
                  extractor: str | None = None, cache_dir: str | Path | None = None, n_ref: int | None = None,
                  grid: int = 8, batch_size: int = 64, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The δ sweep for every run among ``runs`` whose process has δ (:func:`has_delta`; the others, e.g. DDPM, are
    skipped with a note; none with δ is an error).

    Per run and δ: ``grid`` samples (seed ``seed``), FID/KID of ``n`` samples against the test split (first ``n_ref``),
    NLL bits/dim on the first ``n`` test images. Writes ``out/delta_samples.png``, ``out/delta_metrics.png`` and
    ``out/delta.json`` (values, NLL breakdowns, argmin δ per metric and the paper's claim); returns the payload.
    Each evaluation is also saved by :func:`genproc.metrics.evaluate` in ``<run_dir>/eval/`` (its path is in the records).
    """
    deltas = parse_deltas(deltas)
    metrics = parse_sweep_metrics(metrics)
    for name, v in (("--n", n), ("--grid", grid), ("--batch-size", batch_size), ("--n-ref", 1 if n_ref is None else n_ref)):
        if v < 1:
            raise GenprocError(f"{name} must be >= 1, got {v}")
    labels = unique_labels(runs)
    swept = [(lab, r) for lab, r in zip(labels, runs) if has_delta(r)]
    skipped = {lab: f"process '{r.process_name}' has no sampling noise delta"
               for lab, r in zip(labels, runs) if not has_delta(r)}
    if not swept:
        given = ", ".join(f"{lab} ({r.run_dir})" for lab, r in zip(labels, runs))
        raise GenprocError(f"the delta sweep needs a run whose process has the sampling-time key 'delta' (IHDM: heat or "
                           f"blur); {given} has none (its reverse noise is fixed by its schedule)")
    for lab, why in skipped.items():
        log(f"delta: skipping {lab}: {why}")
    if any(m != "nll" for m in metrics):
        from genproc.metrics.inception import INCEPTION, resolve_weights

        resolve_weights(extractor or INCEPTION, inception_weights)  # fail before any sampling
    out = Path(out)
    results: dict[str, dict[str, Any]] = {}
    grids: dict[str, torch.Tensor] = {}
    for lab, run in swept:
        sigma = training_sigma(run)
        log(f"delta: {lab}: sample grids at delta = {', '.join(f'{d:g}' for d in deltas)}")
        grids[lab] = compute_delta_grids(run, deltas, grid, seed, batch_size)
        res = compute_delta_sweep(run, deltas, metrics, n=n, seed=seed, n_ref=n_ref, batch_size=batch_size,
                                  inception_weights=inception_weights, extractor=extractor, cache_dir=cache_dir, log=log)
        res["sigma"] = sigma
        res["trained_delta"] = float(run.process.sampling_settings()["delta"])
        res["argmin_over_sigma"] = {m: (a / sigma if a is not None and sigma else None) for m, a in res["argmin"].items()}
        res["agrees_with_paper"] = {m: agrees_with_paper(deltas, res["argmin"][m], sigma, *PAPER[f"{m}_argmin_over_sigma"])
                                    for m in ("fid", "nll") if m in metrics}
        results[lab] = res
    files = {"samples": plot_delta_grids(grids, deltas, out / "delta_samples.png",
                                         {lab: r["sigma"] for lab, r in results.items()}).name,
             "metrics": plot_delta_metrics({"deltas": deltas, "metrics": metrics, "runs_swept": results},
                                           out / "delta_metrics.png").name}
    payload = {
        "analysis": "delta",
        "paper": PAPER,
        "settings": {"deltas": deltas, "metrics": metrics, "n": n, "n_ref": n_ref, "seed": seed, "grid": grid,
                     "extractor": extractor, "nll_at_zero": NLL_AT_ZERO if "nll" in metrics and 0.0 in deltas else None,
                     "nll_unit": "bits/dim (upper bound, on the first n test images)"},
        "runs": run_info([r for _, r in swept]),
        "skipped": skipped,
        "results": results,
        "files": files,
    }
    return write_payload(out, "delta", payload, list_json=True)
