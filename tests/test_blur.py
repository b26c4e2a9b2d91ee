"""The Gaussian-blur operator against the heat equation (Sec. 3.1 'dual view')."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import ndimage

from genproc.processes.blur import BlurConfig, BlurProcess, gaussian_blur
from genproc.processes.dct import heat_forward


def _smooth(seed: int = 0, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return heat_forward(torch.rand(2, 3, size, size, generator=g), 0.5)


@pytest.mark.parametrize("sigma_b", [1.0, 1.5, 2.0, 3.0])
def test_agrees_with_heat_away_from_borders(sigma_b):
    x = _smooth()
    a, b = gaussian_blur(x, sigma_b), heat_forward(x, sigma_b**2 / 2)  # sigma_B^2 = 2t
    r = int(4 * sigma_b) + 1  # beyond the kernel's reach from the border
    # interior: only the sampled-vs-continuous kernel and the 4-sigma truncation remain (~1e-5)
    assert (a - b)[..., r:-r, r:-r].abs().max() < 1e-4
    # borders: reflect (about the edge pixel) vs Neumann (about the pixel edge) padding differ
    assert (a - b).abs().max() > 10 * (a - b)[..., r:-r, r:-r].abs().max()


def test_identity_at_zero_and_per_sample_sigma():
    x = _smooth(1)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    sig = torch.tensor([0.0, 2.0])
    y = gaussian_blur(x, sig)
    assert torch.equal(y[:1], x[:1])
    torch.testing.assert_close(y[1:], gaussian_blur(x[1:], 2.0))


def test_kernel_wider_than_image_is_capped_and_keeps_structure():
    """sigma_B = 20 on 28 px: the heat equation leaves an almost constant image, the capped
    reflect-padded Gaussian keeps about twice the contrast (documented difference).

    Heat (Neumann): the mean is conserved and every non-constant mode decays at least by the spectral
    gap exp(-lambda_1 t), lambda_1 = pi^2 / 28^2 (0.081 at t = 200). Blur: the sampled Gaussian, its
    radius capped at 27 px, with reflection about the edge pixel is scipy.ndimage's mode="mirror"
    filter; mirror padding makes it a circular convolution over period 54, so the slowest mode
    cos(pi j / 27) is an eigenvector with gain sum_o g_o cos(pi o / 27) / sum_o g_o (0.161: twice 0.081)."""
    x = torch.zeros(1, 1, 28, 28)
    x[..., :, :7] = 1.0
    t = 20.0**2 / 2
    heat, blur = heat_forward(x, t), gaussian_blur(x, 20.0)
    assert float(heat.mean()) == pytest.approx(7 / 28, abs=1e-6)
    assert heat.std() <= math.exp(-math.pi**2 / 28**2 * t) * x.std()
    ref = ndimage.gaussian_filter(x.double().numpy(), (0, 0, 20.0, 20.0), mode="mirror", truncate=27 / 20)
    torch.testing.assert_close(blur.double(), torch.from_numpy(ref), rtol=0, atol=1e-6)
    o = torch.arange(-27, 28, dtype=torch.float64)
    g = torch.exp(-0.5 * (o / 20.0) ** 2)
    gain = float((g * torch.cos(math.pi * o / 27)).sum() / g.sum())
    mode = torch.cos(math.pi * torch.arange(28.0) / 27).expand(1, 1, 28, 28)
    torch.testing.assert_close(gaussian_blur(mode, 20.0), gain * mode, rtol=0, atol=1e-6)


def test_blur_process_uses_spatial_operator():
    proc = BlurProcess(BlurConfig(K=10, sigma_blur_max=3.0))
    x = _smooth(2)
    k = torch.tensor([3, 10])
    eps = torch.zeros_like(x)
    u, target = proc.training_pair(x, k, eps)
    torch.testing.assert_close(u[1:], gaussian_blur(x[1:], float(proc.sigma_blur[10])))
    torch.testing.assert_close(u + target, torch.stack([gaussian_blur(x[i:i + 1], float(proc.sigma_blur[j - 1]))[0]
                                                        for i, j in enumerate(k.tolist())]))
