"""Samplers against closed forms and against diffusers' schedulers.

Gaussian data x ~ N(m, S) with S diagonal in the process's basis (identity for DDPM, the DCT for BDM) has an exact
denoiser at every level: in the basis, E[u_x | u_k] = m + s α / (α² s + σ²) (u_k - α m) per coordinate. Driving the
samplers with it (no network) checks them against the known answers:

* every sampler's samples have mean m and variances s (within Monte Carlo error and the sampler's discretisation);
* the probability-flow ODE has a closed-form solution: per coordinate (y - m) / √(s + σ̃²) is constant along it
  (y = u / α, σ̃ = σ / α), so the deterministic samplers' errors can be measured exactly and their order read off;
* ancestral and DDIM(η = 1) give the same chain, step by step, given the same noise.

Heun runs on BDM here through ``Sampler.run`` although the registry refuses the pair: with the exact denoiser and
100+ steps its per-coordinate σ̃ steps are correct (these tests), with a trained network at tens of calls they
diverge (``genproc/samplers/edm.py``, ``docs/samplers/heun_bdm.txt``).
"""

from __future__ import annotations

import math

import pytest
import torch

from genproc.processes.bdm import BDMConfig, BDMProcess
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.views import GaussianView
from genproc.samplers import build_sampler
from genproc.samplers.base import evenly_spaced_levels

HW = (4, 4)


def _processes() -> dict[str, GaussianView]:
    return {"ddpm": DDPMProcess(DDPMConfig(T=1000)),
            "bdm": BDMProcess(BDMConfig(T=1000, sigma_blur_max=2.0, prediction="x", dct="matmul"))}


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, s): the data's mean and per-coordinate variance in the basis, (1, 4, 4) float64 each."""
    g = torch.Generator().manual_seed(seed)
    m = 0.5 * torch.randn((1, *HW), generator=g, dtype=torch.float64)
    s = 0.02 + 0.3 * torch.rand((1, *HW), generator=g, dtype=torch.float64)
    return m, s


def exact_net(view: GaussianView, m: torch.Tensor, s: torch.Tensor, prediction: str):
    """The optimal network for Gaussian data N(m, s) in the basis: net(x, k) -> ε̂ or x̂ in state units."""
    def net(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        level = int(k[0])
        u = view.to_basis(x)
        a, sg = view.alpha(level, HW), view.sigma(level)
        u_x = m + s * a / (a**2 * s + sg**2) * (u - a * m)
        out = u_x if prediction == "x" else (u - a * u_x) / sg
        return view.from_basis(out)
    return net


def _prior(n: int, seed: int) -> torch.Tensor:
    return torch.randn((n, 1, *HW), generator=torch.Generator().manual_seed(seed))


def _noise(seed: int, n: int = 4000):
    g = torch.Generator().manual_seed(seed)
    return lambda j: torch.randn((n, 1, *HW), generator=g)


def _moments_ok(view: GaussianView, out: torch.Tensor, m: torch.Tensor, s: torch.Tensor, slack: float) -> None:
    """The samples' mean and variance per basis coordinate match (m, s) within 5 standard errors plus ``slack``."""
    u = view.to_basis(out)
    n = u.shape[0]
    mean, var = u.mean(0), u.var(0)
    assert ((mean - m).abs() <= 5 * (s / n).sqrt() + slack).all(), float(((mean - m).abs() / (s / n).sqrt()).max())
    assert ((var - s).abs() <= 5 * s * math.sqrt(2 / n) + slack).all(), float(((var - s).abs() / s).max())


CASES = [("ancestral", {}, 1000), ("ancestral", {"variance": "posterior"}, 100), ("ddim", {"eta": 1.0}, 100),
         ("ddim", {}, 100), ("dpmpp_2m", {}, 100), ("heun", {}, 100), ("heun", {"churn": 10.0}, 100)]


@pytest.mark.parametrize("pname", ["ddpm", "bdm"])
@pytest.mark.parametrize("name,settings,steps", CASES)
def test_samples_of_gaussian_data_have_its_mean_and_variance(pname, name, settings, steps):
    view = _processes()[pname]
    m, s = _data()
    net = exact_net(view, m, s, "eps" if pname == "ddpm" else "x")
    sampler = build_sampler(name, type(build_sampler(name).cfg)(steps=steps, clip="none", **settings))
    with torch.no_grad():
        out = sampler.run(view, net, _prior(4000, 1), _noise(2), sampler.levels(view))
    _moments_ok(view, out, m, s, slack=0.01)


def test_a_wrong_denoiser_fails_the_moment_check():
    """The check above can fail: a denoiser for data of twice the variance gives samples of the wrong variance."""
    view = _processes()["ddpm"]
    m, s = _data()
    net = exact_net(view, m, 2 * s, "eps")
    sampler = build_sampler("ddim", type(build_sampler("ddim").cfg)(clip="none"))
    with torch.no_grad():
        out = sampler.run(view, net, _prior(4000, 1), _noise(2), evenly_spaced_levels(1000, 100))
    with pytest.raises(AssertionError):
        _moments_ok(view, out, m, s, slack=0.01)


def _flow_to_level_1(view: GaussianView, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's exact solution from the top level to level 1, then the final x̂₀ step every
    sampler takes from level 1: (y - m) / √(s + σ̃²) is constant per coordinate."""
    T = view.num_levels
    st = lambda k: view.sigma(k) / view.alpha(k, HW)  # noqa: E731
    y_T = view.to_basis(x) / view.alpha(T, HW)
    y_1 = m + (y_T - m) * ((s + st(1) ** 2) / (s + st(T) ** 2)).sqrt()
    a1, s1 = view.alpha(1, HW), view.sigma(1)
    return m + s * a1 / (a1**2 * s + s1**2) * (a1 * y_1 - a1 * m)  # x̂₀ at level 1, in the basis


ORDERS = {"ddim": 1.0, "dpmpp_2m": 2.0, "heun": 2.0}


@pytest.mark.parametrize("pname", ["ddpm", "bdm"])
@pytest.mark.parametrize("name", list(ORDERS))
def test_deterministic_samplers_converge_at_their_order(pname, name):
    """Error against the exact ODE solution at N, 2N and 4N steps: each doubling divides it by 2^order (the rate
    within 25%). N = 64: DPM-Solver++(2M) reaches its order only there on DDPM's linear schedule (measured rates from
    8 steps: 0.04, 1.01, 1.63, 1.91, 1.99; BDM's Heun: 2.57, 5.22, 2.73, 2.29, 2.13)."""
    view = _processes()[pname]
    m, s = _data()
    net = exact_net(view, m, s, "eps" if pname == "ddpm" else "x")
    x = _prior(64, 3)
    exact = _flow_to_level_1(view, x, m, s)
    errs = []
    for steps in (64, 128, 256):
        sampler = build_sampler(name, type(build_sampler(name).cfg)(steps=steps, clip="none"))
        with torch.no_grad():
            out = view.to_basis(sampler.run(view, net, x, _noise(0), sampler.levels(view)))
        errs.append(float((out - exact).abs().max()))
    rates = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert errs[-1] < 0.05, errs
    assert all(abs(r - ORDERS[name]) < 0.25 * ORDERS[name] + 0.15 for r in rates), (errs, rates)


@pytest.mark.parametrize("pname", ["ddpm", "bdm"])
def test_ancestral_and_ddim_eta_1_are_the_same_chain(pname):
    """DDIM with η = 1 takes the ancestral posterior's mean and variance: the same states given the same noise, on
    any subset of levels; η = 0.5 does not."""
    view = _processes()[pname]
    m, s = _data()
    net = exact_net(view, m, s, "eps" if pname == "ddpm" else "x")
    levels = evenly_spaced_levels(1000, 20)
    anc = build_sampler("ancestral", build_sampler("ancestral").cfg.__class__(variance="posterior", clip="none"))
    runs = {}
    for key, sampler in {"anc": anc, "ddim1": build_sampler("ddim", build_sampler("ddim").cfg.__class__(eta=1.0, clip="none")),
                         "ddim05": build_sampler("ddim", build_sampler("ddim").cfg.__class__(eta=0.5, clip="none"))}.items():
        states = []
        with torch.no_grad():
            sampler.run(view, net, _prior(16, 4), _noise(5, 16), levels, lambda j, k, x, st=states: st.append(x))
        runs[key] = torch.stack(states)
    torch.testing.assert_close(runs["ddim1"], runs["anc"], atol=2e-5, rtol=1e-5)
    assert not torch.allclose(runs["ddim05"], runs["anc"], atol=1e-3)


# ------------------------------------------------------------------ diffusers' schedulers on the same ε-network
def _eps_net():
    """A fixed, smooth, non-trivial ε-network: a random conv and a level-dependent scale."""
    g = torch.Generator().manual_seed(7)
    w = 0.3 * torch.randn(1, 1, 3, 3, generator=g)

    def net(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scale = 0.5 + (k.float() / 1000).reshape(-1, 1, 1, 1)
        return torch.tanh(torch.nn.functional.conv2d(x, w, padding=1)) * scale + 0.1 * x
    return net


def _genproc_trajectory(name: str, levels: list[int], x: torch.Tensor, **settings) -> torch.Tensor:
    view = DDPMProcess(DDPMConfig(T=1000))
    sampler = build_sampler(name, type(build_sampler(name).cfg)(**settings))
    g = torch.Generator().manual_seed(11)
    noise = [torch.randn(x.shape, generator=g) for _ in levels]
    states: list[torch.Tensor] = []
    with torch.no_grad():
        sampler.run(view, _eps_net(), x, lambda j: noise[j], levels, lambda j, k, s: states.append(s))
    return torch.stack(states)


@pytest.mark.parametrize("eta,clip", [(0.0, False), (0.0, True), (0.5, False)])
def test_ddim_matches_diffusers_ddim_scheduler(eta, clip):
    pytest.importorskip("diffusers")
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=clip, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    sched.set_timesteps(20)
    ts = [int(t) for t in sched.timesteps]
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(11)
    noise = [torch.randn(x.shape, generator=g) for _ in ts]
    net, ref, y = _eps_net(), [], x.clone()
    for j, t in enumerate(ts):
        eps = net(y, torch.full((3,), t + 1))  # diffusers' timestep t is genproc's level t + 1 (ᾱ indexed from 0)
        y = sched.step(eps, t, y, eta=eta, variance_noise=noise[j], use_clipped_model_output=True).prev_sample
        ref.append(y)
    ours = _genproc_trajectory("ddim", [t + 1 for t in ts], x, eta=eta, clip="clamp" if clip else "none")
    torch.testing.assert_close(ours, torch.stack(ref), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps,thresholding", [(20, False), (10, False), (20, True)])
def test_dpmpp_2m_matches_diffusers_dpm_solver_multistep(steps, thresholding):
    pytest.importorskip("diffusers")
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                        beta_end=0.02, algorithm_type="dpmsolver++", solver_order=2,
                                        solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
                                        thresholding=thresholding, dynamic_thresholding_ratio=0.995,
                                        sample_max_value=1.0)
    sched.set_timesteps(steps)
    ts = [int(t) for t in sched.timesteps]
    x = 3 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    net, ref, y = _eps_net(), [], x.clone()
    for t in ts:
        y = sched.step(net(y, torch.full((3,), t + 1)), t, y).prev_sample
        ref.append(y)
    ours = _genproc_trajectory("dpmpp_2m", [t + 1 for t in ts], x, clip="dynamic" if thresholding else "none")
    torch.testing.assert_close(ours, torch.stack(ref), atol=2e-4, rtol=1e-4)


# ------------------------------------------------------------------ IHDM with fewer calls than levels
def test_heat_jump_with_every_level_is_the_papers_chain():
    """steps = K: every jump is one level (gain 1) and the noise is δ per call, none into level 0: the chain of
    Alg. 2 exactly, given the same prior state and noise."""
    from genproc.processes.heat import HeatConfig, HeatProcess

    p = HeatProcess(HeatConfig(K=8, sigma_blur_max=4.0))
    net = lambda x, k: 0.1 * torch.tanh(x) * k.float().reshape(-1, 1, 1, 1) / 8  # noqa: E731
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outs = []
    for name in ("chain", "heat_jump"):
        sampler = build_sampler(name, type(build_sampler(name).cfg)(steps=8))
        g = torch.Generator().manual_seed(1)
        outs.append(sampler.run(p, net, x, lambda j, g=g: torch.randn((3, 1, 8, 8), generator=g), sampler.levels(p)))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=0)


def test_backward_heat_inverts_the_heat_blur_above_the_floor_and_damps_below():
    """backward_heat(F(t1) x, t1, t0) = F(t0) x where every frequency keeps more than the floor at t1 (closed form:
    the heat semigroup); a frequency damped below the floor at t1 is multiplied by e^{-λ t0} / floor instead."""
    from genproc.processes.dct import dct2, heat_forward, laplacian_eigenvalues
    from genproc.samplers.heat import backward_heat

    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    t1, t0 = 0.3, 0.1  # e^{-λ_max t1} = e^{-2π² 0.3} ≈ 0.0027
    m = heat_forward(x, torch.full((2,), t1))
    torch.testing.assert_close(backward_heat(m, t1, t0, 1e-3), heat_forward(x, torch.full((2,), t0)), atol=1e-4, rtol=0)
    lam = laplacian_eigenvalues(12, 12).double()
    u = dct2(backward_heat(m, t1, t0, 0.05)).double()
    want = dct2(x).double() * torch.exp(-lam * t1) * torch.exp(-lam * t0) / torch.exp(-lam * t1).clamp_min(0.05)
    torch.testing.assert_close(u, want, atol=1e-4, rtol=0)


def test_a_recipe_whose_sampler_cannot_drive_its_process_fails_before_training(tmp_path):
    """The sampler section is checked against the process when training starts: one line naming the samplers the
    process supports, nothing written."""
    from conftest import TINY

    from genproc.engine import train
    from genproc.errors import GenprocError
    from genproc.recipe import recipe_from_dict

    d = {**TINY, "sampler": {"name": "dpmpp_2m", "steps": 4}}
    with pytest.raises(GenprocError, match="samplers for IHDM: chain, heat_jump"):
        train(recipe_from_dict(d), tmp_path / "run", progress=False, log=lambda *_: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_old_sampler_keys_are_read_as_a_sampler_section_and_the_section_round_trips():
    """A recipe or checkpoint written before samplers were their own units (DDPM's and BDM's ``sampler``,
    ``ddim_steps``, ``eta`` in the process section) reads as the sampler section that samples as it did (their DDIM
    clamped x̂₀, their ancestral chain did not); the new section round-trips through YAML; an unknown sampler
    setting is refused."""
    from conftest import TINY

    from genproc.errors import GenprocError
    from genproc.recipe import recipe_from_dict, recipe_to_yaml
    from genproc.samplers.ancestral import AncestralConfig
    from genproc.samplers.ddim import DDIMConfig

    old = {**TINY, "process": {"name": "ddpm", "T": 20, "sampler": "ddim", "ddim_steps": 7, "eta": 0.5,
                               "posterior_variance": "tilde"}}
    r = recipe_from_dict(old)
    assert r.sampler == DDIMConfig(steps=7, eta=0.5, clip="clamp") and r.process.posterior_variance == "tilde"
    assert "ddim_steps" not in recipe_to_yaml(r) and recipe_from_dict(r.to_dict()) == r
    r = recipe_from_dict({**TINY, "process": {"name": "bdm", "T": 20, "sampler": "ancestral", "ddim_steps": 50}})
    assert r.sampler == AncestralConfig(clip="none")
    import yaml

    assert recipe_from_dict(yaml.safe_load(recipe_to_yaml(r))) == r
    with pytest.raises(GenprocError, match="unknown recipe key 'sampler.ddim_steps'"):
        recipe_from_dict({**TINY, "process": {"name": "ddpm", "T": 20}, "sampler": {"name": "ddim", "ddim_steps": 4}})
