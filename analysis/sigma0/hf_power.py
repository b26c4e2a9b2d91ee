"""High-frequency power of the sigma-study samples relative to the data (run from analysis/sigma0 after the
README's commands): mean log10 of (sample PSD / data PSD) over the DCT frequency bins f >= 0.25 cycles/pixel."""

import numpy as np
import torch

from genproc.analysis.spectra import radial_psd
from genproc.data import build_dataset
from genproc.recipe import DataConfig

data = build_dataset(DataConfig(name="digits", image_size=16, channels=1), "train", None)
x = data.get_batch(torch.arange(256))
f, psd_data = radial_psd(x)
hi = f >= 0.25
for name in ["sigma0.01", "sigma0", "sigma0_delta0"]:
    s = torch.from_numpy(np.load(f"samples_{name}/samples.npz")["images"])
    _, psd = radial_psd(s)
    print(f"{name}: mean log10 PSD ratio samples/data at f >= 0.25: {np.mean(np.log10(psd[hi] / psd_data[hi])):.2f}")
