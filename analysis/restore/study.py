"""The restoration study (issue 13): held-out MNIST degraded by heat blur (σ_B 1, 2, 4, 8 px) with noise 0 / 0.01 /
0.05, by a spatial Gaussian (scipy, σ_B 2 px), and ×2 / ×4 down-sampling; restored by the IHDM model (level auto:
estimated from each image), its deterministic chain (δ = 0), DDPM SDEdit, scikit-image Wiener and Richardson-Lucy and
the exact heat-operator Wiener filter (the baselines get the true blur and noise); PSNR / SSIM (scikit-image) per
method, FID (Inception, torch-fidelity) of the restored sets with --fid. SDEdit runs DDPM's DDIM-50 levels below its
start level (at most 50 network calls, as IHDM's K = 50).

    python analysis/restore/study.py --ihdm runs/ihdm_mnist_small --ddpm runs/ddpm_mnist_small \
        --data-root ../shared/data/mnist --n 100 --out analysis/restore

Writes results.json (every number), table.md and restore_examples.png into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from genproc.data import build_dataset
from genproc.processes.dct import heat_forward
from genproc.restore import psnr_ssim, reference_power, restore, upsample
from genproc.restore.baselines import run_baselines
from genproc.restore.levels import estimate_blur
from genproc.run import load

FID_CASES = ("heat σ_B=4 noise=0", "x4 super-resolution")


def fid(images: torch.Tensor, reference, weights_path: str | None) -> float:
    """FID (Inception features, torch-fidelity, genproc's FID path) of ``images`` (N, C, H, W) in [0, 1] against the
    whole ``reference`` set. With N = --n images the value is biased upwards (FID's small-sample bias): compare
    methods at the same N only."""
    from torch.utils.data import Dataset

    from genproc.metrics.fidelity import fidelity_metrics, reference_key
    from genproc.metrics.images import ReferenceImages, to_uint8_rgb
    from genproc.metrics.inception import INCEPTION, resolve_weights

    class Images(Dataset):
        def __len__(self):
            return images.shape[0]

        def __getitem__(self, i):
            return to_uint8_rgb(images[i])

    weights = resolve_weights(INCEPTION, weights_path)
    refs = ReferenceImages(reference)
    out = fidelity_metrics(Images(), refs, {"fid"}, weights=weights, reference_name=reference_key(reference, len(refs), weights),
                           log=lambda *_: None)
    from torch_fidelity import KEY_METRIC_FID

    return float(out[KEY_METRIC_FID])


def degradations() -> list[dict]:
    out = [{"name": f"heat σ_B={sb:g} noise={s:g}", "kind": "heat", "sigma_blur": sb, "noise": s}
           for sb in (1.0, 2.0, 4.0, 8.0) for s in (0.0, 0.01, 0.05)]
    out.append({"name": "gaussian σ_B=2 noise=0", "kind": "gaussian", "sigma_blur": 2.0, "noise": 0.0})
    out += [{"name": f"x{s} super-resolution", "kind": "sr", "scale": s, "noise": 0.0} for s in (2, 4)]
    return out


def degrade(x: torch.Tensor, d: dict, seed: int) -> torch.Tensor:
    """The observation (at low resolution for 'sr'), quantised to 8 bits like a stored image."""
    if d["kind"] == "heat":
        y = heat_forward(x, d["sigma_blur"] ** 2 / 2)
    elif d["kind"] == "gaussian":
        sb = d["sigma_blur"]
        y = torch.from_numpy(scipy.ndimage.gaussian_filter(x.double().numpy(), (0, 0, sb, sb), mode="reflect")).float()
    else:
        y = F.avg_pool2d(x, d["scale"])
    y = y + d["noise"] * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return (y * 255).round().clamp(0, 255) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ihdm", required=True)
    ap.add_argument("--ddpm", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n", type=int, default=100, help="test images per degradation")
    ap.add_argument("--samples", type=int, default=4, help="IHDM restorations per image (their mean is scored too)")
    ap.add_argument("--fid", action="store_true", help="FID of every method's restored set (the --n images) against the test "
                    "set, in the σ_B=4 noise=0 and x4 cases")
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--only", default=None, help="comma-separated substrings: run only the degradations whose name has one")
    ap.add_argument("--out", default="analysis/restore")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ihdm = load(args.ihdm, data_root=args.data_root)
    det = ihdm.with_sampling(delta=0.0)
    # SDEdit with DDIM-50 levels (at most 50 network calls from any start level, like IHDM's K = 50)
    ddpm = load(args.ddpm, data_root=args.data_root).with_sampling(sampler="ddim", steps=50) if args.ddpm else None
    power = reference_power(ihdm)
    test = build_dataset(ihdm.recipe.data, "test", args.data_root)
    x = test.get_batch(torch.arange(args.n))
    results, examples = [], {}
    chosen = [d for d in degradations() if args.only is None or any(s in d["name"] for s in args.only.split(","))]
    for di, d in enumerate(chosen):
        t0 = time.time()
        y = degrade(x, d, seed=di)
        scale = d.get("scale")
        y_full = upsample(y, x.shape[-2:]) if scale else y
        if d["kind"] == "sr":  # the baselines need a PSF: the upsampled image's estimated blur
            est = estimate_blur(y_full, power, 200.0)
            tau, noise = est.tau, est.noise
        else:
            tau, noise = torch.full((args.n,), d["sigma_blur"] ** 2 / 2), torch.full((args.n,), d["noise"])
        methods = {"input": y_full}
        res = restore(ihdm, y, n=args.samples, seed=0, scale=scale, power=power)
        methods["IHDM (mean of samples)"] = res.mean
        methods["IHDM (sample)"] = res.samples[:, 0]
        methods["IHDM δ=0"] = restore(det, y, n=1, seed=0, scale=scale, power=power).samples[:, 0]
        if ddpm is not None:
            methods["DDPM SDEdit"] = restore(ddpm, y, n=1, seed=0, scale=scale, power=power).samples[:, 0]
        base = run_baselines(y_full, tau, noise, power)
        methods.update({"Wiener (scikit-image)": base["wiener"], "Richardson-Lucy (scikit-image)": base["richardson_lucy"],
                        "heat-operator Wiener (DCT)": base["dct_wiener"]})
        row = {"degradation": d, "levels": {"median": float(res.levels.float().median()),
                                           "sigma_blur_estimated_median": float(res.estimate.sigma_blur.median()),
                                           "noise_estimated_median": float(res.estimate.noise.median())}, "methods": {}}
        for name, imgs in methods.items():
            p, s = psnr_ssim(imgs, x)
            row["methods"][name] = {"psnr": float(np.mean(p)), "psnr_se": float(np.std(p) / np.sqrt(len(p))),
                                    "ssim": float(np.mean(s)), "ssim_se": float(np.std(s) / np.sqrt(len(s)))}
        if args.ihdm and len(res.samples[0]) > 1:  # the spread of the posterior samples: a perception-distortion view
            row["ihdm_sample_std"] = float(res.samples.std(1).mean())
        if args.fid and d["name"] in FID_CASES:
            for name, imgs in methods.items():
                row["methods"][name]["fid"] = fid(imgs, test, args.inception_weights)
        row["seconds"] = time.time() - t0
        results.append(row)
        examples[d["name"]] = {k: v[:6] for k, v in methods.items()}
        print(f"{d['name']}: " + ", ".join(f"{k} {v['psnr']:.2f}/{v['ssim']:.3f}" for k, v in row["methods"].items())
              + f" ({row['seconds']:.0f} s)", flush=True)
        (out / "results.json").write_text(json.dumps({"n": args.n, "samples": args.samples, "ihdm": args.ihdm,
                                                      "ddpm": args.ddpm, "results": results}, indent=1))
    names = list(results[0]["methods"])
    lines = ["| degradation | level (median) | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in results:
        lines.append(f"| {r['degradation']['name']} | {r['levels']['median']:g} | "
                     + " | ".join(f"{r['methods'][m]['psnr']:.2f} / {r['methods'][m]['ssim']:.3f}" for m in names) + " |")
    (out / "table.md").write_text("PSNR (dB) / SSIM, mean over " f"{args.n} test images\n\n" + "\n".join(lines) + "\n")
    _figure(examples, x[:6], out / "restore_examples.png")


def _figure(examples: dict, ref: torch.Tensor, path: Path) -> None:
    """One panel row per degradation (first image), columns: the methods and the reference."""
    from genproc.analysis.common import new_figure, save_figure

    rows = list(examples)
    cols = list(next(iter(examples.values()))) + ["reference"]
    fig, axes = new_figure(len(rows), len(cols), figsize=(1.25 * len(cols), 1.3 * len(rows) + 0.6), squeeze=False)
    for r, dn in enumerate(rows):
        for c, m in enumerate(cols):
            img = ref[0] if m == "reference" else examples[dn][m][0]
            ax = axes[r, c]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(m, fontsize=6)
            if c == 0:
                ax.set_ylabel(dn, fontsize=5)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
