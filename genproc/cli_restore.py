"""``genproc restore RUN IMAGE_OR_FOLDER... --out DIR``: deblur / super-resolve images with a trained model; registered
in cli.py. Reads the images, calls :func:`genproc.restore.restore`, writes PNGs, a figure and a JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch
import typer

from genproc.cli_common import interrupts, kept_in, now, user_errors
from genproc.errors import GenprocError


def _read(paths: list[Path], channels: int, hw: tuple[int, int], rule: str, what: str) -> tuple[list[Path], torch.Tensor, list[Any]]:
    """(files, images (N, C, H, W) in [0, 1], original (h, w) of each file that was resized, else None)."""
    from PIL import Image

    from genproc.data.folder import as_float, list_images, load_image

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise GenprocError(f"{what} folder {p} holds no images (expected .png, .jpg, ... files)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise GenprocError(f"{what} {p} not found (expected an image file or a folder of images)")
    images, sizes = [], []
    for f in files:
        with Image.open(f) as im:  # the header only: the size before resizing (load_image decodes once)
            w0, h0 = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotated by 90 degrees, as the decoder applies it
                w0, h0 = h0, w0
        sizes.append(None if (h0, w0) == hw else [h0, w0])
        images.append(as_float(load_image(f, channels, hw, rule)))
    return files, torch.stack(images), sizes


def _figure(res: Any, baselines: dict[str, torch.Tensor], refs: torch.Tensor | None, path: Path, rows: int = 8,
            show: int = 6) -> None:
    """A row per image (at most ``rows``): input, restorations (at most ``show``), their mean, baselines, reference."""
    from genproc.analysis.common import new_figure, save_figure

    n_img = min(rows, res.inputs.shape[0])
    cols = [("input", res.inputs)] + [(f"sample {j + 1}", res.samples[:, j]) for j in range(min(show, res.samples.shape[1]))]
    cols += [("mean", res.mean)] + list(baselines.items()) + ([("reference", refs)] if refs is not None else [])
    fig, axes = new_figure(n_img, len(cols), figsize=(1.3 * len(cols), 1.4 * n_img + 0.3), squeeze=False)
    for r in range(n_img):
        for c, (name, imgs) in enumerate(cols):
            ax = axes[r, c]
            im = imgs[r].permute(1, 2, 0).numpy()
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name.replace("_", " "), fontsize=7)
            if c == 0:
                ax.set_ylabel(f"k={int(res.levels[r])}", fontsize=7)
    save_figure(fig, path)


def restore_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'genproc train' (or a released model)."),
    images: list[Path] = typer.Argument(..., help="Image files or folders of images to restore."),
    out: Path = typer.Option(..., "--out", help="Output folder: restored/, mean/, restore.png, restore.json."),
    level: str = typer.Option("auto", "--level", help="auto (estimated per image from its spectrum) or a level K to start every chain from."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Super-resolution: the images are the model's size / S; they are upsampled (bicubic) and restored."),
    n: int = typer.Option(8, "--n", help="Restorations per image (their mean is written too)."),
    seed: int = typer.Option(0, "--seed", help="Seed; restoration j of image i depends only on (seed, i, j)."),
    noise: Optional[float] = typer.Option(None, "--noise", help="The images' noise std in [0, 1] units, if known (default: estimated)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Folder of the sharp originals (same file names): PSNR and SSIM in restore.json."),
    baselines: bool = typer.Option(False, "--baselines", help="Also run Wiener, Richardson-Lucy (scikit-image) and the exact heat-operator Wiener filter."),
    batch_size: int = typer.Option(64, "--batch-size", help="Chains per forward pass (does not change the results)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Checkpoint step or folder (default: latest)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Training data (its mean spectrum is the reference of --level auto), if it moved."),
) -> None:
    """Deblur or super-resolve images: run the model's reverse chain from the level that matches their blur."""
    started = now()
    with user_errors(), interrupts(lambda _: kept_in(out, started, "rerun to restore the images")):
        from genproc.progress import counter
        from genproc.restore import psnr_ssim, reference_power, restore
        from genproc.restore.baselines import run_baselines
        from genproc.run import load

        if level != "auto" and not level.isdigit():
            raise GenprocError(f"--level must be 'auto' or a level number, got {level!r}")
        if scale is not None and scale < 1:
            raise GenprocError(f"--scale must be >= 1, got {scale}")
        run = load(run_dir, checkpoint=checkpoint, data_root=data_root)
        c, h, w = run.image_shape
        if level != "auto" and not 1 <= int(level) <= run.process.num_levels:
            raise GenprocError(f"--level {level} is outside this {run.process.label} model's levels 1..{run.process.num_levels}")
        in_hw = (h // scale, w // scale) if scale else (h, w)
        rule = run.recipe.data.resize
        files, y, sizes = _read(list(images), c, in_hw, rule, "image")
        refs = None
        if reference is not None:
            ref_files = [reference / f.name for f in files]
            if missing := [str(p) for p in ref_files if not p.is_file()]:
                raise GenprocError(f"no reference for {missing[0]} (expected the same file names in {reference})")
            # resized to the model's size by the recipe's rule, as the inputs are (the record names each one)
            _, refs, ref_sizes = _read(ref_files, c, (h, w), rule, "reference")
        bar = counter("restoring", len(files) * n, progress=sys.stderr.isatty(), log=None)
        res = restore(run, y, level="auto" if level == "auto" else int(level), n=n, seed=seed, scale=scale, noise=noise,
                      batch_size=batch_size, progress=bar)
        bar.close()
        from genproc.engine.media import save_pngs

        base = run_baselines(res.inputs, res.estimate.tau, res.estimate.noise, reference_power(run)) if baselines else {}
        out.mkdir(parents=True, exist_ok=True)
        stems = [f.stem for f in files]
        save_pngs(res.samples.flatten(0, 1), out / "restored", names=[f"{s}_s{j}" for s in stems for j in range(n)])
        save_pngs(res.mean, out / "mean", names=stems)
        for name, imgs in base.items():
            save_pngs(imgs, out / name, names=stems)
        _figure(res, base, refs, out / "restore.png")
        record: dict[str, Any] = {
            "run": str(run_dir), "step": run.step, "process": run.process_name,
            "settings": {"level": level, "scale": scale, "n": n, "seed": seed, "noise": noise},
            "resize": f"images of another size than {in_hw[0]}x{in_hw[1]} were resized by the recipe's rule '{rule}'",
            "images": [{"file": str(f), "resized_from": s, "level": int(k), "sigma_blur": float(sb), "noise": float(nz)}
                       for f, s, k, sb, nz in zip(files, sizes, res.levels, res.estimate.sigma_blur, res.estimate.noise)]}
        if refs is not None:
            record["references"] = [{"file": str(f), "resized_from": s} for f, s in zip(ref_files, ref_sizes)]
            methods = {"input": res.inputs, "mean": res.mean, **base}
            metrics = {}
            for name, imgs in methods.items():
                p, s = psnr_ssim(imgs, refs)
                metrics[name] = {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s)}
            per_sample = [psnr_ssim(res.samples[:, j], refs) for j in range(n)]
            metrics["sample"] = {"psnr": sum(sum(p) for p, _ in per_sample) / (n * len(files)),
                                 "ssim": sum(sum(s) for _, s in per_sample) / (n * len(files))}
            record["metrics"] = metrics
            record["metrics_note"] = ("PSNR (dB) and SSIM by scikit-image against the references, mean over images; "
                                      "'sample': over every restoration, 'mean': of each image's mean restoration")
        (out / "restore.json").write_text(json.dumps(record, indent=1))
    resized = sum(s is not None for s in sizes)
    refs_resized = sum(s is not None for s in ref_sizes) if refs is not None else 0
    typer.echo(f"restored {len(files)} image(s) x {n} with {run_dir} (levels {sorted(set(res.levels.tolist()))})"
               + (f"; {resized} resized to {in_hw[0]}x{in_hw[1]} by '{rule}'" if resized else "")
               + (f"; {refs_resized} reference(s) resized to {h}x{w} by '{rule}'" if refs_resized else "")
               + (" | " + ", ".join(f"{k} PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f}" for k, v in record["metrics"].items())
                  if "metrics" in record else "") + f" -> {out}")
