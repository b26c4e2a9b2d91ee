"""Prints the figures pretrained/README.md quotes: the released IHDM model's stored prior (coefficients kept, bound,
measured error) and how far its step-3600 grid is from the README Results run's. Run from the repository root on the
machine that trained it (it reads runs/ihdm_mnist_small): python pretrained/checks.py > pretrained/checks.txt"""

import numpy as np
from PIL import Image
from safetensors.torch import load_file

s = load_file("pretrained/ihdm_mnist_small/checkpoints/step_00003600/prior.safetensors")
print("ihdm_mnist_small prior: kept coefficients", int(s["index"].numel()), "of", int(s["hw"].prod()),
      "| bound", float(s["bound"][0]), "| measured max error", float(s["max_error"][0]),
      "| coef bytes", s["coef"].numel() * 4, "for", s["coef"].shape[0], "centres")
a = np.asarray(Image.open("docs/ihdm_mnist_small_grid.png")).astype(int)
b = np.asarray(Image.open("runs/ihdm_mnist_small/samples/step_00003600.png")).astype(int)
print("step-3600 grids, README run vs release run: mean |diff|", round(float(np.abs(a - b).mean()), 3), "of 255")
