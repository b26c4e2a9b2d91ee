"""``genproc analyze gradients``: input gradients, their locality radii (r50, r90) and circular symmetry on known
convolutions and maps, and the command end to end on tiny trained IHDM and DDPM runs."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import analyze_errors, analyze_ok, make_sampler

from genproc.analysis.gradients import (
    circular_symmetry,
    gradient_locality_summary,
    input_gradients,
    level_for_fraction,
    locality_radii,
    locality_radius,
    mass_key,
    parse_pixel,
)
from genproc.errors import GenprocError
from genproc.run import load


def conv_run(kernel: torch.Tensor) -> SimpleNamespace:
    """A 'run' whose net is the fixed convolution with ``kernel`` (2R+1, 2R+1), zero padding, level ignored."""
    r = kernel.shape[-1] // 2
    return SimpleNamespace(net=lambda x, k: F.conv2d(x, kernel[None, None].float(), padding=r), device=torch.device("cpu"))


def disc(radius: int) -> torch.Tensor:
    """Uniform disc kernel: 1 where sqrt(di^2 + dj^2) <= radius."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return (torch.hypot(d[:, None], d[None, :]) <= radius + 1e-9).double()


def gauss(radius: int, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian kernel exp(-(di^2 + dj^2) / (2 sigma^2)), (2R+1, 2R+1)."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma ** 2))


def lattice_radius(weights_by_distance: list[tuple[float, float]], mass: float) -> float:
    """Independent reference: smallest distance whose cumulative weight reaches ``mass`` of the total."""
    total, cum = sum(w for _, w in weights_by_distance), 0.0
    for dist in sorted({d for d, _ in weights_by_distance}):
        cum = sum(w for d, w in weights_by_distance if d <= dist)
        if cum >= mass * total - 1e-12:
            return dist
    raise AssertionError


@pytest.mark.parametrize("radius", [1, 2, 3, 4])
def test_locality_radius_of_a_disc_convolution(radius):
    run = conv_run(disc(radius))
    x = torch.rand(2, 1, 17, 17, generator=torch.Generator().manual_seed(0))
    g = input_gradients(run, x, 3, [(0, 8, 8)])
    assert g.shape == (1, 2, 1, 17, 17)
    assert torch.allclose(g[0, 0, 0, 8 - radius:9 + radius, 8 - radius:9 + radius], disc(radius).float())
    assert locality_radius(g[0, 0], (8, 8), mass=1.0) == pytest.approx(radius)
    pts = [(float(np.hypot(i, j)), 1.0) for i in range(-radius, radius + 1) for j in range(-radius, radius + 1)
           if np.hypot(i, j) <= radius + 1e-9]
    assert locality_radius(g[0, 1], (0, 8, 8)) == pytest.approx(lattice_radius(pts, 0.9))
    assert locality_radius(g[0, 1], (0, 8, 8), mass=0.5) == pytest.approx(lattice_radius(pts, 0.5))
    r50, r90 = locality_radii(g[0, 1], (8, 8))  # both from one cumulative mass
    assert (r50, r90) == pytest.approx((lattice_radius(pts, 0.5), lattice_radius(pts, 0.9))) and r50 <= r90
    assert r50 == pytest.approx({1: 1.0, 2: np.sqrt(2), 3: np.sqrt(5), 4: np.sqrt(8)}[radius])  # 5 of 5, 9 of 13, 21 of 29, 25 of 49 px


def test_mass_keys_and_radii_errors():
    assert [mass_key(m) for m in (0.5, 0.9, 0.95, 1.0)] == ["r50", "r90", "r95", "r100"]
    delta = torch.zeros(1, 9, 9)
    delta[0, 4, 4] = 1.0
    assert locality_radii(delta, (4, 4), (0.5, 0.9, 1.0)) == (0.0, 0.0, 0.0)
    assert all(np.isnan(r) for r in locality_radii(torch.zeros(9, 9), (4, 4)))
    with pytest.raises(GenprocError, match="masses"):
        locality_radii(delta, (4, 4), (0.5, 1.5))


def test_circular_symmetry_of_a_gaussian_a_one_sided_kernel_and_noise():
    kernel = gauss(24, 6.0)  # 49x49, tails exp(-8)
    pixels = [(0, 24, 24), (0, 5, 30)]  # the center (disc radius 24) and one near the top border (disc radius 5)
    g = input_gradients(conv_run(kernel), torch.rand(1, 1, 49, 49), 1, pixels)[:, 0]  # (P, 1, 49, 49)
    assert circular_symmetry(g[0], (24, 24)) > 0.99
    assert circular_symmetry(g[1], pixels[1]) > 0.99  # the map cut by the border: only the disc that fits counts
    assert circular_symmetry(-3 * g[0], (24, 24)) == pytest.approx(circular_symmetry(g[0], (24, 24)))  # scale, sign
    assert circular_symmetry(g[0].repeat(3, 1, 1), (24, 24)) == pytest.approx(circular_symmetry(g[0], (24, 24)))
    one_sided = kernel.clone()
    one_sided[:, :25] = 0  # only the columns right of the center
    g1 = input_gradients(conv_run(one_sided), torch.rand(1, 1, 49, 49), 1, pixels[:1])[0, 0]
    assert circular_symmetry(g1, (24, 24)) < 0.6
    noise = torch.randn(1, 33, 33, generator=torch.Generator().manual_seed(0))
    assert 0 <= circular_symmetry(noise, (16, 16)) < 0.2
    ring = torch.zeros(17, 17)  # a ring-structured kernel (positive center, negative ring at distance 3) is symmetric
    ii, jj = torch.meshgrid(torch.arange(17.0), torch.arange(17.0), indexing="ij")
    d = torch.hypot(ii - 8, jj - 8).round()
    ring[d == 0], ring[d == 3] = 5.0, -0.3
    assert circular_symmetry(ring, (8, 8)) == pytest.approx(1.0)
    assert np.isnan(circular_symmetry(torch.zeros(9, 9), (4, 4))) and np.isnan(circular_symmetry(ring, (0, 8)))
    with pytest.raises(GenprocError, match="outside"):
        circular_symmetry(ring, (17, 3))


def test_locality_radius_of_a_box_and_a_delta():
    box = torch.ones(5, 5)
    g = input_gradients(conv_run(box), torch.zeros(1, 1, 11, 11), 1, [(0, 5, 5)])[0, 0]
    assert locality_radius(g, (5, 5), mass=1.0) == pytest.approx(2 * np.sqrt(2))
    assert locality_radius(g, (5, 5), mass=5 / 25) == pytest.approx(1.0)  # the center and its 4 neighbours
    assert locality_radius(g, (5, 5), mass=6 / 25) == pytest.approx(np.sqrt(2))  # needs the diagonal ring too
    delta = torch.zeros(1, 9, 9)
    delta[0, 4, 4] = -3.0
    assert locality_radius(delta, (4, 4)) == 0.0
    assert np.isnan(locality_radius(torch.zeros(9, 9), (4, 4)))
    with pytest.raises(GenprocError, match="mass"):
        locality_radius(delta, (4, 4), mass=0.0)


def test_symmetric_kernel_same_radius_at_every_interior_pixel():
    d = torch.arange(-3, 4, dtype=torch.float64)
    gauss = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / 2)
    run = conv_run(gauss)
    pixels = [(0, i, j) for i in (3, 6, 9, 12) for j in (3, 7, 12)]
    g = input_gradients(run, torch.rand(1, 1, 16, 16), 1, pixels)
    radii = {locality_radius(g[p, 0], pixels[p]) for p in range(len(pixels))}
    assert len(radii) == 1 and 0 < radii.pop() <= 3


def test_input_gradients_rejects_pixels_outside():
    with pytest.raises(GenprocError, match="outside"):
        input_gradients(conv_run(disc(1)), torch.zeros(1, 1, 8, 8), 1, [(0, 8, 0)])
    with pytest.raises(GenprocError, match="--pixel"):
        parse_pixel("a,b")
    assert parse_pixel("3,4") == (0, 3, 4) and parse_pixel("1,3,4") == (1, 3, 4)


def test_level_for_fraction():
    assert [level_for_fraction(f, 100) for f in (0.9, 0.5, 0.1, 0.02)] == [90, 50, 10, 2]
    assert [level_for_fraction(f, 5) for f in (0.9, 0.5, 0.1, 0.02)] == [5, 3, 1, 1]  # halves round up
    assert level_for_fraction(1.0, 1000) == 1000
    with pytest.raises(GenprocError, match="fractions"):
        level_for_fraction(0.0, 10)


def reference_symmetry(g: np.ndarray, i: int, j: int) -> float:
    """Independent of genproc, by loops: 1 - sum (g - ring mean)^2 / sum g^2 over the rings 1..R of rounded distance
    around (i, j), R = the largest disc that fits, per channel; g: (C, H, W)."""
    c, h, w = g.shape
    rmax = min(i, j, h - 1 - i, w - 1 - j)
    rings = {}
    for a in range(h):
        for b in range(w):
            r = round(math.hypot(a - i, b - j))
            if 1 <= r <= rmax:
                rings.setdefault(r, []).append((a, b))
    resid = energy = 0.0
    for ch in range(c):
        for pts in rings.values():
            vals = np.array([g[ch, a, b] for a, b in pts], dtype=np.float64)
            resid += float(((vals - vals.mean()) ** 2).sum())
            energy += float((vals**2).sum())
    return 1.0 - resid / energy


def reference_measures(run_dir, n: int, seed: int, fractions, pixels, quantity: str = "step",
                       exclude_centre: bool = True) -> dict[str, np.ndarray]:
    """r50, r90 and symmetry, each (F, P, N), from full per-image Jacobians (torch.autograd.functional.jacobian at the
    forward marginal of the first n training images, noise torch.randn(x0.shape) from ``seed``) of the net or of the
    noise-free reverse step to k - 1 (``quantity``), the radii by :func:`lattice_radius` (the output pixel's own
    position dropped with ``exclude_centre``) and the symmetry by :func:`reference_symmetry`."""
    run = load(run_dir)
    x0 = run.data.get_batch(torch.arange(n)).float()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    K = run.process.num_levels
    out = {key: np.zeros((len(fractions), len(pixels), n)) for key in ("r50", "r90", "symmetry")}
    for fi, f in enumerate(fractions):
        k = max(1, min(K, math.floor(f * K + 0.5)))
        state = run.process.forward_marginal(x0, torch.full((n,), k, dtype=torch.long), eps)
        for b in range(n):
            def f(x, k=k):
                out = run.net(x, torch.full((1,), k, dtype=torch.long))
                return out if quantity == "output" else _step_mean(run.process, x, out, k)

            jac = torch.autograd.functional.jacobian(f, state[b:b + 1])  # (1, C, H, W, 1, C, H, W)
            for pi, (c, i, j) in enumerate(pixels):
                g = jac[0, c, i, j, 0].double().numpy()  # (C, H, W): d out[c, i, j] / d input
                mass = np.abs(g).sum(0)
                pts = [(math.hypot(a - i, bb - j), float(mass[a, bb])) for a in range(g.shape[1]) for bb in range(g.shape[2])
                       if not (exclude_centre and (a, bb) == (i, j))]
                out["r50"][fi, pi, b], out["r90"][fi, pi, b] = lattice_radius(pts, 0.5), lattice_radius(pts, 0.9)
                out["symmetry"][fi, pi, b] = reference_symmetry(g, i, j)
    return out


def _step_mean(process, x: torch.Tensor, out: torch.Tensor, k: int) -> torch.Tensor:
    """The noise-free reverse step to k - 1 written out: IHDM's mean x + f (Eq. 8); DDPM's Ho et al. Eq. 11 with ε̂."""
    from genproc.processes.ddpm import DDPMProcess

    if not isinstance(process, DDPMProcess):
        return x + out
    beta, abar = float(process.betas[k]), float(process.alpha_bar[k])
    return (x - beta / math.sqrt(1 - abar) * out) / math.sqrt(1 - beta)


@pytest.mark.parametrize("options", [(), ("--quantity", "output", "--include-centre")])
def test_gradients_command_end_to_end(tiny_runs_no_ema, tmp_path, options):
    """Every image's radii and symmetry against the reference from full Jacobians, for the default measure (the
    reverse step, centre left out) and the raw network output with the centre counted. The step is the run's
    sampler's: DDPM's ancestral step with x̂₀ unclipped (``clip=none``, which only DDPM's sampler has) is Ho et al.'s
    Eq. 11, the reference."""
    out = tmp_path / "grads"
    r = analyze_ok("gradients", tiny_runs_no_ema.values(), out, "--n", "4", "--pixel", "3,4", "--sampling", "clip=none",
                   *options)
    assert "ihdm: gradient radii r50/r90 (px, holding 50%/90%" in r.output and "ddpm:" in r.output and "sym " in r.output
    assert (out / "gradients.png").stat().st_size > 0
    js = json.loads((out / "gradients.json").read_text())
    for key in ("settings", "runs", "locality", "summary", "files", "genproc_version"):
        assert key in js, key
    assert js["locality"]["ihdm"]["levels"] == [5, 3, 1, 1] and js["locality"]["ddpm"]["levels"] == [18, 10, 2, 1]
    assert js["locality"]["ihdm"]["pixels"] == [[0, 3, 4], [0, 2, 2]]
    assert js["settings"]["masses"] == [0.5, 0.9] and "symmetry" in js["settings"]
    fractions = [0.9, 0.5, 0.1, 0.02]
    for lab, key_dir in (("ihdm", "heat"), ("ddpm", "ddpm")):
        rows = js["locality"][lab]["by_fraction"]
        assert [row["fraction"] for row in rows] == fractions
        ref = reference_measures(tiny_runs_no_ema[key_dir], 4, 0, fractions, [(0, 3, 4), (0, 2, 2)],
                                 "output" if options else "step", not options)
        for key in ("r50", "r90", "symmetry"):
            for fi, row in enumerate(rows):  # every image's number against the per-image Jacobian reference
                for pi, p in enumerate(("0,3,4", "0,2,2")):
                    got = row["per_pixel"][p][key]
                    np.testing.assert_allclose(got["values"], ref[key][fi, pi], rtol=1e-4, atol=1e-6, err_msg=f"{lab} {key}")
                    assert got["n"] == 4 and got["mean"] == pytest.approx(ref[key][fi, pi].mean(), rel=1e-4, abs=1e-6)
                assert row[key]["n"] == 8 and row[key]["mean"] == pytest.approx(ref[key][fi].mean(), rel=1e-4, abs=1e-6)
                assert row[key]["std"] == pytest.approx(ref[key][fi].std(), rel=1e-4, abs=1e-6)
            assert js["summary"][lab][key] == pytest.approx(ref[key].mean(), rel=1e-4, abs=1e-6)
        assert np.all(ref["r50"] <= ref["r90"])
        if not options:
            assert np.all(ref["r50"] >= 1)  # the pixel itself is left out


def test_gradient_locality_summary(tiny_runs_no_ema):
    s = gradient_locality_summary(load(tiny_runs_no_ema["heat"]), n=4)
    fractions = (0.9, 0.5, 0.1, 0.02)
    ref = reference_measures(tiny_runs_no_ema["heat"], 4, 0, fractions, [(0, 4, 4), (0, 2, 2)])  # the default pixels
    for key in ("r50", "r90", "symmetry"):
        assert s[f"grad_{key}"] == pytest.approx(ref[key].mean(), rel=1e-4, abs=1e-6), key
        per_image = ref[key].reshape(-1, 4).mean(0)  # each image's mean over fractions and pixels
        assert s[f"grad_{key}_std"] == pytest.approx(per_image.std(), rel=1e-3, abs=1e-6), key
        assert s[f"grad_{key}_by_fraction"] == {str(f): pytest.approx(ref[key][fi].mean(), rel=1e-4, abs=1e-6)
                                                for fi, f in enumerate(fractions)}, key


def test_gradients_command_errors(tiny_runs_no_ema, tmp_path):
    heat = tiny_runs_no_ema["heat"]
    analyze_errors("gradients", tmp_path / "o", ([tmp_path / "nope"], "run dir not found"), ([heat, "--pixel", "9,9"], "outside"),
                   ([heat, "--pixel", "1,2,3,4"], "--pixel"), ([heat, "--fractions", "0.5,2"], "--fractions"),
                   ([heat, "--n", "0"], "--n"))


def test_radii_without_the_centre_and_the_step_quantity_in_closed_form():
    """A map with its mass on the pixel and a ring at distance 2: r50 is 0 with the centre, 2 without. The IHDM step
    x + f(x) of a convolution net has gradient map kernel + the identity (1 at the pixel); DDPM's noise-free step from
    ε̂ = conv(x) is (identity - β_t/√(1 - ᾱ_t) kernel) / √(1 - β_t) (Ho et al. Eq. 11)."""
    g = torch.zeros(9, 9)
    g[4, 4] = 10.0
    g[2, 4] = g[6, 4] = g[4, 2] = g[4, 6] = 1.0
    assert locality_radii(g, (4, 4), (0.5,)) == (0.0,)
    assert locality_radii(g, (4, 4), (0.5,), exclude_centre=True) == (2.0,)
    from genproc.processes.ddpm import DDPMConfig, DDPMProcess
    from genproc.processes.heat import HeatConfig, HeatProcess

    kernel = gauss(2, 1.0) * 0.01
    heat = SimpleNamespace(**vars(conv_run(kernel)), process=HeatProcess(HeatConfig(K=5)), sampler=make_sampler("chain"))
    gs = input_gradients(heat, torch.rand(1, 1, 9, 9), 3, [(0, 4, 4)], quantity="step")[0, 0, 0]
    want = torch.zeros(9, 9)
    want[2:7, 2:7] = kernel.float()
    want[4, 4] += 1
    torch.testing.assert_close(gs, want)
    p = DDPMProcess(DDPMConfig(T=20))
    ddpm = SimpleNamespace(**vars(conv_run(kernel)), process=p, sampler=make_sampler("ancestral"))
    t = 10
    gd = input_gradients(ddpm, torch.rand(1, 1, 9, 9), t, [(0, 4, 4)], quantity="step")[0, 0, 0]
    beta, abar = float(p.betas[t]), float(p.alpha_bar[t])
    want = torch.zeros(9, 9)
    want[2:7, 2:7] = -beta / math.sqrt(1 - abar) * kernel.float()
    want[4, 4] += 1
    torch.testing.assert_close(gd, want / math.sqrt(1 - beta))


def test_centre_share_in_closed_form():
    """The pixel's own share of |g|: 10 of 14 for a centre of 10 and four ±1 pixels; 0 without the centre, NaN for a
    zero map; the channels are summed (|1| + |-3| of 1 + 3 + 4)."""
    from genproc.analysis.gradients import centre_share

    g = torch.zeros(1, 9, 9)
    g[0, 4, 4] = 10.0
    g[0, 2, 4] = g[0, 6, 4] = g[0, 4, 2] = -1.0
    g[0, 4, 6] = 1.0
    assert centre_share(g, (4, 4)) == pytest.approx(10 / 14)
    g[0, 4, 4] = 0.0
    assert centre_share(g, (4, 4)) == 0.0
    assert math.isnan(centre_share(torch.zeros(1, 9, 9), (4, 4)))
    two = torch.zeros(2, 5, 5)
    two[0, 2, 2], two[1, 2, 2], two[1, 0, 0] = 1.0, -3.0, 4.0
    assert centre_share(two, (2, 2)) == pytest.approx(4 / 8)
