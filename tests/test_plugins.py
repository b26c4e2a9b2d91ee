"""Issue 21, items 3-5 and 9: a process registered in the user's own file, read by every command through ``--plugin``
and ``$GENPROC_PLUGINS``; metrics a process cannot give, refused (evaluate) or shown as – (compare) before any work;
Ctrl-C saying what was kept (exit 130), made to happen at a fixed point by a test hook; export written whole or not
at all."""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, one_line_error
from test_metrics import TINY_FE, no_network  # noqa: F401 - registers the tiny stand-in extractor; a fixture
from typer.testing import CliRunner

from genproc.cli import app
from genproc.errors import GenprocError
from genproc.plugins import load_plugin, plugin_specs

runner = CliRunner()
NAME = "plugfade"  # registered by the plugin file below only: never by genproc or another test
PLUGIN_FE = "genproc-plugin-tiny"

# A process written the way a user would in an experiment's own file (tests/test_contract.py's Fade, without a
# likelihood bound), plus a stand-in feature extractor for torch-fidelity so FID runs offline in a fresh interpreter.
PLUGIN = '''
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from genproc.processes import ForwardProcess, ProcessConfig, register


@dataclass
class PlugFadeConfig(ProcessConfig):
    K: int = 4


class PlugFadeProcess(ForwardProcess):
    label = "PlugFade"

    def __init__(self, cfg):
        super().__init__(cfg, cfg.K)

    def forward_marginal(self, x0, k, eps):
        s = (torch.as_tensor(k, dtype=torch.float32) / self.num_levels).reshape(-1, 1, 1, 1)
        return (1 - s) * x0 + s * eps

    def training_pair(self, x0, k, eps):
        return self.forward_marginal(x0, k, eps), x0

    def prior(self, rng, shape, data=None):
        return rng.randn(tuple(shape))

    def reverse_levels(self):
        return list(range(self.num_levels, 0, -1))

    def reverse_step(self, x, net_out, k, k_next, noise):
        s, s_next = k / self.num_levels, k_next / self.num_levels
        x0 = net_out.float()
        return (1 - s_next) * x0 + s_next * (x - (1 - s) * x0) / s

    def to_data_scale(self, x):
        return x


class Tiny(torch_fidelity.FeatureExtractorBase):
    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.register_buffer("proj", torch.randn(48, 8, generator=torch.Generator().manual_seed(0)))

    @staticmethod
    def get_provided_features_list():
        return ("feat",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "feat"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x):
        return (F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1) @ self.proj,)


register("NAME", PlugFadeProcess, PlugFadeConfig)
if "FE" not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor("FE", Tiny)
'''.replace("NAME", NAME).replace('"FE"', repr(PLUGIN_FE))


def _raise_on_call(monkeypatch, owner, name: str, n: int = 1) -> list:
    """Make ``owner.name`` raise KeyboardInterrupt (as Ctrl-C does) on its n-th call; earlier calls run the original.
    Returns the list of calls made."""
    original, calls = getattr(owner, name), []

    def hooked(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, hooked)
    return calls


def _interrupted(result, *needles: str) -> str:
    """A command ended by Ctrl-C: exit 130 and one line ``interrupted: ...`` holding every needle; no traceback."""
    assert result.exit_code == 130, result.output
    lines = [s for s in result.output.splitlines() if s.startswith("interrupted: ")]
    assert len(lines) == 1 and "Traceback" not in result.output and "Aborted" not in result.output, result.output
    for s in needles:
        assert s in lines[0], lines[0]
    return lines[0]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m genproc.cli ARGS`` in a fresh interpreter (nothing registered there but what it imports itself)."""
    full = {k: v for k, v in os.environ.items() if k != "GENPROC_PLUGINS"} | (env or {})
    return subprocess.run([sys.executable, "-m", "genproc.cli", *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def plug(tmp_path_factory):
    """(plugin file, run dir): the user's process trained for 4 steps through ``genproc train --plugin FILE``."""
    from genproc.processes import unregister

    root = tmp_path_factory.mktemp("plugin")
    plugin = root / "my_fade.py"
    plugin.write_text(PLUGIN)
    recipe = copy.deepcopy(TINY)
    recipe.update(name="plugfade_tiny", process={"name": NAME, "K": 4})
    recipe["net"]["dropout"] = 0.0
    recipe["train"]["max_steps"] = 4
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = root / "run"
    r = runner.invoke(app, ["train", str(root / "recipe.yaml"), "--run-dir", str(run), "--no-progress",
                            "--plugin", str(plugin)])
    assert r.exit_code == 0, r.output
    yield plugin, run
    unregister(NAME)  # other test modules see only the processes they register


# ------------------------------------------------------------------ --plugin / $GENPROC_PLUGINS


def test_plugin_specs_env_first_each_once():
    env = {"GENPROC_PLUGINS": os.pathsep.join(["a.py", "", "pkg.mod", "a.py"])}
    assert plugin_specs(["pkg.mod", "b.py", " "], env) == ["a.py", "pkg.mod", "b.py"]
    assert plugin_specs([], {}) == []


def test_without_the_plugin_a_run_says_what_is_missing(plug, tmp_path):
    """A fresh interpreter that was not named the plugin: one line naming the process, the run and the way in;
    nothing is imported on the run's word."""
    _, run = plug
    r = _cli("sample", str(run), "--n", "2", "--out", str(tmp_path / "s"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: unknown process '{NAME}' in {run} (known: ihdm, blur, ddpm, bdm); registered "
                                "by a plugin? pass --plugin FILE_OR_MODULE or set GENPROC_PLUGINS"), r.stderr
    assert not (tmp_path / "s").exists()


def test_plugin_file_through_the_environment_samples_and_evaluates(plug, tmp_path):
    """$GENPROC_PLUGINS in a fresh interpreter: the run samples and evaluates (FID with the plugin's extractor)."""
    plugin, run = plug
    env = {"GENPROC_PLUGINS": os.pathsep.join([str(plugin), "json"])}  # a module name in the list too
    r = _cli("sample", str(run), "--n", "3", "--out", str(tmp_path / "s"), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s" / "grid.png").is_file() and f"3 samples from {run}" in r.stdout
    r = _cli("evaluate", str(run), "--metrics", "fid", "--n", "6", "--n-ref", "8", "--extractor", PLUGIN_FE,
             "--cache-dir", str(tmp_path / "cache"), env=env)
    assert r.returncode == 0, r.stderr
    (path,) = [s.removeprefix("wrote ") for s in r.stdout.splitlines() if s.startswith("wrote ")]
    rec = json.loads(Path(path).read_text())
    assert rec["process"] == NAME and rec["metric"] == "fid" and rec["value"] >= 0 and rec["extractor"] == PLUGIN_FE


def test_plugin_option_on_sample_evaluate_compare_and_the_rest(plug, tmp_path, no_network):  # noqa: F811 - the fixture
    """--plugin FILE after the command, on every command (typer's app, as CliRunner calls it)."""
    plugin, run = plug
    p = ["--plugin", str(plugin)]
    r = runner.invoke(app, ["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"), *p])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", str(run), "--metrics", "fid", "--n", "6", "--n-ref", "8", "--extractor",
                            TINY_FE, "--cache-dir", str(tmp_path / "cache"), *p])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compare", NAME, "--runs", str(run), "--metrics", "fid", "--n", "6", "--n-ref", "8",
                            "--extractor", TINY_FE, "--cache-dir", str(tmp_path / "cache"), "--grid", "2", "--out",
                            str(tmp_path / "cmp"), *p])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert rep["rows"][0]["process"] == NAME and rep["rows"][0]["fid"] >= 0 and "| PlugFade |" in rep["table"]
    r = runner.invoke(app, ["samplers", str(run), *p])
    assert r.exit_code == 0 and "*" in r.output, r.output
    r = runner.invoke(app, ["analyze", "spectra", str(run), "--n", "4", "--levels", "2", "--out", str(tmp_path / "sp"), *p])
    assert r.exit_code == 0, r.output
    for command in (["export"], ["restore"], ["frontier"], ["train"], ["analyze", "delta"]):
        assert "--plugin" in runner.invoke(app, [*command, "--help"]).output, command
    assert not no_network  # FID with the stand-in extractor: nothing downloaded


@pytest.mark.parametrize("spec, needles", [
    ("nope_missing.py", ("plugin file nope_missing.py not found",)),
    ("no_such_module_xyz", ("plugin 'no_such_module_xyz' failed to import", "ModuleNotFoundError")),
    ("bad name", ("plugin 'bad name': expected a module name",)),
])
def test_a_plugin_that_cannot_be_imported_is_one_line(spec, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(app, ["samplers", "--plugin", spec]), *needles)


def test_a_plugin_that_raises_is_one_line_naming_it(tmp_path, monkeypatch):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import math\nraise RuntimeError('the experiment is not ready\\nsecond line')\n")
    one_line_error(runner.invoke(app, ["samplers", "--plugin", str(bad)]),
                   f"plugin '{bad}' failed to import: RuntimeError: the experiment is not ready")
    monkeypatch.setenv("GENPROC_PLUGINS", str(tmp_path / "syntax.py"))
    (tmp_path / "syntax.py").write_text("def (:\n")
    one_line_error(runner.invoke(app, ["samplers"]), "syntax.py' failed to import: SyntaxError")
    assert not [m for m in sys.modules if m.startswith("genproc_plugin_broken_plugin")]  # not half-registered


def test_module_plugin_from_the_current_directory(tmp_path, monkeypatch):
    """A dotted module name is found in the current directory (as 'python -m' finds it); imported once."""
    (tmp_path / "my_exp_plugins_xyz").mkdir()
    (tmp_path / "my_exp_plugins_xyz" / "__init__.py").write_text("")
    (tmp_path / "my_exp_plugins_xyz" / "procs.py").write_text("LOADED = []\nLOADED.append(1)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_exp_plugins_xyz.procs", raising=False)
    r = runner.invoke(app, ["samplers", "--plugin", "my_exp_plugins_xyz.procs", "--plugin", "my_exp_plugins_xyz.procs"])
    assert r.exit_code == 0, r.output
    assert sys.modules["my_exp_plugins_xyz.procs"].LOADED == [1]
    with pytest.raises(GenprocError, match="plugin file"):
        load_plugin(str(tmp_path / "absent.py"))


# ------------------------------------------------------------------ metrics checked before any work


def test_compare_nll_of_a_process_without_elbo_is_a_dash_with_a_footnote(plug, tiny_runs, tmp_path, monkeypatch):
    """compare ihdm + the plugin's process with nll: nothing is evaluated for the process without a bound, the report
    shows – with a footnote naming why, exit 0."""
    ev = importlib.import_module("genproc.metrics.evaluate")  # the module (genproc.metrics.evaluate is also its function)

    plugin, run = plug
    calls, real = [], ev.evaluate_nll
    monkeypatch.setattr(ev, "evaluate_nll", lambda r, *a, **k: calls.append(r.process_name) or real(r, *a, **k))
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", "ihdm", NAME, "--runs", str(tiny_runs["heat"]), str(run), "--metrics", "nll",
                            "--n", "2", "--grid", "2", "--out", str(out), "--plugin", str(plugin)])
    assert r.exit_code == 0, r.output
    assert calls == ["ihdm"]  # the process without a bound was never asked
    rep = json.loads((out / "report.json").read_text())
    rows = {row["process"]: row for row in rep["rows"]}
    assert rows["ihdm"]["nll"] > 0 and "nll" not in rows[NAME]
    assert rows[NAME]["unavailable"] == {"nll": "has no likelihood bound (ELBO)"}
    line = next(s for s in rep["table"].splitlines() if s.startswith("| PlugFade |"))
    assert line.split("|")[4].strip() == "–"  # the NLL column (process, FID, KID, NLL)
    note = f"– nll of {NAME}: process '{NAME}' has no likelihood bound (ELBO), so the metric is not defined for it"
    assert rep["footnotes"] == [note] and f"- {note}" in (out / "report.md").read_text() and note in r.output


def test_training_evaluation_with_nll_of_a_process_without_elbo_fails_before_training(plug, tmp_path):
    plugin, _ = plug
    recipe = copy.deepcopy(TINY)
    recipe.update(process={"name": NAME}, train={**recipe["train"], "eval_every": 2, "eval_metrics": "nll", "eval_n": 4})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = runner.invoke(app, ["train", str(tmp_path / "r.yaml"), "--run-dir", str(tmp_path / "run"), "--plugin", str(plugin)])
    one_line_error(r, f"recipe field 'train.eval_metrics': 'nll' is not available for process '{NAME}', which has no "
                      "likelihood bound (ELBO)")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_recipe_of_an_unknown_process_points_to_plugins(tmp_path):
    recipe = copy.deepcopy(TINY)
    recipe["process"] = {"name": "pixelate_unregistered"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    one_line_error(runner.invoke(app, ["train", str(tmp_path / "r.yaml"), "--run-dir", str(tmp_path / "run")]),
                   "recipe field 'process.name': unknown process 'pixelate_unregistered' (known: ",
                   "registered by a plugin? pass --plugin FILE_OR_MODULE or set GENPROC_PLUGINS")


def test_evaluate_nll_of_a_process_without_elbo_fails_before_sampling(plug, tmp_path, monkeypatch):
    import genproc.run as run_module

    plugin, run = plug
    calls = _raise_on_call(monkeypatch, run_module, "generate", 1)
    shutil.rmtree(run / "eval", ignore_errors=True)
    r = runner.invoke(app, ["evaluate", str(run), "--metrics", "fid,nll", "--extractor", TINY_FE, "--n", "4",
                            "--plugin", str(plugin)])
    one_line_error(r, f"metric 'nll' is not available for {run}: process '{NAME}' has no likelihood bound (ELBO)",
                   "ask for fid, kid, prc")
    assert calls == [] and not (run / "eval").exists()  # nothing sampled, nothing written


# ------------------------------------------------------------------ Ctrl-C says what was kept


@pytest.fixture
def heat_run(tiny_runs, tmp_path) -> Path:
    """A copy of the session's tiny IHDM run without the evaluation records other tests wrote into it (records are
    written into the run dir)."""
    shutil.copytree(tiny_runs["heat"], tmp_path / "heat", ignore=shutil.ignore_patterns("eval"))
    return tmp_path / "heat"


def test_evaluate_interrupted_keeps_finished_metrics_and_prints_wrote_once(heat_run, tmp_path, monkeypatch):
    ev = importlib.import_module("genproc.metrics.evaluate")  # the module (genproc.metrics.evaluate is also its function)

    args = ["evaluate", str(heat_run), "--metrics", "fid,nll", "--n", "4", "--n-ref", "8", "--extractor", TINY_FE,
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    wrote = [s for s in ok.output.splitlines() if s.startswith("wrote ")]
    assert len(wrote) == 2 and len(set(wrote)) == 2, ok.output  # each record's path once
    shutil.rmtree(heat_run / "eval")
    calls = _raise_on_call(monkeypatch, ev, "evaluate_nll", 1)  # Ctrl-C as the NLL starts, after FID was written
    r = runner.invoke(app, args)
    (fid,) = (heat_run / "eval").glob("fid-*.json")
    _interrupted(r, f"kept fid in {fid}", "rerun with --metrics nll to measure the rest")
    assert len(calls) == 1 and [p.name for p in (heat_run / "eval").iterdir()] == [fid.name]


def test_compare_interrupted_names_the_records_kept(heat_run, tiny_runs, tmp_path, monkeypatch):
    import genproc.metrics as metrics

    ddpm = tmp_path / "ddpm"
    shutil.copytree(tiny_runs["ddpm"], ddpm)
    _raise_on_call(monkeypatch, metrics, "evaluate", 2)  # the second process's evaluation
    r = runner.invoke(app, ["compare", "ihdm", "ddpm", "--runs", str(heat_run), str(ddpm), "--metrics", "nll", "--n",
                            "2", "--grid", "2", "--out", str(tmp_path / "cmp")])
    _interrupted(r, f"kept nll of ihdm in {heat_run / 'eval'}", "rerun the same command to finish the report")
    assert not (tmp_path / "cmp" / "report.md").exists() and len(list((heat_run / "eval").glob("nll-*.json"))) == 1


def test_sample_interrupted_while_sampling_or_writing(heat_run, tmp_path, monkeypatch):
    import genproc.engine.sampler as sampler
    import genproc.run as run_module

    with monkeypatch.context() as m:
        _raise_on_call(m, run_module, "generate", 1)
        r = runner.invoke(app, ["sample", str(heat_run), "--n", "2"])
        _interrupted(r, "nothing written; rerun to draw the samples")
    _raise_on_call(monkeypatch, sampler, "save_pngs", 1)  # the last step of writing: images/*.png
    out = tmp_path / "s"
    r = runner.invoke(app, ["sample", str(heat_run), "--n", "2", "--out", str(out)])
    _interrupted(r, f"{out} is incomplete (grid.png, samples.npz, sequence.gif written)", "rerun to draw the samples")


def test_analyze_restore_and_frontier_interrupted(heat_run, tmp_path, monkeypatch):
    import genproc.analysis.spectra as sp
    import genproc.restore as restore

    _raise_on_call(monkeypatch, sp, "analyze_spectra", 1)
    r = runner.invoke(app, ["analyze", "spectra", str(heat_run), "--n", "4", "--out", str(tmp_path / "sp")])
    _interrupted(r, f"nothing written to {tmp_path / 'sp'}; rerun the same command to analyse again")
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("L", (8, 8), 128).save(tmp_path / "in" / "a.png")
    _raise_on_call(monkeypatch, restore, "restore", 1)
    r = runner.invoke(app, ["restore", str(heat_run), str(tmp_path / "in"), "--out", str(tmp_path / "rest"), "--n", "1"])
    _interrupted(r, f"nothing written to {tmp_path / 'rest'}; rerun to restore the images")
    import genproc.frontier as fr

    _raise_on_call(monkeypatch, fr, "frontier", 1)
    r = runner.invoke(app, ["frontier", str(heat_run), "--calls", "2", "--n", "2", "--out", str(tmp_path / "fr")])
    _interrupted(r, f"the points measured so far are kept in {tmp_path / 'fr' / 'points'}; rerun the same command")


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_export_killed_mid_write_leaves_no_folder(heat_run, tmp_path, monkeypatch, fault):
    """The release is written aside and renamed into place: killed after the weights were written (before the
    recipe), no folder at the destination and no temporary one left."""
    import genproc.engine.checkpoint as ckpt

    real = ckpt.export_checkpoint

    def then_fail(*args, **kwargs):
        path = real(*args, **kwargs)
        assert (path / "meta.json").is_file()  # a complete-looking checkpoint exists in the temporary folder
        raise fault

    monkeypatch.setattr(ckpt, "export_checkpoint", then_fail)
    out = tmp_path / "releases" / "heat"
    r = runner.invoke(app, ["export", str(heat_run), str(out)])
    if fault is KeyboardInterrupt:
        _interrupted(r, f"nothing written ({out} is written whole or not at all); rerun to export")
    else:
        one_line_error(r, f"cannot write {out}: No space left on device")
    assert not out.exists() and list(out.parent.iterdir()) == []
    monkeypatch.setattr(ckpt, "export_checkpoint", real)
    r = runner.invoke(app, ["export", str(heat_run), str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "recipe.yaml").is_file() and ckpt.list_checkpoints(out) and list(out.parent.iterdir()) == [out]
