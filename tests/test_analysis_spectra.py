"""``genproc analyze spectra``: the radially averaged DCT PSD, the power-law fit, PSDs along the forward processes,
the command end to end on tiny trained IHDM and DDPM runs, and on a data set alone (no model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import DDIM_4_STEPS_OLD_FLAG, analyze_errors, analyze_ok
from scipy.fft import dctn

from genproc.analysis.spectra import fit_power_law, forward_levels, forward_psds, halfway_level, radial_bins, radial_psd
from genproc.errors import GenprocError
from genproc.processes import registered
from genproc.processes.dct import idct2
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.heat import HeatConfig, HeatProcess


def reference_psd(images: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Independent of genproc: scipy's orthonormal DCT-II of square images (N, H, H), squared, averaged over images,
    multiplied by ``weights`` (H, H) if given, then over each annulus b <= sqrt(u^2 + v^2) < b + 1 by explicit loops.
    Returns (freqs: mean radius / 2H, psd), one entry per non-empty annulus."""
    h = images.shape[-1]
    power = (dctn(images, axes=(-2, -1), norm="ortho") ** 2).mean(0) * (1.0 if weights is None else weights)
    sums, radii = {}, {}
    for u in range(h):
        for v in range(h):
            r = math.sqrt(u * u + v * v)
            b = math.floor(r + 1e-9)
            sums.setdefault(b, []).append(power[u, v])
            radii.setdefault(b, []).append(r)
    keys = sorted(sums)
    return np.array([np.mean(radii[b]) / (2 * h) for b in keys]), np.array([np.mean(sums[b]) for b in keys])


def digits_8px(n: int) -> np.ndarray:
    """The first n training digits (N, 8, 8) in [0, 1], straight from scikit-learn (genproc's digits train split starts
    with them)."""
    from sklearn.datasets import load_digits

    return load_digits().images[:n] / 16.0


def power_law_field(alpha: float, n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) images whose DCT coefficient (u, v) is +-r^(-alpha/2), r = sqrt(u^2 + v^2); DC 0."""
    g = torch.Generator().manual_seed(seed)
    u = torch.arange(size, dtype=torch.float64)
    r = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    amp = r.clamp_min(1.0) ** (-alpha / 2)
    amp[0, 0] = 0.0
    signs = torch.randint(0, 2, (n, 1, size, size), generator=g).double() * 2 - 1
    return idct2(amp * signs)


def test_white_noise_psd_is_flat_and_equals_the_variance():
    x = 0.3 * torch.randn(4000, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    freqs, psd = radial_psd(x)
    _, _, counts = radial_bins(16, 16)
    assert freqs[0] == 0 and np.all(np.diff(freqs) > 0) and freqs[15] == pytest.approx(15.0 / 32, rel=0.05)
    assert np.all(np.abs(psd / psd.mean() - 1) < 0.05), psd / psd.mean()
    assert np.all(np.abs(psd / 0.09 - 1) < 0.05)
    assert np.average(psd, weights=counts) == pytest.approx(float((x**2).mean()), rel=1e-9)  # Parseval, orthonormal DCT


def test_radial_bins_partition_the_dct():
    bins, freqs, counts = radial_bins(8, 8)
    assert bins.shape == (8, 8) and bins[0, 0] == 0 and counts[0] == 1 and counts.sum() == 64
    assert bins[0, 1] == bins[1, 0] == bins[1, 1] == 1 and bins[7, 7] == len(freqs) - 1
    bins, freqs, counts = radial_bins(8, 16)  # non-square: v scaled by H / W; DC alone, (0, 1) at r = 0.5 next
    assert counts.sum() == 128 and counts[0] == 1 and bins[0, 1] == 1 and bins[0, 2] == bins[1, 0] == 2


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_power_law_field_recovers_alpha(alpha):
    freqs, psd = radial_psd(power_law_field(alpha))
    a, amp = fit_power_law(freqs, psd, fmax=0.5)
    assert a == pytest.approx(alpha, abs=0.1) and amp > 0


def test_fit_power_law_needs_two_bins():
    with pytest.raises(GenprocError, match="at least 2"):
        fit_power_law(np.array([0.0, 0.1]), np.array([1.0, 1.0]))
    with pytest.raises(GenprocError, match="radial_psd needs images"):
        radial_psd(torch.zeros(0))


def test_heat_forward_lowers_high_frequencies_monotonically():
    x0 = (power_law_field(2.0, n=4, size=16) * 4 + 0.5).float()
    proc = HeatProcess(HeatConfig(K=10, sigma_blur_max=8.0, sigma=0.0))
    res = forward_psds(proc, x0, forward_levels(10, 10))
    assert res["levels"] == list(range(1, 11)) and res["relative"][-1] == 1.0
    hi = res["freqs"] >= 0.25
    d = res["psd"][:, hi]
    assert np.all((d[1:] < d[:-1]) | (d[:-1] < 1e-12))  # every high-frequency bin decays with k (until float32 zero)
    assert np.all(d[-1] < 1e-6 * d[0])
    x0 = (power_law_field(2.0, n=64, size=16) * 4 + 0.5).float()
    noisy = forward_psds(HeatProcess(HeatConfig(K=10, sigma_blur_max=8.0, sigma=0.01)), x0, [10])
    assert np.allclose(noisy["psd"][0, hi], 0.01**2, rtol=0.25)  # fully blurred: only the sigma^2 floor is left


def test_ddpm_forward_is_measured_in_pixel_units():
    x0 = torch.full((64, 1, 16, 16), 0.3)  # flat images: every non-DC coefficient of the state is noise
    proc = DDPMProcess(DDPMConfig(T=20))
    res = forward_psds(proc, x0, [20])
    floor = (1 - float(proc.alpha_bar[20])) / 4  # white noise sqrt(1 - ab) eps, halved by (x + 1) / 2
    assert np.allclose(res["psd"][0, 1:], floor, rtol=0.2)


def test_forward_levels():
    assert forward_levels(100, 4) == [25, 50, 75, 100]
    assert forward_levels(5, 8) == [1, 2, 3, 4, 5]
    with pytest.raises(GenprocError, match="--levels"):
        forward_levels(5, 0)


def test_halfway_level():
    assert [halfway_level(k) for k in (1, 2, 5, 20, 100, 1000)] == [1, 1, 3, 10, 50, 500]


def test_spectra_command_end_to_end(tiny_runs_no_ema, tmp_path):
    out = tmp_path / "spectra"
    r = analyze_ok("spectra", tiny_runs_no_ema.values(), out, "--n", "16", "--levels", "4", "--batch-size", "8")
    assert "data PSD ~ 1/f^" in r.output and "ihdm:" in r.output and "ddpm:" in r.output
    assert (out / "spectra.png").stat().st_size > 0
    js = json.loads((out / "spectra.json").read_text())
    for key in ("settings", "units", "runs", "data", "forward", "generative", "claim", "files", "genproc_version"):
        assert key in js, key
    nb = len(js["data"]["freqs"])
    assert js["data"]["n"] == 16 and len(js["data"]["psd"]) == nb and js["data"]["alpha"] > 0
    freqs, data_psd = reference_psd(digits_8px(16))  # the runs train on the first 64 digits at 8 px
    np.testing.assert_allclose(js["data"]["freqs"], freqs, rtol=1e-12)
    np.testing.assert_allclose(js["data"]["psd"], data_psd, rtol=1e-5)
    assert js["forward"]["ihdm"]["levels"] == [1, 3, 4, 5] and js["forward"]["ddpm"]["levels"] == [5, 10, 15, 20]
    assert np.asarray(js["forward"]["ddpm"]["psd"]).shape == (4, nb)
    gen = js["generative"]["ddpm"]
    assert gen["levels"][0] == 20 and gen["levels"][-1] == 0 and gen["steps"] == [0, 5, 10, 15, 20]
    assert np.asarray(gen["psd"]).shape == (5, nb) and js["generative"]["ihdm"]["levels"] == [5, 4, 3, 2, 1, 0]
    hi = freqs >= 0.25
    # the expected side is read off the forward marginal at k = K/2: blurred (IHDM) below the data, noised (DDPM) above
    for lab, level, side in (("ihdm", 3, "below"), ("ddpm", 10, "above")):
        fwd = js["claim"][lab]["forward_halfway"]
        assert fwd["level"] == level and fwd["side"] == side and js["claim"][lab]["expected"] == side
        assert fwd["frac_" + side] == np.mean((np.asarray(fwd["psd"])[hi] < data_psd[hi]) == (side == "below"))
    for lab in ("ihdm", "ddpm"):  # the generative check, recomputed from the trajectory's PSDs and the reference data PSD
        c, traj = js["claim"][lab]["generative_halfway"], js["generative"][lab]
        half = int(np.argmin(np.abs(np.asarray(traj["steps"]) - traj["num_sampling_steps"] / 2)))
        row = np.asarray(traj["psd"][half])[hi]
        below, above = np.mean(row < data_psd[hi]), np.mean(row > data_psd[hi])
        assert (c["frac_below"], c["frac_above"], c["step"]) == (pytest.approx(below), pytest.approx(above), traj["steps"][half])
        assert c["holds"] == ((below if c["expected"] == "below" else above) > 0.5)
    assert js["claim"]["ddpm"]["generative_halfway"]["step"] == 10
    assert js["claim"]["ddpm"]["generative_halfway"]["holds"] is True  # ancestral noise keeps a floor above the data


def test_spectra_of_a_data_set_alone(tmp_path):
    """``--dataset`` with no run: the data PSD and every registered process's forward marginal from its default config."""
    out = tmp_path / "data_spectra"
    r = analyze_ok("spectra", [], out, "--dataset", "digits", "--image-size", "8", "--n", "64", "--levels", "4")
    assert "data PSD ~ 1/f^" in r.output and "ddpm (default config, 1000 levels)" in r.output
    js = json.loads((out / "spectra.json").read_text())
    assert set(js["forward"]) == set(js["claim"]) == set(registered()) - set(js["skipped"]) >= {"ihdm", "blur", "ddpm"}
    assert js["generative"] == {} and "runs" not in js
    assert (out / "spectra.png").stat().st_size > 0
    x0 = digits_8px(64)
    freqs, data_psd = reference_psd(x0)
    np.testing.assert_allclose(js["data"]["psd"], data_psd, rtol=1e-5)
    hi = freqs >= 0.25
    # Sec. 3.3 on the data: halfway, heat and blur have removed the high frequencies, DDPM has added a noise floor
    for lab, side in (("ihdm", "below"), ("blur", "below"), ("ddpm", "above")):
        assert js["claim"][lab]["expected"] == js["claim"][lab]["forward_halfway"]["side"] == side, lab
    # the forward PSDs against closed forms (expectation over the noise; n = 64 images)
    ddpm = js["claim"]["ddpm"]["forward_halfway"]
    ab = np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:500])  # Ho et al. linear schedule, alpha_bar at t = 500
    assert js["processes"]["ddpm"]["config"]["T"] == 1000 and ddpm["level"] == 500
    # data units: (x_t + 1) / 2 = sqrt(ab) x0 + const + sqrt(1 - ab) / 2 eps, so PSD = ab PSD_data + (1 - ab) / 4
    np.testing.assert_allclose(np.asarray(ddpm["psd"])[1:], ab * data_psd[1:] + (1 - ab) / 4, rtol=0.2)
    heat = js["claim"]["ihdm"]["forward_halfway"]
    cfg = js["processes"]["ihdm"]["config"]
    sigma_b = np.geomspace(cfg["sigma_blur_min"], cfg["sigma_blur_max"], cfg["K"])[heat["level"] - 1]
    u = np.arange(8)
    lam = np.pi**2 * (u[:, None] ** 2 + u[None, :] ** 2) / 64  # heat-equation eigenvalues of an 8 x 8 image
    _, blurred = reference_psd(x0, np.exp(-2 * lam * sigma_b**2 / 2))  # F(t) scales coefficient (u, v) by exp(-lam t)
    np.testing.assert_allclose(np.asarray(heat["psd"])[1:], blurred[1:] + cfg["sigma"] ** 2, rtol=0.3)
    assert np.all(np.asarray(heat["psd"])[hi] < data_psd[hi])


def test_spectra_command_errors(tiny_runs_no_ema, tmp_path):
    heat = tiny_runs_no_ema["heat"]
    analyze_errors("spectra", tmp_path / "o", ([tmp_path / "nope"], "run dir not found"), ([heat, "--n", "0"], "--n"),
                   ([heat, "--levels", "0"], "--levels"), ([heat, "--data-split", "val"], "--data-split"),
                   ([heat, "--sampling", "bogus=1"], "bogus"), ([heat, "--sample-set", "process.bogus=1"], "bogus"),
                   ([], "--dataset"), ([heat, "--dataset", "digits"], "not both"),
                   (["--dataset", "digits", "--image-size", "8", "--levels", "0"], "--levels"))


def test_old_sampling_flag_is_a_hidden_alias(tiny_runs_no_ema, tmp_path):
    out = tmp_path / "old"
    analyze_ok("spectra", [tiny_runs_no_ema["ddpm"]], out, "--n", "4", "--levels", "2", *DDIM_4_STEPS_OLD_FLAG)
    js = json.loads((out / "spectra.json").read_text())
    assert js["runs"]["ddpm"]["sampling_overrides"] == {"sampler": "ddim", "steps": 4}
    assert js["generative"]["ddpm"]["num_sampling_steps"] == 4
    from typer.testing import CliRunner

    from genproc.cli import app

    help_text = CliRunner().invoke(app, ["analyze", "spectra", "--help"]).output
    assert "--sampling" in help_text and "--sample-set" not in help_text and "--dataset" in help_text
