"""Checkpoints: one folder per step, written atomically, never pickled code.

Layout of ``<run_dir>/checkpoints/step_00001000/``::

    model.safetensors   raw network weights
    ema.safetensors     EMA weights (used for sampling)
    state.pt            optimiser, grad-scaler and RNG state (loaded with weights_only=True)
    prior.safetensors   (processes whose prior draws from the training set) what the prior needs, so that sampling
                        needs no data set (``ForwardProcess.prior_state``)
    data_stats.safetensors  the training images' mean DCT power ("power", (C, H, W)): the reference spectrum of
                        ``genproc restore --level auto``, so that restoring needs no data set either
    meta.json           step, resolved recipe, genproc version, time, and each file's size and sha256

A *released* checkpoint (:func:`export_checkpoint`, ``genproc export``) holds only ``ema.safetensors`` (fp16 by
default), ``prior.safetensors`` when the process has one, and a meta.json with ``"release"``: it samples and evaluates
like a run, and refuses to resume training with one line.

A checkpoint is written into ``.tmp-step_*`` and renamed into place once complete,
so a crash mid-write leaves the previous checkpoint as the latest loadable one; a write that
fails (disk full, no permission) removes its temporary folder and is one GenprocError line.

Loading verifies a checkpoint against the sizes and checksums in its meta.json
(:func:`verify_checkpoint`). When the newest one is damaged or incomplete, :func:`resolve_checkpoint`
falls back to the newest intact one with a one-line warning, and renames the damaged folder to
``step_XXXXXXXX.damaged`` (kept for inspection, never counted as a checkpoint again). An explicitly
requested checkpoint that is damaged is an error, not a fallback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genproc import __version__
from genproc.errors import GenprocError
from genproc.filehash import sha256_file

_STEP_DIR = re.compile(r"^step_(\d+)$")
FILES = ("model.safetensors", "ema.safetensors", "state.pt")  # every checkpoint's data files, listed in meta.json
PRIOR_FILE = "prior.safetensors"  # optional: the stored prior state
STATS_FILE = "data_stats.safetensors"  # optional: statistics of the training data (restoration's reference spectrum)
DAMAGED_SUFFIX = ".damaged"


def _stderr_warning(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def file_digest(path: Path) -> dict[str, Any]:
    """{"size": bytes, "sha256": hex} of a file, read in 16 MiB chunks."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


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
    prior: dict[str, torch.Tensor] | None = None,
    stats: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the ``keep`` newest; ``prior``: the process's stored
    prior state (``prior.safetensors``), ``stats``: the data statistics (``data_stats.safetensors``), if any.

    A failed write (ENOSPC, EACCES, ...) removes the temporary folder, leaves the previous checkpoints as they
    were and raises one GenprocError line naming the path and the cause."""
    writers: dict[str, Callable[[Path], Any]] = {
        "model.safetensors": lambda p: save_file(_state_dict(model), str(p)),
        "ema.safetensors": lambda p: save_file(_state_dict(ema), str(p)),
        "state.pt": lambda p: torch.save(state, p),
    }
    if prior is not None:
        writers[PRIOR_FILE] = lambda p: save_file(prior, str(p))
    if stats is not None:
        writers[STATS_FILE] = lambda p: save_file(stats, str(p))
    final = _write_checkpoint(Path(run_dir) / "checkpoints", step, writers, {"recipe": recipe})
    prune_checkpoints(final.parent, keep)
    return final


def _write_checkpoint(ckpt_root: Path, step: int, writers: dict[str, Callable[[Path], Any]], meta: dict[str, Any]) -> Path:
    """Write the files ``writers`` (name -> function writing that path) and meta.json (``meta`` plus step, version,
    time and each file's digest) into ``ckpt_root/step_XXXXXXXX`` atomically (see :func:`save_checkpoint`)."""
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".tmp-step_{step:08d}-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, write in writers.items():
            write(tmp / name)
        meta = {"step": step, "genproc_version": __version__, "time": time.time(), **meta,
                "files": {name: file_digest(tmp / name) for name in writers}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (e.g. interrupted right after a save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        prev = list_checkpoints(ckpt_root.parent)
        raise GenprocError(f"cannot write checkpoint {final}: {e.strerror or e} ({e.filename or tmp}); "
                           f"{'the previous checkpoint ' + prev[-1].name + ' is intact' if prev else 'no earlier checkpoint'}"
                           ) from None
    return final


def export_checkpoint(src: Path, out_dir: str | Path, *, dtype: torch.dtype = torch.float16,
                      prior: dict[str, torch.Tensor] | None = None, stats: dict[str, torch.Tensor] | None = None,
                      recipe: dict[str, Any] | None = None) -> Path:
    """A released copy of checkpoint folder ``src`` in the run dir ``out_dir``: its EMA weights cast to ``dtype``
    (floating tensors only), ``prior`` (the stored prior state) when given, and a meta.json with the recipe
    (``recipe``, default ``src``'s) and ``"release"``: {source, step, dtype}. Returns the new checkpoint folder."""
    meta = load_meta(src)
    ema = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load_weights(src, "ema").items()}
    writers: dict[str, Callable[[Path], Any]] = {"ema.safetensors": lambda p: save_file(ema, str(p))}
    if prior is not None:
        writers[PRIOR_FILE] = lambda p: save_file(prior, str(p))
    if stats is not None:
        writers[STATS_FILE] = lambda p: save_file(stats, str(p))
    release = {"source": str(src), "step": int(meta["step"]), "dtype": str(dtype).removeprefix("torch."), "weights": "ema"}
    return _write_checkpoint(Path(out_dir) / "checkpoints", int(meta["step"]), writers,
                             {"recipe": recipe or meta["recipe"], "release": release})


def is_release(ckpt: Path) -> bool:
    """Whether checkpoint folder ``ckpt`` was written by :func:`export_checkpoint` (EMA weights only)."""
    try:
        return "release" in json.loads((ckpt / "meta.json").read_text())
    except (OSError, ValueError):
        return False


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


def verify_checkpoint(ckpt: Path, files: Sequence[str] = FILES) -> str | None:
    """Why checkpoint folder ``ckpt`` cannot be used (missing or unreadable meta.json, one of ``files`` missing, of the
    wrong size or checksum), or None when it is intact. ``files``: the data files the caller will read (sampling
    needs only its weights, resuming all three). Checkpoints written before checksums were recorded are checked for
    their files and readable safetensors headers."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
        recipe, recorded = meta["recipe"], meta.get("files")
        int(meta["step"])
        if not isinstance(recipe, dict):
            return "meta.json has no recipe"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"meta.json unreadable ({type(e).__name__}: {str(e)[:80]})"
    for name in files:
        path = ckpt / name
        if not path.is_file():
            return f"{name} missing"
        if recorded is None:  # an older checkpoint: no checksums, check what can be checked cheaply
            if name.endswith(".safetensors"):
                try:
                    with safe_open(str(path), framework="pt"):
                        pass
                except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
                    return f"{name} unreadable ({str(e)[:80]})"
            continue
        want = recorded.get(name, {})
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{name} has {size} bytes, meta.json says {want.get('size')}"
        if file_digest(path)["sha256"] != want.get("sha256"):
            return f"{name} does not match its sha256 in meta.json"
    return None


def set_aside(ckpt: Path) -> Path | None:
    """Rename a damaged checkpoint folder to ``<name>.damaged`` (``.damaged-2``, ... if taken); None if it cannot be."""
    for i in range(1, 100):
        dest = ckpt.with_name(ckpt.name + DAMAGED_SUFFIX + ("" if i == 1 else f"-{i}"))
        if not dest.exists():
            try:
                os.rename(ckpt, dest)
                return dest
            except OSError:  # read-only run dir, or another rank renamed it first
                return None
    return None


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | None = None,
                       warn: Callable[[str], Any] = _stderr_warning, files: Sequence[str] = FILES) -> Path:
    """The verified checkpoint folder to load: ``checkpoint`` may be a path, a step number, or None for the newest
    intact one (damaged newer ones are set aside with a one-line ``warn``). A damaged explicit checkpoint is an error.
    ``files``: the data files that must be intact (see :func:`verify_checkpoint`)."""
    run_dir = Path(run_dir)
    for c in list_checkpoints(run_dir):
        if is_release(c) and (lacking := [f for f in files if not (c / f).is_file()]):
            raise GenprocError(f"{run_dir} is a released model (EMA weights only, 'genproc export'): it has no {lacking[0]}; "
                               "it samples and evaluates, but cannot resume training or give its raw weights "
                               f"(train a new run from {run_dir / 'recipe.yaml'})")
    if checkpoint is not None:
        p = Path(checkpoint)
        if not (p.is_dir() and (p / "meta.json").is_file()) and str(checkpoint).isdigit():
            p = run_dir / "checkpoints" / f"step_{int(checkpoint):08d}"
        if not p.is_dir():
            steps = [c.name for c in list_checkpoints(run_dir)]
            raise GenprocError(f"checkpoint '{checkpoint}' not found in {run_dir} (available: {', '.join(steps) or 'none'})")
        if (why := verify_checkpoint(p, files)) is not None:
            raise GenprocError(f"checkpoint {p} is damaged: {why}; choose another --checkpoint or none (the newest intact)")
        return p
    ckpts = list_checkpoints(run_dir)
    for i in range(len(ckpts) - 1, -1, -1):
        why = verify_checkpoint(ckpts[i], files)
        if why is None:
            return ckpts[i]
        moved = set_aside(ckpts[i])
        warn(f"checkpoint {ckpts[i]} is damaged ({why}); "
             + (f"moved to {moved.name}" if moved else "left in place (could not rename it)")
             + ("; falling back to the previous one" if i > 0 else ""))
    if ckpts:
        raise GenprocError(f"no intact checkpoint in {run_dir / 'checkpoints'}: all {len(ckpts)} are damaged (see the warnings)")
    raise GenprocError(f"no checkpoint in {run_dir / 'checkpoints'} (expected step_*/meta.json; train first with 'genproc train')")


def load_meta(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GenprocError(f"checkpoint metadata {ckpt / 'meta.json'} is unreadable: {e}") from None


def load_prior(ckpt: Path, name: str = PRIOR_FILE) -> dict[str, torch.Tensor] | None:
    """The tensors of an optional file of checkpoint folder ``ckpt`` (default ``prior.safetensors``; also
    ``data_stats.safetensors``), or None when it has none."""
    path = ckpt / name
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise GenprocError(f"cannot read {path}: {e}") from None


def recorded_files(ckpt: Path) -> list[str]:
    """The data files listed in ``ckpt``'s meta.json (the three of :data:`FILES` for checkpoints that list none)."""
    files = load_meta(ckpt).get("files")
    return list(files) if isinstance(files, dict) else list(FILES)


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
