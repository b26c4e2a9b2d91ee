"""``genproc compare`` end to end on tiny data through the CLI, every process through the shared
engine (train, checkpoint, resume, sample), and the one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import typer
import yaml
from conftest import PROCESSES, one_line_error, tiny_recipe
from PIL import Image
from safetensors.torch import load_file
from test_metrics import TINY_FE, no_network  # noqa: F401 - registers the tiny stand-in extractor; a fixture
from typer.testing import CliRunner

from genproc import GenprocError
from genproc import compare as cmp
from genproc.cli_compare import compare_command, split_runs
from genproc.engine import train
from genproc.recipe import recipe_from_dict
from genproc.run import load

app = typer.Typer(pretty_exceptions_enable=False)
app.command("compare")(compare_command)
app.callback()(lambda: None)  # keep 'compare' a subcommand, as in genproc.cli
runner = CliRunner()


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("recipes")
    for p in PROCESSES:
        (d / f"{p}_digits_small.yaml").write_text(yaml.safe_dump(tiny_recipe(p, "digits_small")))
    return d


@pytest.fixture(scope="module")
def compared(tmp_path_factory, recipes) -> Path:
    """ihdm vs ddpm trained for 4 steps each, then resumed to 6 by rerunning with a larger budget."""
    out = tmp_path_factory.mktemp("cmp") / "report"
    args = ["compare", "ihdm", "ddpm", "--dataset", "digits", "--recipes-dir", str(recipes), "--n", "4",
            "--metrics", "nll", "--out", str(out), "--grid", "4"]
    r = runner.invoke(app, [*args, "--budget", "4"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "report.json").read_text())["budget_steps"] == 4
    r = runner.invoke(app, [*args, "--budget", "6"])
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output and "from step 4" in r.output
    return out


def test_report_files_and_table(compared):
    rep = json.loads((compared / "report.json").read_text())
    assert rep["budget_steps"] == 6 and [r["process"] for r in rep["rows"]] == ["ihdm", "ddpm"]
    for row in rep["rows"]:
        assert row["budget_steps"] == 6 and row["params"] > 0 and row["train_img_s"] > 0 and row["sample_img_s"] > 0
        assert 0 < row["nll"] < float("inf") and "fid" not in row  # untrained: large, but a finite bound
    ihdm, ddpm = rep["rows"]
    assert ihdm["sampling_calls"] == 5 and ddpm["sampling_calls"] == 20
    assert ihdm["nll_convention"] == "dequantised" and ddpm["nll_convention"] == "discrete"
    assert rep["records"]["ddpm"][0]["convention_detail"].startswith("discretised Gaussian decoder")
    md = (compared / "report.md").read_text()
    assert rep["table"] in md and "| process | FID | KID | NLL bits/dim |" in md and "(discrete)" in md
    assert "Budget: 6 training steps;" in md
    for row in rep["rows"]:  # the analysis columns: interpolation smoothness and gradient locality
        assert row["jump_ratio_mean"] >= 1 and row["path_ratio_shape_mean"] >= 1
        assert 0 <= row["grad_r50"] <= row["grad_r90"] and 0 <= row["grad_symmetry"] <= 1
    assert "| interp. jump ratio px / shape | interp. path ratio px / shape | grad. r50 / r90 px | grad. symmetry |" in md
    assert set(json.loads((compared / "spectra.json").read_text())["runs"]) == {"ihdm", "ddpm"}
    for f in ["samples.png", "sequences.png", "sequences.gif", "recipes/ihdm.yaml", "recipes/ddpm.yaml", "spectra.png"]:
        assert (compared / f).is_file(), f
    assert yaml.safe_load((compared / "recipes/ddpm.yaml").read_text())["train"]["max_steps"] == 6
    w, h = Image.open(compared / "samples.png").size
    assert w > h  # two panels side by side
    assert Image.open(compared / "sequences.gif").n_frames > 5  # 20 frames; PIL merges identical neighbours


def test_runs_with_fid_kid_standin_extractor(compared, tmp_path):
    runs = compared / "runs"
    out = tmp_path / "again"
    r = runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"), "--metrics",
                            "fid,kid", "--extractor", TINY_FE, "--n", "8", "--n-ref", "16", "--out", str(out), "--grid", "2",
                            "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    rows = rep["rows"]
    assert rep["n_ref"] == 16 and all(r["reference"]["size"] == 16 for recs in rep["records"].values() for r in recs)
    assert all(row["fid"] >= 0 and "kid_std" in row and "nll" not in row for row in rows)
    assert "| IHDM | " in r.output and "| – |" in r.output  # the table is printed; NLL not measured
    # the real-vs-real floor at the same n and reference, beside the models' FIDs
    floor = rep["real_floor"]
    assert floor["n"] == 8 and floor["n_ref"] == 16 and floor["fid"] >= 0 and "drawn at random (seed 0)" in floor["train_images"]
    assert f"Real-vs-real floor: FID {floor['fid']:.2f}" in (out / "report.md").read_text() and "real-vs-real floor" in r.output
    # --more-seeds: the sample metrics again at seed 1, each value the evaluate record of that seed
    out2 = tmp_path / "seeds"
    r = runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"), "--metrics",
                            "fid", "--extractor", TINY_FE, "--n", "8", "--n-ref", "16", "--out", str(out2), "--grid", "2",
                            "--cache-dir", str(tmp_path / "cache"), "--more-seeds", "1"])
    assert r.exit_code == 0, r.output
    rep2 = json.loads((out2 / "report.json").read_text())
    from genproc.metrics import evaluate

    for row in rep2["rows"]:
        (one,) = evaluate(runs / row["process"], "fid", n=8, n_ref=16, seed=1, extractor=TINY_FE,
                          cache_dir=tmp_path / "cache", log=lambda *_: None)
        assert row["fid_by_seed"] == [pytest.approx(row["fid"]), pytest.approx(one["value"])]
        assert row["fid_by_seed"][0] != row["fid_by_seed"][1]
        assert row["fid_mean"] == pytest.approx(sum(row["fid_by_seed"]) / 2)
    assert "over 2 seeds)" in r.output and rep2["more_seeds"] == [1]
    one_line_error(runner.invoke(app, ["compare", "ihdm", "--runs", str(runs / "ihdm"), "--more-seeds", "a"]), "--more-seeds")
    # --n-nll: the NLL on its own number of test images, the sample metrics still on --n samples; the report says so
    out3 = tmp_path / "nll"
    r = runner.invoke(app, ["compare", "ihdm", "--runs", str(runs / "ihdm"), "--metrics", "fid,nll", "--extractor",
                            TINY_FE, "--n", "8", "--n-nll", "3", "--n-ref", "16", "--out", str(out3), "--grid", "2",
                            "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    rep3 = json.loads((out3 / "report.json").read_text())
    recs = {rec["metric"]: rec for rec in rep3["records"]["ihdm"]}
    assert recs["nll"]["n_samples"] == 3 and recs["fid"]["n_samples"] == 8 and rep3["n_nll"] == 3
    (nll,) = evaluate(runs / "ihdm", "nll", n=3, log=lambda *_: None)
    assert recs["nll"]["value"] == pytest.approx(nll["value"])
    assert "NLL on the first 3 test images" in (out3 / "report.md").read_text()
    one_line_error(runner.invoke(app, ["compare", "ihdm", "--runs", str(runs / "ihdm"), "--n-nll", "0"]), "--n-nll")


def test_sampling_per_process(compared, tmp_path):
    """``--sampling NAME:key=value`` changes that process's run alone (each process at its own sampler); shared
    settings still go to the runs they fit."""
    runs = compared / "runs"
    out = tmp_path / "own"
    r = runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"), "--metrics", "nll",
                            "--n", "2", "--out", str(out), "--grid", "2", "--sampling", "ddpm:sampler=ddim",
                            "--sampling", "ddpm:steps=3", "--sampling", "heat:delta=0.02"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["sample_overrides"]["ddpm"] == {"sampler": "ddim", "steps": 3}
    assert rep["sample_overrides"]["ihdm"] == {"delta": 0.02}
    assert {row["process"]: row["sampling_calls"] for row in rep["rows"]}["ddpm"] == 3
    base = ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"), "--metrics", "nll", "--n", "2",
            "--out", str(tmp_path / "bad")]
    one_line_error(runner.invoke(app, [*base, "--sampling", "bdm:steps=3"]), "'bdm' is not one of the compared processes")
    one_line_error(runner.invoke(app, [*base, "--sampling", "ddpm:delta=0.1"]), "delta")
    assert cmp.split_sampling(["ihdm", "ddpm"], ["steps=5", "ddpm:clip=clamp"]) == (["steps=5"], {"ddpm": ["clip=clamp"]})


def test_columns_are_data_driven(monkeypatch):
    monkeypatch.setattr(cmp, "COLUMNS", [*cmp.COLUMNS, ("spectral slope", lambda r: f"{r['slope']:.1f}")])
    table = cmp.markdown_table([{"process": "ihdm", "slope": -2.04}])
    assert table.splitlines()[0].endswith("| spectral slope |") and table.splitlines()[2].endswith("| -2.0 |")


def test_split_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert split_runs(["ihdm", "ddpm", str(b)], [str(a)]) == (["ihdm", "ddpm"], [str(a), str(b)])
    assert split_runs(["ihdm", "ddpm"], [f"{a},{b}"]) == (["ihdm", "ddpm"], [str(a), str(b)])
    assert split_runs(["ihdm", "ddpm"], []) == (["ihdm", "ddpm"], [])


@pytest.fixture(scope="module")
def other_data_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("other") / "run"
    tiny = tiny_recipe("ddpm", "digits_small", max_steps=2)
    tiny["data"]["max_images"] = 32
    train(recipe_from_dict(tiny), d, progress=False, log=lambda *_: None)
    return d


def test_errors(compared, recipes, other_data_run, tmp_path, no_network):  # noqa: F811 - the imported fixture
    """Cheap checks come first: none of these trains, samples or reaches for the network (FID is requested)."""
    runs = compared / "runs"
    base = ["compare", "--recipes-dir", str(recipes), "--out", str(tmp_path / "x"), "--metrics", "fid,nll"]
    one_line_error(runner.invoke(app, [*base, "ihdm", "dppm"]), "unknown process 'dppm'", "did you mean 'ddpm'")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ddpm", "--runs", str(runs / "ihdm")]), "1 run dir(s) for 2")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(other_data_run)]),
                    "first 32 images", "one data set")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ddpm", "--runs", str(runs / "ddpm"), str(runs / "ihdm")]),
                    "has process 'ddpm' but was given as 'ihdm'")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ddpm", "--dataset", "mnist", "--runs", str(runs / "ihdm"),
                                        str(runs / "ddpm")]), "not mnist")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ddpm", "--dataset", "cifar10"]), "missing recipe", "ihdm_cifar10_small.yaml")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ddpm", "--dataset", "digits", "--budget", "0"]), "--budget must be >= 1")
    one_line_error(runner.invoke(app, [*base, "ihdm", "ihdm"]), "given twice")
    one_line_error(runner.invoke(app, [*base, "ihdm", "--metrics", "fid,bogus"]), "unknown metric 'bogus'")
    assert not no_network and not (tmp_path / "x").exists()


@pytest.mark.parametrize("process", list(PROCESSES))
def test_every_process_on_the_shared_engine(process, tmp_path):
    """Train 4 steps straight, or 2 then resume to 4 (bit-exact on CPU), then sample from the checkpoint."""
    r = recipe_from_dict(tiny_recipe(process, "digits_small", max_steps=4))
    logs: list[str] = []
    train(r, tmp_path / "a", progress=False, log=lambda *_: None)
    train(r, tmp_path / "b", max_steps=2, progress=False, log=lambda *_: None)
    shutil.rmtree(tmp_path / "b" / "samples", ignore_errors=True)
    res = train(r, tmp_path / "b", progress=False, log=logs.append)
    assert res.step == 4 and any("resuming" in s and "from step 2" in s for s in logs)
    for name in ("model", "ema"):
        wa = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / f"{name}.safetensors"))
        wb = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / f"{name}.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    run = load(tmp_path / "b")
    s = run.sample(3, seed=5, batch_size=2)
    assert run.step == 4 and s.images.shape == (3, 1, 8, 8) and s.trajectory.shape[1] == 3
    assert torch.isfinite(s.images).all() and s.images.min() >= 0 and s.images.max() <= 1
    # sample i depends on (seed, i) only; blur's grouped conv differs by float rounding (~1e-7) across batch sizes
    torch.testing.assert_close(s.images, run.sample(3, seed=5, batch_size=3).images, atol=1e-5, rtol=0)
    assert len(run.sampler.levels(run.process)) == run.process.num_levels


def test_sample_set_applies_to_the_runs_that_have_the_key(compared, tmp_path):
    """--sampling sampler=ddim changes DDPM's sampler only (IHDM's process exposes no Gaussian view); the report says
    so. The old flag --sample-set (with the process. prefix) still works, hidden; the old key ddim_steps does not."""
    runs = compared / "runs"
    out = tmp_path / "ddim"
    r = runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"), "--metrics", "nll",
                            "--n", "2", "--out", str(out), "--grid", "2", "--sampling", "sampler=ddim",
                            "--sample-set", "process.steps=4"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["sample_overrides"] == {"ihdm": {}, "ddpm": {"sampler": "ddim", "steps": 4}}
    assert [row["sampling_calls"] for row in rep["rows"]] == [5, 4]
    assert "Sampling settings changed for ddpm: steps=4, sampler=ddim." in (out / "report.md").read_text()
    one_line_error(runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"),
                                        "--out", str(tmp_path / "z"), "--sampling", "sampler=ddim",
                                        "--sampling", "ddim_steps=4"]),
                    "sampling setting 'ddim_steps' fits none of the runs", "steps")
    one_line_error(runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"),
                                        "--out", str(tmp_path / "y"), "--sampling", "process.K=3"]),
                    "sampling setting 'K' fits none of the runs")


def test_sampling_overrides_on_a_loaded_run(compared):
    """with_sampling changes only sampling-time settings (keywords, or KEY=VALUE strings): the sampler and its
    settings, or the process's keys; DDIM with all T steps uses the same levels as ancestral sampling; a key that would
    change the trained model, an unknown sampler or one that cannot drive the process is one clear error."""
    ddpm = load(compared / "runs" / "ddpm")
    ddim = ddpm.with_sampling(sampler="ddim", steps=20, eta=1.0)
    assert ddim.net is ddpm.net and ddim.sampling == {"sampler": "ddim", "steps": 20, "eta": 1.0}
    assert ddim.sampler.levels(ddim.process) == ddpm.sampler.levels(ddpm.process) == list(range(20, 0, -1))
    assert ddim.sampling_record()["sampler"] == "ddim" and ddim.sampling_record()["eta"] == 1.0
    assert ddpm.with_sampling(["steps=7", "sampler=ddim"]).sampler.levels(ddpm.process) == [20, 17, 14, 10, 7, 4, 1]
    assert ddim.with_sampling(eta=0.5).sampling_record()["steps"] == 20  # settings kept while the sampler stays
    assert ddpm.sampling_record()["sampler"] == "ancestral" and ddpm.sampling == {}  # the original run is untouched
    for bad, needle in [({"T": 10}, "'T' is not a sampling-time setting"), (["train.lr=1"], "'train.lr' is not"),
                        (["process.sampler"], "expects KEY=VALUE"), ({"sampler": "euler"}, "unknown sampler 'euler'"),
                        ({"sampler": "ddim", "ddim_steps": 5}, "'ddim_steps' is not"),
                        ({"sampler": "ddim", "eta": -1}, "expected >= 0")]:
        with pytest.raises(GenprocError, match=needle):
            ddpm.with_sampling(bad)
    with pytest.raises(GenprocError, match="samplers for IHDM: chain"):
        load(compared / "runs" / "ihdm").with_sampling(sampler="ddim")


def test_sample_and_evaluate_take_sampling_overrides(compared, tmp_path):
    import numpy as np

    from genproc.cli import app as main_app

    run = compared / "runs" / "ddpm"
    r = runner.invoke(main_app, ["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"), "--capture-every", "1",
                                 "--sampling", "sampler=ddim", "--sampling", "steps=3"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "s" / "samples.npz")["trajectory"].shape[0] == 4  # prior + 3 DDIM steps
    r = runner.invoke(main_app, ["evaluate", str(run), "--metrics", "nll", "--n", "2", "--sampling", "sampler=ddim",
                                 "--sampling", "steps=3", "--sampling", "eta=0.5"])
    assert r.exit_code == 0, r.output
    path = Path(r.output.strip().splitlines()[-1].removeprefix("wrote "))
    assert path.name.endswith("-ddim-nfe3-eta0.5.json")  # does not overwrite the ancestral record
    rec = json.loads(path.read_text())
    assert rec["sampling_overrides"] == {"sampler": "ddim", "steps": 3, "eta": 0.5}
    assert rec["sampling"]["sampler"] == "ddim" and rec["sampling"]["calls"] == 3 and rec["sampling"]["clip"] == "clamp"
    r = runner.invoke(main_app, ["sample", str(run), "--sampling", "process.T=5"])
    one_line_error(r, "'T' is not a sampling-time setting")


# The repository's GPU-scale CIFAR-10 recipes, shrunk from the command line so that they run here on fake data.
TINY_PAPER = ["--set", "net.channels=8", "--set", "net.channel_mult=[1,2]", "--set", "net.num_res_blocks=1",
              "--set", "net.attn_resolutions=[16]", "--set", "net.dropout=0.0", "--set", "train.precision=fp32",
              "--set", "train.batch_size=4", "--set", "train.warmup_steps=1", "--set", "sample.n=2",
              "--set", "sample.batch_size=2", "--set", "train.checkpoint_every=2", "--set", "data.image_size=16"]


def test_paper_scale_recipes_run_with_one_command(tmp_path):
    """`compare ddpm bdm --scale paper` finds the GPU recipes of those processes on cifar10 (ddpm_cifar.yaml,
    bdm_cifar.yaml): trained here for 2 steps on a fake CIFAR-10 with the nets shrunk by --set (T cut to 20)."""
    from test_data import make_fake_cifar

    make_fake_cifar(tmp_path / "data", per_batch=4)
    r = runner.invoke(app, ["compare", "ddpm", "bdm", "--scale", "paper", "--data-root",
                            str(tmp_path / "data"), "--budget", "2", "--n", "2", "--metrics", "nll", "--grid", "2",
                            "--out", str(tmp_path / "out"), "--set", "process.T=20", *TINY_PAPER])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [row["process"] for row in rep["rows"]] == ["ddpm", "bdm"] and rep["budget_steps"] == 2
    assert all(row["budget_steps"] == 2 and row["nll"] > 0 for row in rep["rows"])
    saved = yaml.safe_load((tmp_path / "out" / "recipes" / "bdm.yaml").read_text())
    assert saved["name"] == "bdm_cifar" and saved["net"]["channels"] == 8  # the paper recipe, shrunk
    # explicit recipe files take the place of --scale; a missing one is one line naming what exists
    r = runner.invoke(app, ["compare", "ihdm", "--recipe", str(cmp.REPO_RECIPES / "ihdm_cifar.yaml"), "--data-root",
                            str(tmp_path / "data"), "--budget", "2", "--n", "2", "--metrics", "nll", "--grid", "2",
                            "--out", str(tmp_path / "out1"), *TINY_PAPER])
    assert r.exit_code == 0, r.output
    one_line_error(runner.invoke(app, ["compare", "blur", "--scale", "paper", "--out", str(tmp_path / "x")]),
                   "no paper-scale recipe for 'blur' on 'cifar10'", "--recipe")


def test_compare_with_calls_adds_the_frontier(compared, tmp_path):
    """--calls: the compared runs' FID-per-call frontier in <out>/frontier, at the comparison's n and seeds."""
    runs = compared / "runs"
    out = tmp_path / "calls"
    r = runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(runs / "ihdm"), str(runs / "ddpm"), "--metrics",
                            "fid", "--extractor", TINY_FE, "--n", "6", "--n-ref", "12", "--out", str(out), "--grid", "2",
                            "--cache-dir", str(tmp_path / "cache"), "--calls", "3", "--samplers", "ddim"])
    assert r.exit_code == 0, r.output
    front = json.loads((out / "frontier" / "frontier.json").read_text())
    assert {(p["process"], p["sampler"], p["calls"]) for p in front["points"]} == \
        {("ihdm", "chain", 5), ("ddpm", "ddim", 3), ("ddpm", "ancestral", 20)}
    assert front["n"] == [6] and front["seeds"] == [0] and "frontier" in r.output
