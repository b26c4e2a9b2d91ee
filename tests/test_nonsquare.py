"""Non-square images (H != W) end to end: recipes, the U-Net's levels and attention, resizing of square sources,
heat / blur on H x W, the spectra's frequency axis, cache keys, and a folder of 24x40 RGB PNGs trained with heat and
DDPM, sampled, evaluated (FID / KID / NLL) and analysed. Square behaviour is pinned where it must not move."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO, analyze_ok, tiny_recipe
from PIL import Image
from scipy import ndimage
from test_metrics import TINY_FE

import genproc
from genproc.analysis.spectra import radial_bins, radial_psd
from genproc.cli_analyze import parse_image_size
from genproc.compare import _check_same
from genproc.data import build_dataset
from genproc.data.convert import convert_uint8, resize_to
from genproc.data.digits import digits_pixels
from genproc.errors import GenprocError
from genproc.metrics.fidelity import reference_key
from genproc.metrics.inception import ExtractorWeights
from genproc.nets import build_net, count_parameters
from genproc.nets.unet import AttnBlock, UNet, UNetConfig
from genproc.processes.blur import gaussian_blur
from genproc.processes.dct import heat_forward
from genproc.recipe import DataConfig, load_recipe, recipe_from_dict, recipe_to_yaml

QUIET = dict(progress=False, log=lambda *_: None)


# ---------------------------------------------------------------- recipe


def test_image_size_pair_round_trips_through_yaml(tmp_path):
    d = tiny_recipe("ihdm")
    d["data"]["image_size"] = [24, 40]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(d))
    r = load_recipe(path)
    assert r.data.image_size == (24, 40) and r.data.image_hw == (24, 40)
    assert yaml.safe_load(recipe_to_yaml(r))["data"]["image_size"] == [24, 40]  # a YAML list: H first
    assert recipe_from_dict(r.to_dict()).to_dict() == r.to_dict()
    assert load_recipe(path, ["data.image_size=[40,24]"]).data.image_hw == (40, 24)
    square = recipe_from_dict(tiny_recipe("ihdm"))
    assert square.data.image_size == 8 and square.data.image_hw == (8, 8) and square.to_dict()["data"]["image_size"] == 8


# ---------------------------------------------------------------- U-Net


def _tiny_cfg(mult=(1, 2, 2), attn=(), resample="avgpool") -> UNetConfig:
    return UNetConfig(channels=8, channel_mult=mult, num_res_blocks=1, attn_resolutions=attn, dropout=0.0, resample=resample)


def _attention_maps(net: UNet, x: torch.Tensor) -> list[tuple[str, tuple[int, int]]]:
    """(part, (h, w)) of the input of every AttnBlock in one forward pass of x."""
    seen: list[tuple[str, tuple[int, int]]] = []
    for name, m in net.named_modules():
        if isinstance(m, AttnBlock):
            m.register_forward_hook(lambda mod, inp, out, part=name.split(".")[0]: seen.append((part, tuple(inp[0].shape[-2:]))))
    net(x, torch.tensor([1] * x.shape[0]))
    return seen


@pytest.mark.parametrize("resample", ["avgpool", "conv"])
@pytest.mark.parametrize("hw", [(24, 40), (40, 24), (17, 30), (7, 1)])
def test_unet_runs_on_h_by_w(hw, resample):
    torch.manual_seed(0)
    net = UNet(_tiny_cfg(resample=resample), 3, hw).eval()
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([1, 5])
    assert torch.equal(net(x, k), torch.zeros_like(x))  # zero-initialised output layer
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape))
    out = net(x, k)
    assert out.shape == x.shape and out.dtype == torch.float32 and out.abs().max() > 0


def test_attention_by_the_shorter_side():
    """attn_resolutions counts min(h, w): 24x40 -> 12x20 -> 6x10 with attn (12,) attends on the 12x20 maps."""
    net = UNet(_tiny_cfg(attn=(12,)), 1, (24, 40))
    seen = _attention_maps(net, torch.rand(1, 1, 24, 40))
    assert {s for p, s in seen if p == "down"} == {s for p, s in seen if p == "up"} == {(12, 20)}
    assert ("mid", (6, 10)) in seen
    tall = _attention_maps(UNet(_tiny_cfg(attn=(12,)), 1, (40, 24)), torch.rand(1, 1, 40, 24))
    assert {s for p, s in tall if p != "mid"} == {(20, 12)}
    assert not [p for p, _ in _attention_maps(UNet(_tiny_cfg(attn=(20,)), 1, (24, 40)), torch.rand(1, 1, 24, 40)) if p != "mid"]


def test_non_square_net_has_the_square_nets_structure():
    """64x96 gets attention at the same levels as 64x64 (the paper's afhq64 net): same modules, same parameters."""
    cfg = _tiny_cfg(mult=(1, 2, 3, 4), attn=(16, 8))
    square, wide = UNet(cfg, 3, 64), UNet(cfg, 3, (64, 96))
    assert str(square) == str(wide) and count_parameters(square) == count_parameters(wide)
    assert str(UNet(cfg, 3, (64, 64))) == str(square)


def test_square_recipes_keep_their_parameter_counts():
    """Every square recipe builds the net it built before non-square support: the counts recorded in
    benchmarks/results/recipe_parameters.txt (40.16M, 57.96M, 81.87M, 147.59M, ...), built on the meta device."""
    text = (REPO / "benchmarks/results/recipe_parameters.txt").read_text()
    recorded = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"recipes/(\w+)\.yaml # parameters: ([\d,]+)", text)}
    assert len(recorded) >= 12
    for name, count in recorded.items():
        r = load_recipe(REPO / "recipes" / f"{name}.yaml")
        with torch.device("meta"):
            net = build_net(r.net, r.data.channels, r.data.image_hw)
        assert count_parameters(net) == count, name


def test_bad_image_size_names_the_field():
    for bad in (0, (24, 0), (24, 40, 3), 2.5):
        with pytest.raises(GenprocError, match="data.image_size"):
            build_net(_tiny_cfg(), 1, bad)


# ---------------------------------------------------------------- resizing square sources to H x W


def _rows(h: int, w: int) -> torch.Tensor:
    """(1, 1, h, w): row i holds (i + 0.5) / h (constant along each row)."""
    return ((torch.arange(h, dtype=torch.float32) + 0.5) / h)[:, None].expand(h, w)[None, None].contiguous()


def test_resize_rules_closed_forms():
    x = _rows(8, 8)
    torch.testing.assert_close(resize_to(x, (4, 8), "crop"), x[..., 2:6, :])  # cover: scale 1, centre rows 2..5
    pad = resize_to(x, (8, 16), "pad")  # fit: scale 1, columns 4..11, black elsewhere
    torch.testing.assert_close(pad[..., 4:12], x)
    assert pad[..., :4].abs().max() == 0 and pad[..., 12:].abs().max() == 0
    odd = resize_to(x, (8, 11), "pad")  # margins 1 | 2: the extra column on the right, as in folders
    torch.testing.assert_close(odd[..., 1:9], x)
    assert odd[..., :1].abs().max() == 0 and odd[..., 9:].abs().max() == 0
    stretch = resize_to(x, (8, 16), "stretch")  # constant rows stay constant, values unchanged
    torch.testing.assert_close(stretch, x[..., :1].expand(1, 1, 8, 16))
    # upsampling cover: 8x8 -> 12x20 is the 20x20 bilinear resize with rows 4..15 kept
    y = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    big = F.interpolate(y, size=(20, 20), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(resize_to(y, (12, 20), "crop"), big[..., 4:16, :])
    # a centred symmetric pattern stays centred and symmetric under every rule
    sym = torch.zeros(1, 1, 8, 8)
    sym[..., 2:6, 2:6] = 1.0
    for rule in ("crop", "pad", "stretch"):
        out = resize_to(sym, (12, 20), rule)
        assert out.shape == (1, 1, 12, 20)
        torch.testing.assert_close(out, out.flip(-1))
        torch.testing.assert_close(out, out.flip(-2))


def test_square_sizes_resize_as_before():
    """Square targets: the plain antialiased bilinear resize of the square-only code, whatever data.resize says."""
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(y, size=(16, 16), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    for rule in ("crop", "pad", "stretch"):
        assert torch.equal(resize_to(y, (16, 16), rule), ref)
    ds = build_dataset(DataConfig(name="digits", image_size=16))
    assert ds.image_size == 16 and ds.image_hw == (16, 16)
    src = torch.from_numpy(digits_pixels()[:4]).float().div(16).unsqueeze(1)
    torch.testing.assert_close(ds.get_batch(torch.arange(4)),
                               F.interpolate(src, size=(16, 16), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1))


def test_digits_mnist_cifar_at_h_by_w(tmp_path):
    ds = build_dataset(DataConfig(name="digits", image_size=[12, 20], channels=3, max_images=5))
    assert ds.get_batch(torch.arange(5)).shape == (5, 3, 12, 20) and ds.image_size == (12, 20) and ds.image_hw == (12, 20)
    assert "shape=(3, 12, 20)" in repr(ds)
    src = torch.from_numpy(digits_pixels()[:5]).float().div(16).unsqueeze(1)
    cover = F.interpolate(src, size=(20, 20), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)[..., 4:16, :]
    torch.testing.assert_close(ds.get_batch(torch.arange(5)), cover.expand(-1, 3, -1, -1))
    pad = build_dataset(DataConfig(name="digits", image_size=[12, 20], resize="pad", max_images=2)).get_batch(torch.arange(2))
    assert pad[..., :4].abs().max() == 0 and pad[..., 16:].abs().max() == 0 and pad[..., 4:16].max() > 0
    # MNIST (IDX) and CIFAR-10 (pickles) go through the same uint8 conversion
    from test_data import make_fake_cifar, tiny_mnist

    images = tiny_mnist(tmp_path / "mnist")
    mn = build_dataset(DataConfig(name="mnist", root=str(tmp_path / "mnist"), image_size=[14, 28]))
    expect = torch.from_numpy(images)[:, None, 7:21, :].float() / 255  # 28x28 covers 14x28 at scale 1: rows 7..20
    torch.testing.assert_close(mn.get_batch(torch.arange(len(mn))), expect)
    make_fake_cifar(tmp_path / "c")
    cf = build_dataset(DataConfig(name="cifar10", root=str(tmp_path / "c"), image_size=[16, 24], channels=3))
    assert cf[0].shape == (3, 16, 24) and cf.image_hw == (16, 24)
    u8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(convert_uint8(u8, 3, (32, 16)), u8[..., 8:24])  # cover at scale 1: the centre columns


# ---------------------------------------------------------------- heat and blur on H x W


@pytest.mark.parametrize("hw", [(24, 40), (40, 24)])
def test_heat_is_the_same_isotropic_gaussian_on_both_axes(hw):
    """F(t) with lambda_nm = pi^2 (n^2/H^2 + m^2/W^2) is the Gaussian of std sigma_B = sqrt(2t) pixels along rows AND
    columns: scipy's gaussian_filter(mode='reflect') (the DCT-II's half-sample even extension) on the whole H x W image,
    to the aliasing bound of tests/test_heat.py (sigma_B = 1.5)."""
    from test_heat import SIGMA_B, T_GAUSS, _alias_bound

    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    y = heat_forward(x, T_GAUSS)[0].double().numpy()
    xn = x[0].double().numpy()
    a = _alias_bound(T_GAUSS)
    bound = a * (2 + a) * np.linalg.norm(xn) + 1e-6
    ref = np.stack([ndimage.gaussian_filter(c, SIGMA_B, mode="reflect", truncate=12.0) for c in xn])
    assert np.abs(y - ref).max() <= bound
    wrong = np.stack([ndimage.gaussian_filter(c, (SIGMA_B, SIGMA_B * hw[1] / hw[0]), mode="reflect", truncate=12.0) for c in xn])
    assert np.abs(y - wrong).max() > 10 * bound  # an H/W mix-up would blur one axis more


def test_blur_on_h_by_w_is_scipys_mirror_gaussian():
    x = torch.rand(2, 1, 24, 40, generator=torch.Generator().manual_seed(0))
    ref = ndimage.gaussian_filter(x.double().numpy(), (0, 0, 1.0, 1.0), mode="mirror", truncate=4.0)
    torch.testing.assert_close(gaussian_blur(x, 1.0).double(), torch.from_numpy(ref), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- spectra: cycles per pixel on each axis


def _cosine(h: int, w: int, cycles_per_px: float, axis: str) -> torch.Tensor:
    """(1, 1, H, W): cos(2 pi f y) down the rows (axis 'rows') or cos(2 pi f x) across the columns, at pixel centres."""
    pos = torch.arange(h if axis == "rows" else w, dtype=torch.float64) + 0.5
    wave = torch.cos(2 * math.pi * cycles_per_px * pos)
    return (wave[:, None].expand(h, w) if axis == "rows" else wave[None, :].expand(h, w))[None, None]


@pytest.mark.parametrize("hw", [(24, 40), (40, 24)])
@pytest.mark.parametrize("f", [0.125, 0.25, 0.375])
def test_a_cosine_lands_in_the_bin_of_its_frequency_on_either_axis(hw, f):
    """cos(2 pi f y) with f = u / 2H (and cos(2 pi f x), f = v / 2W) is one DCT-II coefficient; its power lies in the
    single annulus whose frequency range holds f, the same annulus along rows and columns, and that annulus's mean
    frequency is within one bin width 1 / (2 min(H, W)) of f."""
    h, w = hw
    _, freqs, _ = radial_bins(h, w)
    width = 1 / (2 * min(h, w))
    bins = []
    for axis in ("rows", "cols"):
        _, psd = radial_psd(_cosine(h, w, f, axis))
        hot = np.flatnonzero(psd > 1e-12)
        assert len(hot) == 1, (axis, hot)
        bins.append(int(hot[0]))
        assert abs(freqs[hot[0]] - f) < width
    assert bins[0] == bins[1]


@pytest.mark.parametrize("hw", [(24, 40), (40, 24)])
def test_white_noise_is_flat_on_h_by_w(hw):
    x = 0.3 * torch.randn(3000, 1, *hw, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    freqs, psd = radial_psd(x)
    _, _, counts = radial_bins(*hw)
    s = min(hw)
    assert freqs[0] == 0 and np.all(np.diff(freqs) > 0) and freqs.max() < math.sqrt(0.5)
    assert len(freqs) >= s  # one annulus per index 0 .. S - 1 of the shorter side at least: none empty below its Nyquist
    assert np.all(np.abs(psd / 0.09 - 1) < 0.1), psd / 0.09
    assert np.average(psd, weights=counts) == pytest.approx(float((x**2).mean()), rel=1e-9)  # Parseval


@pytest.mark.parametrize("hw", [(24, 40), (40, 24), (8, 16), (9, 9)])
def test_radial_bins_match_the_per_axis_definition(hw):
    """Explicit loops over the definition: f = sqrt((u / 2H)^2 + (v / 2W)^2) cycles/pixel, annulus b = floor(2 S f),
    S = min(H, W), the DC term in a bin of its own; the bin's frequency is the mean f of its coefficients."""
    h, w = hw
    s = min(h, w)
    members: dict[int, list[float]] = {}
    for u in range(h):
        for v in range(w):
            f = math.sqrt((u / (2 * h)) ** 2 + (v / (2 * w)) ** 2)
            members.setdefault(-1 if u == v == 0 else math.floor(2 * s * f + 1e-9), []).append(f)
    keys = sorted(members)
    bins, freqs, counts = radial_bins(h, w)
    np.testing.assert_allclose(freqs, [np.mean(members[b]) for b in keys], rtol=1e-12)
    assert counts.tolist() == [len(members[b]) for b in keys] and counts.sum() == h * w
    assert bins[0, 0] == 0 and counts[0] == 1  # DC alone
    assert set(range(1, s)) <= set(keys)  # no empty annulus up to the shorter side's Nyquist


def test_radial_bins_are_symmetric_in_the_axes():
    a, fa, ca = radial_bins(24, 40)
    b, fb, cb = radial_bins(40, 24)
    assert np.array_equal(a, b.T) and np.allclose(fa, fb, rtol=1e-12) and np.array_equal(ca, cb)


def test_image_size_option():
    assert parse_image_size("28") == 28 and parse_image_size("24,40") == (24, 40) and parse_image_size("24x40") == (24, 40)
    for bad in ("24,40,3", "0", "a", "24,"):
        with pytest.raises(GenprocError, match="--image-size"):
            parse_image_size(bad)


def test_data_spectra_command_on_h_by_w(tmp_path):
    out = tmp_path / "s"
    analyze_ok("spectra", [], out, "--dataset", "digits", "--image-size", "12,20", "--n", "16", "--levels", "2")
    js = json.loads((out / "spectra.json").read_text())
    assert js["settings"]["image_size"] == [12, 20]
    assert np.allclose(js["data"]["freqs"], radial_bins(12, 20)[1])


# ---------------------------------------------------------------- keys: FID cache, compare


def test_reference_cache_key_names_h_and_w():
    w = ExtractorWeights(TINY_FE, None, None, "none")
    sq = build_dataset(DataConfig(name="digits", image_size=8), "test")
    key = reference_key(sq, 10, w)
    import hashlib

    old = {"name": "digits", "root": None, "split": "test", "channels": 1, "size": 8, "n": 10, "weights_sha256": None}
    assert key == f"genproc-digits-test-n10-1x8x8-wnone-{hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]}"
    wide = build_dataset(DataConfig(name="digits", image_size=[8, 12]), "test")
    tall = build_dataset(DataConfig(name="digits", image_size=[12, 8]), "test")
    padded = build_dataset(DataConfig(name="digits", image_size=[8, 12], resize="pad"), "test")
    keys = [reference_key(d, 10, w) for d in (wide, tall, padded)]
    assert "-1x8x12-" in keys[0] and "-1x12x8-" in keys[1] and len({key, *keys}) == 4


def test_compare_needs_one_image_size(tmp_path):
    r = [recipe_from_dict(tiny_recipe(p)) for p in ("ihdm", "ddpm")]
    r[1].data.image_size = (8, 8)  # the same size as 8
    _check_same(["ihdm", "ddpm"], [(tmp_path / "a", r[0]), (tmp_path / "b", r[1])], None, "runs")
    r[0].data.image_size, r[1].data.image_size = (8, 12), (12, 8)
    with pytest.raises(GenprocError, match=r"uses digits 12x8px 1ch.*not digits 8x12px"):
        _check_same(["ihdm", "ddpm"], [(tmp_path / "a", r[0]), (tmp_path / "b", r[1])], None, "runs")


# ---------------------------------------------------------------- a folder of 24x40 RGB images, end to end

H, W = 24, 40


def _pixels(n: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8: a red ramp across the columns, a green ramp down the rows, a random blue bar."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, H, W, 3), dtype=np.uint8)
    out[..., 0] = np.linspace(0, 255, W).astype(np.uint8)[None, :]
    out[..., 1] = np.linspace(0, 255, H).astype(np.uint8)[:, None]
    for i in range(n):
        r0 = rng.integers(0, H - 6)
        out[i, r0 : r0 + 6, :, 2] = rng.integers(64, 256)
    return out


def _write_pngs(folder: Path, n: int, seed: int) -> None:
    """n RGB PNGs of H x W (PIL size (W, H)) holding :func:`_pixels`."""
    folder.mkdir(parents=True)
    for i, arr in enumerate(_pixels(n, seed)):
        Image.fromarray(arr).save(folder / f"{i:03d}.png")


def _folder_recipe(process: str, root: Path) -> genproc.Recipe:
    """The tiny recipe with ``process`` on the PNG folder ``root`` at image_size [24, 40], RGB, 4 steps."""
    d = tiny_recipe(process)
    d["data"] = {"name": "folder", "root": str(root), "image_size": [H, W], "channels": 3}
    d["train"].update(max_steps=4, checkpoint_every=2)
    return recipe_from_dict(d)


@pytest.fixture(scope="module")
def folder_runs(tmp_path_factory) -> dict[str, Path]:
    """{"heat", "ddpm", "data"}: tiny heat and DDPM runs trained on 16 + 8 (test) 24x40 RGB PNGs with image_size [24, 40]."""
    root = tmp_path_factory.mktemp("nonsquare")
    _write_pngs(root / "data" / "train", 16, 0)
    _write_pngs(root / "data" / "test", 8, 1)
    runs = {"data": root / "data"}
    for key, process in (("heat", "ihdm"), ("ddpm", "ddpm")):
        runs[key] = root / key
        genproc.train(_folder_recipe(process, runs["data"]), runs[key], **QUIET)
    return runs


def test_folder_loads_h_by_w_unrotated(folder_runs):
    ds = build_dataset(DataConfig(name="folder", root=str(folder_runs["data"]), image_size=[H, W], channels=3), "test")
    want = torch.from_numpy(_pixels(8, 1)).permute(0, 3, 1, 2).float() / 255
    got = ds.get_batch(torch.arange(8))
    assert got.shape == (8, 3, H, W) and ds.image_hw == (H, W)
    assert (got - want).abs().max() <= 1 / 255 + 1e-6  # same size: no resampling beyond rounding


@pytest.mark.parametrize("key", ["heat", "ddpm"])
def test_folder_run_trains_samples_and_reloads(folder_runs, key):
    run = genproc.load(folder_runs[key])
    assert run.recipe.data.image_size == (H, W) and run.image_shape == (3, H, W)
    assert yaml.safe_load((folder_runs[key] / "recipe.yaml").read_text())["data"]["image_size"] == [H, W]
    res = run.sample(3, seed=0)
    assert res.images.shape == (3, 3, H, W) and 0 <= res.images.min() and res.images.max() <= 1
    torch.testing.assert_close(run.sample(3, seed=0, batch_size=2).images, res.images, atol=1e-5, rtol=0)  # per-sample seeds
    assert list((folder_runs[key] / "samples").glob("*.png"))  # the end-of-training grid


def test_folder_run_resumes_from_its_checkpoint(folder_runs, tmp_path):
    """2 steps, then resumed to 4 from the [H, W] run's checkpoint: the weights equal the uninterrupted run's."""
    from safetensors.torch import load_file

    r = _folder_recipe("ihdm", folder_runs["data"])
    genproc.train(r, tmp_path / "split", max_steps=2, **QUIET)
    assert genproc.train(r, tmp_path / "split", **QUIET).step == 4
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(p / "checkpoints" / "step_00000004" / f) for p in (folder_runs["heat"], tmp_path / "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("key", ["heat", "ddpm"])
def test_folder_run_evaluates_fid_kid_nll(folder_runs, key, tmp_path):
    recs = genproc.metrics.evaluate(folder_runs[key], "fid,kid,nll", n=8, n_ref=8, batch_size=4, extractor=TINY_FE,
                                    cache_dir=tmp_path / "cache", log=lambda *_: None)
    by = {r["metric"]: r for r in recs}
    assert set(by) == {"fid", "kid", "nll"}
    assert by["fid"]["value"] >= 0 and math.isfinite(by["kid"]["value"]) and by["nll"]["value"] > 0
    assert f"-3x{H}x{W}-" in by["fid"]["reference"]["cache_name"]


def test_folder_runs_analyses(folder_runs, tmp_path):
    from genproc.analysis import delta, disentangle, gradients, interpolation, neighbours
    from genproc.analysis.common import load_runs

    dirs = [folder_runs["heat"], folder_runs["ddpm"]]
    out = tmp_path / "spectra"
    analyze_ok("spectra", dirs, out, "--n", "8", "--levels", "2", "--batch-size", "8")
    js = json.loads((out / "spectra.json").read_text())
    assert np.allclose(js["data"]["freqs"], radial_bins(H, W)[1]) and js["runs"]["ihdm"]["image_shape"] == [3, H, W]
    assert np.asarray(js["generative"]["ddpm"]["psd"]).shape[1] == len(radial_bins(H, W)[1])
    runs = load_runs(dirs)
    res = interpolation.analyze_interpolation(runs, tmp_path / "i", pairs=2, frames=3, show=1)
    assert res["results"]["ihdm"]["lowpass_sigma"] == 1.5  # min(H, W) / 16
    res = gradients.analyze_gradients(runs, tmp_path / "g", n=2, fractions=(0.5,))
    assert res["locality"]["ihdm"]["image_size"] == [H, W] and tuple(res["locality"]["ihdm"]["pixels"][0]) == (0, H // 2, W // 2)
    res = disentangle.analyze_disentangle(runs, tmp_path / "d", rows=2, cols=2)
    assert set(res["results"]) == {"ihdm", "ddpm"}
    res = neighbours.analyze_neighbours(runs, tmp_path / "n", n=4, k=2, n_test=4, log=lambda *_: None)
    assert res["results"]["ihdm"]["dims"] == 3 * H * W
    res = delta.analyze_delta(runs, tmp_path / "delta", deltas=(0.01, 0.02), n=4, metrics="nll", grid=2, log=lambda *_: None)
    assert (tmp_path / "delta" / "delta_samples.png").is_file()
    for f in ("i/interpolation.png", "g/gradients.png", "d/disentangle_shared_noise.png", "n/neighbours_hist.png"):
        assert (tmp_path / f).stat().st_size > 0, f
