"""The ``genproc`` command line (typer). Thin: parse, validate, call library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from genproc.cli_common import PluginGroup, interrupts, joined_ranks, kept_in, now, old_flag, sampling_option, user_errors
from genproc.errors import GenprocError

app = typer.Typer(
    help="genproc: train, sample and compare iterative generative models of images "
    "(Inverse Heat Dissipation, DDPM, Gaussian blur) on one engine. Every command takes --plugin MODULE_OR_FILE "
    "(or $GENPROC_PLUGINS): your own module that registers a process, imported first.",
    cls=PluginGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/quickstart.yaml."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: runs/<recipe name>). An existing one is resumed from its latest checkpoint."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Folder of the data set (overrides data.root and $GENPROC_DATA)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set train.lr=1e-4 (repeatable)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Train until this global step (a resumed run stops where an uninterrupted one would)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and parameter count, then exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the tqdm progress bar."),
) -> None:
    """Train a model from a recipe (or resume it). Launch under torchrun for multi-GPU/multi-process DDP."""
    with user_errors():
        from genproc.recipe import load_recipe, recipe_to_yaml

        r = load_recipe(recipe, set_)
        if max_steps is not None and max_steps < 0:
            raise GenprocError(f"--max-steps must be >= 0, got {max_steps}")
        if dry_run:
            from genproc.nets import build_net, count_parameters

            net = build_net(r.net, r.data.channels, r.data.image_hw)
            typer.echo(recipe_to_yaml(r).rstrip())
            typer.echo(f"# parameters: {count_parameters(net):,}")
            return
        from genproc.api import train as run_train

        try:
            run = run_train(r, run_dir, data_root=data_root, max_steps=max_steps, progress=progress)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    typer.echo(f"done: step {run.step}, samples in {run.run_dir / 'samples'}, checkpoints in {run.run_dir / 'checkpoints'}")


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'genproc train'."),
    n: int = typer.Option(64, "--n", help="Number of samples."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: <run_dir>/samples/seed<seed>-<sampler>-nfe<network calls>)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="IHDM/blur sampling noise std; short for --sampling delta=VALUE (default: the recipe's)."),
    seed: int = typer.Option(0, "--seed", help="Seed; sample i depends only on (seed, i)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per forward pass (does not change the samples)."),
    same_init: bool = typer.Option(False, "--same-init", help="All samples start from the same prior state."),
    share_noise: bool = typer.Option(False, "--share-noise", help="All samples use the same per-step noise."),
    capture_every: int = typer.Option(0, "--capture-every", help="Keep every m-th state for the GIF / npz (0: ~20 frames, -1: none)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Checkpoint step or folder (default: latest)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Data folder for the prior, if it moved since training."),
    weights: str = typer.Option("ema", "--weights", help="ema (default) or model."),
    sampling: list[str] = sampling_option(),
    old_set: list[str] = old_flag("--set"),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, bf16 or fp16 autocast for the network (default: the recipe's train.precision)."),
) -> None:
    """Draw samples from a trained run: grid.png, sequence.gif, samples.npz and images/*.png. Under torchrun
    (torchrun --nproc-per-node G -m -- genproc.cli sample ...; the '--' keeps
    torchrun from reading --n as its own option) the samples are split across the G processes."""
    dest, started = out, now()  # the default folder is named once the sampler is known

    def kept(e: KeyboardInterrupt) -> str:
        return kept_in(dest, started, "rerun to draw the samples") if dest else "nothing written; rerun to draw the samples"

    with user_errors(), joined_ranks() as main, interrupts(kept, main):
        if n < 1:
            raise GenprocError(f"--n must be >= 1, got {n}")
        if batch_size < 1:
            raise GenprocError(f"--batch-size must be >= 1, got {batch_size}")
        if precision not in (None, "fp32", "bf16", "fp16"):
            raise GenprocError(f"--precision must be fp32, bf16 or fp16, got {precision!r}")
        from genproc.engine import write_samples
        from genproc.run import load

        run = load(run_dir, checkpoint=checkpoint, data_root=data_root, weights=weights)
        run = run.with_sampling([*old_set, *sampling, *([] if delta is None else [f"delta={delta}"])])
        res = run.sample(n, seed=seed, batch_size=batch_size, same_init=same_init, share_noise=share_noise,
                         capture_every=capture_every, progress=sys.stderr.isatty() and main, precision=precision)
        if not main:
            return
        how = run.sampling_record()
        dest = out or run_dir / "samples" / f"seed{seed}-{how['sampler']}-nfe{how['calls']}"
        files = write_samples(res, dest)
    typer.echo(f"{n} samples from {run_dir} (step {run.step}) by {how['sampler']}, {how['calls']} network calls per "
               f"image -> " + ", ".join(files.values()))


@app.command("samplers")
def samplers_command(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory: list the samplers that can drive its process."),
) -> None:
    """List the registered samplers, the view each needs and its settings (defaults); with RUN_DIR, those for that
    run's process, its current one marked *."""
    with user_errors():
        import dataclasses

        from genproc import samplers

        run = None
        if run_dir is not None:
            from genproc.run import load

            run = load(run_dir, device="cpu")
        names = samplers.supported(run.process) if run is not None else samplers.registered()
        current = run.sampling_record()["sampler"] if run is not None else None
        for name in names:
            reg = samplers.lookup(name)
            steps = reg.sampler_cls.default_steps or "all levels"
            keys = ", ".join(f"{f.name}={steps if f.name == 'steps' else f.default}"
                             for f in dataclasses.fields(reg.config_cls))
            mark = "*" if name == current else " "
            typer.echo(f"{mark} {name:<12} {reg.sampler_cls.description}; needs {reg.sampler_cls.needs()}\n"
                       f"  {'':<12} settings: {keys}")


@app.command("cache")
def cache_command(
    recipe: Path = typer.Argument(..., help="A recipe whose data is an image folder (data.name: folder)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="The image folder (overrides data.root)."),
    split: str = typer.Option("train", "--split", help="train, test or both."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set data.image_size=128 (repeatable)."),
) -> None:
    """Decode an image folder once at the recipe's size into a uint8 array next to the data (checksummed); training
    and evaluation then read it memory-mapped instead of decoding the files."""
    with user_errors():
        import functools

        from genproc.data.folder import folder_files, load_image
        from genproc.data.folder_cache import build_cache
        from genproc.data.roots import resolve_root
        from genproc.progress import counter
        from genproc.recipe import load_recipe

        r = load_recipe(recipe, list(set_))
        d = r.data
        if d.name != "folder":
            raise GenprocError(f"'genproc cache' is for image folders (data.name: folder); {recipe} reads '{d.name}', "
                               "which is already held in memory")
        if split not in ("train", "test", "both"):
            raise GenprocError(f"--split must be train, test or both, got {split!r}")
        root = resolve_root(d, data_root)
        for sp in (["train", "test"] if split == "both" else [split]):
            base, files = folder_files(d, sp, root)
            decode = functools.partial(load_image, channels=d.channels, hw=d.image_hw, rule=d.resize,
                                       max_upscale=d.max_upscale)
            bar = counter(f"caching {sp}", len(files), progress=sys.stderr.isatty(), log=None)
            path = build_cache(files, base, sp, d.image_hw, d.channels, d.resize, decode, progress=bar.update)
            bar.close()
            typer.echo(f"cached {len(files)} {sp} images at {d.image_hw[0]}x{d.image_hw[1]} ({d.resize}) in {path} "
                       f"({path.stat().st_size / 2**20:.1f} MiB)")


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'genproc train'."),
    out: Path = typer.Argument(..., help="The released model's folder (a run dir holding EMA weights only)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Checkpoint step or folder (default: latest)."),
    dtype: str = typer.Option("fp16", "--dtype", help="Weights dtype: fp16 (default), bf16 or fp32."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Training data, when the prior must be computed and the data moved."),
    recompute_prior: bool = typer.Option(False, "--recompute-prior", help="Compute the stored prior from the training set even if the checkpoint has one."),
) -> None:
    """Release a trained model: EMA weights (fp16), the prior it needs (no data set to sample) and its recipe."""
    with user_errors(), interrupts(lambda _: f"nothing written ({out} is written whole or not at all); rerun to export"):
        from genproc.run import export

        path = export(run_dir, out, checkpoint=checkpoint, dtype=dtype, data_root=data_root,
                      recompute_prior=recompute_prior, log=typer.echo)
        size = sum(f.stat().st_size for f in path.iterdir())
    typer.echo(f"released {run_dir} as {out} ({path.name}, {size / 2**20:.2f} MiB): genproc sample {out}")


from genproc.cli_analyze import analyze_app  # noqa: E402
from genproc.cli_compare import compare_command  # noqa: E402
from genproc.cli_evaluate import evaluate_command  # noqa: E402
from genproc.cli_frontier import frontier_command  # noqa: E402
from genproc.cli_restore import restore_command  # noqa: E402
from genproc.cli_runs import runs_command  # noqa: E402

app.command("evaluate")(evaluate_command)
app.command("compare")(compare_command)
app.command("frontier")(frontier_command)
app.command("restore")(restore_command)
app.command("runs")(runs_command)
app.add_typer(analyze_app, name="analyze")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
