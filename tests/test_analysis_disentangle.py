"""``genproc analyze disentangle``: the shared-noise / shared-prior grids, their numbers and the CLI on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DDIM_4_STEPS, analyze_errors, analyze_ok
from typer.testing import CliRunner

from genproc.analysis import disentangle as dis
from genproc.cli import app
from genproc.run import load

runner = CliRunner()


def test_stats_on_a_perfectly_disentangled_grid():
    g = torch.Generator().manual_seed(0)
    shapes = torch.randn(4, 1, 6, 6, generator=g) * 0.1
    shapes -= shapes.mean(dim=(-2, -1), keepdim=True)
    offsets = torch.tensor([0.2, 0.4, 0.5, 0.7]).reshape(-1, 1, 1, 1, 1)
    grid = offsets + shapes[None]  # (rows 4, cols 4, 1, 6, 6): column = shape, row = colour
    st = dis.shared_noise_stats(grid)
    assert st["shape_dist_same_noise"] == pytest.approx(0.0, abs=1e-6) and st["shape_corr_same_noise"] == pytest.approx(1.0)
    assert st["shape_ratio"] == pytest.approx(0.0, abs=1e-6) and st["shape_ratio_same_prior"] == pytest.approx(1.0, rel=0.3)
    assert st["colour_var_prior_frac"] == pytest.approx(1.0) and st["colour_var_noise_frac"] == pytest.approx(0.0, abs=1e-6)
    assert st["colour_std_same_prior"] == pytest.approx(0.0, abs=1e-6) and st["colour_std_same_noise"] > 0.1
    scaled = grid * torch.tensor([0.5, 1.0, 1.5, 2.0]).reshape(-1, 1, 1, 1, 1)  # same shape at other contrasts
    assert dis.shared_noise_stats(scaled)["shape_corr_same_noise"] == pytest.approx(1.0)
    sp = dis.shared_prior_stats(grid.transpose(0, 1))
    assert set(sp) == {"shape_dist", "shape_corr", "colour_std"}


def test_luminance_is_rec601_and_the_gray_image_itself():
    rgb = torch.zeros(2, 3, 4, 4)
    rgb[0, 1] = 1.0  # pure green
    rgb[1] = 0.5  # mid gray
    lum = dis.luminance(rgb)
    assert torch.allclose(lum[0], torch.full((4, 4), 0.587)) and torch.allclose(lum[1], torch.full((4, 4), 0.5))
    gray = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dis.luminance(gray), gray[:, 0])


def _colour_grid(colour_of: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A (4, 5, 3, 6, 6) grid: column c has shape c, and the colour of cell (r, c) is that of prior r or of noise c."""
    g = torch.Generator().manual_seed(1)
    shapes = torch.randn(5, 1, 6, 6, generator=g) * 0.05
    shapes -= shapes.mean(dim=(-2, -1), keepdim=True)
    prior_colours = torch.rand(4, 3, generator=g) * 0.6 + 0.2
    noise_colours = torch.rand(5, 3, generator=g) * 0.6 + 0.2
    if colour_of == "prior":
        colours = prior_colours[:, None, :].expand(4, 5, 3)
    else:
        colours = noise_colours[None, :, :].expand(4, 5, 3)
    return colours[..., None, None] + shapes[None], prior_colours


def test_colour_follows_the_prior_on_a_disentangled_rgb_grid():
    grid, prior_colours = _colour_grid("prior")
    st = dis.shared_noise_stats(grid, prior_colours)
    assert st["colour_prior_corr"] == pytest.approx([1.0, 1.0, 1.0]) and st["colour_prior_corr_mean"] == pytest.approx(1.0)
    assert st["colour_prior_mae"] == pytest.approx(0.0, abs=1e-7) and st["colour_prior_mae_other"] > 0.05
    assert st["colour_var_prior_frac"] == pytest.approx(1.0)
    # the luminance of one shape in different colours differs only by a constant: the centred shapes are equal
    assert st["shape_corr_same_noise"] == pytest.approx(1.0) and st["shape_dist_same_noise"] == pytest.approx(0.0, abs=1e-7)
    sp = dis.shared_prior_stats(grid[:1], prior_colours[0])
    assert sp["colour_std"] == pytest.approx(0.0, abs=1e-7) and sp["colour_prior_mae"] == pytest.approx(0.0, abs=1e-7)


def test_colour_set_by_the_noise_does_not_follow_the_prior():
    grid, prior_colours = _colour_grid("noise")
    st = dis.shared_noise_stats(grid, prior_colours)
    # in a full rows x cols grid a row effect and a column effect are uncorrelated: exactly 0
    assert st["colour_prior_corr"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert st["colour_var_noise_frac"] == pytest.approx(1.0) and st["colour_var_prior_frac"] == pytest.approx(0.0, abs=1e-9)
    assert st["colour_prior_mae"] > 0.05


@pytest.mark.parametrize("process", ["heat", "ddpm"])
def test_grids_agree_with_the_sampler(tiny_runs, process):
    run = load(tiny_runs[process])
    grid, priors = dis.shared_noise_grid(run, 3, 4, seed=2, batch_size=8)
    assert grid.shape == (3, 4, 1, 8, 8) and priors.shape == (3, 1, 8, 8)
    sampled = run.sample(4, seed=2, capture_every=-1).images
    for r in range(3):  # cell (r, r): prior r and noise r, i.e. the sampler's sample r
        assert torch.allclose(grid[r, r], sampled[r], atol=1e-5)
    pgrid, prior = dis.shared_prior_grid(run, 3, 4, seed=2)
    assert pgrid.shape == (3, 4, 1, 8, 8) and torch.allclose(prior, priors[0])
    assert torch.allclose(pgrid[0], grid[0], atol=1e-5)  # row 0 of both: prior 0 with noise 0..3
    assert not torch.allclose(grid[0, 0], grid[0, 1])  # the noise matters (ancestral / delta > 0)


def test_cli_end_to_end(tiny_runs, tmp_path):
    out = tmp_path / "dis"
    r = analyze_ok("disentangle", tiny_runs.values(), out, "--rows", "3", "--cols", "3", "--seed", "1",
                   *DDIM_4_STEPS)  # the overrides go to the DDPM run only
    assert "ihdm: shape ratio" in r.output and "ddpm: shape ratio" in r.output and "(noise unused)" in r.output
    for f in ["disentangle_shared_noise.png", "disentangle_shared_prior.png", "disentangle.json"]:
        assert (out / f).stat().st_size > 0, f
    js = json.loads((out / "disentangle.json").read_text())
    assert set(js["results"]) == {"ihdm", "ddpm"} and js["settings"] == {"rows": 3, "cols": 3, "seed": 1}
    ihdm, ddpm = js["results"]["ihdm"], js["results"]["ddpm"]
    # how much the prior keeps is read from the recorded config and image shape (no process-specific key)
    assert js["runs"]["ihdm"]["process"]["sigma_blur_max"] == 4.0 and js["runs"]["ihdm"]["image_shape"] == [1, 8, 8]
    assert js["runs"]["ddpm"]["process"]["T"] == 20 and js["runs"]["ddpm"]["sampling_overrides"]["sampler"] == "ddim"
    assert ihdm["noise_used"] is True and ddpm["noise_used"] is False
    for res in (ihdm, ddpm):
        keys = {"shape_ratio", "shape_corr_same_noise", "shape_corr_independent", "colour_var_prior_frac"}
        assert keys <= set(res["shared_noise"])
        assert set(res["shared_prior"]) == {"shape_dist", "shape_corr", "colour_std", "colour_prior_mae"}
        assert len(res["shared_noise"]["colour_prior_corr"]) == 1  # one per channel
        fr = res["shared_noise"]
        assert fr["colour_var_prior_frac"] + fr["colour_var_noise_frac"] + fr["colour_var_interaction_frac"] == pytest.approx(1.0)
    assert ddpm["shared_prior"]["shape_dist"] == pytest.approx(0.0, abs=1e-6)  # DDIM eta = 0: the same x_T, the same image
    assert ddpm["shared_noise"]["shape_dist_same_prior"] == pytest.approx(0.0, abs=1e-6)


def test_cli_errors(tiny_runs, tmp_path):
    analyze_errors("disentangle", tmp_path / "o", ([tmp_path / "nope"], "run dir not found"),
                   ([tiny_runs["heat"], "--rows", "1"], "rows and cols must be >= 2"))
    r = runner.invoke(app, ["analyze", "disentangle", "--help"])
    assert r.exit_code == 0 and "--rows" in r.output and "--sampling" in r.output and "--sample-set" not in r.output
