"""End to end through the CLI on tiny data: train -> sample, resume, dry runs, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from genproc.cli import app

runner = CliRunner()
RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    for n in needles:
        assert n in text, text


def test_train_then_sample(tmp_path, tiny_recipe_file):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tiny_recipe_file), "--run-dir", str(run), "--no-progress", "--set", "train.sample_every=3"])
    assert r.exit_code == 0, r.output
    assert (run / "recipe.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert (run / "samples" / "step_00000003.png").is_file() and (run / "samples" / "step_00000006.gif").is_file()
    out = tmp_path / "s"
    r = runner.invoke(app, ["sample", str(run), "--n", "5", "--out", str(out), "--batch-size", "2", "--seed", "3", "--delta", "0.02"])
    assert r.exit_code == 0, r.output
    for f in ["grid.png", "sequence.gif", "samples.npz", "images/000004.png"]:
        assert (out / f).is_file(), f
    z = np.load(out / "samples.npz")
    assert z["images"].shape == (5, 1, 8, 8) and 0 <= z["images"].min() and z["images"].max() <= 1
    assert z["trajectory"].shape[1:] == (5, 1, 8, 8)
    r = runner.invoke(app, ["sample", str(run), "--n", "5", "--out", str(tmp_path / "s2"), "--seed", "3", "--delta", "0.02"])
    # batch size does not matter, up to the convolution kernels' float rounding (they may pick other algorithms for
    # other batch sizes: 3e-8 seen here)
    np.testing.assert_allclose(np.load(tmp_path / "s2" / "samples.npz")["images"], z["images"], atol=1e-6, rtol=0)
    r = runner.invoke(app, ["sample", str(run), "--n", "5", "--out", str(tmp_path / "s3"), "--seed", "3", "--delta", "0.02",
                            "--precision", "fp32", "--capture-every", "-1"])
    assert r.exit_code == 0, r.output  # fp32 is the recipe's precision: the same samples
    np.testing.assert_allclose(np.load(tmp_path / "s3" / "samples.npz")["images"], z["images"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_dry_run_every_recipe(path):
    r = runner.invoke(app, ["train", str(path), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "# parameters:" in r.output and yaml.safe_load(r.output)["name"] == path.stem


def test_error_unknown_key(tiny_recipe_file):
    _one_line_error(runner.invoke(app, ["train", str(tiny_recipe_file), "--dry-run", "--set", "train.bach_size=3"]),
                    "train.bach_size", "train.batch_size")


def test_error_wrong_type(tiny_recipe_file):
    _one_line_error(runner.invoke(app, ["train", str(tiny_recipe_file), "--dry-run", "--set", "train.lr=fast"]), "train.lr")


def test_error_missing_data_folder(tmp_path, tiny_recipe_file):
    r = runner.invoke(app, ["train", str(tiny_recipe_file), "--run-dir", str(tmp_path / "r"), "--set", "data.name=mnist",
                            "--set", "data.image_size=28", "--data-root", str(tmp_path / "nowhere")])
    _one_line_error(r, "nowhere", "train-images-idx3-ubyte")


def test_error_corrupt_image(tmp_path, tiny_recipe_file):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"not a png at all")
    r = runner.invoke(app, ["train", str(tiny_recipe_file), "--run-dir", str(tmp_path / "r"), "--set", "data.name=folder",
                            "--data-root", str(folder)])
    _one_line_error(r, "bad.png")


def test_error_checkpoint_from_other_recipe(tmp_path, tiny_recipe_file):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(tiny_recipe_file), "--run-dir", str(run), "--max-steps", "2", "--no-progress"]).exit_code == 0
    r = runner.invoke(app, ["train", str(tiny_recipe_file), "--run-dir", str(run), "--set", "net.channels=16", "--no-progress"])
    _one_line_error(r, "different recipe", "net.channels")


def test_error_sample_missing_run_dir(tmp_path):
    _one_line_error(runner.invoke(app, ["sample", str(tmp_path / "nope")]), "run dir not found")


def test_error_sample_bad_precision(tmp_path):
    _one_line_error(runner.invoke(app, ["sample", str(tmp_path), "--precision", "fp8"]), "--precision", "fp32, bf16 or fp16", "fp8")


def test_error_sample_run_dir_without_checkpoint(tmp_path):
    _one_line_error(runner.invoke(app, ["sample", str(tmp_path)]), "no checkpoint")


def test_help():
    for args in (["--help"], ["train", "--help"], ["sample", "--help"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Usage" in r.output


def test_sigterm_saves_checkpoint_and_resumes(tmp_path, tiny_recipe_file):
    """A real process: SIGTERM mid-run -> checkpoint at the current step, exit 130; rerun resumes."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "genproc.cli", "train", str(tiny_recipe_file), "--run-dir", str(run), "--no-progress",
           "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=100000"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "checkpoint saved at step" in out
    from genproc.engine.checkpoint import resolve_checkpoint

    step = int(resolve_checkpoint(run).name.split("_")[1])
    assert step >= 2
    r = subprocess.run(cmd[:-4] + ["--max-steps", str(step + 2)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming {run} from step {step}" in r.stdout


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, tiny_recipe_file):
    """Acceptance: SIGKILL mid-run, re-run the same command -> resumes; final fp32 weights equal an uninterrupted run's."""
    import torch
    from safetensors.torch import load_file

    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "genproc.cli", "train", str(tiny_recipe_file), "--no-progress", "--max-steps", "40",
            "--set", "train.checkpoint_every=5", "--set", "train.keep_checkpoints=2"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    p = subprocess.Popen(base + ["--run-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "step_00000010").exists():
        time.sleep(0.05)
    p.kill()  # SIGKILL: no handler runs
    p.wait()
    from genproc.engine.checkpoint import resolve_checkpoint

    step = int(resolve_checkpoint(killed).name.split("_")[1])
    assert 10 <= step < 40, step
    r = subprocess.run(base + ["--run-dir", str(killed)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "resuming" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(base + ["--run-dir", str(clean)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    for which in ("model", "ema"):
        a = load_file(str(killed / "checkpoints" / "step_00000040" / f"{which}.safetensors"))
        b = load_file(str(clean / "checkpoints" / "step_00000040" / f"{which}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), which
