"""Shared plumbing of the analyses: labels, loading runs, a reverse chain with explicit prior state and noise,
JSON/figure writing.

Every analysis module ``genproc/analysis/<what>.py`` is pure library code of one shape:

- ``compute_*(...)`` functions that return arrays / dicts (no files);
- ``plot_*(result, path)`` that draws one matplotlib figure (Agg backend) to ``path``;
- ``analyze_<what>(runs, out, **options) -> dict`` that runs the analysis on one or more loaded runs
  (:func:`genproc.load` or :func:`load_runs`), writes ``out/<what>*.png`` and ``out/<what>.json`` (via
  :func:`write_payload`) and returns the JSON payload.

The ``genproc analyze <what>`` commands that call them live in :mod:`genproc.cli_analyze`. Nothing here asks which
process a run has: labels come from ``run.process_name`` and everything else from the process contract
(:class:`genproc.processes.base.ForwardProcess`).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.errors import GenprocError


def label(run: Any) -> str:
    """The run's process name (``run.process_name``: its canonical registry name) for figures and JSON keys."""
    return run.process_name


def unique_labels(runs: Sequence[Any]) -> list[str]:
    """Labels of ``runs``; repeated ones get a suffix with the run dir name (``ihdm:runA``)."""
    labs = [label(r) for r in runs]
    return [f"{lab}:{r.run_dir.name}" if labs.count(lab) > 1 else lab for lab, r in zip(labs, runs)]


def load_runs(run_dirs: Sequence[str | Path], checkpoint: str | None = None, data_root: str | None = None,
              sampling: Mapping[str, Any] | Sequence[str] = ()) -> list[Any]:
    """Load each run (EMA weights); each ``sampling`` setting goes to the runs whose process has the key
    (e.g. ``sampler="ddim"`` to DDPM only, :func:`genproc.run.with_sampling_where_known`); one that fits no run is
    an error. ``sampling``: a dict or ``["key=value", ...]`` strings."""
    from genproc.run import load, with_sampling_where_known

    if not run_dirs:
        raise GenprocError("give at least one run directory (written by 'genproc train')")
    return with_sampling_where_known([load(d, checkpoint=checkpoint, data_root=data_root) for d in run_dirs], sampling)


def slerp(a: torch.Tensor, b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of same-shape tensors (per leading-dim sample, over the remaining dims).

    lam = 0 gives ``a``, 1 gives ``b``; for vectors of equal norm every point keeps that norm.
    Falls back to linear interpolation when a and b are (anti)parallel within 1e-7.
    """
    lam = torch.as_tensor(lam, dtype=a.dtype, device=a.device)
    fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    s = torch.sin(theta)
    lam_ = lam.reshape(-1) if lam.ndim else lam.expand(fa.shape[0])
    small = s.abs() < 1e-7
    wa = torch.where(small, 1 - lam_, torch.sin((1 - lam_) * theta) / torch.where(small, torch.ones_like(s), s))
    wb = torch.where(small, lam_, torch.sin(lam_ * theta) / torch.where(small, torch.ones_like(s), s))
    return (wa[:, None] * fa + wb[:, None] * fb).reshape(a.shape)


@torch.no_grad()
def reverse_chain(run: Any, x: torch.Tensor, noise: Callable[[int], torch.Tensor], *, capture: bool = False,
                  batch_size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the process's reverse chain from the prior state ``x`` (N, C, H, W) with the given noise.

    ``noise(j)`` returns the (N, C, H, W) standard-normal noise of the chain's j-th draw (one per step for the
    one-call samplers of ``run.sampler``); this is what interpolation and shared-noise studies control.
    Returns the final images in [0, 1] and, if ``capture``, the list of every state as images
    (prior first). Batched by ``batch_size`` over N (results do not depend on it).
    """
    finals, trajs = [], []
    for b0 in range(0, x.shape[0], batch_size):
        final, frames = _chain_batch(run, x[b0:b0 + batch_size], lambda j, b0=b0: noise(j)[b0:b0 + batch_size], capture)
        finals.append(final)
        if capture:
            trajs.append(torch.stack(frames))
    traj = list(torch.cat(trajs, dim=1)) if capture else []
    return torch.cat(finals), traj


def _chain_batch(run: Any, x: torch.Tensor, noise: Callable[[int], torch.Tensor],
                 capture: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One batch of :func:`reverse_chain`: (final images (B, C, H, W), [every state as images] if ``capture``), on CPU."""
    from genproc.engine.sampler import chain_with_frames

    final, frames, _ = chain_with_frames(run.process, run.sampler, run.net, x, noise, 1 if capture else 0, device=run.device,
                                         precision=run.recipe.train.precision)
    return final, frames


def jsonable(obj: Any) -> Any:
    """numpy / torch values to plain Python for ``json.dumps``; NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def run_info(runs: Sequence[Any]) -> dict[str, Any]:
    """Provenance of each run for the JSON: dir, checkpoint step, recipe name, image shape (C, H, W), process config
    (every field, as trained or changed by sampling-time settings) and the sampling-time settings changed since training."""
    return {lab: {"run_dir": str(r.run_dir), "checkpoint_step": r.step, "recipe": r.recipe.name,
                  "image_shape": list(r.image_shape), "process": r.recipe.to_dict()["process"],
                  "sampling_overrides": dict(r.sampling)}
            for lab, r in zip(unique_labels(runs), runs)}


def write_json(out: str | Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``out/<name>.json`` with genproc version and creation time added; returns the path."""
    from genproc import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "genproc_version": __version__,
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = out / f"{name}.json"
    path.write_text(json.dumps(jsonable(payload), indent=1))
    return path


def write_payload(out: str | Path, name: str, payload: dict[str, Any], *, list_json: bool = False) -> dict[str, Any]:
    """End of an ``analyze_<what>``: write ``out/<name>.json`` (:func:`write_json`) and return ``payload``; with
    ``list_json`` the returned payload also names the file in ``payload["files"]["json"]`` (the file itself does not)."""
    path = write_json(out, name, payload)
    if list_json:
        payload["files"]["json"] = path.name
    return payload


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save and close ``fig`` (dpi 120, tight)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def require_positive(name: str, value: int) -> None:
    """``name must be >= 1, got value`` unless ``value`` >= 1 (``name``: the option, e.g. ``--batch-size``)."""
    if value < 1:
        raise GenprocError(f"{name} must be >= 1, got {value}")
