"""Checkpoints: one folder per step, written atomically, never pickled code.

Layout of ``<run_dir>/checkpoints/step_00001000/``::

    model.safetensors   raw network weights
    ema.safetensors     EMA weights (used for sampling)
    state.pt            optimiser, grad-scaler and RNG state (loaded with weights_only=True)
    meta.json           step, resolved recipe, genproc version, time

A checkpoint is written into ``.tmp-step_*`` and renamed into place once complete,
so a crash mid-write leaves the previous checkpoint as the latest loadable one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from genproc import __version__
from genproc.errors import GenprocError

_STEP_DIR = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    state: dict[str, Any],
    recipe: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the ``keep`` newest."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_state_dict(model), str(tmp / "model.safetensors"))
    save_file(_state_dict(ema), str(tmp / "ema.safetensors"))
    torch.save(state, tmp / "state.pt")
    meta = {"step": step, "genproc_version": __version__, "time": time.time(), "recipe": recipe}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. interrupted right after a save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_root)
    prune_checkpoints(ckpt_root, keep)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a folder counts once meta.json exists)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "meta.json").is_file()]
    return [p for _, p in sorted(found)]


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    complete = list_checkpoints(ckpt_root.parent)
    for old in complete[: max(0, len(complete) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-step_*"):  # left by a crash mid-write
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | None = None) -> Path:
    """The checkpoint folder to load: ``checkpoint`` may be a path, a step number, or None (latest)."""
    run_dir = Path(run_dir)
    if checkpoint is not None:
        p = Path(checkpoint)
        if p.is_dir() and (p / "meta.json").is_file():
            return p
        if str(checkpoint).isdigit():
            p = run_dir / "checkpoints" / f"step_{int(checkpoint):08d}"
            if (p / "meta.json").is_file():
                return p
        steps = [c.name for c in list_checkpoints(run_dir)]
        raise GenprocError(f"checkpoint '{checkpoint}' not found in {run_dir} (available: {', '.join(steps) or 'none'})")
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise GenprocError(f"no checkpoint in {run_dir / 'checkpoints'} (expected step_*/meta.json; train first with 'genproc train')")
    return ckpts[-1]


def load_meta(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GenprocError(f"checkpoint metadata {ckpt / 'meta.json'} is unreadable: {e}") from None


def load_weights(ckpt: Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """Weights ``which`` in {'ema', 'model'} of checkpoint folder ``ckpt``."""
    path = ckpt / f"{which}.safetensors"
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise GenprocError(f"cannot read weights {path}: {e}") from None


def load_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GenprocError(f"cannot read training state {path}: {e}") from None
