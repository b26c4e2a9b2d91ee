"""``genproc evaluate RUN_DIR --metrics fid,kid,nll``; registered in cli.py as
``app.command("evaluate")(evaluate_command)``. Thin: parse, validate, call :func:`genproc.metrics.evaluate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from genproc.cli_common import interrupts, joined_ranks, old_flag, sampling_option, user_errors
from genproc.errors import Interrupted


def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'genproc train'."),
    metrics: str = typer.Option("fid,kid", "--metrics", help="Comma-separated: fid, kid, prc (precision/recall), nll."),
    n: int = typer.Option(10000, "--n", help="Generated samples (fid/kid/prc); test images (nll)."),
    split: str = typer.Option("test", "--split", help="Reference split for fid/kid/prc and the images nll is measured on."),
    n_ref: Optional[int] = typer.Option(None, "--n-ref", help="Use only the first N reference images (default: the whole split)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="IHDM/blur sampling noise std, short for --sampling delta=VALUE; for nll the std of p(x_{k-1}|x_k) and of the KDE prior (default: the recipe's)."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="InceptionV3 weights file for torch-fidelity (offline); env GENPROC_INCEPTION_WEIGHTS."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Checkpoint step or folder (default: latest)."),
    seed: int = typer.Option(0, "--seed", help="Seed for samples, dequantisation and ELBO noise."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass (does not change the results)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Data folder, if it moved since training."),
    sampling: list[str] = sampling_option(),
    old_set: list[str] = old_flag("--set"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Reference-statistics cache (default: $GENPROC_CACHE/fidelity or ~/.cache/genproc/fidelity)."),
    extractor: Optional[str] = typer.Option(None, "--extractor", hidden=True, help="torch-fidelity feature extractor (tests)."),
) -> None:
    """Evaluate a trained run: FID/KID (torch-fidelity) and NLL in bits/dim; prints a table, writes <run_dir>/eval/*.json.
    Under torchrun (torchrun --nproc-per-node G -m -- genproc.cli evaluate ...; the '--'
    keeps torchrun from reading --n as its own option) the samples, their features and the NLL
    images are split across the G processes."""
    with user_errors(), joined_ranks() as main, interrupts(lambda e: kept(e, metrics), main):
        from genproc.metrics import evaluate, format_table, parse_metrics
        from genproc.metrics.inception import INCEPTION
        from genproc.run import load

        def log(msg: str) -> None:
            typer.echo(msg, err=True)

        parse_metrics(metrics)  # an unknown metric fails before the run is loaded
        run = load(run_dir, checkpoint=checkpoint, data_root=data_root)
        run = run.with_sampling([*old_set, *sampling, *([] if delta is None else [f"delta={delta}"])])
        records = evaluate(run, metrics, n=n, split=split, n_ref=n_ref, seed=seed, batch_size=batch_size,
                           data_root=data_root, inception_weights=inception_weights, cache_dir=cache_dir,
                           extractor=extractor or INCEPTION, progress=sys.stderr.isatty() and main, log=log)
    if not main:
        return
    typer.echo(format_table(records))
    for r in records:
        typer.echo(f"wrote {r['json']}")


def kept(e: KeyboardInterrupt, metrics: str) -> str:
    """The Ctrl-C line of ``genproc evaluate``: the records kept (each written as soon as its metric was done) and the
    ``--metrics`` that measure the rest."""
    from genproc.metrics import parse_metrics

    done, left = (e.kept, e.left) if isinstance(e, Interrupted) else ([], parse_metrics(metrics))
    if not done:
        return f"nothing written; rerun to measure {', '.join(left)}"
    return f"kept {', '.join(done)}; " + (f"rerun with --metrics {','.join(left)} to measure the rest" if left
                                          else "every metric was measured")
