"""The IHDM reverse chain (Alg. 2) with an oracle network walks back down the heat-equation
levels: after the step from level k the state is F(t_{k-1}) x0, checked against an independent
closed form of the heat equation (scipy's orthonormal DCT-II, not genproc's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import fft

from genproc.processes.heat import HeatConfig, HeatProcess, blur_schedule

K, SIGMA_MIN, SIGMA_MAX, H, W = 5, 0.5, 4.0, 6, 9  # non-square: lambda_nm scales by H and W separately


def _heat_closed_form(x0: np.ndarray, t: float) -> np.ndarray:
    """F(t) x0 = V exp(-Lambda t) V^T x0 over the last two axes: orthonormal DCT-II coefficients
    times exp(-lambda_nm t), lambda_nm = pi^2 (n^2/H^2 + m^2/W^2) (Neumann boundaries)."""
    h, w = x0.shape[-2:]
    lam = np.pi**2 * (np.arange(h)[:, None] ** 2 / h**2 + np.arange(w)[None, :] ** 2 / w**2)  # (H, W)
    return fft.idctn(fft.dctn(x0, type=2, axes=(-2, -1), norm="ortho") * np.exp(-lam * t), type=2, axes=(-2, -1),
                     norm="ortho")


@pytest.mark.parametrize("delta", [0.0, 0.05])
@pytest.mark.parametrize("dct", ["matmul", "fft"])
def test_oracle_reverse_chain_reproduces_the_heat_levels(delta, dct):
    # App. B.5: sigma_B,k = sigma_min (sigma_max/sigma_min)^((k-1)/(K-1)) for k = 1..K, sigma_B,0 = 0; t_k = sigma_B,k^2 / 2
    sig = [0.0] + [SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** ((k - 1) / (K - 1)) for k in range(1, K + 1)]
    np.testing.assert_allclose(blur_schedule(K, SIGMA_MIN, SIGMA_MAX).numpy(), sig, rtol=1e-12, atol=0)
    proc = HeatProcess(HeatConfig(K=K, sigma_blur_min=SIGMA_MIN, sigma_blur_max=SIGMA_MAX, delta=delta, dct=dct))
    x0 = torch.rand(3, 2, H, W, generator=torch.Generator().manual_seed(0))
    ref = [torch.from_numpy(_heat_closed_form(x0.double().numpy(), s**2 / 2)) for s in sig]  # ref[k] = F(t_k) x0, float64

    def oracle(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # f(x, k) = F(t_{k-1}) x0 - x, the exact residual
        assert k.shape == (x.shape[0],) and bool((k == k[0]).all())
        return proc.blur(x0, int(k[0]) - 1) - x

    levels = proc.reverse_levels()
    assert levels == [5, 4, 3, 2, 1]  # Alg. 2: k = K..1
    g = torch.Generator().manual_seed(1)
    x = proc.blur(x0, K)
    torch.testing.assert_close(x.double(), ref[K], rtol=0, atol=1e-6)
    for k in levels:
        noise = torch.randn(x.shape, generator=g)
        x = proc.reverse_step(x, oracle(x, torch.full((x.shape[0],), k)), k, k - 1, noise)
        # x_{k-1} = x_k + f + delta eps = F(t_{k-1}) x0 + delta eps, and no noise into level 0 (App. B.1)
        want = ref[k - 1] + (delta * noise.double() if k > 1 else 0.0)
        torch.testing.assert_close(x.double(), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(x.double(), x0.double(), rtol=0, atol=1e-6)  # level 0 is the data
