"""Sign of the input gradient at the output pixel and on the ring around it, sigma = 0.01 vs sigma = 0 (App. C.3:
the sigma = 0 model's gradients resemble a working model's with opposite signs). Run from the repository root after
the README's training commands: python analysis/sigma0/centre_sign.py"""

import torch

import genproc
from genproc.analysis.gradients import input_gradients, level_for_fraction

for run_dir in ["runs/quickstart", "runs/quickstart_sigma0"]:
    run = genproc.load(run_dir)
    x0 = run.data.get_batch(torch.arange(16))
    h = x0.shape[-1]
    c = (0, h // 2, h // 2)
    ring = [(c[1] + di, c[2] + dj) for di, dj in [(-1, 0), (1, 0), (0, -1), (0, 1)]]
    cells = []
    for frac in (0.9, 0.5, 0.1, 0.02):
        k = level_for_fraction(frac, run.process.num_levels)
        kk = torch.full((16,), k, dtype=torch.long)
        u = run.process.forward_marginal(x0, kk, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
        g = input_gradients(run, u, k, [c])[0, :, 0]  # (N, H, W)
        centre, near = g[:, c[1], c[2]].mean().item(), torch.stack([g[:, i, j] for i, j in ring]).mean().item()
        cells.append(f"k={k}: centre {centre:+.3f}, 4-neighbours {near:+.3f}")
    print(f"{run_dir} (sigma = {run.recipe.process.sigma}): " + "; ".join(cells))
