"""Restoration: the blur/noise estimator on MNIST blurred at known heat levels and by a spatial Gaussian (scipy), the
processes' `observe` against their closed forms, an oracle IHDM chain that restores its image exactly, the
baselines' exactness where it holds, and `genproc restore` end to end with its one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.ndimage
import torch
from conftest import make_sampler, one_line_error
from typer.testing import CliRunner

from genproc.cli import app
from genproc.data import build_dataset
from genproc.engine.media import save_pngs
from genproc.processes.bdm import BDMConfig, BDMProcess
from genproc.processes.dct import dct2, heat_forward, idct2, laplacian_eigenvalues, mean_power
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.heat import HeatConfig, HeatProcess
from genproc.recipe import DataConfig
from genproc.restore import restore
from genproc.restore.baselines import dct_wiener, gaussian_psf
from genproc.restore.levels import estimate_blur

MNIST = Path(__file__).parents[2] / "shared/data/mnist"
IHDM_SMALL = HeatProcess(HeatConfig(K=50, sigma_blur_min=0.5, sigma_blur_max=20.0))  # ihdm_mnist_small's schedule


@pytest.fixture(scope="module")
def mnist():
    if not MNIST.is_dir():
        pytest.skip("shared MNIST copy not present")
    cfg = DataConfig(name="mnist", image_size=28, channels=1, root=str(MNIST))
    power = mean_power(build_dataset(cfg, "train").get_batch(torch.arange(3000)))
    return power, build_dataset(cfg, "test").get_batch(torch.arange(32))


def _8bit(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255) / 255


@pytest.mark.parametrize("kind", ["heat", "gaussian"])
def test_blur_estimate_recovers_heat_levels_and_gaussian_sigma(mnist, kind):
    """8-bit test images blurred by the heat operator at ihdm_mnist_small's levels 10, 20, 30, 40 (σ_B 1.1-8.9 px), or
    by scipy's spatial Gaussian (mode 'reflect') at σ_B = 1, 2, 4, 8: the median estimate of σ_B is within 10% and
    the estimated level within one level for at least 80% of the images; noise on top is estimated too."""
    power, x0 = mnist
    targets = [float(IHDM_SMALL.sigma_blur[k]) for k in (10, 20, 30, 40)] if kind == "heat" else [1.0, 2.0, 4.0, 8.0]
    for sb in targets:
        if kind == "heat":
            y = heat_forward(x0, sb**2 / 2)
        else:
            y = torch.from_numpy(scipy.ndimage.gaussian_filter(x0.double().numpy(), (0, 0, sb, sb), mode="reflect")).float()
        est = estimate_blur(_8bit(y), power, 200.0)
        assert abs(float(est.sigma_blur.median()) / sb - 1) < 0.10, (kind, sb, est.sigma_blur)
        if kind == "heat":
            true_k = int((IHDM_SMALL.sigma_blur - sb).abs().argmin())
            k_hat = torch.tensor([int((IHDM_SMALL.sigma_blur[1:].log() - math.log(max(s, 1e-6))).abs().argmin()) + 1
                                  for s in est.sigma_blur.tolist()])
            assert float(((k_hat - true_k).abs() <= 1).float().mean()) >= 0.8, (sb, k_hat)
    noisy = _8bit(heat_forward(x0, 2.0) + 0.02 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
    est = estimate_blur(noisy, power, 200.0)
    assert abs(float(est.noise.median()) / 0.02 - 1) < 0.25 and abs(float(est.sigma_blur.median()) / 2 - 1) < 0.15


def test_observe_in_closed_form():
    """Heat: F(t_k - τ) y + √(σ² - s_left²) ε, None when the noise left exceeds σ; DDPM: √ᾱ (2y - 1) + √(1 - ᾱ - 4 s² ᾱ) ε
    (SDEdit); BDM without blur: a (2y - 1) + √(σ² - 4 a² s²) ε."""
    g = torch.Generator().manual_seed(0)
    y, eps = torch.rand(3, 1, 6, 7, generator=g), torch.randn(3, 1, 6, 7, generator=g)
    heat = HeatProcess(HeatConfig(K=10, sigma_blur_max=4.0, sigma=0.01))
    tau, zero = torch.tensor([0.0, 1.0, float(heat.t[6])]), torch.zeros(3)
    got = heat.observe(y, tau, zero, 6, eps)
    want = heat_forward(y, (heat.t[6] - tau).float()) + 0.01 * eps
    torch.testing.assert_close(got, want)
    # noise s thinned by the further blur: s^2 mean_f exp(-2 λ dt) must fit under σ^2
    lam = laplacian_eigenvalues(6, 7).double().flatten()
    dt = float(heat.t[8])
    left = 0.02 * math.sqrt(float(torch.exp(-2 * lam * dt).mean()))
    s = torch.full((1,), 0.02)
    out = heat.observe(y[:1], torch.zeros(1), s, 8, eps[:1])
    if left <= 0.01:
        torch.testing.assert_close(out, heat_forward(y[:1], dt) + math.sqrt(0.01**2 - left**2) * eps[:1])
    assert heat.observe(y[:1], torch.tensor([float(heat.t[8])]), s, 8, eps[:1]) is None  # no further blur: 0.02 > σ
    ddpm = DDPMProcess(DDPMConfig(T=100))
    ab = float(ddpm.alpha_bar[40])
    torch.testing.assert_close(ddpm.observe(y, zero, torch.full((3,), 0.05), 40, eps),
                               math.sqrt(ab) * (2 * y - 1) + math.sqrt(1 - ab - 4 * 0.05**2 * ab) * eps)
    assert ddpm.observe(y, zero, torch.full((3,), 0.05), 1, eps) is None
    assert ddpm.level_noise_std(40) == pytest.approx(math.sqrt((1 - ab) / ab) / 2)
    bdm = BDMProcess(BDMConfig(T=50, sigma_blur_max=0.0))
    a, sg = float(bdm.a[20]), float(bdm.sigmas[20])
    torch.testing.assert_close(bdm.observe(y, zero, torch.full((3,), 0.01), 20, eps),
                               a * (2 * y - 1) + math.sqrt(sg**2 - 4 * a**2 * 0.01**2) * eps)


class _Oracle(torch.nn.Module):
    """IHDM's exact one-image reverse mean: f(u, k) = F(t_{k-1}) x* - u."""

    def __init__(self, p: HeatProcess, x: torch.Tensor):
        super().__init__()
        self.p, self.x = p, x

    def forward(self, u, k):
        return torch.stack([self.p.blur(self.x[0], int(kk) - 1) for kk in k]) - u


def test_an_oracle_chain_restores_its_image_from_the_estimated_level():
    """With the exact reverse mean of a one-image data set and δ = 0, restoring that image blurred at level 7 (auto
    level, nearest in σ_B) returns the image; with n = 3, δ > 0 and a net that keeps part of the noise, the
    restorations differ, their mean is their average, and restoration j of image i does not depend on the batch size."""
    p = HeatProcess(HeatConfig(K=12, sigma_blur_min=0.5, sigma_blur_max=6.0, delta=0.0))
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = p.blur(x, 7)
    run = SimpleNamespace(process=p, net=_Oracle(p, x), image_shape=(1, 16, 16), device=torch.device("cpu"),
                          recipe=SimpleNamespace(train=SimpleNamespace(precision="fp32")), sampler=make_sampler("chain"))
    power = mean_power(torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(2)))
    res = restore(run, y, power=power, noise=0.0)
    assert int(res.levels[0]) == 7
    torch.testing.assert_close(res.samples[0, 0], x[0].clamp(0, 1), atol=1e-4, rtol=0)
    res_k = restore(run, y, level=7, power=power, noise=0.0)
    torch.testing.assert_close(res_k.samples, res.samples)
    q = HeatProcess(HeatConfig(K=12, sigma_blur_min=0.5, sigma_blur_max=6.0, delta=0.02))
    half = lambda u, k: 0.5 * _Oracle(q, x)(u, k)  # noqa: E731 - a net that keeps part of the step noise
    run2 = SimpleNamespace(**{**vars(run), "process": q, "net": half})
    two = restore(run2, torch.cat([y, y]), level=7, n=3, seed=5, batch_size=4, noise=0.0)
    one = restore(run2, torch.cat([y, y]), level=7, n=3, seed=5, batch_size=1, noise=0.0)
    torch.testing.assert_close(two.samples, one.samples)
    assert not torch.allclose(two.samples[0, 0], two.samples[0, 1]) and not torch.allclose(two.samples[0, 0], two.samples[1, 0])
    torch.testing.assert_close(two.mean, two.samples.mean(1))


def test_dct_wiener_is_the_linear_mmse_estimate_and_inverts_a_noiseless_blur():
    """The heat operator's Wiener filter: per frequency d P / (d² P + s² + q²); with P huge it is the exact inverse."""
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    y = heat_forward(x, 0.5)
    out = dct_wiener(y, torch.full((2,), 0.5), torch.zeros(2), torch.full((1, 8, 8), 1e9))
    torch.testing.assert_close(out, x, atol=1e-3, rtol=0)
    tau, s, P = torch.tensor([1.0, 1.0]), torch.tensor([0.1, 0.1]), torch.full((1, 8, 8), 0.01)
    d = torch.exp(-laplacian_eigenvalues(8, 8).double() * 1.0)
    want = idct2((d * 0.01 / (d**2 * 0.01 + 0.01 + 1 / (12 * 255**2)) * dct2(y).double()).float()).clamp(0, 1)
    torch.testing.assert_close(dct_wiener(y, tau, s, P), want)
    k = gaussian_psf(2.0, 28)
    assert k.shape == (17, 17) and abs(k.sum() - 1) < 1e-12 and gaussian_psf(8.0, 28).shape == (27, 27)


def _images(tmp: Path, run_dir: Path, blur_t: float = 2.0) -> tuple[Path, Path]:
    from genproc.run import load

    run = load(run_dir)
    x = build_dataset(run.recipe.data, "test").get_batch(torch.arange(3))
    names = [f"im{i}" for i in range(3)]
    save_pngs(x, tmp / "ref", names=names)
    save_pngs(heat_forward(x, blur_t), tmp / "blur", names=names)
    return tmp / "blur", tmp / "ref"


def test_restore_command_end_to_end(tiny_runs, tmp_path):
    """`genproc restore` on a tiny heat run: restored/ (n per image), mean/, the baselines, restore.png and restore.json
    whose PSNR/SSIM equal scikit-image's on the written PNGs; --scale 2 on half-size images; a DDPM run (SDEdit)."""
    from skimage.metrics import peak_signal_noise_ratio

    from genproc.data.folder import as_float, load_image

    blur, ref = _images(tmp_path, tiny_runs["heat"])
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["restore", str(tiny_runs["heat"]), str(blur), "--out", str(out), "--n", "2",
                                 "--reference", str(ref), "--baselines"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "restored").iterdir()) == [f"im{i}_s{j}.png" for i in range(3) for j in range(2)]
    for folder in ("mean", "wiener", "richardson_lucy", "dct_wiener"):
        assert len(list((out / folder).glob("*.png"))) == 3, folder
    assert (out / "restore.png").stat().st_size > 0
    js = json.loads((out / "restore.json").read_text())
    assert [im["level"] >= 1 for im in js["images"]] == [True] * 3 and js["settings"]["n"] == 2
    refs = [as_float(load_image(ref / f"im{i}.png", 1, 8)).double().numpy() for i in range(3)]
    wie = [as_float(load_image(out / "dct_wiener" / f"im{i}.png", 1, 8)).double().numpy() for i in range(3)]
    psnr = np.mean([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(refs, wie)])
    assert js["metrics"]["dct_wiener"]["psnr"] == pytest.approx(psnr, abs=0.05)  # PNG rounding only
    assert set(js["metrics"]) == {"input", "mean", "sample", "wiener", "richardson_lucy", "dct_wiener"}

    small = tmp_path / "small"
    from genproc.run import load

    x = build_dataset(load(tiny_runs["heat"]).recipe.data, "test").get_batch(torch.arange(2))
    save_pngs(torch.nn.functional.avg_pool2d(x, 2), small, names=["a", "b"])
    r = CliRunner().invoke(app, ["restore", str(tiny_runs["heat"]), str(small), "--scale", "2", "--out", str(tmp_path / "sr"),
                                 "--n", "1"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "sr" / "restored").glob("*.png"))) == 2
    r = CliRunner().invoke(app, ["restore", str(tiny_runs["ddpm"]), str(blur), "--out", str(tmp_path / "sd"), "--n", "1"])
    assert r.exit_code == 0, r.output
    levels = [im["level"] for im in json.loads((tmp_path / "sd" / "restore.json").read_text())["images"]]
    assert all(1 <= k <= 20 for k in levels)


def test_restore_command_errors(tiny_runs, tmp_path):
    blur, ref = _images(tmp_path, tiny_runs["heat"])
    run = CliRunner().invoke
    one_line_error(run(app, ["restore", str(tiny_runs["heat"]), str(blur), "--out", str(tmp_path / "o"), "--level", "x"]),
                   "--level")
    one_line_error(run(app, ["restore", str(tiny_runs["heat"]), str(blur), "--out", str(tmp_path / "o"), "--level", "9"]),
                   "outside", "1..5")
    one_line_error(run(app, ["restore", str(tiny_runs["ddpm"]), str(blur), "--out", str(tmp_path / "o"), "--level", "21"]),
                   "outside", "1..20")
    (tmp_path / "empty").mkdir()
    one_line_error(run(app, ["restore", str(tiny_runs["heat"]), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]),
                   "holds no images")
    missing = tmp_path / "missing"
    save_pngs(torch.rand(2, 1, 8, 8), missing, names=["im0", "im1"])
    one_line_error(run(app, ["restore", str(tiny_runs["heat"]), str(blur), "--out", str(tmp_path / "o"), "--reference",
                             str(missing)]), "no reference for", "im2.png")
    assert not (tmp_path / "o").exists()


def test_restore_resizes_references_like_its_inputs(tiny_runs, tmp_path):
    """References at another size than the model's are resized by the recipe's rule, as the inputs are, and the
    record names each one's original size; the PSNR is against the resized references."""
    from skimage.metrics import peak_signal_noise_ratio

    from genproc.data.folder import as_float, load_image
    from genproc.run import load

    blur, ref = _images(tmp_path, tiny_runs["heat"])
    big = tmp_path / "big"
    names = [f"im{i}" for i in range(3)]
    x = torch.stack([as_float(load_image(ref / f"{m}.png", 1, 8)) for m in names])
    save_pngs(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), big, names=names)
    got = {}
    for name, folder in (("orig", ref), ("big", big)):
        r = CliRunner().invoke(app, ["restore", str(tiny_runs["heat"]), str(blur), "--out", str(tmp_path / name),
                                     "--n", "1", "--reference", str(folder)])
        assert r.exit_code == 0, r.output
        got[name] = json.loads((tmp_path / name / "restore.json").read_text())
    assert "3 reference(s) resized to 8x8" in r.output
    assert [q["resized_from"] for q in got["big"]["references"]] == [[16, 16]] * 3
    assert [q["resized_from"] for q in got["orig"]["references"]] == [None] * 3
    rule = load(tiny_runs["heat"]).recipe.data.resize
    want = np.mean([peak_signal_noise_ratio(as_float(load_image(big / f"{m}.png", 1, 8, rule)).double().numpy(),
                                            as_float(load_image(blur / f"{m}.png", 1, 8)).double().numpy(),
                                            data_range=1.0) for m in names])
    assert got["big"]["metrics"]["input"]["psnr"] == pytest.approx(want, abs=1e-3)
    assert abs(got["big"]["metrics"]["input"]["psnr"] - got["orig"]["metrics"]["input"]["psnr"]) < 1.5  # same images
