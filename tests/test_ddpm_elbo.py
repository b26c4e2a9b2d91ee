"""DDPM ELBO (Ho et al. 2020, Eq. 5): Gaussian KLs, posterior, forward marginals, the discretised
decoder and the whole bound of a perfect eps-predictor, each against an independent closed form."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY
from scipy.stats import norm
from torch.distributions import Independent, Normal, kl_divergence

from genproc.metrics.nll import dequantize
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.ddpm_elbo import DDPMELBO, log_bin_mass, model_variance, posterior, prior_kl, stratified_levels
from genproc.processes.gaussian import normal_kl
from genproc.processes.rng import SampleRNG


class Oracle(torch.nn.Module):
    """The exact eps of x_t when the data set is the single point x* (in [-1, 1]); ``scale`` spoils it."""

    def __init__(self, proc: DDPMProcess, x_star: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.proc, self.x, self.scale = proc, x_star, scale

    def forward(self, x, t):
        ab = self.proc.alpha_bar[t.cpu()].reshape(-1, 1, 1, 1)
        return (self.scale * (x.double() - ab.sqrt() * self.x) / (1 - ab).sqrt()).float()


def test_gaussian_kls_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.01
    ref = kl_divergence(Normal(m1, v1.sqrt()), Normal(m2, v2.sqrt()))
    torch.testing.assert_close(normal_kl(m1, v1, m2, v2), ref, rtol=1e-12, atol=1e-12)
    x0 = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    for ab in (0.9, 4e-5):
        q = Independent(Normal(math.sqrt(ab) * x0.flatten(1), math.sqrt(1 - ab)), 1)
        ref = kl_divergence(q, Independent(Normal(torch.zeros(4, dtype=torch.float64), 1.0), 1))
        torch.testing.assert_close(prior_kl(x0, ab), ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_bayes_on_a_scalar(schedule):
    """q(x_{t-1}|x_t, x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0), normalised numerically on a fine grid."""
    p = DDPMProcess(DDPMConfig(T=50, schedule=schedule))
    x0, x_t = 0.3, -0.2
    grid = torch.linspace(-10, 10, 2_000_001, dtype=torch.float64)  # step 1e-5: >= 1000 points per posterior std, 10 std wide
    for t in (2, 10, 50):
        beta, ab_prev = p.betas[t], p.alpha_bar[t - 1]  # float64 scalars (python floats would make float32 Normals)
        logw = (Normal((1 - beta).sqrt() * grid, beta.sqrt()).log_prob(torch.tensor(x_t, dtype=torch.float64))
                + Normal(ab_prev.sqrt() * x0, (1 - ab_prev).sqrt()).log_prob(grid))
        w = torch.softmax(logw, 0)
        mean = float((w * grid).sum())
        var = float((w * (grid - mean) ** 2).sum())
        c0, ct, var_q = (float(z) for z in posterior(p, torch.tensor([t])))
        assert c0 * x0 + ct * x_t == pytest.approx(mean, abs=1e-9)
        assert var_q == pytest.approx(var, rel=1e-6)


def test_forward_marginals_match_closed_form():
    """x_t|x_0 ~ N(sqrt(ab_t) x_0, 1 - ab_t): from training_pair and from chaining q(x_t|x_{t-1}) (Eq. 2).

    M samples per pixel with a fixed seed; the sample mean is checked to 5 standard errors
    sqrt(var/M) and the sample variance to 5 var sqrt(2/M) (its normal-theory standard error), so
    a correct implementation fails with probability < 1e-6 per check under any seed.
    """
    p = DDPMProcess(DDPMConfig(T=100))
    x0 = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 1, 1, 3)  # data in [0, 1] -> -1, -0.5, 1
    M, g = 100_000, torch.Generator().manual_seed(0)
    xs = x0.expand(M, -1, -1, -1)
    for t in (1, 30, 100):
        x_t, _ = p.training_pair(xs, torch.full((M,), t), torch.randn(M, 1, 1, 3, generator=g))
        ab = float(p.alpha_bar[t])
        torch.testing.assert_close(x_t.double().mean(0).flatten(), math.sqrt(ab) * (2 * x0.double() - 1).flatten(),
                                   atol=5 * math.sqrt((1 - ab) / M), rtol=0)
        torch.testing.assert_close(x_t.double().var(0).flatten(), torch.full((3,), 1 - ab, dtype=torch.float64),
                                   atol=5 * (1 - ab) * math.sqrt(2 / M), rtol=0)
    x = (2 * xs - 1).double()[:20_000]
    for t in range(1, 101):  # Eq. (2), one step at a time
        x = (1 - p.betas[t]).sqrt() * x + p.betas[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ab = float(p.alpha_bar[100])
    torch.testing.assert_close(x.mean(0).flatten(), math.sqrt(ab) * (2 * x0.double() - 1).flatten(),
                               atol=5 * math.sqrt((1 - ab) / 20_000), rtol=0)
    torch.testing.assert_close(x.var(0).flatten(), torch.full((3,), 1 - ab, dtype=torch.float64),
                               atol=5 * (1 - ab) * math.sqrt(2 / 20_000), rtol=0)


def test_bin_masses_sum_to_one_and_match_phi():
    v = torch.arange(256)
    for mean, std in [(0.0, 0.01), (0.93, 0.004), (-1.2, 0.3), (5.0, 0.02)]:
        lm = log_bin_mass(v, torch.full((256,), mean, dtype=torch.float64), std)
        assert torch.isfinite(lm).all() and float(lm.exp().sum()) == pytest.approx(1.0, abs=1e-9)
        x = 2 * 100 / 255 - 1
        direct = norm.cdf((x + 1 / 255 - mean) / std) - norm.cdf((x - 1 / 255 - mean) / std)
        if direct > 1e-300:
            assert float(lm[100]) == pytest.approx(math.log(direct), rel=1e-9)


def test_strata_partition_the_levels():
    T, K = 1000, 7
    u = torch.rand(3, K, generator=torch.Generator().manual_seed(0))
    levels, w = stratified_levels(T, K, u)
    assert float(w.sum()) == T - 1 and levels.min() >= 2 and levels.max() <= T
    lo, _ = stratified_levels(T, K, torch.zeros(1, K))
    hi, _ = stratified_levels(T, K, torch.full((1, K), 1 - 1e-9))
    assert lo[0, 0] == 2 and hi[0, -1] == T and torch.equal(hi[0] - lo[0] + 1, w.long())  # contiguous, size |S_j|
    assert torch.equal(lo[0, 1:], hi[0, :-1] + 1)  # no gap, no overlap
    full, w1 = stratified_levels(20, 50, torch.rand(2, 50))
    assert full.tolist()[0] == list(range(2, 21)) and torch.equal(w1, torch.ones(19, dtype=torch.float64))


def _perfect_closed_form(p: DDPMProcess, v: torch.Tensor) -> dict[str, float]:
    """Ho et al. Eq. (5) with mu_theta = mu~ exactly: KLs of two centred Gaussians, decoder mean = x_0."""
    T, n, x = p.num_levels, v.numel(), 2 * v.double() / 255 - 1
    ab_T = float(p.alpha_bar[T])
    l_T = float((0.5 * (ab_T * x**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))).sum())
    l_kl = 0.0
    for t in range(2, T + 1):
        vq = float(p.betas[t]) * (1 - float(p.alpha_bar[t - 1])) / (1 - float(p.alpha_bar[t]))
        vp = float(model_variance(p, torch.tensor([t])))
        l_kl += 0.5 * n * (vq / vp - 1 + math.log(vp / vq))
    s = math.sqrt(float(model_variance(p, torch.tensor([1]))))
    inner, edge = math.log(math.erf(1 / (255 * s * math.sqrt(2)))), math.log(norm.cdf(1 / (255 * s)))
    n_edge = int(((v == 0) | (v == 255)).sum())
    return {"L_T": l_T, "L_kl": l_kl, "L_0": -(n_edge * edge + (n - n_edge) * inner)}


@pytest.mark.parametrize("variance", ["beta", "tilde"])
def test_elbo_of_perfect_predictor_matches_closed_form(variance):
    p = DDPMProcess(DDPMConfig(T=20, posterior_variance=variance))
    v = torch.tensor([0.0, 17.0, 128.0, 255.0]).reshape(1, 1, 2, 2)
    net = Oracle(p, 2 * v.double() / 255 - 1)
    elbo = DDPMELBO(p, levels=10_000)
    assert elbo.exact
    B = 3
    x_dq = dequantize((v / 255).expand(B, -1, -1, -1), torch.rand(B, 1, 2, 2, generator=torch.Generator().manual_seed(1)))
    for x0 in (v.expand(B, -1, -1, -1) / 255, x_dq):  # on the grid, or dequantised: same bins
        terms = elbo.terms(net, x0, SampleRNG(0, range(B), 12))
        ref = _perfect_closed_form(p, v)
        for k, val in ref.items():
            torch.testing.assert_close(terms[k], torch.full((B,), val, dtype=torch.float64), rtol=1e-6, atol=1e-7)
        assert torch.all(terms["to_density"] == -4 * math.log(256))
    if variance == "tilde":
        assert float(terms["L_kl"].abs().max()) < 1e-6  # sigma_t^2 = beta~_t and mu_theta = mu~: every KL is 0


def test_stratified_estimate_is_unbiased():
    """An imperfect predictor (eps scaled by 0.7): exact sum and 4-level stratified estimate agree in mean.

    Both are unbiased estimates of the same bound over x_t noise; B images give two sample means,
    compared to 4 combined standard errors.
    """
    p = DDPMProcess(DDPMConfig(T=40))
    B = 600
    v = torch.tensor([10.0, 200.0]).reshape(1, 1, 1, 2)
    net = Oracle(p, 2 * v.double() / 255 - 1, scale=0.7)
    x0 = (v / 255).expand(B, -1, -1, -1)
    exact = DDPMELBO(p, levels=39).terms(net, x0, SampleRNG(0, range(B), 12))["L_kl"]
    est = DDPMELBO(p, levels=4).terms(net, x0, SampleRNG(1, range(B), 12))["L_kl"]
    se = math.sqrt(float(exact.var()) / B + float(est.var()) / B)
    assert abs(float(exact.mean()) - float(est.mean())) < 4 * se
    assert float(est.std()) > float(exact.std())  # the level sampling adds spread, reported in the std error


def test_registry_and_levels_env(monkeypatch):
    p = DDPMProcess(DDPMConfig(T=30))
    assert isinstance(p.elbo(None, torch.device("cpu")), DDPMELBO)
    monkeypatch.setenv("GENPROC_DDPM_ELBO_LEVELS", "7")
    assert DDPMELBO(p).levels == 7 and not DDPMELBO(p).exact


def test_nll_on_a_ddpm_run_is_discrete_bits(tmp_path):
    """Through genproc.metrics.evaluate: bits/dim = (L_T + L_kl + L_0) / (N log 2), no log 256 left over."""
    from genproc.data import build_dataset
    from genproc.engine import train
    from genproc.metrics import evaluate
    from genproc.recipe import recipe_from_dict

    d = json.loads(json.dumps(TINY))
    d["process"] = {"name": "ddpm", "T": 10}
    d["train"]["max_steps"] = 2
    train(recipe_from_dict(d), tmp_path, progress=False, log=lambda *_: None)
    (rec,) = evaluate(tmp_path, "nll", n=3, log=lambda *_: None)
    nats = sum(v for k, v in rec["terms_nats"].items() if k != "to_density")
    assert rec["value"] == pytest.approx(nats / (rec["dims"] * math.log(2)), rel=1e-9)
    assert set(rec["term_labels"]) == {"L_T", "L_kl", "L_0", "to_density"}
    # L_T does not involve the net: KL(N(sqrt(ab_T) x, 1 - ab_T) || N(0, 1)) per dim with Ho et al.'s linear betas
    # (1e-4 .. 0.02 over T = 10) and x = 2 v / 255 - 1 for the 8-bit values v of the first 3 test images.
    ab = torch.prod(1 - torch.linspace(1e-4, 0.02, 10, dtype=torch.float64))
    v = torch.round(build_dataset(recipe_from_dict(d).data, "test").get_batch(torch.arange(3)).double() * 255)
    q = Normal(ab.sqrt() * (2 * v / 255 - 1), (1 - ab).sqrt())
    l_t = kl_divergence(q, Normal(torch.zeros_like(v), 1.0)).flatten(1).sum(1).mean()
    assert rec["terms_nats"]["L_T"] == pytest.approx(float(l_t), rel=1e-9)
    # L_{t-1} are Gaussian KLs and L_0 = -log(bin mass <= 1): both >= 0, so bits/dim >= L_T / (N log 2)
    assert rec["terms_nats"]["L_kl"] >= 0 and rec["terms_nats"]["L_0"] >= 0
    assert rec["value"] >= float(l_t) / (rec["dims"] * math.log(2))
