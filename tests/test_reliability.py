"""Runs that survive damage: self-verifying checkpoints with fallback, non-finite steps, failed writes, KID honesty."""

from __future__ import annotations

import copy
import errno
import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, one_line_error
from safetensors.torch import load_file
from typer.testing import CliRunner

import genproc
from genproc.cli import app
from genproc.engine import checkpoint as ckpt
from genproc.errors import GenprocError
from genproc.processes.heat import HeatProcess
from genproc.recipe import recipe_from_dict, recipe_to_yaml

runner = CliRunner()
QUIET = {"progress": False, "log": lambda *_: None}


def _recipe(**train) -> genproc.Recipe:
    d = copy.deepcopy(TINY)
    d["net"]["dropout"] = 0.0
    d["train"].update({"checkpoint_every": 2, "keep_checkpoints": 3, **train})
    return recipe_from_dict(d)


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _weights_equal(a: Path, b: Path) -> bool:
    return all(torch.equal(x, y) for f in ("model.safetensors", "ema.safetensors")
               for x, y in zip(load_file(a / f).values(), load_file(b / f).values()))


# ------------------------------------------------------------------ checkpoints that verify themselves
def test_meta_records_sizes_and_checksums_and_verification_catches_each_damage(tmp_path):
    genproc.train(_recipe(max_steps=2), tmp_path, **QUIET)
    c = tmp_path / "checkpoints" / "step_00000002"
    files = json.loads((c / "meta.json").read_text())["files"]
    assert set(files) == {"model.safetensors", "ema.safetensors", "state.pt", "prior.safetensors",
                          "data_stats.safetensors"}  # a heat run: + its prior; any run: + the data statistics
    assert all(files[f]["size"] == (c / f).stat().st_size and len(files[f]["sha256"]) == 64 for f in files)
    assert ckpt.verify_checkpoint(c) is None
    raw = (c / "model.safetensors").read_bytes()
    flipped = raw[:-1] + bytes([raw[-1] ^ 1])  # same size, one bit changed
    (c / "model.safetensors").write_bytes(flipped)
    assert "does not match its sha256" in ckpt.verify_checkpoint(c)
    (c / "model.safetensors").write_bytes(raw)
    _truncate(c / "state.pt")
    assert "state.pt has 100 bytes" in ckpt.verify_checkpoint(c)
    (c / "state.pt").unlink()
    assert ckpt.verify_checkpoint(c) == "state.pt missing"
    (c / "meta.json").write_text('{"step": 2, "rec')
    assert ckpt.verify_checkpoint(c).startswith("meta.json unreadable")


def test_sample_falls_back_to_the_previous_checkpoint_with_one_warning(tmp_path):
    """Acceptance 3 (sample): truncate the newest ema.safetensors; one warning, samples come from the previous one."""
    run = tmp_path / "run"
    genproc.train(_recipe(max_steps=4), run, **QUIET)
    _truncate(run / "checkpoints" / "step_00000004" / "ema.safetensors")
    r = runner.invoke(app, ["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"), "--capture-every", "-1"])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step_00000004" in warnings[0] and "ema.safetensors has 100 bytes" in warnings[0]
    assert "(step 2)" in r.output  # sampled from the previous checkpoint
    assert (run / "checkpoints" / "step_00000004.damaged").is_dir()  # kept, under a name that says so
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000002"]  # never counted again
    assert genproc.load(run).step == 2  # and no second warning: nothing left to set aside


def test_explicit_damaged_checkpoint_is_an_error_not_a_fallback(tmp_path):
    run = tmp_path / "run"
    genproc.train(_recipe(max_steps=4), run, **QUIET)
    (run / "checkpoints" / "step_00000004" / "meta.json").write_text("{")
    one_line_error(runner.invoke(app, ["sample", str(run), "--checkpoint", "4"]), "step_00000004 is damaged",
                   "meta.json unreadable")
    assert (run / "checkpoints" / "step_00000004").is_dir()  # an explicit request renames nothing


def test_train_resumes_from_the_newest_intact_checkpoint_bit_exactly(tmp_path):
    """Acceptance 3 (train): the newest checkpoint's EMA is truncated; training resumes from the one before and ends
    bit-equal (fp32, CPU) to an uninterrupted run of the same length."""
    r = _recipe(max_steps=6)
    genproc.train(r, tmp_path / "whole", **QUIET)
    genproc.train(r, tmp_path / "hurt", max_steps=4, **QUIET)
    _truncate(tmp_path / "hurt" / "checkpoints" / "step_00000004" / "ema.safetensors")
    logs: list[str] = []
    genproc.train(r, tmp_path / "hurt", progress=False, log=logs.append)
    assert sum(m.startswith("warning: checkpoint") for m in logs) == 1
    assert any("resuming" in m and "from step 2" in m for m in logs)
    assert _weights_equal(tmp_path / "whole" / "checkpoints" / "step_00000006", tmp_path / "hurt" / "checkpoints" / "step_00000006")


def test_all_checkpoints_damaged_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    genproc.train(_recipe(max_steps=2), run, **QUIET)
    _truncate(run / "checkpoints" / "step_00000002" / "ema.safetensors")  # the weights `sample` reads
    r = runner.invoke(app, ["sample", str(run)])
    warning, error = r.output.strip().splitlines()  # the damaged one named, then the one error line
    assert r.exit_code == 2 and warning.startswith("warning: checkpoint") and "falling back" not in warning
    assert error.startswith("error: no intact checkpoint") and "all 1 are damaged" in error


# ------------------------------------------------------------------ failed writes
def test_disk_full_during_a_checkpoint_write(tmp_path, monkeypatch):
    """Acceptance 5: ENOSPC in the middle of a checkpoint: one line naming the path and the cause, the previous
    checkpoint loads, no temporary folder is left."""
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(recipe_to_yaml(_recipe(max_steps=4)))
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(recipe_file), "--run-dir", str(run), "--max-steps", "2", "--no-progress"]).exit_code == 0

    def full(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt.torch, "save", full)  # after both weight files, before state.pt and meta.json
    r = runner.invoke(app, ["train", str(recipe_file), "--run-dir", str(run), "--no-progress"])
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]  # after the run's own log lines
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    for needle in ("cannot write checkpoint", "step_00000004", "No space left on device", "state.pt", "step_00000002 is intact"):
        assert needle in errors[0], errors[0]
    monkeypatch.undo()
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert genproc.load(run).step == 2 and ckpt.verify_checkpoint(run / "checkpoints" / "step_00000002") is None


def test_unwritable_samples_folder_is_one_line(tmp_path, monkeypatch):
    from genproc.engine import trainer

    def denied(x, path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(trainer, "save_grid", denied)
    with pytest.raises(GenprocError, match=r"cannot write samples to .*samples: Permission denied"):
        genproc.train(_recipe(max_steps=2, sample_every=1), tmp_path / "run", **QUIET)
    assert ckpt.list_checkpoints(tmp_path / "run") == []  # it failed at step 1, before the first checkpoint


# ------------------------------------------------------------------ non-finite steps
class _InfGrad(torch.autograd.Function):
    """The identity whose backward pass returns an infinite gradient: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def _nan_at(monkeypatch, bad: set[int], bad_grad: frozenset[int] = frozenset()) -> None:
    """The loss of the chosen training steps (0-based call count) becomes NaN (its gradients too); at ``bad_grad``
    the loss stays finite and only its gradient is infinite."""
    calls, orig = itertools.count(), HeatProcess.loss

    def loss(self, out, target):
        value, i = orig(self, out, target), next(calls)
        return value * float("nan") if i in bad else _InfGrad.apply(value) if i in bad_grad else value

    monkeypatch.setattr(HeatProcess, "loss", loss)


def test_nonfinite_steps_are_skipped_logged_and_the_run_finishes(tmp_path, monkeypatch):
    """Acceptance 4: NaN losses at steps 2 and 4 (1-based) and an infinite gradient at step 5 skip the update and are
    logged; the run finishes."""
    _nan_at(monkeypatch, {1, 3}, frozenset({4}))
    run = genproc.train(_recipe(max_steps=6, log_every=1), tmp_path, **QUIET)
    assert run.step == 6
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [d for d in lines if "skipped" in d]
    assert [(d["step"], d["skipped"], d["consecutive"]) for d in skipped] == [(2, "loss", 1), (4, "loss", 1),
                                                                               (5, "gradient", 2)]
    assert [d["skipped_steps"] for d in lines if "skipped_steps" in d] == [0, 1, 1, 2, 3, 3]
    weights = load_file(tmp_path / "checkpoints" / "step_00000006" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_skipped_step_leaves_weights_optimiser_and_ema_untouched(tmp_path, monkeypatch):
    """Step 3 (1-based) is skipped: the weights after step 3 equal those after step 2 (checked through checkpoints)."""
    _nan_at(monkeypatch, {2})
    genproc.train(_recipe(max_steps=3, checkpoint_every=1), tmp_path, **QUIET)
    assert _weights_equal(tmp_path / "checkpoints" / "step_00000002", tmp_path / "checkpoints" / "step_00000003")


def test_too_many_consecutive_nonfinite_steps_stop_the_run_with_the_checkpoint_intact(tmp_path, monkeypatch):
    _nan_at(monkeypatch, set(range(2, 100)))
    with pytest.raises(GenprocError) as e:
        genproc.train(_recipe(max_steps=20, max_nonfinite_steps=3), tmp_path, **QUIET)
    msg = str(e.value)
    assert "3 consecutive steps up to 5 had a non-finite loss" in msg and "step_00000004 kept" in msg and "\n" not in msg
    assert f"genproc train {tmp_path / 'recipe.yaml'} --run-dir {tmp_path}" in msg  # the resume command
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]
    assert all(ckpt.verify_checkpoint(p) is None for p in ckpt.list_checkpoints(tmp_path))
    # steps 3 and 4 were skipped: the checkpoint at 4 holds the weights of step 2, all finite
    assert _weights_equal(tmp_path / "checkpoints" / "step_00000002", tmp_path / "checkpoints" / "step_00000004")
    monkeypatch.undo()  # the resume command works once the cause is gone
    assert genproc.train(recipe_from_dict(json.loads(json.dumps(_recipe(max_steps=6).to_dict()))), tmp_path,
                         **QUIET).step == 6


def test_max_nonfinite_steps_is_validated():
    with pytest.raises(GenprocError, match="train.max_nonfinite_steps"):
        _recipe(max_nonfinite_steps=0)


# ------------------------------------------------------------------ KID with one subset
def test_kid_with_one_subset_says_so():
    from genproc.metrics.evaluate import format_table, kid_spread

    assert kid_spread(0.0, True) == " (one subset)" and kid_spread(0.0012, False) == " ± 0.0012"
    rec = {"metric": "kid", "value": 0.5, "std": None, "kid_one_subset": True, "n_samples": 8,
           "reference": {"dataset": "digits", "split": "test", "size": 8}}
    assert "0.5000 (one subset)" in format_table([rec]) and "±" not in format_table([rec])


def test_kid_on_the_whole_of_both_sets_is_recorded_as_one_subset(tmp_path):
    """evaluate: 8 samples against 8 reference images make every KID subset the whole of both sets (std None,
    printed "(one subset)"); 8 against 16 keep a spread."""
    from test_metrics import TINY_FE

    from genproc.metrics.evaluate import evaluate, format_table

    run = genproc.train(_recipe(max_steps=2), tmp_path / "run", **QUIET)
    kw = {"n": 8, "batch_size": 4, "extractor": TINY_FE, "cache_dir": tmp_path / "cache", "log": lambda *_: None}
    (one,) = evaluate(run, "kid", n_ref=8, **kw)
    (two,) = evaluate(run, "kid", n_ref=16, **kw)
    assert one["kid_one_subset"] and one["std"] is None and "(one subset)" in format_table([one])
    assert not two["kid_one_subset"] and two["std"] > 0 and "±" in format_table([two])


def test_a_file_system_error_in_any_command_is_one_line(tmp_path, monkeypatch):
    """`genproc sample` into a folder it cannot write: one line naming the path and the cause."""
    from genproc.engine import sampler

    run = tmp_path / "run"
    genproc.train(_recipe(max_steps=2), run, **QUIET)

    def denied(result, out, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(sampler, "write_samples", denied)
    monkeypatch.setattr("genproc.engine.write_samples", denied)
    one_line_error(runner.invoke(app, ["sample", str(run), "--n", "2", "--out", str(tmp_path / "ro")]),
                   "cannot access", str(tmp_path / "ro"), "Permission denied")


def test_sampling_needs_only_its_weights_intact_resuming_needs_all(tmp_path):
    """A damaged state.pt (optimiser state) does not stop sampling from that checkpoint; resuming falls back."""
    run = tmp_path / "run"
    genproc.train(_recipe(max_steps=4), run, **QUIET)
    _truncate(run / "checkpoints" / "step_00000004" / "state.pt")
    assert genproc.load(run).step == 4 and (run / "checkpoints" / "step_00000004").is_dir()
    logs: list[str] = []
    genproc.train(_recipe(max_steps=4), run, max_steps=6, progress=False, log=logs.append)
    assert any("state.pt has 100 bytes" in m for m in logs) and any("from step 2" in m for m in logs)
