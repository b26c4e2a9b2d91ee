"""``genproc analyze spectra``: the radially averaged DCT PSD, the power-law fit, PSDs along the forward processes,
and the command end to end on tiny trained IHDM and DDPM runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import analyze_errors, analyze_ok

from genproc.analysis.spectra import fit_power_law, forward_levels, forward_psds, radial_bins, radial_psd
from genproc.errors import GenprocError
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.dct import idct2
from genproc.processes.heat import HeatConfig, HeatProcess


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
    bins, freqs, counts = radial_bins(8, 16)  # non-square: v scaled by H / W
    assert counts.sum() == 128 and bins[0, 2] == bins[1, 0] == 1


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
    assert js["forward"]["ihdm"]["levels"] == [1, 3, 4, 5] and js["forward"]["ddpm"]["levels"] == [5, 10, 15, 20]
    assert np.asarray(js["forward"]["ddpm"]["psd"]).shape == (4, nb)
    gen = js["generative"]["ddpm"]
    assert gen["levels"][0] == 20 and gen["levels"][-1] == 0 and gen["steps"] == [0, 5, 10, 15, 20]
    assert np.asarray(gen["psd"]).shape == (5, nb) and js["generative"]["ihdm"]["levels"] == [5, 4, 3, 2, 1, 0]
    for lab, side in (("ihdm", "below"), ("ddpm", "above")):
        c = js["claim"][lab]["generative_halfway"]
        assert c["expected"] == side and 0 <= c["frac_below"] <= 1 and isinstance(c["holds"], bool)
        assert len(c["high_freq_log_ratio"]) == len(js["generative"][lab]["levels"])
    assert js["claim"]["ddpm"]["generative_halfway"]["step"] == 10
    assert js["claim"]["ddpm"]["forward_mid"]["holds"]  # the noise floor is above the data at t = T/2, trained or not


def test_spectra_command_errors(tiny_runs_no_ema, tmp_path):
    heat = tiny_runs_no_ema["heat"]
    analyze_errors("spectra", tmp_path / "o", ([tmp_path / "nope"], "run dir not found"), ([heat, "--n", "0"], "--n"),
                   ([heat, "--levels", "0"], "--levels"), ([heat, "--data-split", "val"], "--data-split"),
                   ([heat, "--sample-set", "process.bogus=1"], "--sample-set"))
