"""The Gaussian-blur variant of IHDM: the same probabilistic model, but the forward operator
is a spatial separable Gaussian convolution with sigma_B = sqrt(2 t) and reflect padding
(the "dual view" of Sec. 3.1) instead of the heat equation solved in the DCT basis.

Where the two differ (see tests/test_blur.py):
* Borders: torch's ``reflect`` padding mirrors about the edge pixel (d c b | a b c d), the heat
  equation's Neumann boundary mirrors about the pixel edge (d c b a | a b c d); near the border
  the two blurs differ by O(gradient) there, away from it they agree for small t.
* Kernel width: reflect padding cannot exceed the image, so the kernel radius is capped at
  size - 1. For sigma_B comparable to the image (sigma_B,max = 20 on 28 px) the result is not the
  near-constant image of the heat equation: low frequencies survive, the prior keeps more structure.
* Sampling: a sampled Gaussian is not the discrete heat kernel; for sigma_B < 1 they differ most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genproc.processes.heat import HeatConfig, HeatProcess


@dataclass
class BlurConfig(HeatConfig):
    truncate: float = 4.0  # kernel radius in units of sigma_B (capped at image size - 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding.

    x: (N, C, H, W) float; sigma: float or (N,) per-sample std in pixels (0 = identity).
    Returns (N, C, H, W) float32.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        n, c, h, w = x.shape
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(n)
        smax = float(sigma.max())
        if smax <= 0:
            return x.clone()
        out = x
        for dim, size in ((-1, w), (-2, h)):
            r = int(min(math.ceil(truncate * smax), size - 1))
            if r < 1:
                continue
            offs = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
            s = sigma.clamp_min(1e-6)[:, None]
            kern = torch.exp(-0.5 * (offs[None] / s) ** 2)  # (N, 2r+1)
            kern = torch.where(sigma[:, None] > 0, kern, (offs[None] == 0).float())
            kern = kern / kern.sum(1, keepdim=True)
            kern = kern.repeat_interleave(c, 0)  # (N*C, 2r+1)
            y = out.reshape(1, n * c, h, w)
            if dim == -1:
                y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), kern[:, None, None, :], groups=n * c)
            else:
                y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kern[:, None, :, None], groups=n * c)
            out = y.reshape(n, c, h, w)
        return out


class BlurProcess(HeatProcess):
    """IHDM with a spatial Gaussian blur as the forward operator (everything else identical, the ELBO included)."""

    label = "Blur"

    def blur(self, x: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
        """G(sigma_B,k) * x with sigma_B,k = sqrt(2 t_k); k: int or (N,) int64."""
        k = torch.as_tensor(k)
        sig = self.sigma_blur[k.cpu()].float()  # sigma_B,k = sqrt(2 t_k)
        return gaussian_blur(x, sig.to(x.device), self.cfg.truncate)

    def blur_by_time(self, y: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """A spatial Gaussian of std √(2 dt) (Gaussians compose by adding variances; with reflect padding only
        approximately near the borders)."""
        return gaussian_blur(y, (2 * dt.double()).sqrt().float().to(y.device), self.cfg.truncate)
