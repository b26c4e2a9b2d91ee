"""``genproc frontier RUN_DIR... --calls 10,20,50``: FID per network call for every process and sampler; registered in
cli.py. Thin: parse, validate, call :func:`genproc.frontier.frontier` and :func:`genproc.frontier.frontier_report`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from genproc.cli_common import interrupts, user_errors
from genproc.errors import GenprocError


def parse_ints(text: str, flag: str) -> list[int]:
    """'10,20,50' -> [10, 20, 50]; one clear error otherwise."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GenprocError(f"{flag} expects comma-separated integers, e.g. 10,20,50; got {text!r}") from None
    if not values:
        raise GenprocError(f"{flag} expects comma-separated integers, e.g. 10,20,50; got {text!r}")
    return values


def run_frontier(run_dirs: list[Path], calls: str, *, out: Path, samplers: list[str], n: int, seeds: str,
                 n_ref: Optional[int], data_root: Optional[str], floor: bool, batch_size: int,
                 inception_weights: Optional[Path], cache_dir: Optional[Path], extractor: Optional[str],
                 full_chain: bool = True) -> dict[str, Any]:
    """Load the runs, measure the frontier (resuming), write the report; what ``genproc frontier`` and ``genproc
    compare --calls`` do."""
    from genproc.frontier import frontier, frontier_report, kept_floor, parse_variants, read_points
    from genproc.run import load

    targets, seed_list = parse_ints(calls, "--calls"), parse_ints(seeds, "--seeds")
    if n < 2:
        raise GenprocError(f"--n must be >= 2 for FID, got {n}")
    variants = parse_variants(samplers) if samplers else None
    runs = [load(d, data_root=data_root) for d in run_dirs]

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    common = dict(batch_size=batch_size, inception_weights=inception_weights, cache_dir=cache_dir, extractor=extractor)
    frontier(runs, targets, out=out, variants=variants, n=n, seeds=seed_list, n_ref=n_ref, full_chain=full_chain,
             log=log, **common)
    fl = kept_floor(runs[0], n, n_ref, out, log=log, **common)["fid"] if floor and runs else None
    return frontier_report(read_points(out), out, floor=fl, command=shlex.join(["genproc", *sys.argv[1:]]))


def frontier_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (e.g. the released pretrained/*_mnist_small)."),
    calls: str = typer.Option("10,20,50", "--calls", help="Target network calls per image, comma-separated."),
    samplers: list[str] = typer.Option([], "--samplers", help="Sampler variants NAME[:KEY=VALUE,...] (repeatable), e.g. --samplers ddim:clip=clamp; each run takes those its process supports (default: all it supports)."),
    n: int = typer.Option(500, "--n", help="Generated samples per point."),
    seeds: str = typer.Option("0", "--seeds", help="Sample seeds, comma-separated; the table shows their range."),
    n_ref: Optional[int] = typer.Option(None, "--n-ref", help="FID reference: the first N test images (default: all)."),
    out: Path = typer.Option(Path("frontier"), "--out", help="Report folder; points in <out>/points (rerun to resume)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Data folder (the reference test set, and a prior that reads the training set)."),
    floor: bool = typer.Option(True, "--floor/--no-floor", help="Also the real-vs-real FID floor at the same n (measured once, kept in <out>/floor)."),
    full_chain: bool = typer.Option(True, "--full-chain/--no-full-chain", help="Also each run's default sampler over all its levels (DDPM's ancestral chain: 1000 calls)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass (does not change the results)."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="InceptionV3 weights for torch-fidelity (offline); env GENPROC_INCEPTION_WEIGHTS."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Reference-statistics cache."),
    extractor: Optional[str] = typer.Option(None, "--extractor", hidden=True, help="torch-fidelity feature extractor (tests)."),
) -> None:
    """FID against network calls per image: every run with every sampler its process supports (or --samplers) at each
    --calls target, plus its default full chain; writes <out>/frontier.md, frontier.json and frontier.png from every
    point measured into <out> so far (several invocations add up; a rerun measures only what is missing)."""
    with user_errors(), interrupts(lambda _: f"the points measured so far are kept in {out / 'points'}; rerun the same "
                                             "command to measure the rest"):
        report = run_frontier(run_dirs, calls, out=out, samplers=samplers, n=n, seeds=seeds, n_ref=n_ref,
                              data_root=data_root, floor=floor, batch_size=batch_size,
                              inception_weights=inception_weights, cache_dir=cache_dir, extractor=extractor,
                              full_chain=full_chain)
    typer.echo(report["table"])
    typer.echo(f"wrote {out / 'frontier.md'}, {out / 'frontier.json'} and {out / 'frontier.png'}")
