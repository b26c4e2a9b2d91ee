"""Is scipy's Gaussian blur (reflect borders) the heat blur? On the study's 64 images at σ_B = 2 px:

    python analysis/restore/gaussian_vs_heat.py > analysis/restore/gaussian_vs_heat.txt
"""

import scipy.ndimage
import torch
from study import degrade

from genproc.data import build_dataset
from genproc.processes.dct import heat_forward
from genproc.recipe import load_recipe

r = load_recipe("recipes/ihdm_mnist_small.yaml")
x = build_dataset(r.data, "test", "../shared/data/mnist").get_batch(torch.arange(64))
g = degrade(x, {"kind": "gaussian", "sigma_blur": 2.0, "noise": 0.0}, seed=0)
h = degrade(x, {"kind": "heat", "sigma_blur": 2.0, "noise": 0.0}, seed=0)
raw_g = torch.from_numpy(scipy.ndimage.gaussian_filter(x.double().numpy(), (0, 0, 2, 2), mode="reflect")).float()
raw_h = heat_forward(x, 2.0)
print(f"64 MNIST test images, sigma_B = 2 px: max |scipy gaussian_filter(mode=reflect) - heat_forward(t = 2)| = "
      f"{float((raw_g - raw_h).abs().max()):.2e}")
print(f"after 8-bit quantisation: {int((g != h).sum())} of {g.numel()} pixels differ, by at most "
      f"{float((g - h).abs().max() * 255):.0f}/255")
