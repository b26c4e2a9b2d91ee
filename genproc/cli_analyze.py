"""``genproc analyze <what>``: one typer command per analysis of :mod:`genproc.analysis`, listed in the explicit table
``COMMANDS`` and registered in cli.py as ``app.add_typer(analyze_app, name="analyze")``.

Thin: each command parses its options, loads the runs (:func:`genproc.analysis.common.load_runs`), calls the
library's ``analyze_<what>(runs, out, ...)`` and prints a short summary; a :class:`GenprocError` ends it with one
line ``error: ...`` and exit 2 (:func:`genproc.cli_common.fail`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer

from genproc.analysis import delta as dl
from genproc.analysis import disentangle as dis
from genproc.analysis import gradients as gr
from genproc.analysis import interpolation as ip
from genproc.analysis import neighbours as nb
from genproc.analysis import spectra as sp
from genproc.analysis.common import load_runs, require_positive
from genproc.cli_common import interrupts, kept_in, now, old_flag, sampling_option, user_errors
from genproc.errors import GenprocError

T = TypeVar("T")
PRIOR_DATA_ROOT_HELP = "Data folder for priors drawn from the training data (IHDM), if it moved."

analyze_app = typer.Typer(help="Analyses of trained runs (spectra, interpolation, gradients, ...): figures (PNG) and numbers (JSON).",
                          no_args_is_help=True, pretty_exceptions_enable=False)


# ------------------------------------------------------------------ shared arguments and options (fresh per command)

def run_dirs_argument(help: str = "Run directories written by 'genproc train' (e.g. an IHDM and a DDPM run).") -> Any:
    """The run directories (one or more, required)."""
    return typer.Argument(..., help=help)


def out_option(analysis: str, help: str) -> Any:
    """``--out``: the output folder, by default ``analysis_out/<analysis>``."""
    return typer.Option(Path(f"analysis_out/{analysis}"), "--out", help=help)


def checkpoint_option() -> Any:
    """``--checkpoint``: which checkpoint of each run to load."""
    return typer.Option(None, "--checkpoint", help="Checkpoint step or folder (default: latest).")


def data_root_option(help: str = "Data folder, if it moved since training.") -> Any:
    """``--data-root``: where the run's data set is now."""
    return typer.Option(None, "--data-root", help=help)


def batch_size_option(help: str = "Images per forward pass (does not change the results).") -> Any:
    """``--batch-size`` (default 64)."""
    return typer.Option(64, "--batch-size", help=help)


def run_analysis(run_dirs: Sequence[str | Path], analyze: Callable[[list[Any]], T], *, out: Path,
                 checkpoint: str | None = None, data_root: str | None = None, sampling: Sequence[str] = (),
                 check: Callable[[], Any] | None = None) -> T:
    """The body of a ``genproc analyze`` command: ``check()`` (option checks that need no run), then ``analyze(runs)``
    on the loaded runs with the ``--sampling`` settings, writing into ``out``; a GenprocError ends the command with one
    line and exit 2, Ctrl-C with one line saying what was written into ``out`` (exit 130)."""
    started = now()
    with user_errors(), interrupts(lambda _: kept_in(out, started, "rerun the same command to analyse again")):
        if check is not None:
            check()
        return analyze(load_runs(run_dirs, checkpoint, data_root, sampling))
    raise AssertionError("unreachable")  # user_errors exits on an error


def _echo_err(msg: str) -> None:
    typer.echo(msg, err=True)


# ------------------------------------------------------------------ the commands

def spectra_command(
    run_dirs: list[Path] | None = typer.Argument(
        None, help="Run directories written by 'genproc train' (e.g. an IHDM and a DDPM run on one data set); none with "
                   "--dataset: the data and the forward process of every registered process (no model)."),
    out: Path = out_option("spectra", "Output folder for spectra.png and spectra.json."),
    dataset: str | None = typer.Option(None, "--dataset", help="Without run dirs: the data set (e.g. mnist, digits) whose "
                                                                  "PSD and forward-process PSDs are analysed."),
    image_size: str = typer.Option("28", "--image-size", help="With --dataset: image size in pixels, H (square) or H,W "
                                                               "(e.g. 24,40: 24 rows, 40 columns)."),
    channels: int = typer.Option(1, "--channels", help="With --dataset: 1 (grayscale) or 3 (RGB)."),
    n: int = typer.Option(64, "--n", help="Data images (PSD, forward process) and generated samples (generative PSDs)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the forward-process noise and of the samples."),
    levels: int = typer.Option(8, "--levels", help="About this many levels per process (forward: k = round(j K / levels); "
                                                   "generative: every S // levels of the S sampling steps)."),
    batch_size: int = batch_size_option("Samples per forward pass (does not change the results)."),
    data_split: str = typer.Option("train", "--data-split", help="Data images from the train or test split."),
    checkpoint: str | None = checkpoint_option(),
    data_root: str | None = data_root_option("Data folder (of --dataset, or of the runs' data if it moved since training)."),
    sampling: list[str] = sampling_option(),
    sample_set: list[str] = old_flag("--sample-set"),
) -> None:
    """Power spectral densities (Fig. 4): data PSD and 1/f^alpha fit, PSDs along the forward process and the generative
    trajectory of each run, and whether IHDM approaches the data PSD from below and DDPM from above. With --dataset and
    no run dirs: the data and the forward processes only."""
    if not run_dirs:
        return _data_spectra(dataset, out, image_size, channels, n, seed, levels, data_split, data_root)
    res = run_analysis(run_dirs, lambda runs: sp.analyze_spectra(runs, out, n=n, seed=seed, levels=levels,
                                                                 batch_size=batch_size, data_split=data_split),
                       out=out, checkpoint=checkpoint, data_root=data_root, sampling=[*sampling, *sample_set],
                       check=lambda: _no_dataset(dataset))
    typer.echo(f"data PSD ~ 1/f^{res['data']['alpha']:.2f} ({res['data']['n']} {data_split} images)")
    for lab, c in res["claim"].items():
        g = c["generative_halfway"]
        typer.echo(f"{lab}: samples 1/f^{res['generative'][lab]['alpha']:.2f}; halfway (k={g['level']}) the PSD is below the "
                   f"data in {g['frac_below']:.0%} and above in {g['frac_above']:.0%} of bins f >= {g['high_freq_min']:g} "
                   f"(expected {g['expected']}: {'yes' if g['holds'] else 'no'})")
    typer.echo(f"wrote {out / 'spectra.png'}, {out / 'spectra.json'}")


def _no_dataset(dataset: str | None) -> None:
    if dataset is not None:
        raise GenprocError("give either run directories or --dataset, not both (with runs the data is the runs' own)")


def parse_image_size(text: str) -> int | tuple[int, int]:
    """``--image-size``: "28" -> 28 (square), "24,40" (or "24x40") -> (24, 40) = (H, W)."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise GenprocError(f"--image-size: expected H or H,W in pixels (e.g. 28 or 24,40), got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _data_spectra(dataset: str | None, out: Path, image_size: str, channels: int, n: int, seed: int, levels: int,
                  data_split: str, data_root: str | None) -> None:
    """``genproc analyze spectra --dataset NAME`` without runs."""
    started = now()
    with user_errors(), interrupts(lambda _: kept_in(out, started, "rerun the same command to analyse again")):
        if dataset is None:
            raise GenprocError("give run directories (written by 'genproc train') or --dataset NAME (e.g. --dataset mnist)")
        res = sp.analyze_data_spectra(dataset, out, image_size=parse_image_size(image_size), channels=channels, n=n, seed=seed,
                                      levels=levels, data_split=data_split, data_root=data_root)
    typer.echo(f"data PSD ~ 1/f^{res['data']['alpha']:.2f} ({res['data']['n']} {data_split} images of {dataset})")
    for lab, c in res["claim"].items():
        f = c["forward_halfway"]
        typer.echo(f"{lab} (default config, {res['processes'][lab]['num_levels']} levels): forward process at k={f['level']} "
                   f"is below the data in {f['frac_below']:.0%} and above in {f['frac_above']:.0%} of bins "
                   f"f >= {f['high_freq_min']:g} (side: {f['side'] or 'neither'})")
    for lab, why in res["skipped"].items():
        typer.echo(f"{lab}: skipped ({why})")
    typer.echo(f"wrote {out / 'spectra.png'}, {out / 'spectra.json'}")


def delta_command(
    run_dirs: list[Path] = run_dirs_argument("Heat (IHDM) or blur run directories; DDPM runs are skipped (no delta)."),
    out: Path = out_option("delta", "Folder for delta_samples.png, delta_metrics.png, delta.json."),
    deltas: str = typer.Option(",".join(f"{d:g}" for d in dl.DEFAULT_DELTAS), "--deltas",
                               help="Comma-separated sampling noise values (>= 0)."),
    n: int = typer.Option(500, "--n", help="Samples per delta for FID/KID; test images for NLL."),
    metrics: str = typer.Option("fid,nll", "--metrics", help="Comma-separated: fid, kid, nll (nll is skipped at delta = 0)."),
    n_ref: int | None = typer.Option(None, "--n-ref",
                                         help="Use only the first N test images as the FID reference (default: all)."),
    inception_weights: Path | None = typer.Option(None, "--inception-weights",
                                                     help="InceptionV3 weights file for torch-fidelity (offline); "
                                                          "env GENPROC_INCEPTION_WEIGHTS."),
    seed: int = typer.Option(0, "--seed",
                            help="Seed for grids, samples, dequantisation and ELBO noise (the same at every delta)."),
    grid: int = typer.Option(8, "--grid", help="Samples in each delta's grid."),
    batch_size: int = batch_size_option(),
    checkpoint: str | None = checkpoint_option(),
    data_root: str | None = data_root_option(),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Reference-statistics cache for FID/KID."),
    extractor: str | None = typer.Option(None, "--extractor", hidden=True, help="torch-fidelity feature extractor (tests)."),
) -> None:
    """Sec. 4 / App. C.1: sweep the sampling noise delta of heat/blur runs: sample grids (Fig. 6), FID and NLL vs delta
    (Fig. 11)."""
    res = run_analysis(
        run_dirs, lambda runs: dl.analyze_delta(runs, out, deltas=deltas, n=n, metrics=metrics, seed=seed,
                                                inception_weights=inception_weights, extractor=extractor,
                                                cache_dir=cache_dir, n_ref=n_ref, grid=grid, batch_size=batch_size,
                                                log=_echo_err),
        out=out, checkpoint=checkpoint, data_root=data_root, check=lambda: (dl.parse_deltas(deltas), dl.parse_sweep_metrics(metrics)))
    for lab, r in res["results"].items():
        for m, vals in r["values"].items():
            cells = ", ".join(f"{d:g}: {'–' if v is None else f'{v:.4g}'}" for d, v in zip(res["settings"]["deltas"], vals))
            arg = r["argmin"][m]
            typer.echo(f"{lab} {m}: {cells}; lowest at delta {'–' if arg is None else f'{arg:g}'}")
    typer.echo(f"wrote {', '.join(str(out / f) for f in res['files'].values())}")


def gradients_command(
    run_dirs: list[Path] = run_dirs_argument(),
    out: Path = out_option("gradients", "Output folder for gradients.png and gradients.json."),
    n: int = typer.Option(16, "--n", help="Training images whose forward-process states are probed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the forward-process noise."),
    fractions: str = typer.Option(",".join(map(str, gr.DEFAULT_FRACTIONS)), "--fractions",
                                  help="Positions in the chain, k = round(fraction * K) (1 = prior end, 0 = data), "
                                       "comma-separated."),
    pixel: str | None = typer.Option(None, "--pixel", help="Output pixel ROW,COL or CHANNEL,ROW,COL drawn in the figure "
                                                              "(default: the center; statistics also use (0, H//4, W//4))."),
    quantity: str = typer.Option("step", "--quantity", help="step: each model's noise-free step to the next level (the same "
                                                            "quantity for every process); output: the raw network output."),
    include_centre: bool = typer.Option(False, "--include-centre", help="Count the output pixel's own gradient in the radii "
                                                                        "(default: left out, as in the symmetry score)."),
    batch_size: int = batch_size_option(),
    checkpoint: str | None = checkpoint_option(),
    data_root: str | None = data_root_option(),
    sampling: list[str] = sampling_option(),
) -> None:
    """Input gradients of the network (Fig. 8): maps for one output pixel at several points of each chain, the radii
    holding 50% and 90% of the |gradient| (r50, r90) and the maps' circular symmetry (IHDM: small and round; DDPM:
    wider, less symmetric)."""
    res = run_analysis(run_dirs, lambda runs: gr.analyze_gradients(runs, out, n=n, seed=seed,
                                                                   fractions=gr.parse_fractions(fractions),
                                                                   pixel=gr.parse_pixel(pixel), batch_size=batch_size,
                                                                   quantity=quantity, exclude_centre=not include_centre),
                       out=out, checkpoint=checkpoint, data_root=data_root, sampling=sampling)
    for lab, loc in res["locality"].items():
        keys = [gr.mass_key(m) for m in loc["masses"]]
        parts = [f"k={t['level']}: " + ", ".join(f"{key} {gr.fmt_mean_std(t[key], '.2f')}" for key in keys)
                 + f", sym {gr.fmt_mean_std(t[gr.SYMMETRY], '.2f')}, centre {gr.fmt_mean_std(t[gr.CENTRE], '.2f')}"
                 for t in loc["by_fraction"]]
        means = ", ".join(f"{key} " + ("–" if v is None else f"{v:.2f}") for key, v in loc["means"].items())
        typer.echo(f"{lab}: gradient radii {'/'.join(keys)} (px, holding {'/'.join(f'{m:.0%}' for m in loc['masses'])} of the "
                   f"|gradient| mass{'' if include_centre else ' off the pixel itself'}, of the {quantity}), circular symmetry (0..1) and the pixel's own share of the mass (centre): {'; '.join(parts)}; mean {means}")
    typer.echo(f"wrote {out / 'gradients.png'}, {out / 'gradients.json'}")


def interpolation_command(
    run_dirs: list[Path] = run_dirs_argument(),
    out: Path = out_option("interpolation", "Folder for interpolation.png and .json."),
    pairs: int = typer.Option(16, "--pairs", help="Pairs of samples to interpolate between (sample 2p and 2p+1 of --seed)."),
    frames: int = typer.Option(11, "--frames", help="Frames per interpolation, endpoints included (>= 2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the endpoint samples (the same as 'genproc sample --seed')."),
    show: int = typer.Option(4, "--show", help="Pairs drawn in the figure per run."),
    lowpass_sigma: float | None = typer.Option(
        None, "--lowpass-sigma", help="sigma_B (px) of the shape features' low-pass (default image size/16, >= 1)."),
    batch_size: int = batch_size_option(),
    checkpoint: str | None = checkpoint_option(),
    data_root: str | None = data_root_option(PRIOR_DATA_ROOT_HELP),
    sampling: list[str] = sampling_option(),
    sample_set: list[str] = old_flag("--sample-set"),
) -> None:
    """Interpolate between samples: IHDM lerps the prior u_K and slerps every step's noise, DDPM slerps x_T and the noise.
    Measures smoothness per pair (jump ratio, path ratio, in pixels and in a low-pass shape space)."""
    payload = run_analysis(
        run_dirs, lambda runs: ip.analyze_interpolation(runs, out, pairs=pairs, frames=frames, seed=seed, show=show,
                                                        lowpass_sigma=lowpass_sigma, batch_size=batch_size),
        out=out, checkpoint=checkpoint, data_root=data_root, sampling=[*sampling, *sample_set],
        check=lambda: require_positive("--batch-size", batch_size))
    for lab, r in payload["results"].items():
        j, p = r["aggregates"]["jump_ratio"], r["aggregates"]["path_ratio"]
        js, ps = r["aggregates"]["jump_ratio_shape"], r["aggregates"]["path_ratio_shape"]
        typer.echo(f"{lab}: jump ratio {j['mean']:.3f} ± {j['sem']:.3f} (shape {js['mean']:.3f}), "
                   f"path ratio {p['mean']:.3f} ± {p['sem']:.3f} (shape {ps['mean']:.3f}) over {j['n']} pairs")
    typer.echo(f"wrote {out / 'interpolation.png'} and {out / 'interpolation.json'}")


def disentangle_command(
    run_dirs: list[Path] = run_dirs_argument(),
    out: Path = out_option("disentangle", "Folder for the two PNG grids and the JSON."),
    rows: int = typer.Option(6, "--rows", help="Prior states (rows of the shared-noise grid); >= 2."),
    cols: int = typer.Option(6, "--cols", help="Noise sequences (columns of the shared-noise grid); >= 2."),
    seed: int = typer.Option(0, "--seed", help="Seed: prior r and noise c are those of 'genproc sample --seed' samples r and c."),
    batch_size: int = batch_size_option(),
    checkpoint: str | None = checkpoint_option(),
    data_root: str | None = data_root_option(PRIOR_DATA_ROOT_HELP),
    sampling: list[str] = sampling_option(),
    sample_set: list[str] = old_flag("--sample-set"),
) -> None:
    """Shared noise with different priors (do columns keep their shape while rows change colour?) and a shared
    prior with different noise; writes two image grids and the numbers."""
    payload = run_analysis(
        run_dirs, lambda runs: dis.analyze_disentangle(runs, out, rows=rows, cols=cols, seed=seed, batch_size=batch_size),
        out=out, checkpoint=checkpoint, data_root=data_root, sampling=[*sampling, *sample_set],
        check=lambda: require_positive("--batch-size", batch_size))
    for lab, r in payload["results"].items():
        st = r["shared_noise"]
        typer.echo(f"{lab}: shape ratio (same noise / independent) {st['shape_ratio']:.3f}, shape corr same noise "
                   f"{st['shape_corr_same_noise']:.3f} vs independent {st['shape_corr_independent']:.3f}, "
                   f"colour variance from prior {st['colour_var_prior_frac']:.0%}, colour corr with prior "
                   f"{st['colour_prior_corr_mean']:.3f}, colour MAE to own / other priors {st['colour_prior_mae']:.4f} / "
                   f"{st['colour_prior_mae_other']:.4f}" + ("" if r["noise_used"] else " (noise unused)"))
    typer.echo(f"wrote {out / 'disentangle_shared_noise.png'}, {out / 'disentangle_shared_prior.png'} "
               f"and {out / 'disentangle.json'}")


def neighbours_command(
    run_dirs: list[Path] = run_dirs_argument("Run directories written by 'genproc train' (any process)."),
    out: Path = out_option("neighbours", "Folder for the PNGs and neighbours.json."),
    n: int = typer.Option(64, "--n", help="Generated samples per run."),
    k: int = typer.Option(3, "--k", help="Nearest training images shown per sample."),
    n_test: int = typer.Option(1000, "--n-test",
                               help="Held-out test images (the first N of the test split) for the reference distribution."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    batch_size: int = batch_size_option("Images per sampling pass (does not change the results)."),
    checkpoint: str | None = checkpoint_option(),
    data_root: str | None = data_root_option(),
    sampling: list[str] = sampling_option(),
    sample_set: list[str] = old_flag("--sample-set"),
) -> None:
    """App. D.4: samples beside their nearest training images, and NN distances of samples vs test images (memorisation check)."""
    res = run_analysis(
        run_dirs, lambda runs: nb.analyze_neighbours(runs, out, n=n, k=k, n_test=n_test, seed=seed, batch_size=batch_size,
                                                     log=_echo_err),
        out=out, checkpoint=checkpoint, data_root=data_root, sampling=[*sampling, *sample_set])
    for lab, r in res["results"].items():
        s, t = r["samples"], r["test"]
        typer.echo(f"{lab}: median NN distance samples {s['median']:.3f} vs test {t['median']:.3f}; "
                   f"{100 * r['frac_samples_below_test_p01']:.1f}% of samples below the test 1st percentile; "
                   f"P(sample closer than a test image) {r['p_sample_closer_than_test']:.3f}; "
                   f"KS {r['ks_statistic']:.3f}; near-copies {r['n_near_copies']}/{s['n']}")
    typer.echo(f"wrote {', '.join(str(out / f) for f in res['files'].values())}")


COMMANDS: dict[str, Callable[..., None]] = {
    "delta": delta_command,
    "disentangle": disentangle_command,
    "gradients": gradients_command,
    "interpolation": interpolation_command,
    "neighbours": neighbours_command,
    "spectra": spectra_command,
}

for _name, _fn in COMMANDS.items():
    analyze_app.command(_name)(_fn)
