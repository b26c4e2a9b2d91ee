"""Blurring Diffusion against closed forms: the schedule, the forward marginal, the posterior (brute-force Gaussian
conditioning), the σ_B,max = 0 limit (plain Gaussian diffusion), DDIM with η = 1 (the ancestral posterior) and the
ELBO of an oracle on a one-image data set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from conftest import make_sampler
from torch.distributions import Normal, kl_divergence

from genproc.processes.bdm import BDMConfig, BDMProcess, blur_sigma, logsnr_cosine
from genproc.processes.bdm_elbo import BDMELBO
from genproc.processes.rng import SampleRNG


def _proc(**kw) -> BDMProcess:
    return BDMProcess(BDMConfig(**{"T": 20, "sigma_blur_max": 4.0, **kw}))


def _dct_basis(h: int, w: int) -> np.ndarray:
    """V (h w, h w): column j is the pixel image of the j-th orthonormal DCT-II basis function (scipy, float64)."""
    eye = np.eye(h * w).reshape(h * w, h, w)
    return scipy.fft.idctn(eye, axes=(1, 2), norm="ortho").reshape(h * w, h * w).T


def test_schedule_endpoints_and_definitions():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(logsnr_cosine(t)[[0, 2]], torch.tensor([10.0, -10.0], dtype=torch.float64))
    torch.testing.assert_close(blur_sigma(t, 20.0), torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64))
    p = _proc()
    logsnr = logsnr_cosine(torch.tensor(7 / 20, dtype=torch.float64))
    assert float(p.a[7]) == pytest.approx(math.sqrt(1 / (1 + math.exp(-float(logsnr)))), rel=1e-12)
    assert float(p.a[7] ** 2 + p.sigmas[7] ** 2) == pytest.approx(1.0, rel=1e-12)  # variance preserving
    # d_t = (1 - d_min) exp(-λ τ_t) + d_min with λ_nm = π²(n²/H² + m²/W²), τ = σ_B² / 2, on a 6 x 9 grid
    n, m = 2, 5
    lam = math.pi**2 * (n**2 / 36 + m**2 / 81)
    tau = (4.0 * math.sin(math.pi * 7 / 40) ** 2) ** 2 / 2
    want = float(p.a[7]) * (0.999 * math.exp(-lam * tau) + 0.001)
    assert float(p.alpha(7, (6, 9))[n, m]) == pytest.approx(want, rel=1e-6)  # λ comes from genproc's float32 eigenvalues
    assert torch.all(p.alpha(0, (6, 9)) == 1) and p.sigmas[0] == 0  # level 0 is the data


def test_forward_marginal_mean_and_covariance_monte_carlo():
    """z_k ~ N(V(α_k ⊙ Vᵀ x), σ_k² I): the Monte Carlo mean and covariance over 40k draws on a 3 x 4 image."""
    p, k, n = _proc(), 8, 40_000
    x0 = torch.rand(1, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(n, 1, 3, 4, generator=torch.Generator().manual_seed(1))
    z = p.forward_marginal(x0.expand(n, -1, -1, -1), torch.full((n,), k), eps).reshape(n, 12).double()
    V = _dct_basis(3, 4)
    mean = V @ (p.alpha(k, (3, 4)).numpy().reshape(12) * (V.T @ (2 * x0.double().numpy().reshape(12) - 1)))
    s = float(p.sigmas[k])
    assert np.abs(z.mean(0).numpy() - mean).max() < 5 * s / math.sqrt(n)
    cov = np.cov(z.numpy().T)
    assert np.abs(cov - s**2 * np.eye(12)).max() < 6 * s**2 * math.sqrt(2 / n)


def test_posterior_equals_brute_force_gaussian_conditioning_on_a_2x2_image():
    """q(z_s | z_t, x) from the joint Gaussian of (z_s, z_t) given x, by explicit 4 x 4 linear algebra."""
    p, k, s = _proc(sigma_blur_max=1.5), 12, 9
    V = _dct_basis(2, 2)
    A_t, A_s = (V @ np.diag(p.alpha(j, (2, 2)).numpy().reshape(4)) @ V.T for j in (k, s))
    s2_t, s2_s = float(p.sigmas[k]) ** 2, float(p.sigmas[s]) ** 2
    A_ts = V @ np.diag((p.alpha(k, (2, 2)) / p.alpha(s, (2, 2))).numpy().reshape(4)) @ V.T
    # z_s = A_s x + σ_s e1, z_t = A_ts z_s + e2 with Cov(z_t) = σ_t² I: Cov(z_t, z_s) = A_ts σ_s²
    S_ss, S_tt, S_ts = s2_s * np.eye(4), s2_t * np.eye(4), A_ts * s2_s
    x = np.array([0.3, -0.7, 0.1, 0.9])
    z_t = np.array([0.2, 0.5, -0.4, 0.05])
    gain = S_ts.T @ np.linalg.inv(S_tt)
    mean_bf = A_s @ x + gain @ (z_t - A_t @ x)
    cov_bf = S_ss - gain @ S_ts
    c_t, c_x, var = (c.numpy().reshape(4) for c in p.posterior(k, s, (2, 2)))
    mean = V @ (c_t * (V.T @ z_t) + c_x * (V.T @ x))
    np.testing.assert_allclose(mean, mean_bf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(V @ np.diag(var) @ V.T, cov_bf, rtol=1e-9, atol=1e-12)


class _Oracle(torch.nn.Module):
    """The exact target (ε, x or v, the process's ``prediction``) of z_k when the data set is the single image x* (in
    [-1, 1]), written out from the definitions: ε = (z - V(α ⊙ u_x)) / σ; v = (α ε_u - σ u_x) / √(α² + σ²)."""

    def __init__(self, p: BDMProcess, x_star: torch.Tensor):
        super().__init__()
        self.p, self.x = p, x_star

    def forward(self, z, k):
        from genproc.processes.dct import dct2, idct2

        a, s = self.p.alpha(k, tuple(z.shape[-2:])), self.p.sigma(k)
        u_x = dct2(self.x.expand_as(z)).double()
        eps = (z - idct2((a * u_x).float())) / s.float()
        if self.p.cfg.prediction == "eps":
            return eps
        if self.p.cfg.prediction == "x":
            return self.x.expand_as(z)
        return idct2(((a * dct2(eps).double() - s * u_x) / (a**2 + s**2).sqrt()).float())


def test_no_blur_is_plain_gaussian_diffusion():
    """σ_B,max = 0: α_t = a_t at every frequency; the forward process, the posterior and the ELBO terms are those of a
    scalar Gaussian diffusion with the same a_t, σ_t (Ho et al.'s posterior, written out here)."""
    p = _proc(sigma_blur_max=0.0)
    for k in (1, 7, 20):
        torch.testing.assert_close(p.alpha(k, (5, 3)), torch.full((5, 3), float(p.a[k]), dtype=torch.float64))
    k, s = 9, 8
    a_t, a_s, s_t, s_s = (float(v) for v in (p.a[k], p.a[s], p.sigmas[k], p.sigmas[s]))
    a_ts, s2_ts = a_t / a_s, s_t**2 - (a_t / a_s) ** 2 * s_s**2
    var = s2_ts * s_s**2 / s_t**2  # β̃ of the pair (s, t)
    c_t, c_x, v = p.posterior(k, s, (5, 3))
    torch.testing.assert_close(v, torch.full((5, 3), var, dtype=torch.float64), rtol=1e-9, atol=0)
    torch.testing.assert_close(c_t, torch.full((5, 3), a_ts * s_s**2 / s_t**2, dtype=torch.float64), rtol=1e-9, atol=0)
    torch.testing.assert_close(c_x, torch.full((5, 3), a_s * s2_ts / s_t**2, dtype=torch.float64), rtol=1e-9, atol=0)
    # the per-level ELBO term: KL of the two posteriors = (c_x |x - x̂|)² / (2 var) with an off-by-0.1 prediction
    x_star = torch.rand(1, 1, 5, 3, generator=torch.Generator().manual_seed(3)) * 2 - 1
    net = _Oracle(p, x_star + 0.1)
    x0 = (torch.round((x_star + 1) / 2 * 255) + 0.5) / 256  # on the 8-bit grid, dequantised at the bin centre
    terms = BDMELBO(p, levels=10_000).terms(net, x0, SampleRNG(0, [0], 12))
    x = (2 * torch.floor(x0.double() * 256) / 255 - 1)
    x_hat = x_star.double() + 0.1
    per_level = sum(((float(p.posterior(j, j - 1, (5, 3))[1][0, 0]) * (x - x_hat)) ** 2).sum()
                    / (2 * float(p.posterior(j, j - 1, (5, 3))[2][0, 0])) for j in range(2, 21))
    assert float(terms["L_kl"][0]) == pytest.approx(float(per_level), rel=1e-5)


class _GaussianData(torch.nn.Module):
    """E[ε | z_k] for data x ~ N(m, c² I) (per frequency u_k ~ N(α u_m, c² α² + σ²), so E[u_ε | u_k] =
    σ (u_k - α u_m) / (c² α² + σ²)) plus a state-dependent error, so that the network is the exact ε of no data set
    (for an exact one every η would give the same samples) and the chain's end keeps a spread."""

    def __init__(self, p: BDMProcess, m: torch.Tensor, c: float):
        super().__init__()
        self.p, self.m, self.c = p, m, c

    def forward(self, z, k):
        from genproc.processes.dct import dct2, idct2

        a, s = self.p.alpha(k, tuple(z.shape[-2:])), self.p.sigma(k)
        u = dct2(z).double()
        u_m = dct2(self.m.expand_as(z)).double()
        return idct2((s * (u - a * u_m) / (self.c**2 * a**2 + s**2)).float()) + 0.5 * torch.tanh(3 * z)


def test_ddim_eta_one_and_ancestral_agree_in_distribution_through_the_sampler():
    """Ancestral and DDIM(η = 1) over all 20 levels, the exact network of Gaussian data, 4000 chains each on 2 x 3:
    the final samples have equal per-pixel means and standard deviations within Monte Carlo error; DDIM(η = 0) is
    deterministic."""
    from genproc.engine.sampler import generate

    x_star = torch.tensor([[[[0.5, -0.2, 0.8], [-0.6, 0.1, 0.3]]]])
    out = {}
    p = _proc()
    for name, sampler in {"anc": make_sampler("ancestral"), "ddim1": make_sampler("ddim", steps=20, eta=1.0)}.items():
        assert len(sampler.levels(p)) == 20
        out[name] = generate(p, _GaussianData(p, x_star, 0.3), 4000, sampler=sampler, shape=(1, 2, 3),
                             seed=5 if name == "anc" else 6, batch_size=4000, capture_every=-1).images.double()
    a, b = out["anc"], out["ddim1"]
    assert float(a.std(0).min()) > 0.05  # the noise matters: a real test of the distribution
    se = (a.var(0) / 4000 + b.var(0) / 4000).sqrt()
    assert float(((a.mean(0) - b.mean(0)).abs() / se).max()) < 5
    assert float((a.std(0) / b.std(0) - 1).abs().max()) < 5 * math.sqrt(2 / 4000) * 2
    ddim0 = make_sampler("ddim", steps=7)
    c = generate(p, _GaussianData(p, x_star, 0.3), 3, sampler=ddim0, shape=(1, 2, 3), seed=1, same_init=True,
                 capture_every=-1).images
    assert not ddim0.stochastic(p) and torch.equal(c[0], c[1]) and torch.equal(c[1], c[2])


def test_oracle_elbo_on_a_one_image_data_set_has_its_closed_form():
    """With the exact ε of the one training image, every posterior KL is 0; L_T is the KL of N(α_T u_x, σ_T²) to
    N(0, 1) per frequency (torch.distributions), and L_0 the discretised decoder at the true image."""
    p = _proc()
    x_star = torch.rand(1, 1, 4, 5, generator=torch.Generator().manual_seed(2)) * 2 - 1
    v = torch.round((x_star + 1) / 2 * 255)
    x = 2 * v / 255 - 1  # the image on the 8-bit grid, in [-1, 1]
    net = _Oracle(p, x.float())
    x0 = (v + 0.5) / 256
    terms = BDMELBO(p, levels=10_000).terms(net, x0, SampleRNG(0, [0], 12))
    assert float(terms["L_kl"][0]) == pytest.approx(0.0, abs=1e-6)
    u_x = torch.tensor(scipy.fft.dctn(x[0, 0].double().numpy(), norm="ortho"))
    a_T, s_T = p.alpha(20, (4, 5)), float(p.sigmas[20])
    want_T = kl_divergence(Normal(a_T * u_x, s_T), Normal(torch.zeros(()), torch.ones(()))).sum()
    assert float(terms["L_T"][0]) == pytest.approx(float(want_T), rel=1e-5)  # genproc's DCT runs in float32
    std = float(p.sigmas[1] / p.a[1])
    bins = Normal(x.double(), std)
    mass = bins.cdf(x.double() + 1 / 255) - bins.cdf(x.double() - 1 / 255)
    mass = torch.where(v == 0, bins.cdf(x.double() + 1 / 255), torch.where(v == 255, 1 - bins.cdf(x.double() - 1 / 255), mass))
    assert float(terms["L_0"][0]) == pytest.approx(float(-torch.log(mass).sum()), rel=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x", "v"])
def test_every_parametrisation_with_its_oracle_reconstructs_the_image_and_has_zero_posterior_kl(prediction):
    """For each ``prediction``, the oracle of a one-image data set: the ancestral chain and DDIM(η = 0) end at the
    image, and every posterior KL of the ELBO is 0; the training target is the oracle's output at the same z."""
    from genproc.engine.sampler import generate

    p = _proc(prediction=prediction)
    v = torch.round(torch.rand(1, 1, 4, 5, generator=torch.Generator().manual_seed(3)) * 255)
    x_star = 2 * v / 255 - 1  # on the 8-bit grid, as the ELBO reads the data
    net = _Oracle(p, x_star)
    for sampler in (make_sampler("ancestral"), make_sampler("ddim", steps=6)):
        out = generate(p, net, 3, sampler=sampler, shape=(1, 4, 5), seed=0, capture_every=-1).images
        torch.testing.assert_close(out, ((x_star + 1) / 2).clamp(0, 1).expand(3, 1, 4, 5), atol=2e-4, rtol=0)
    x0 = (x_star + 1) / 2
    k = torch.tensor([1, 5, 13, 20])
    eps = torch.randn(4, 1, 4, 5, generator=torch.Generator().manual_seed(4))
    z, target = p.training_pair(x0.expand(4, -1, -1, -1), k, eps)
    torch.testing.assert_close(target, net(z, k), atol=2e-5, rtol=1e-4)
    terms = BDMELBO(p, levels=10_000).terms(net, (v + 0.5) / 256, SampleRNG(0, [0], 12))
    assert float(terms["L_kl"][0]) == pytest.approx(0.0, abs=1e-5)


def test_v_without_blur_is_the_usual_v_and_bounds_the_x_error():
    """σ_B,max = 0 (α = a, a² + σ² = 1): the v target is a ε - σ x (Salimans & Ho's v). With blur, an error e in v̂
    moves û_x by exactly σ̄ e per frequency (|σ̄| <= 1), while the same error in ε̂ moves it by σ / α e (up to ~10³)."""
    p = _proc(sigma_blur_max=0.0, prediction="v")
    x0 = torch.rand(2, 1, 3, 4, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(2, 1, 3, 4, generator=torch.Generator().manual_seed(2))
    k = torch.tensor([3, 17])
    _, v = p.training_pair(x0, k, eps)
    a, s = p.a[k].float()[:, None, None, None], p.sigmas[k].float()[:, None, None, None]
    torch.testing.assert_close(v, a * eps - s * (2 * x0 - 1), atol=1e-5, rtol=1e-5)
    pv, pe = _proc(sigma_blur_max=20.0, prediction="v", T=1000), _proc(sigma_blur_max=20.0, T=1000)
    u_t, u_out = torch.randn(2, 1, 1, 8, 8, dtype=torch.float64)  # coefficients, in float64 to see the exact factor
    e = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    e[..., 7, 7] = 1e-3  # an error in the highest frequency's output
    for k in (200, 500, 800):
        dx_v = (pv.split(u_t, u_out + e, k)[0] - pv.split(u_t, u_out, k)[0]).abs().max()
        dx_e = (pe.split(u_t, u_out + e, k)[0] - pe.split(u_t, u_out, k)[0]).abs().max()
        assert float(dx_v) <= 1e-3 * (1 + 1e-9) and float(dx_e) > 100 * 1e-3
