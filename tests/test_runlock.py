"""One trainer per run dir (an flock on <run_dir>/train.lock) and ``genproc runs``, which reports it (issue 21)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import yaml
from conftest import TINY, one_line_error
from typer.testing import CliRunner

from genproc.cli import app
from genproc.engine.runlock import LOCK_FILE, acquire, lock_holder

runner = CliRunner()
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# a process that takes the run dir's lock, says so, and holds it until killed (optionally forking a child first)
HOLDER = """
import os, sys, time
from genproc.engine.runlock import acquire
acquire(sys.argv[1])
if len(sys.argv) == 2:
    print("locked", os.getpid(), flush=True)
elif os.fork() == 0:
    print("child", os.getpid(), flush=True)  # printed after the fork hook ran in this child
time.sleep(3600)
"""


def _recipe_file(tmp_path):
    d = {**TINY, "train": {**TINY["train"], "max_steps": 4}}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _train(recipe, run, *more):
    return runner.invoke(app, ["train", str(recipe), "--run-dir", str(run), "--no-progress", *more])


def test_a_second_training_of_a_locked_run_dir_is_one_line_and_sampling_stays_allowed(tmp_path):
    recipe, run = _recipe_file(tmp_path), tmp_path / "run"
    assert _train(recipe, run, "--max-steps", "2").exit_code == 0
    assert lock_holder(run) is None  # released when the training ended; the file stays
    assert (run / LOCK_FILE).is_file()
    lock = acquire(run)  # another open file description: the CLI's training below conflicts with it
    try:
        holder = lock_holder(run)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        r = _train(recipe, run)
        one_line_error(r, f"run dir {run} is being trained by pid {os.getpid()} on host {socket.gethostname()} since "
                          f"{holder['since']}", "another --run-dir")
        assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [2]  # nothing added
        s = runner.invoke(app, ["sample", str(run), "--n", "2", "--out", str(tmp_path / "s")])
        assert s.exit_code == 0, s.output
        assert "run: step 2/4 | " in (st := runner.invoke(app, ["runs", str(run)])).output
        assert st.output.rstrip().endswith(f"training now (pid {os.getpid()})"), st.output
    finally:
        lock.release()
    assert lock_holder(run) is None
    assert runner.invoke(app, ["runs", str(run)]).output.rstrip().endswith("| idle")
    assert _train(recipe, run).exit_code == 0


def _holder(run, *fork):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), *fork], stdout=subprocess.PIPE, text=True, env=ENV)
    return p, p.stdout.readline().split()


def test_after_the_holder_is_sigkilled_a_new_training_starts_at_once_and_resumes(tmp_path):
    recipe, run = _recipe_file(tmp_path), tmp_path / "run"
    assert _train(recipe, run, "--max-steps", "2").exit_code == 0
    p, said = _holder(run)
    try:
        assert said == ["locked", str(p.pid)] and lock_holder(run)["pid"] == p.pid
        one_line_error(_train(recipe, run), f"is being trained by pid {p.pid} on host")
    finally:
        p.kill()  # SIGKILL: no handler runs, the lock file stays behind
        p.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == p.pid  # a stale record ...
    assert lock_holder(run) is None  # ... that holds nothing
    r = _train(recipe, run)
    assert r.exit_code == 0 and f"resuming {run} from step 2" in r.output, r.output


def test_a_child_forked_by_the_trainer_does_not_keep_the_run_dir_locked(tmp_path):
    """A DataLoader worker is a fork of the trainer: if the trainer is killed, the worker must not hold the lock."""
    p, said = _holder(tmp_path / "run", "fork")
    child = int(said[1])
    try:
        assert said[0] == "child" and lock_holder(tmp_path / "run")["pid"] == p.pid
        p.kill()
        p.wait()
        os.kill(child, 0)  # the child still lives ...
        assert lock_holder(tmp_path / "run") is None  # ... and holds nothing
    finally:
        p.kill()
        os.kill(child, signal.SIGKILL)


# ------------------------------------------------------------------ genproc runs
def test_runs_reports_step_loss_speed_evaluation_checkpoint_and_plots(tmp_path, tiny_runs):
    r = runner.invoke(app, ["runs", str(tiny_runs["heat"].parent), "--plot", "--out", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if not x.startswith("  ")]
    assert [x.split(":")[0] for x in lines] == ["ddpm", "heat"]
    for line in lines:
        name, fields = line.split(": ", 1)
        last = [json.loads(x) for x in (tiny_runs[name] / "metrics.jsonl").read_text().splitlines()][-1]
        assert fields.split(" | ") == ["step 6/6", f"loss {last['loss']:.4g}", f"{last['img_per_s']:.1f} img/s",
                                       "no evaluation", "checkpoint step_00000006", "idle"], line
        assert (tmp_path / "plots" / f"{name}_loss.png").stat().st_size > 1000


def test_runs_names_a_damaged_checkpoint_and_metrics_file_and_a_missing_one_in_its_line(tmp_path):
    from conftest import tiny_recipe

    import genproc
    from genproc.recipe import recipe_from_dict

    runs = tmp_path / "runs"
    d = tiny_recipe("ihdm", max_steps=4, eval_every=2, eval_metrics="nll", eval_n=2)
    genproc.train(recipe_from_dict(d), runs / "a", progress=False, log=lambda *_: None)
    metrics = runs / "a" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 5, "loss": 0.')  # a write cut by a kill
    (runs / "a" / "checkpoints" / "step_00000004" / "ema.safetensors").write_bytes(b"cut")
    (runs / "b").mkdir(parents=True)
    (runs / "b" / "recipe.yaml").write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["runs", str(runs), "--plot"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    a, b = [x for x in r.output.splitlines() if not x.startswith("  ")]
    assert a.startswith("a: step 4/4 | loss ") and "eval nll " in a and "at step 4 (n=2)" in a, a
    assert "metrics.jsonl: 1 damaged line(s) skipped | checkpoint step_00000002 | step_00000004 damaged: ema" in a, a
    assert b == "b: step ?/4 | no metrics.jsonl yet | no intact checkpoint | idle"
    assert f"no loss logged in {runs / 'b' / 'metrics.jsonl'}: nothing to plot" in r.output
    assert (runs / "a" / "loss.png").is_file() and not (runs / "b" / "loss.png").exists()
    assert (runs / "a" / "checkpoints" / "step_00000004").is_dir()  # only read: nothing set aside


@pytest.mark.parametrize("case", ["missing", "empty", "one_png_for_two"])
def test_runs_bad_input_is_one_line(tmp_path, tiny_runs, case):
    if case == "missing":
        one_line_error(runner.invoke(app, ["runs", str(tmp_path / "nope")]), "runs folder not found", "nope")
    elif case == "empty":
        one_line_error(runner.invoke(app, ["runs", str(tmp_path)]), f"no run dir in {tmp_path}", "recipe.yaml")
    else:
        one_line_error(runner.invoke(app, ["runs", str(tiny_runs["heat"].parent), "--plot", "--out", str(tmp_path / "x.png")]),
                       "is one PNG but", "holds 2 runs")
