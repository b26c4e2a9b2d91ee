"""Released models: the stored KDE prior (every centre within its stated tolerance of F(t_K) x_i, for the heat and the
spatial-blur operators), runs that sample with no training data, `genproc export` (fp16 EMA weights, the prior, the
recipe), and the one-line refusals (resuming a release, its raw weights, exporting onto a model, a damaged prior)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import one_line_error, tiny_recipe
from typer.testing import CliRunner

from genproc.cli import app
from genproc.data import build_dataset
from genproc.errors import GenprocError
from genproc.processes.blur import BlurConfig, BlurProcess
from genproc.processes.heat import HeatConfig, HeatProcess
from genproc.processes.kde_prior import KDECentres, compress_centres
from genproc.recipe import DataConfig


def _digits(size: int = 16, n: int = 300):
    return build_dataset(DataConfig(name="digits", image_size=size, channels=1, max_images=n), "train")


@pytest.mark.parametrize("process", [HeatProcess(HeatConfig(K=20, sigma_blur_max=8.0)),
                                     BlurProcess(BlurConfig(K=20, sigma_blur_max=8.0)),
                                     HeatProcess(HeatConfig(K=20, sigma_blur_max=1.0))])
@pytest.mark.parametrize("tol", [1e-3, 1e-5])
def test_stored_centres_are_within_the_stated_bound_of_the_exact_ones(process, tol):
    """Every pixel of every rebuilt centre is within the recorded bound (<= tol) of F(t_K) x_i computed from the data;
    the recorded max_error is that measured maximum; a strong blur keeps few coefficients, a weak one many."""
    data = _digits()
    state = compress_centres(lambda idx: process.blur(data.get_batch(idx), process.num_levels), len(data), (1, 16, 16),
                             tol=tol, chunk=128)
    stored = KDECentres.from_state(state.state())
    idx = torch.arange(len(data))
    err = (stored.centres(idx) - process.blur(data.get_batch(idx), process.num_levels)).abs().max()
    assert stored.bound <= tol and float(err) <= stored.bound + 1e-6
    assert float(err) == pytest.approx(stored.max_error, abs=1e-6)
    kept = stored.index.numel()
    # never more than the a-priori set: the most frequencies whose dropping the worst-case bound 2/√(HW) Σ peak allows
    from genproc.processes.dct import dct2

    peak = dct2(process.blur(data.get_batch(idx), process.num_levels)).abs().amax(dim=(0, 1)).flatten().double()
    a_priori = 256 - int((torch.cumsum(peak.sort().values, 0) * 2 / 16 <= tol).sum())
    assert kept <= a_priori
    assert state.state()["coef"].dtype in (torch.float16, torch.float32)
    if process.cfg.sigma_blur_max == 1.0:
        assert kept > 100  # σ_B = 1 px keeps most of a 16 x 16 image's frequencies
    elif isinstance(process, HeatProcess) and not isinstance(process, BlurProcess):
        # heat at σ_B,max = 8 px on 16 px: coefficient (n, m) shrinks by exp(-π²(n² + m²) t_K / 16²), t_K = 32
        lam_t = math.pi**2 * 32 / 256
        assert kept <= sum(1 for n in range(16) for m in range(16) if math.exp(-lam_t * (n * n + m * m)) * 16 > tol / 8)


def test_centres_held_in_memory_or_recomputed_give_the_same_stored_prior(monkeypatch):
    """compress_centres keeps the centres in memory for its passes when they fit in HOLD_BYTES, else recomputes them
    on every pass: the two give identical states."""
    import genproc.processes.kde_prior as kp

    process, data = BlurProcess(BlurConfig(K=20, sigma_blur_max=8.0)), _digits()
    calls = []

    def centres(idx):
        calls.append(len(idx))
        return process.blur(data.get_batch(idx), process.num_levels)

    held = kp.compress_centres(centres, len(data), (1, 16, 16), chunk=128).state()
    held_calls = len(calls)
    monkeypatch.setattr(kp, "HOLD_BYTES", 0)
    recomputed = kp.compress_centres(centres, len(data), (1, 16, 16), chunk=128).state()
    assert held_calls == 3 and len(calls) - held_calls > 3  # held: one pass of 3 chunks; else one per probe
    assert held.keys() == recomputed.keys() and all(torch.equal(held[k], recomputed[k]) for k in held)


@pytest.mark.parametrize("process", [HeatProcess(HeatConfig(K=20, sigma_blur_max=8.0)),
                                     BlurProcess(BlurConfig(K=20, sigma_blur_max=8.0)),
                                     HeatProcess(HeatConfig(K=20, sigma_blur_max=1.0))])
def test_the_stored_prior_moves_the_prior_term_by_at_most_its_closed_form_bound(process):
    """L_K = log N - logsumexp_i(-KL_i), KL_i = const + |m - c_i|² / (2 δ²) (App. A.3). Centres moved by e_i with
    |e_i|_∞ <= ε change |m - c_i|² by at most 2 |m - c_i|_1 ε + D ε², and logsumexp is 1-Lipschitz in the max norm,
    so |ΔL_K| <= max_i (|m - c_i|_1 ε + D ε² / 2) / δ², ε the stored centres' measured error."""
    from genproc.processes.rng import SampleRNG

    data = _digits()
    stored = KDECentres.from_state(compress_centres(lambda idx: process.blur(data.get_batch(idx), process.num_levels),
                                                    len(data), (1, 16, 16), chunk=128).state())
    idx = torch.arange(len(data))
    exact = process.blur(data.get_batch(idx), process.num_levels).flatten(1).double()  # (T, D)
    eps = float((stored.centres(idx).flatten(1).double() - exact).abs().max())
    assert 0 < eps <= stored.bound + 1e-9
    x0 = (data.get_batch(torch.arange(8)) * 255).round().add(torch.rand(8, 1, 16, 16)).div(256)  # dequantised
    zero = lambda x, k: torch.zeros_like(x)  # noqa: E731 - L_K does not read the network
    t_data = process.elbo(data, "cpu").terms(zero, x0, SampleRNG(0, range(8), 12))["L_K"]
    t_stored = process.elbo(stored, "cpu").terms(zero, x0, SampleRNG(0, range(8), 12))["L_K"]
    m = process.blur(x0, process.num_levels).flatten(1).double()  # (B, D): the mean of q(u_K | u_0)
    d = m.shape[1]
    bound = (((m[:, None] - exact[None]).abs().sum(-1) * eps + d * eps**2 / 2) / process.cfg.delta**2).amax(1)
    assert bool(((t_stored - t_data).abs() <= bound + 1e-9).all())


def test_a_stored_prior_needs_no_data_and_gives_the_data_prior_within_its_bound(tiny_runs, monkeypatch):
    """A heat run's checkpoints carry prior.safetensors; loading it, the prior's centres equal F(t_K) x_i of the
    training set within the bound, sampling reads no data set at all, and the samples match the data-prior ones."""
    import genproc

    run = genproc.load(tiny_runs["heat"])
    assert "prior.safetensors" in json.loads((run.checkpoint / "meta.json").read_text())["files"]
    stored = run.prior_data()
    assert isinstance(stored, KDECentres) and len(stored) == len(run.data)
    idx = torch.arange(len(run.data))
    exact = run.process.blur(run.data.get_batch(idx), run.process.num_levels)
    assert float((stored.centres(idx) - exact).abs().max()) <= stored.bound + 1e-6
    from dataclasses import replace

    from_data = replace(run, stored_prior=None).sample(6, seed=4).images

    def no_data(*a, **k):
        raise AssertionError("the training set was read")

    monkeypatch.setattr("genproc.data.build_dataset", no_data)
    fresh = genproc.load(tiny_runs["heat"])
    torch.testing.assert_close(fresh.sample(6, seed=4).images, from_data, atol=1e-2, rtol=0)


def test_export_cli_releases_a_model_that_samples_without_data(tiny_runs, tmp_path, monkeypatch):
    """`genproc export RUN OUT`: fp16 EMA weights + prior + recipe (data.root cleared); `genproc sample OUT` works
    with no data; resuming, raw weights and exporting onto it are refused with one line."""
    runner = CliRunner()
    out = tmp_path / "rel"
    from genproc.restore import reference_power
    res = runner.invoke(app, ["export", str(tiny_runs["heat"]), str(out)])
    assert res.exit_code == 0, res.output
    (ck,) = (out / "checkpoints").iterdir()
    assert sorted(p.name for p in ck.iterdir()) == ["data_stats.safetensors", "ema.safetensors", "meta.json", "prior.safetensors"]
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["release"]["dtype"] == "float16" and meta["recipe"]["data"]["root"] is None
    from safetensors.torch import load_file

    src = load_file(str(sorted((tiny_runs["heat"] / "checkpoints").iterdir())[-1] / "ema.safetensors"))
    rel = load_file(str(ck / "ema.safetensors"))
    assert {v.dtype for v in rel.values() if v.is_floating_point()} == {torch.float16}
    for k, v in src.items():
        torch.testing.assert_close(rel[k].float(), v.half().float())
    assert (out / "recipe.yaml").is_file()
    r = runner.invoke(app, ["compare", "ihdm", "--runs", str(out), "--metrics", "nll", "--n", "4", "--grid", "2",
                            "--out", str(tmp_path / "cmp")])  # a release compares like a run (the test set is read)
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert rep["rows"][0]["nll"] > 0 and rep["records"]["ihdm"][0]["prior_size"] == 64

    monkeypatch.setattr("genproc.data.build_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data read")))
    res = runner.invoke(app, ["sample", str(out), "--n", "3", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 3
    import genproc

    rel_run = genproc.load(out)  # restoration's reference spectrum travels with the release
    torch.testing.assert_close(reference_power(rel_run), reference_power(genproc.load(tiny_runs["heat"])))
    res = rel_run.restore(rel_run.sample(2, seed=1).images, n=1)
    assert res.samples.shape == (2, 1, 1, 8, 8)
    monkeypatch.undo()

    res = runner.invoke(app, ["export", str(tiny_runs["heat"]), str(tmp_path / "rel2"), "--recompute-prior"])
    assert res.exit_code == 0 and "computing the stored prior" in res.output, res.output
    rel2 = genproc.load(tmp_path / "rel2", data_root=None)
    idx = torch.arange(len(rel2.data))
    exact = rel2.process.blur(rel2.data.get_batch(idx), rel2.process.num_levels)
    assert float((rel2.stored_prior.centres(idx) - exact).abs().max()) <= rel2.stored_prior.bound + 1e-6
    assert "computing" not in runner.invoke(app, ["export", str(tiny_runs["heat"]), str(tmp_path / "rel3")]).output

    one_line_error(runner.invoke(app, ["train", str(out / "recipe.yaml"), "--run-dir", str(out)]), "released model",
                   "cannot resume training")
    assert [p.name for p in (out / "checkpoints").iterdir()] == [ck.name]  # not set aside as damaged
    one_line_error(runner.invoke(app, ["sample", str(out), "--weights", "model"]), "released model")
    one_line_error(runner.invoke(app, ["export", str(tiny_runs["heat"]), str(out)]), "already holds a model")
    one_line_error(runner.invoke(app, ["export", str(tiny_runs["heat"]), str(tmp_path / "x"), "--dtype", "int8"]),
                   "fp16, bf16, fp32")


def test_export_computes_the_prior_when_the_run_has_none_and_a_damaged_prior_falls_back_to_data(tmp_path):
    """A run trained with train.store_prior = false has no prior.safetensors; export computes it from the data. A
    damaged stored prior gives one warning and the data prior (nothing lost)."""
    import genproc
    from genproc.engine import train as train_run
    from genproc.recipe import recipe_from_dict

    run_dir = tmp_path / "run"
    train_run(recipe_from_dict(tiny_recipe("ihdm", max_steps=2, store_prior=False)), run_dir, progress=False,
              log=lambda *_: None)
    (ck,) = (run_dir / "checkpoints").iterdir()
    assert not (ck / "prior.safetensors").exists() and genproc.load(run_dir).stored_prior is None
    logs: list[str] = []
    path = genproc.export(run_dir, tmp_path / "rel", dtype="fp32", log=logs.append)
    assert "computing the stored prior" in logs[0] and (path / "prior.safetensors").is_file()
    rel = genproc.load(tmp_path / "rel")
    idx = torch.arange(len(rel.data))
    exact = rel.process.blur(rel.data.get_batch(idx), rel.process.num_levels)
    assert float((rel.stored_prior.centres(idx) - exact).abs().max()) <= rel.stored_prior.bound + 1e-6

    blob = bytearray((path / "prior.safetensors").read_bytes())
    blob[-4:] = b"\x00\x00\x80\x7f"  # one coefficient becomes +inf: the checksum no longer matches
    (path / "prior.safetensors").write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="stored prior .* is damaged"):
        again = genproc.load(tmp_path / "rel")
    assert again.stored_prior is None and len(again.prior_data()) == len(exact)


def test_processes_without_a_data_prior_store_nothing(tiny_runs):
    import genproc

    run = genproc.load(tiny_runs["ddpm"])
    assert run.stored_prior is None and run.prior_data() is None
    assert not (run.checkpoint / "prior.safetensors").exists()
    with pytest.raises(GenprocError, match="stores no prior state"):
        run.process.prior_from_state({})


# A release's samples against its full run's (fp32 EMA weights, the prior drawn from the training set), same seed, in
# [0, 1] image units. pretrained/checks.txt measures the same on the MNIST releases (IHDM: max 0.0326, mean 0.0005;
# blur: max 0.0144, mean 0.00027): a few pixels move by up to about 8 of 255, the mean stays under 1e-3.
RELEASE_MAX_DIFF, RELEASE_MEAN_DIFF = 0.05, 0.001


@pytest.mark.parametrize("kind", ["heat", "ddpm"])
def test_a_release_samples_as_its_full_run_within_the_stated_tolerance(tiny_runs_no_ema, tmp_path, kind):
    """fp16 weights and the stored prior change a sample by at most RELEASE_MAX_DIFF (mean RELEASE_MEAN_DIFF); a
    release exported from another checkpoint does not pass (the tolerance can fail)."""
    from dataclasses import replace

    import genproc

    src = tiny_runs_no_ema[kind]
    full = genproc.load(src)
    full = replace(full, stored_prior=None) if full.process.needs_data_for_prior else full
    x = full.sample(8, seed=3).images
    genproc.export(src, tmp_path / "rel", log=lambda *_: None)
    d = (genproc.load(tmp_path / "rel").sample(8, seed=3).images - x).abs()
    assert float(d.max()) <= RELEASE_MAX_DIFF and float(d.mean()) <= RELEASE_MEAN_DIFF
    first = sorted((src / "checkpoints").iterdir())[0]
    genproc.export(src, tmp_path / "early", checkpoint=int(first.name.split("_")[1]), log=lambda *_: None)
    d_early = (genproc.load(tmp_path / "early").sample(8, seed=3).images - x).abs()
    assert float(d_early.max()) > RELEASE_MAX_DIFF or float(d_early.mean()) > RELEASE_MEAN_DIFF
