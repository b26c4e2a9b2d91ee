"""``genproc runs [DIR]``: one line per run dir (:mod:`genproc.runstatus`), ``--plot`` its loss/evaluation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genproc.cli_common import user_errors
from genproc.errors import GenprocError


def runs_command(
    root: Path = typer.Argument(Path("runs"), metavar="DIR", help="A run dir, or a folder of them (default: runs/)."),
    plot: bool = typer.Option(False, "--plot", help="Also write each run's loss (and evaluation) curves as a PNG from metrics.jsonl."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --plot: the PNG (one run) or a folder for <run>_loss.png (default: <run_dir>/loss.png)."),
) -> None:
    """One line per run: step / max_steps, last loss, img/s, last evaluation, newest intact checkpoint, and whether a
    training holds it now (its pid) or it is idle. Only reads; a run may be training meanwhile."""
    with user_errors():
        from genproc.runstatus import find_runs, plot_metrics, run_status

        runs = find_runs(root)
        if not runs:
            raise GenprocError(f"no run dir in {root} (a run dir holds recipe.yaml, checkpoints/ or metrics.jsonl)")
        if out is not None and out.suffix == ".png" and len(runs) > 1:
            raise GenprocError(f"--out {out} is one PNG but {root} holds {len(runs)} runs; give a folder instead")
        for run_dir in runs:
            name = run_dir.name if run_dir == root else str(run_dir.relative_to(root))
            typer.echo(run_status(run_dir, name).line())
            if plot:
                dest = (run_dir / "loss.png" if out is None else out if out.suffix == ".png"
                        else out / f"{name.replace('/', '_')}_loss.png")
                written = plot_metrics(run_dir, dest)
                typer.echo(f"  wrote {written}" if written else f"  no loss logged in {run_dir / 'metrics.jsonl'}: nothing to plot")
