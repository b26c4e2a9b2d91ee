"""A run's state without opening its files: step, last loss, speed, last evaluation, newest intact checkpoint, and
whether a training holds it now; and its loss (and evaluation) curves as a PNG. ``genproc runs`` prints
:func:`status_line` for every run dir :func:`find_runs` finds; from Python::

    from genproc.runstatus import find_runs, run_status, plot_metrics
    for d in find_runs("runs"):
        print(run_status(d).line())
    plot_metrics("runs/quickstart", "runs/quickstart/loss.png")

Everything here only reads: a damaged checkpoint is reported, never set aside (that is for the commands that load one),
and a damaged ``metrics.jsonl`` line is counted and skipped.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genproc.engine import checkpoint as ckpt
from genproc.engine.runlock import lock_holder
from genproc.errors import GenprocError

METRICS_FILE = "metrics.jsonl"


def is_run_dir(path: Path) -> bool:
    """A folder ``genproc train`` wrote (or a released model): it holds recipe.yaml, checkpoints/ or metrics.jsonl."""
    return (path / "recipe.yaml").is_file() or (path / "checkpoints").is_dir() or (path / METRICS_FILE).is_file()


def find_runs(root: str | Path, max_depth: int = 3) -> list[Path]:
    """``root`` itself when it is a run dir, else the run dirs below it (at most ``max_depth`` levels down, none
    inside another run dir, hidden folders skipped), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise GenprocError(f"runs folder not found: {root} (expected a run dir or a folder of them, e.g. runs/)")
    if is_run_dir(root):
        return [root]
    found, depth0 = [], len(root.parts)
    for here, dirs, _ in os.walk(root):
        path = Path(here)
        if path != root and is_run_dir(path):
            found.append(path)
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if len(path.parts) - depth0 < max_depth else []
    return sorted(found)


@dataclass
class Metrics:
    """What a run's metrics.jsonl says. ``loss``: (step, loss) of the logged steps with a finite loss; ``evals``:
    (step, {metric: value}, n); ``problem``: why the file could not be read (missing, unreadable), else None."""

    loss: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float], int | None]] = field(default_factory=list)
    last_step: int | None = None  # of the newest line
    last_loss: float | None = None  # of the newest line with a finite loss
    img_per_s: float | None = None
    damaged_lines: int = 0
    problem: str | None = None


def read_metrics(run_dir: str | Path) -> Metrics:
    """Parse ``run_dir/metrics.jsonl`` (the trainer's lines: {step, loss, lr, img_per_s, ...}, {step, skipped, ...},
    {step, eval: {...}, eval_n, ...}); a line that is not such a record (a write cut by a kill) is counted in
    ``damaged_lines`` and skipped. A step logged twice (a killed run logs past its last checkpoint, the resumed run logs
    those steps again) keeps its newest record; ``last_step`` is the newest line's step."""
    m, path = Metrics(), Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        m.problem = f"no {METRICS_FILE} yet"
        return m
    except OSError as e:
        m.problem = f"{METRICS_FILE} unreadable ({e.strerror or e})"
        return m
    loss: dict[int, float] = {}
    evals: dict[int, tuple[int, dict[str, float], int | None]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            step = int(rec["step"])
        except (ValueError, KeyError, TypeError):
            m.damaged_lines += 1
            continue
        m.last_step = step
        if isinstance(rec.get("eval"), dict):
            values = {k: float(v) for k, v in rec["eval"].items() if isinstance(v, (int, float))}
            evals[step] = (step, values, rec.get("eval_n"))
        elif "skipped" not in rec and isinstance(rec.get("loss"), (int, float)):
            loss[step] = m.last_loss = float(rec["loss"])
            if isinstance(rec.get("img_per_s"), (int, float)):
                m.img_per_s = float(rec["img_per_s"])
    m.loss, m.evals = sorted(loss.items()), [evals[s] for s in sorted(evals)]
    return m


def newest_intact_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint whose recorded files match their sizes and checksums (:func:`checkpoint.verify_checkpoint`),
    or None; and a note for each newer damaged one. Nothing is renamed."""
    notes = []
    for c in reversed(ckpt.list_checkpoints(run_dir)):
        try:
            why = ckpt.verify_checkpoint(c, ckpt.recorded_files(c))
        except GenprocError as e:  # meta.json unreadable
            why = str(e)
        except OSError as e:  # pruned by the training while it was read
            why = f"unreadable ({e.strerror or e})"
        if why is None:
            return c, notes
        notes.append(f"{c.name} damaged: {why}")
    return None, notes


def _max_steps(run_dir: Path, newest: Path | None) -> int | None:
    """``train.max_steps`` of the run's recipe.yaml (else of its newest checkpoint's recipe), None if unreadable."""
    try:
        d = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError):
        d = None
    if not isinstance(d, dict) and newest is not None:
        try:
            d = ckpt.load_meta(newest).get("recipe")
        except GenprocError:
            d = None
    train = d.get("train") if isinstance(d, dict) else None
    value = train.get("max_steps") if isinstance(train, dict) else None
    return value if isinstance(value, int) else None


@dataclass
class RunStatus:
    """One run's state (see :func:`run_status`); :meth:`line` is ``genproc runs``' line."""

    run_dir: Path
    name: str
    metrics: Metrics
    max_steps: int | None
    checkpoint: Path | None
    checkpoint_notes: list[str]
    holder: dict[str, Any] | None  # the lock's record while a training holds the run dir, else None

    def line(self) -> str:
        m, parts = self.metrics, []
        step = m.last_step if m.last_step is not None else (int(self.checkpoint.name.split("_")[1]) if self.checkpoint else None)
        parts.append(f"step {'?' if step is None else step}/{'?' if self.max_steps is None else self.max_steps}")
        if m.problem is not None:
            parts.append(m.problem)
        else:
            parts.append(f"loss {m.last_loss:.4g}" if m.last_loss is not None else "loss -")
            parts.append(f"{m.img_per_s:.1f} img/s" if m.img_per_s is not None else "- img/s")
            if m.evals:
                s, values, n = m.evals[-1]
                parts.append("eval " + ", ".join(f"{k} {v:.4g}" for k, v in values.items())
                             + f" at step {s}" + ("" if n is None else f" (n={n})"))
            else:
                parts.append("no evaluation")
            if m.damaged_lines:
                parts.append(f"{METRICS_FILE}: {m.damaged_lines} damaged line(s) skipped")
        parts.append(f"checkpoint {self.checkpoint.name}" if self.checkpoint else "no intact checkpoint")
        parts.extend(self.checkpoint_notes)
        parts.append(_training_now(self.holder))
        return f"{self.name}: " + " | ".join(parts)


def _training_now(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "idle"
    if "pid" not in holder:
        return "training now (pid not written yet)"
    host = holder.get("host")
    return f"training now (pid {holder['pid']}" + ("" if host in (None, socket.gethostname()) else f" on {host}") + ")"


def run_status(run_dir: str | Path, name: str | None = None) -> RunStatus:
    """The state of ``run_dir`` (named ``name``, default its folder name): metrics, max_steps, the newest intact
    checkpoint and the training holding it now, if any (:func:`genproc.engine.runlock.lock_holder`)."""
    run_dir = Path(run_dir)
    newest, notes = newest_intact_checkpoint(run_dir)
    return RunStatus(run_dir, name or run_dir.name, read_metrics(run_dir), _max_steps(run_dir, newest), newest, notes,
                     lock_holder(run_dir))


def plot_metrics(run_dir: str | Path, path: str | Path) -> Path | None:
    """The training loss against the step (log scale), and each in-training evaluation metric beside it, from
    ``run_dir/metrics.jsonl``, as the PNG ``path``; None (nothing written) when no loss was logged."""
    m = read_metrics(run_dir)
    if not m.loss:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for _, values, _ in m.evals for k in values})
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(5 * (1 + len(names)), 3.6), squeeze=False)
    steps, losses = zip(*m.loss)
    ax = axes[0][0]
    ax.plot(steps, losses, lw=1)
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss", title=Path(run_dir).name)
    ax.grid(alpha=0.3, which="both")
    for ax, name in zip(axes[0][1:], names):
        pts = [(s, values[name], n) for s, values, n in m.evals if name in values]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ns = sorted({p[2] for p in pts if p[2] is not None})
        ax.set(xlabel="step", ylabel=name, title=f"{name} of the EMA model" + (f" (n={', '.join(map(str, ns))})" if ns else ""))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
