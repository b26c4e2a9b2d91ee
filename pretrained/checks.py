"""Prints the figures pretrained/README.md quotes: each released heat/blur model's stored prior (coefficients kept,
storage dtype, bound, measured error), how far the IHDM release's step-3600 grid is from the README Results run's,
and how far the IHDM and blur releases' samples are from their full runs' (fp32 EMA weights, prior from the training set).
Run from the repository root on the machine that trained them (it reads runs/):
python pretrained/checks.py > pretrained/checks.txt"""

from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

import genproc

for name in ("ihdm_mnist_small", "blur_mnist_small"):
    s = load_file(f"pretrained/{name}/checkpoints/step_00003600/prior.safetensors")
    print(f"{name} prior: kept coefficients", int(s["index"].numel()), "of", int(s["hw"].prod()),
          "| stored as", str(s["coef"].dtype).replace("torch.", ""), "| bound", float(s["bound"][0]),
          "| measured max error", float(s["max_error"][0]),
          "| coef bytes", s["coef"].numel() * s["coef"].element_size(), "for", s["coef"].shape[0], "centres")
a = np.asarray(Image.open("docs/ihdm_mnist_small_grid.png")).astype(int)
b = np.asarray(Image.open("runs/ihdm_mnist_small/samples/step_00003600.png")).astype(int)
print("ihdm step-3600 grids, README run vs release run: mean |diff|", round(float(np.abs(a - b).mean()), 3), "of 255")

for name in ("ihdm_mnist_small", "blur_mnist_small"):
    full = genproc.load(f"runs/{name}", data_root="../shared/data/mnist")
    full = replace(full, stored_prior=None)  # the KDE centres blurred from the training set itself
    x, y = full.sample(16, seed=0).images, genproc.load(f"pretrained/{name}").sample(16, seed=0).images
    d = (x - y).abs()
    print(f"{name} 16 samples seed 0, full run (fp32 EMA, data prior) vs release (fp16 EMA, stored prior): max |diff|",
          round(float(d.max()), 4), "mean |diff|", round(float(d.mean()), 5), "(images in [0, 1])")
print("  torch", torch.__version__)
