"""Why BDM at the small budget does not give digits: the network's ε error per DCT frequency, and the x̂ error it
implies through x̂ = (u_t - σ_t û_ε) / α_t (α_t = a_t d_t, d_t >= d_min = 0.001), on 64 MNIST test images.

    python docs/bdm_mnist_small/eps_error.py runs/bdm_mnist_small
"""

import sys

import torch

import genproc
from genproc.data import build_dataset
from genproc.processes.dct import dct2

torch.manual_seed(0)
run = genproc.load(sys.argv[1])
p = run.process
x0 = build_dataset(run.recipe.data, "test").get_batch(torch.arange(64))
h, w = run.image_shape[1:]
coef_var = dct2(2 * x0 - 1).pow(2).mean(0)[0]  # (H, W) data coefficient variance, [-1, 1] units
print(f"{sys.argv[1]} step {run.step}; 64 test images; low = DCT indices 0..3 x 0..3, high = {h // 2}.. x {w // 2}..")
print("| level k (t = k/T) | ε MSE low | ε MSE high | implied x̂ MSE low | implied x̂ MSE high | data coef. var low | high |")
print("|---|---|---|---|---|---|---|")
lo, hi = (slice(0, 4), slice(0, 4)), (slice(h // 2, h), slice(w // 2, w))
with torch.no_grad():
    for k in (50, 200, 500, 800):
        kk = torch.full((64,), k)
        eps = torch.randn_like(x0)
        err = dct2(run.net(p.forward_marginal(x0, kk, eps), kk) - eps).pow(2).mean(0)[0]  # (H, W)
        implied = (float(p.sigma[k]) / p.alpha(k, (h, w)).float()) ** 2 * err
        print(f"| {k} ({k / p.num_levels:.2f}) | {err[lo].mean():.4f} | {err[hi].mean():.4f} | {implied[lo].mean():.3g} | "
              f"{implied[hi].mean():.3g} | {coef_var[lo].mean():.3g} | {coef_var[hi].mean():.3g} |")
