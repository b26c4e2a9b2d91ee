"""DDPM on the shared contract: schedules, training pair, exact reverse with an oracle network."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_sampler

from genproc.engine import generate
from genproc.processes.ddpm import DDPMConfig, DDPMProcess, beta_schedule
from genproc.recipe import recipe_from_dict


def test_linear_schedule_endpoints():
    b = beta_schedule(DDPMConfig(T=1000))
    assert b[0] == 0 and b[1] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1001


def test_cosine_alpha_bar_closed_form():
    p = DDPMProcess(DDPMConfig(T=100, schedule="cosine"))
    f = lambda t: math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 50, 90):
        assert float(p.alpha_bar[t]) == pytest.approx(f(t) / f(0), rel=1e-9)
    assert torch.all(p.alpha_bar[1:] < p.alpha_bar[:-1])


def test_training_pair():
    p = DDPMProcess(DDPMConfig(T=50))
    x0, eps = torch.rand(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    k = torch.tensor([1, 20, 50])
    x_t, target = p.training_pair(x0, k, eps)
    ab = p.alpha_bar[k].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, ab.sqrt() * (2 * x0 - 1) + (1 - ab).sqrt() * eps)
    assert torch.equal(target, eps)


class _Oracle(torch.nn.Module):
    """The exact eps-prediction when the data set is the single image x*."""

    def __init__(self, proc, x_star):
        super().__init__()
        self.proc, self.x = proc, 2 * x_star - 1

    def forward(self, x, k):
        ab = self.proc.alpha_bar[k.cpu()].float().reshape(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.x) / (1 - ab).sqrt()


@pytest.mark.parametrize("sampler,settings", [("ancestral", {}), ("ddim", {"steps": 10, "eta": 0.5}),
                                              ("dpmpp_2m", {"steps": 10}), ("heun", {"steps": 6})])
def test_oracle_reverse_recovers_the_data_point(sampler, settings):
    proc = DDPMProcess(DDPMConfig(T=100))
    x_star = torch.rand(1, 1, 6, 6)
    res = generate(proc, _Oracle(proc, x_star), 3, sampler=make_sampler(sampler, **settings), seed=0, shape=(1, 6, 6),
                   capture_every=-1)
    torch.testing.assert_close(res.images, x_star.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def test_ddim_levels():
    lv = make_sampler("ddim", steps=50).levels(DDPMProcess(DDPMConfig(T=1000)))
    assert lv[0] == 1000 and lv[-1] == 1 and len(lv) == 50 and lv == sorted(lv, reverse=True)


def test_ddpm_trains_and_samples_on_the_same_engine(tmp_path, tiny_dict):
    from genproc.engine import train
    from genproc.run import load

    tiny_dict["process"] = {"name": "ddpm", "T": 20}
    train(recipe_from_dict(tiny_dict), tmp_path, progress=False, log=lambda *_: None)
    run = load(tmp_path)
    res = run.sample(4, seed=1, batch_size=2)
    assert res.images.shape == (4, 1, 8, 8) and res.trajectory.shape[1] == 4
    assert torch.equal(res.images, run.sample(4, seed=1, batch_size=4).images)
