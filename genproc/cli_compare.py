"""``genproc compare ihdm ddpm [blur] --dataset mnist``; registered in cli.py as
``app.command("compare")(compare_command)``. Thin: parse, validate, call :func:`genproc.compare.compare`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from genproc.cli_common import interrupts, joined_ranks, old_flag, sampling_option, user_errors
from genproc.errors import GenprocError, Interrupted


def split_runs(args: list[str], runs: list[str]) -> tuple[list[str], list[str]]:
    """Names and run dirs from the command line. An option takes one value, so in
    ``compare ihdm ddpm --runs A B`` click leaves B among the names: trailing positionals that are
    existing paths and not process names are moved (in order) to the runs; commas also separate runs."""
    from genproc.processes import lookup, registered

    known = {n for name in registered() for n in (name, *lookup(name).aliases)}
    runs = [r for item in runs for r in str(item).split(",") if r]
    names, extra = list(args), []
    while runs and names and names[-1].lower() not in known and Path(names[-1]).exists():
        extra.insert(0, names.pop())
    return names, runs + extra


def compare_command(
    processes: list[str] = typer.Argument(..., help="Processes to compare, by registered name: e.g. ihdm (alias heat), ddpm, blur (recipe <process>_<dataset>_small.yaml each)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set of the recipes (default mnist); with --runs, checked against the runs'."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Folder of the data set (overrides data.root and $GENPROC_DATA)."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Training steps for every process (default: the recipes' train.max_steps, if equal)."),
    n: int = typer.Option(1000, "--n", help="Generated samples for fid/kid, test images for nll; the same for every process."),
    n_nll: Optional[int] = typer.Option(None, "--n-nll", help="Test images for nll (default: --n)."),
    n_ref: Optional[int] = typer.Option(None, "--n-ref", help="FID/KID reference: the first N test images (default: all)."),
    metrics: str = typer.Option("fid,kid,nll", "--metrics", help="Comma-separated: fid, kid, prc, nll."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="InceptionV3 weights file for torch-fidelity (offline); env GENPROC_INCEPTION_WEIGHTS."),
    out: Path = typer.Option(Path("compare"), "--out", help="Report folder; runs are trained into <out>/runs/<process> (rerun to resume)."),
    runs: Optional[list[str]] = typer.Option(None, "--runs", help="Existing run dirs, one per process in the same order (after the names: --runs A B, or A,B); nothing is trained."),
    set_: list[str] = typer.Option([], "--set", help="Override a key in every recipe, e.g. --set train.batch_size=32 (repeatable)."),
    sampling: list[str] = sampling_option(),
    old_sample_set: list[str] = old_flag("--sample-set"),
    recipes_dir: Optional[Path] = typer.Option(None, "--recipes-dir", help="Folder of the recipes (default: the repository's recipes/)."),
    scale: str = typer.Option("small", "--scale", help="small: <process>_<dataset>_small.yaml (CPU, default data set mnist); paper: each process's GPU-scale recipe for the data set, e.g. ihdm_cifar.yaml (default data set cifar10)."),
    recipe: Optional[list[Path]] = typer.Option(None, "--recipe", help="Explicit recipe files, one per process in the same order (repeatable); instead of --scale."),
    seed: int = typer.Option(0, "--seed", help="Seed for samples, grids, dequantisation and ELBO noise (shared by all processes)."),
    more_seeds: str = typer.Option("", "--more-seeds", help="Further sample seeds for fid/kid/prc, comma-separated (e.g. 1,2): the table shows the range over seeds."),
    grid: int = typer.Option(16, "--grid", help="Samples in each process's grid (also timed for sample img/s)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass in evaluation (does not change the results)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Reference-statistics cache for FID/KID."),
    extractor: Optional[str] = typer.Option(None, "--extractor", hidden=True, help="torch-fidelity feature extractor (tests)."),
    calls: Optional[str] = typer.Option(None, "--calls", help="Also the FID-per-network-call frontier at these calls per image (e.g. 10,20,50): every process with every sampler it supports, into <out>/frontier (see genproc frontier)."),
    samplers: list[str] = typer.Option([], "--samplers", help="With --calls: sampler variants NAME[:KEY=VALUE,...] (default: all each process supports)."),
    floor: bool = typer.Option(True, "--floor/--no-floor", help="With fid: also the real-vs-real FID of --n training images drawn at random against the same reference, kept in <out>/floor."),
) -> None:
    """Train each process under the same budget (or take --runs), evaluate them alike, write <out>/report.md and figures.
    --sampling NAME:key=value sets one process's sampling alone (e.g. --sampling ddpm:sampler=heun --sampling
    ddpm:steps=25: each process at its own best sampler).
    Under torchrun (torchrun --nproc-per-node G -m -- genproc.cli compare ...) training, sampling and evaluation use the
    G processes."""
    with user_errors(), joined_ranks() as main, interrupts(lambda e: kept(e, trains=not runs), main):
        from genproc.compare import compare

        def log(msg: str) -> None:
            typer.echo(msg, err=True)

        names, run_dirs = split_runs(processes, runs or [])
        try:
            extra_seeds = [int(v) for v in more_seeds.split(",") if v.strip()]
        except ValueError:
            raise GenprocError(f"--more-seeds expects comma-separated integers, e.g. 1,2; got {more_seeds!r}") from None
        report = compare(names, dataset, runs=run_dirs or None, budget=budget, n=n, metrics=metrics, out=out,
                         data_root=data_root, overrides=set_, recipes_dir=recipes_dir, inception_weights=inception_weights,
                         extractor=extractor, cache_dir=cache_dir, seed=seed, more_seeds=extra_seeds, grid_n=grid, batch_size=batch_size, sampling=[*old_sample_set, *sampling], n_ref=n_ref, n_nll=n_nll, scale=scale, recipe_paths=recipe,
                         floor=floor, progress=sys.stderr.isatty() and main, log=log)
        if calls is not None and main:
            from genproc.cli_frontier import run_frontier

            front = run_frontier([Path(row["run_dir"]) for row in report["rows"]], calls, out=out / "frontier",
                                 samplers=samplers, n=n, seeds=",".join(map(str, [seed, *extra_seeds])), n_ref=n_ref,
                                 data_root=data_root, floor=True, batch_size=batch_size,
                                 inception_weights=inception_weights, cache_dir=cache_dir, extractor=extractor)
    if not main:
        return
    typer.echo(report["table"])
    if report.get("real_floor"):
        typer.echo(f"real-vs-real floor: FID {report['real_floor']['fid']:.2f} ({report['real_floor']['train_images']} "
                   f"against the same reference)")
    for note in report["footnotes"]:
        typer.echo(note)
    typer.echo(f"wrote {out / 'report.md'}, {out / 'report.json'} and figures in {out}")
    if calls is not None:
        typer.echo(front["table"])
        typer.echo(f"wrote {out / 'frontier' / 'frontier.md'} and frontier.png")


def kept(e: KeyboardInterrupt, trains: bool) -> str:
    """The Ctrl-C line of ``genproc compare``: what was kept (trained runs, evaluation records) and how to finish."""
    done = e.kept if isinstance(e, Interrupted) else []
    rerun = "rerun the same command to finish the report" + (" (training resumes from the kept checkpoints)" if trains else "")
    return f"kept {'; '.join(done)}; {rerun}" if done else f"nothing kept; {rerun}"
