"""``genproc analyze interpolation``: slerp, endpoint exactness, the smoothness measures and the CLI on tiny runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DDIM_4_STEPS, analyze_errors, analyze_ok
from typer.testing import CliRunner

from genproc.analysis import interpolation as ip
from genproc.analysis.common import reverse_chain, slerp
from genproc.cli import app
from genproc.run import load

runner = CliRunner()


@pytest.mark.parametrize("orthogonal", [True, False])
def test_slerp_keeps_norm_and_hits_endpoints(orthogonal):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 5, 5, generator=g)
    b = torch.randn(3, 2, 5, 5, generator=g)
    if orthogonal:
        fa, fb = a.flatten(1), b.flatten(1)
        b = (fb - (fa * fb).sum(1, keepdim=True) / (fa * fa).sum(1, keepdim=True) * fa).reshape(a.shape)
    else:
        b = 0.6 * a + 0.4 * b  # strongly correlated
    b = b * (a.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)  # equal norms
    norm = a.flatten(1).norm(dim=1)
    for lam in [0.0, 0.1, 0.5, 0.77, 1.0]:
        assert torch.allclose(slerp(a, b, lam).flatten(1).norm(dim=1), norm, rtol=1e-5)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    per_sample = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(per_sample[0], a[0]) and torch.allclose(per_sample[2], b[2], atol=1e-6)
    half = slerp(a, b, 0.5)  # on the great circle half-way: equal angles to both ends
    cos = lambda u, v: (u.flatten(1) * v.flatten(1)).sum(1) / (u.flatten(1).norm(dim=1) * v.flatten(1).norm(dim=1))  # noqa: E731
    assert torch.allclose(cos(half, a), cos(half, b), atol=1e-5)


def test_measures_on_synthetic_paths():
    a, b = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    lam = torch.linspace(0, 1, 9).reshape(-1, 1, 1, 1)
    line = ((1 - lam) * a + lam * b)[None]  # (1, 9, 1, 4, 4), evenly spaced straight line
    assert torch.allclose(ip.jump_ratio(ip.step_distances(line)), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(ip.path_ratio(line), torch.ones(1, dtype=torch.float64))
    step = (lam > 0.5).float() * b + (lam <= 0.5).float() * a  # all the change in one step
    assert float(ip.jump_ratio(ip.step_distances(step[None]))) == pytest.approx(8.0)  # F - 1: the maximum
    assert float(ip.path_ratio(step[None])) == pytest.approx(1.0)  # a jump along the line is still straight
    detour = line.clone()
    detour[0, 4] = 3.0  # half-way through an unrelated image
    assert float(ip.path_ratio(detour)) > 3 and float(ip.jump_ratio(ip.step_distances(detour))) > 3
    m = ip.smoothness(torch.cat([line, detour]), lowpass_sigma=1.0)
    assert set(m) == set(ip.MEASURES) and m["jump_ratio"][0] == pytest.approx(1.0) and m["jump_ratio"][1] > 3
    assert torch.isnan(ip.jump_ratio(torch.zeros(1, 3)))  # no movement at all: undefined, not 0/0 crash
    agg = ip.aggregate([1.0, 2.0, 3.0, float("nan")])
    assert agg["n"] == 3 and agg["mean"] == pytest.approx(2.0) and agg["ci95_low"] <= 2.0 <= agg["ci95_high"]


@pytest.mark.parametrize("process", ["heat", "ddpm"])
def test_endpoints_are_the_sampler_samples(tiny_runs, process):
    run = load(tiny_runs[process])
    frames = ip.interpolate(run, 2, 4, seed=3, batch_size=5)  # 1 pair per chunk: exercises chunking
    assert frames.shape == (2, 4, 1, 8, 8) and 0 <= float(frames.min()) and float(frames.max()) <= 1
    idx = [0, 1, 2, 3]
    ends, _ = reverse_chain(run, ip.prior_states(run, idx, 3), ip.StepNoise(run, idx, 3))
    assert torch.allclose(frames[:, 0], ends[0::2], atol=1e-5) and torch.allclose(frames[:, -1], ends[1::2], atol=1e-5)
    sampled = run.sample(4, seed=3, capture_every=-1).images
    assert torch.allclose(ends, sampled, atol=1e-5)
    again = ip.interpolate(run, 2, 4, seed=3)  # deterministic, independent of batching
    assert torch.allclose(frames, again, atol=1e-5)
    assert not torch.allclose(frames[:, 1], frames[:, 0])  # the inner frames do move


def test_summary_and_bad_input(tiny_runs):
    run = load(tiny_runs["ddpm"]).with_sampling(sampler="ddim", steps=4)
    assert not run.sampler.stochastic(run.process) and ip.prior_interpolation(run.process) == "slerp"
    row = ip.interpolation_smoothness_summary(run, pairs=2, frames=4)
    assert {"jump_ratio_mean", "path_ratio_mean", "jump_ratio_shape_mean", "path_ratio_shape_mean"} <= set(row)
    # the summary's numbers, recomputed in numpy from the interpolation's frames (pixel space)
    frames = ip.interpolate(run, 2, 4, seed=0).double().numpy().reshape(2, 4, -1)  # (pairs, frames, D)
    steps = np.linalg.norm(np.diff(frames, axis=1), axis=2)  # (pairs, 3)
    chord = np.linalg.norm(frames[:, -1] - frames[:, 0], axis=1)
    assert row["jump_ratio_mean"] == pytest.approx(np.mean(steps.max(1) / steps.mean(1)), rel=1e-6)
    assert row["jump_ratio_median"] == pytest.approx(np.median(steps.max(1) / steps.mean(1)), rel=1e-6)
    assert row["path_ratio_mean"] == pytest.approx(np.mean(steps.sum(1) / chord), rel=1e-6)
    with pytest.raises(Exception, match="pairs must be >= 1"):
        ip.interpolate(run, 0, 5)
    with pytest.raises(Exception, match="frames must be >= 2"):
        ip.interpolate(run, 1, 1)


def test_cli_end_to_end(tiny_runs, tmp_path):
    out = tmp_path / "interp"
    r = analyze_ok("interpolation", tiny_runs.values(), out, "--pairs", "3", "--frames", "5", "--show", "2",
                   *DDIM_4_STEPS)  # the overrides go to the DDPM run only
    assert "ihdm: jump ratio" in r.output and "ddpm: jump ratio" in r.output
    assert (out / "interpolation.png").stat().st_size > 0
    js = json.loads((out / "interpolation.json").read_text())
    assert set(js["results"]) == {"ihdm", "ddpm"} and js["settings"]["pairs"] == 3 and "genproc_version" in js
    assert js["runs"]["ddpm"]["sampling_overrides"] == {"sampler": "ddim", "steps": 4}
    assert js["runs"]["ihdm"]["sampling_overrides"] == {}
    ihdm, ddpm = js["results"]["ihdm"], js["results"]["ddpm"]
    assert ihdm["prior_interpolation"] == "linear" and ihdm["noise_used"] and ihdm["noise_interpolation"] == "slerp"
    assert ddpm["prior_interpolation"] == "slerp" and ddpm["noise_used"] is False  # DDIM eta = 0: x_T only
    for res in (ihdm, ddpm):
        assert set(res["aggregates"]) == set(ip.MEASURES) == set(res["per_pair"])
        assert len(res["per_pair"]["jump_ratio"]) == 3 and res["endpoint_samples"][2] == [4, 5]
        assert {"mean", "median", "std", "sem", "ci95_low", "ci95_high", "n"} <= set(res["aggregates"]["path_ratio"])
        assert all(v >= 1 - 1e-9 for v in res["per_pair"]["path_ratio"])


def test_cli_errors(tiny_runs, tmp_path):
    analyze_errors("interpolation", tmp_path / "o", ([tmp_path / "nope"], "run dir not found"),
                   ([tiny_runs["heat"], "--frames", "1"], "frames must be >= 2"))
    r = runner.invoke(app, ["analyze", "interpolation", "--help"])
    assert r.exit_code == 0 and "--pairs" in r.output and "--sampling" in r.output and "--sample-set" not in r.output
