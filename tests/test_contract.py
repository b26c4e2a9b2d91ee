"""The forward-process contract, checked over every registered process, one of them defined in this file.

``Fade`` below is a process written the way a user would write one in an experiment's own file: a module-level
subclass of the contract and one ``register`` call, no edit to genproc. It then trains, resumes, samples, is
evaluated (FID/KID with a stand-in extractor, NLL through its own ELBO), compared and analysed like the built-ins.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file
from test_metrics import TINY_FE

import genproc
from genproc.errors import GenprocError
from genproc.processes import ForwardProcess, ProcessConfig, SampleRNG, build_process, lookup, register, registered
from genproc.recipe import recipe_from_dict, recipe_to_yaml
from genproc.samplers import supported


# ------------------------------------------------------------------ a process defined outside genproc
@dataclass
class FadeConfig(ProcessConfig):
    """Fade to noise: x_k = (1 - s_k) x0 + s_k eps, s_k = k / K; the net predicts x0."""

    K: int = 6
    eta: float = 0.0  # sampling-time: 0 deterministic (DDIM-like), 1 fresh noise each step
    SAMPLING_KEYS = ("eta",)


class FadeProcess(ForwardProcess):
    label = "Fade"

    def __init__(self, cfg: FadeConfig):
        super().__init__(cfg, cfg.K)

    def _s(self, k: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(k, dtype=torch.float32, device=like.device) / self.num_levels).reshape(-1, 1, 1, 1)

    def forward_marginal(self, x0, k, eps):
        s = self._s(k, x0)
        return (1 - s) * x0 + s * eps

    def training_pair(self, x0, k, eps):
        return self.forward_marginal(x0, k, eps), x0

    def prior(self, rng, shape, data=None):
        return rng.randn(tuple(shape))

    def reverse_levels(self):
        return list(range(self.num_levels, 0, -1))

    def reverse_step(self, x, net_out, k, k_next, noise):
        s, s_next = k / self.num_levels, k_next / self.num_levels
        x0 = net_out.float()
        eps = (x - (1 - s) * x0) / s
        eps = math.sqrt(1 - self.cfg.eta**2) * eps + self.cfg.eta * noise
        return (1 - s_next) * x0 + s_next * eps

    @property
    def reverse_is_stochastic(self):
        return self.cfg.eta > 0

    def to_data_scale(self, x):
        return x

    def elbo(self, train_data, device):
        return UniformBound()


class UniformBound:
    """A valid (if loose) bound: the uniform density on [0, 1)^N, 0 nats, so exactly 8 bits/dim after dequantisation."""

    labels = {"uniform": "uniform density on [0,1)^N"}
    convention = "dequantised"
    convention_detail = "test: uniform density"

    def terms(self, net, x0, rng):
        net(x0, torch.ones(x0.shape[0], dtype=torch.long, device=x0.device))  # the network is reachable
        return {"uniform": torch.zeros(x0.shape[0], dtype=torch.float64)}


register("fade", FadeProcess, FadeConfig, aliases=("fade-to-noise",))

PROCESS_CONFIGS = {"ihdm": {"name": "heat", "K": 5, "sigma_blur_max": 4.0}, "blur": {"name": "blur", "K": 5, "sigma_blur_max": 4.0},
                   "ddpm": {"name": "ddpm", "T": 20}, "bdm": {"name": "bdm", "T": 20, "sigma_blur_max": 4.0},
                   "fade": {"name": "fade-to-noise", "K": 6}}
ALL = sorted(registered())


def _recipe(name: str, **train: Any) -> dict:
    d = copy.deepcopy(TINY)
    d.update(name=f"contract_{name}", process=PROCESS_CONFIGS.get(name, {"name": name}))
    d["net"]["dropout"] = 0.0
    d["train"].update(train)
    return d


def test_every_process_has_a_recipe_config_here():
    assert set(ALL) >= {"ihdm", "blur", "ddpm", "bdm", "fade"} and set(ALL) == set(PROCESS_CONFIGS)


# ------------------------------------------------------------------ the members, shapes and ranges
@pytest.mark.parametrize("name", ALL)
def test_contract_members(name):
    r = recipe_from_dict(_recipe(name))
    proc = build_process(r.process)
    assert isinstance(proc, ForwardProcess) and proc.cfg is r.process and isinstance(proc.label, str) and proc.label
    K, g = proc.num_levels, torch.Generator().manual_seed(0)
    k = proc.draw_training_levels(4000, g)
    assert k.dtype == torch.int64 and k.shape == (4000,) and int(k.min()) == 1 and int(k.max()) == K  # U{1..K}
    x0 = torch.rand(6, 1, 8, 8, generator=g)
    eps = torch.randn(6, 1, 8, 8, generator=g)
    kk = torch.tensor([1, 2, K, K, 1, K])
    inp, target = proc.training_pair(x0, kk, eps)
    assert inp.shape == target.shape == x0.shape and inp.dtype == target.dtype == torch.float32
    torch.testing.assert_close(inp, proc.forward_marginal(x0, kk, eps))  # the input is a draw of q(x_k | x0)
    # level 0 is the data: q(x_0 | x0) holds x0 itself, in data units
    torch.testing.assert_close(proc.to_data_scale(proc.forward_marginal(x0, torch.zeros(6, dtype=torch.long), 0 * eps)), x0,
                               atol=1e-5, rtol=0)
    loss = proc.loss(target, target)
    assert loss.ndim == 0 and float(loss) == 0.0 and float(proc.loss(target + 1, target)) == pytest.approx(1.0)
    data = recipe_from_dict(_recipe(name)).data
    from genproc.data import build_dataset

    train = build_dataset(data, "train") if proc.needs_data_for_prior else None
    p5 = proc.prior(SampleRNG(3, range(5), 1), (1, 8, 8), train)
    p2 = proc.prior(SampleRNG(3, [3, 4], 1), (1, 8, 8), train)
    assert p5.shape == (5, 1, 8, 8) and p5.dtype == torch.float32
    torch.testing.assert_close(p5[3:], p2)  # prior state i depends only on (seed, i)
    assert supported(proc), f"no sampler drives {name}"  # its own chain or a sampler view
    img = proc.to_image(p5 * 10)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert set(proc.sampling_settings()) == set(type(r.process).SAMPLING_KEYS)
    elbo = proc.elbo(train, "cpu")
    if elbo is not None:
        terms = elbo.terms(lambda x, k: torch.zeros_like(x), x0, SampleRNG(0, range(6), 12))
        assert terms and all(v.shape == (6,) and v.dtype == torch.float64 and torch.isfinite(v).all() for v in terms.values())
        assert elbo.convention in ("dequantised", "discrete") and set(elbo.labels) >= set(terms)
    # the stored prior: a process whose prior reads the data either stores nothing (None) or a state whose rebuilt
    # object gives the same prior draws within 1e-3 (kde_prior.TOL) and an ELBO within 1% per term: centres moved by up
    # to TOL move the prior term (IHDM's L_K) by at most its closed-form bound, tested exactly in test_release.py
    state = proc.prior_state(train)
    if not proc.needs_data_for_prior:
        assert state is None
    elif state is not None:
        stored = proc.prior_from_state(state)
        assert len(stored) == len(train)
        torch.testing.assert_close(proc.prior(SampleRNG(3, range(5), 1), (1, 8, 8), stored), p5, atol=1e-3, rtol=0)
        if elbo is not None:
            t2 = proc.elbo(stored, "cpu").terms(lambda x, k: torch.zeros_like(x), x0, SampleRNG(0, range(6), 12))
            for key, v in terms.items():
                torch.testing.assert_close(t2[key], v, rtol=1e-2, atol=1e-3)


def _pairs() -> list[tuple[str, str]]:
    return [(name, sampler) for name in ALL for sampler in supported(build_process(recipe_from_dict(_recipe(name)).process))]


def test_every_process_has_its_samplers_and_only_those():
    """The Gaussian diffusions get every Gaussian sampler (Heun only where α is the same in every coordinate) and no
    chain of their own; the heat chains their own chain and the heat-chain samplers; Fade, which exposes no view, its
    own chain only. A refused pair is one line naming the samplers that process supports."""
    pairs = _pairs()
    by = {n: [s for m, s in pairs if m == n] for n in ALL}
    assert {"ancestral", "ddim", "dpmpp_2m", "heun"} <= set(by["ddpm"]) and set(by["ddpm"]) - {"heun"} == set(by["bdm"])
    assert "chain" not in by["ddpm"] and by["fade"] == ["chain"] and by["ihdm"] == by["blur"]
    assert by["ihdm"][0] == "chain" and not {"ancestral", "ddim", "dpmpp_2m", "heun"} & set(by["ihdm"])
    from genproc.samplers import check

    with pytest.raises(GenprocError, match="samplers for IHDM: chain"):
        check(build_process(recipe_from_dict(_recipe("ihdm")).process), "dpmpp_2m")
    # Heun's σ̃ steps diverge where α differs per coordinate (BDM's frequencies; docs/samplers/heun_bdm.txt)
    with pytest.raises(GenprocError, match="same alpha in every coordinate: its steps diverge otherwise.*"
                                           "samplers for BDM: ancestral, ddim, dpmpp_2m$"):
        check(build_process(recipe_from_dict(_recipe("bdm")).process), "heun")


class _TinyNet(torch.nn.Module):
    """An untrained, level-dependent network: enough to exercise a sampler's plumbing."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.2, generator=torch.Generator().manual_seed(0))

    def forward(self, x, k):
        # one image at a time: oneDNN picks its convolution algorithm by batch size, and the rounding it changes
        # (~1e-7) is what this test must not see (a Gaussian sampler divides x̂₀ by α down to ~1e-3)
        y = torch.cat([self.conv(x[i:i + 1]) for i in range(x.shape[0])])
        return 0.1 * torch.tanh(y) * (1 + k.float().reshape(-1, 1, 1, 1) / 20)


@pytest.mark.parametrize("name,sampler", _pairs())
def test_every_process_with_every_sampler_it_supports(name, sampler):
    """Every (process, supported sampler) pair through the one sampling driver: shapes and range, sample i
    independent of the batch size, a deterministic sampler the same from the same prior state, the calls it states;
    nothing is kept between chains (drawing twice gives the same)."""
    from genproc.data import build_dataset
    from genproc.engine.sampler import generate
    from genproc.samplers import build_sampler, lookup

    r = recipe_from_dict(_recipe(name))
    proc = build_process(r.process)
    steps = 3 if lookup(sampler).config_cls().steps is None and sampler != "chain" else None
    smp = build_sampler(sampler, lookup(sampler).config_cls(steps=steps))
    data = build_dataset(r.data, "train") if proc.needs_data_for_prior else None
    net, calls = _TinyNet(), []

    def counted(x, k):
        calls.append(int(k[0]))
        return net(x, k)

    kw = dict(sampler=smp, shape=(1, 8, 8), data=data, seed=4, capture_every=-1)
    a = generate(proc, counted, 5, batch_size=5, **kw).images
    assert len(calls) == smp.calls(smp.levels(proc)) and max(calls) <= proc.num_levels and min(calls) >= 1
    b = generate(proc, net, 5, batch_size=2, **kw).images
    c = generate(proc, net, 2, start_index=3, **kw).images
    assert a.shape == (5, 1, 8, 8) and a.dtype == torch.float32 and float(a.min()) >= 0 and float(a.max()) <= 1
    # sample i depends only on (seed, i); blur's grouped conv rounds differently per batch size (~1e-6)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a[3:], c, atol=1e-5, rtol=0)
    x = proc.prior(SampleRNG(4, [0, 0], 1), (1, 8, 8), data)  # one prior state twice, different noise streams
    noise = SampleRNG(4, [0, 1], 2)
    with torch.no_grad():
        out = smp.run(proc, net, x, lambda j: noise.randn((1, 8, 8)), smp.levels(proc))  # the states, not clamped
    assert torch.equal(out[0], out[1]) != smp.stochastic(proc)  # equal iff deterministic


@pytest.mark.parametrize("name", ALL)
def test_recipe_built_in_python_round_trips(name):
    r = recipe_from_dict(_recipe(name))
    built = genproc.Recipe(name=r.name, seed=r.seed, data=r.data, process=r.process, net=r.net, train=r.train, sample=r.sample)
    d = built.to_dict()
    assert d["process"]["name"] == name == lookup(name).name  # aliases are saved under the canonical name
    again = recipe_from_dict(__import__("yaml").safe_load(recipe_to_yaml(built)))
    assert again == built and again.to_dict() == d


# ------------------------------------------------------------------ end to end through the library
@pytest.mark.parametrize("name", ALL)
def test_trains_resumes_bit_exactly_samples_and_evaluates(name, tmp_path):
    r = recipe_from_dict(_recipe(name, max_steps=4, checkpoint_every=2))
    quiet = {"progress": False, "log": lambda *_: None}
    whole = genproc.train(r, tmp_path / "whole", **quiet)
    genproc.train(r, tmp_path / "split", max_steps=2, **quiet)
    split = genproc.train(r, tmp_path / "split", **quiet)  # resumes from step 2
    assert whole.step == split.step == 4 and whole.process_name == name
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(p / "checkpoints" / "step_00000004" / f) for p in (tmp_path / "whole", tmp_path / "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert recipe_from_dict(__import__("yaml").safe_load((tmp_path / "whole" / "recipe.yaml").read_text())) == r
    run = genproc.load(tmp_path / "whole")
    s5 = run.sample(5, seed=7, batch_size=5, capture_every=-1).images
    s2 = run.sample(5, seed=7, batch_size=2, capture_every=-1).images
    assert s5.shape == (5, 1, 8, 8)
    torch.testing.assert_close(s5, s2, atol=1e-5, rtol=0)  # batch-size invariant (up to the kernels' float rounding)
    assert 0 <= float(s5.min()) and float(s5.max()) <= 1
    if run.process.elbo(run.prior_data(), run.device) is not None:
        from genproc.metrics import evaluate

        (rec,) = evaluate(run, "nll", n=4, batch_size=2, log=lambda *_: None)
        assert math.isfinite(rec["value"]) and rec["process"] == name and rec["n_samples"] == 4
    # restoration, for the processes that support it (the contract's observe): a blurred sample comes back as images
    from genproc.processes.dct import heat_forward

    y = heat_forward(s5[:2], 1.0)
    try:
        run.process.observe(y, torch.zeros(2), torch.zeros(2), 1, torch.zeros_like(y))
    except GenprocError:
        return  # no restoration (the default of the contract)
    res = run.restore(y, n=2, seed=1)
    assert res.samples.shape == (2, 2, 1, 8, 8) and torch.isfinite(res.samples).all()
    assert all(1 <= int(k) <= run.process.num_levels for k in res.levels)


def test_user_process_evaluates_compares_and_analyses(tmp_path):
    """Acceptance 2: the process defined in this file goes through FID/KID, NLL, compare and analyze spectra."""
    from genproc.analysis.spectra import analyze_spectra
    from genproc.compare import compare
    from genproc.metrics import evaluate

    quiet = {"progress": False, "log": lambda *_: None}
    fade = genproc.train(recipe_from_dict(_recipe("fade", max_steps=4)), tmp_path / "fade", **quiet)
    ihdm = genproc.train(recipe_from_dict(_recipe("ihdm", max_steps=4)), tmp_path / "ihdm", **quiet)
    recs = evaluate(fade, "fid,kid,nll", n=8, n_ref=16, batch_size=4, extractor=TINY_FE, cache_dir=tmp_path / "cache",
                    log=lambda *_: None)
    by = {r["metric"]: r for r in recs}
    assert by["fid"]["value"] >= 0 and math.isfinite(by["kid"]["value"]) and by["kid"]["std"] is not None  # 8 of 16 refs
    assert by["nll"]["value"] == pytest.approx(8.0, abs=1e-12)  # its own bound: the uniform density, exactly 8 bits/dim
    assert by["nll"]["terms_nats"] == {"uniform": 0.0}
    # sampling-time settings of the user's process work like the built-ins'
    assert fade.with_sampling(eta=1.0).process.reverse_is_stochastic and not fade.process.reverse_is_stochastic
    rep = compare(["fade-to-noise", "heat"], runs=[tmp_path / "fade", tmp_path / "ihdm"], n=4, metrics="nll",
                  out=tmp_path / "cmp", grid_n=2, batch_size=4, sampling={"eta": 0.5}, log=lambda *_: None)
    assert [row["process"] for row in rep["rows"]] == ["fade", "ihdm"] and rep["rows"][0]["label"] == "Fade"
    assert rep["sample_overrides"] == {"fade": {"eta": 0.5}, "ihdm": {}} and rep["rows"][0]["nll"] == pytest.approx(8.0)
    assert "| Fade |" in rep["table"] and (tmp_path / "cmp" / "spectra.png").is_file()
    spectra = analyze_spectra([genproc.load(tmp_path / "fade"), ihdm], tmp_path / "spec", n=4, levels=2)
    assert set(spectra["runs"]) == {"fade", "ihdm"}
