"""Shared plumbing of the analyses: labels, a reverse chain with explicit prior state and noise,
JSON/figure writing.

Every analysis module ``genproc/analysis/<what>.py`` follows one shape:

- ``compute_*(...)`` library functions that return arrays / dicts (no files);
- ``plot_*(result, path)`` that draws one matplotlib figure (Agg backend) to ``path``;
- ``analyze_<what>(runs, out, **options) -> dict`` that runs the analysis on one or more loaded runs
  (:func:`genproc.load`), writes ``out/<what>*.png`` and ``out/<what>.json`` (via :func:`write_payload`) and
  returns the JSON payload;
- ``COMMANDS = {"<what>": typer_function}``: the ``genproc analyze <what>`` commands, collected by
  ``genproc/cli_analyze.py``; their shared options come from :func:`run_dirs_argument`, :func:`out_option`,
  :func:`checkpoint_option`, :func:`data_root_option`, :func:`sample_set_option` and :func:`batch_size_option`, and
  their bodies call :func:`run_analysis`.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch

from genproc.errors import GenprocError

T = TypeVar("T")
PROCESS_LABELS = {"heat": "ihdm", "ddpm": "ddpm", "blur": "blur"}  # process registry name -> label in figures


def label(run: Any) -> str:
    """'ihdm' / 'ddpm' / 'blur' (the process) for figures and JSON keys."""
    name = run.recipe.to_dict()["process"]["name"]
    return PROCESS_LABELS.get(name, name)


def unique_labels(runs: Sequence[Any]) -> list[str]:
    """Labels of ``runs``; repeated ones get a suffix with the run dir name (``ihdm:runA``)."""
    labs = [label(r) for r in runs]
    return [f"{lab}:{r.run_dir.name}" if labs.count(lab) > 1 else lab for lab, r in zip(labs, runs)]


def load_runs(run_dirs: Sequence[str | Path], checkpoint: str | None = None, data_root: str | None = None,
              sampling: Sequence[str] = ()) -> list[Any]:
    """Load each run (EMA weights); ``sampling`` overrides go to the runs whose process has the key
    (e.g. ``process.sampler=ddim`` to DDPM only); one that fits no run is an error."""
    from genproc.compare import with_sample_overrides
    from genproc.run import load

    if not run_dirs:
        raise GenprocError("give at least one run directory (written by 'genproc train')")
    return with_sample_overrides([load(d, checkpoint, data_root) for d in run_dirs], sampling)


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
def reverse_chain(run: Any, x: torch.Tensor, noise: Callable[[int], torch.Tensor], *, delta: float | None = None,
                  capture: bool = False, batch_size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the process's reverse chain from the prior state ``x`` (N, C, H, W) with the given noise.

    ``noise(j)`` returns the (N, C, H, W) standard-normal noise of step j (0-based over
    ``run.process.sampling_levels()``); this is what interpolation and shared-noise studies control.
    Returns the final images in [0, 1] and, if ``capture``, the list of every state as images
    (prior first). Batched by ``batch_size`` over N (results do not depend on it).
    """
    from genproc.engine.sampler import run_chain

    process, device = run.process, run.device
    finals, trajs = [], []
    for b0 in range(0, x.shape[0], batch_size):
        xb = x[b0:b0 + batch_size].to(device)
        frames = [process.to_image(xb).cpu()] if capture else []
        xb = run_chain(process, run.net, xb, lambda j: noise(j)[b0:b0 + batch_size], delta=delta, device=device,
                       precision=run.recipe.train.precision,
                       on_step=(lambda j, k_next, state: frames.append(process.to_image(state).cpu())) if capture else None)
        finals.append(process.to_image(xb).cpu())
        if capture:
            trajs.append(torch.stack(frames))
    traj = list(torch.cat(trajs, dim=1)) if capture else []
    return torch.cat(finals), traj


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
    """Provenance of each run for the JSON: dir, checkpoint step, recipe name, process config, sampling overrides."""
    return {lab: {"run_dir": str(r.run_dir), "checkpoint_step": r.step, "recipe": r.recipe.name,
                  "process": r.recipe.to_dict()["process"], "sampling_overrides": list(r.sampling)}
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


def fail(e: Exception) -> NoReturn:
    """For the analysis commands: print a GenprocError as one line ``error: ...`` and exit 2."""
    import typer

    typer.echo(f"error: {str(e).strip().splitlines()[-1] if str(e).strip() else e}", err=True)
    raise typer.Exit(2)


def require_positive(name: str, value: int) -> None:
    """``name must be >= 1, got value`` unless ``value`` >= 1 (``name``: the option, e.g. ``--batch-size``)."""
    if value < 1:
        raise GenprocError(f"{name} must be >= 1, got {value}")


def run_analysis(run_dirs: Sequence[str | Path], analyze: Callable[[list[Any]], T], *, checkpoint: str | None = None,
                 data_root: str | None = None, sample_set: Sequence[str] = (), check: Callable[[], Any] | None = None) -> T:
    """The body of a ``genproc analyze`` command: ``check()`` (option checks that need no run), then
    ``analyze(runs)`` on the loaded runs (:func:`load_runs`); a GenprocError from any step ends the command
    with one line ``error: ...`` and exit code 2 (:func:`fail`)."""
    try:
        if check is not None:
            check()
        return analyze(load_runs(run_dirs, checkpoint, data_root, sample_set))
    except GenprocError as e:
        fail(e)


# Arguments and options shared by the ``genproc analyze`` commands (a fresh typer.Argument / typer.Option per command).

def run_dirs_argument(help: str = "Run directories written by 'genproc train' (e.g. an IHDM and a DDPM run).") -> Any:
    """The run directories (one or more, required)."""
    import typer

    return typer.Argument(..., help=help)


def out_option(analysis: str, help: str) -> Any:
    """``--out``: the output folder, by default ``analysis_out/<analysis>``."""
    import typer

    return typer.Option(Path(f"analysis_out/{analysis}"), "--out", help=help)


def checkpoint_option() -> Any:
    """``--checkpoint``: which checkpoint of each run to load."""
    import typer

    return typer.Option(None, "--checkpoint", help="Checkpoint step or folder (default: latest).")


def data_root_option(help: str = "Data folder, if it moved since training.") -> Any:
    """``--data-root``: where the run's data set is now."""
    import typer

    return typer.Option(None, "--data-root", help=help)


def sample_set_option() -> Any:
    """``--sample-set KEY=VALUE`` (repeatable): sampling-time overrides, see :func:`load_runs`."""
    import typer

    return typer.Option([], "--sample-set", help="Sampling-time override for the runs that have the key, "
                                                 "e.g. --sample-set process.sampler=ddim (repeatable).")


def batch_size_option(help: str = "Images per forward pass (does not change the results).") -> Any:
    """``--batch-size`` (default 64)."""
    import typer

    return typer.Option(64, "--batch-size", help=help)
