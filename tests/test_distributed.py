"""DDP on CPU: 2 gloo processes under torchrun match one process: training with the same global batch (and its
in-training sample grid and evaluation, split across the ranks), ``genproc sample`` and ``evaluate`` (samples, FID/KID
features and NLL terms split across the ranks) and ``compare`` (training and evaluating both processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_single_process(tmp_path, tiny_dict):
    tiny_dict["net"]["dropout"] = 0.0  # dropout masks differ by rank by design; everything else must match
    # Adam's update m/sqrt(v) is ~sign(g) for near-zero gradients, which turns float summation-order
    # noise (~1e-9) into a full lr-sized step; a larger eps keeps the update continuous in g, so the
    # weights can be compared to float tolerance.
    tiny_dict["train"].update(max_steps=4, log_every=1, checkpoint_every=4, adam_eps=1e-3, sample_every=4, eval_every=4,
                              eval_metrics="nll", eval_n=7)
    tiny_dict["sample"].update(n=5, batch_size=2)  # 5 samples: shards of 3 and 2
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_dict))
    single, multi = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "genproc.cli", "train", str(recipe), "--run-dir", str(single), "--no-progress"], tmp_path)
    r = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
              "-m", "genproc.cli", "train", str(recipe), "--run-dir", str(multi), "--no-progress"], tmp_path)
    assert "global batch 8 = 2 process(es) x 4" in r.stdout
    ra = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (multi / "metrics.jsonl").read_text().splitlines()]
    la, lb = [r["loss"] for r in ra if "loss" in r], [r["loss"] for r in rb if "loss" in r]
    assert len(la) == len(lb) == 4
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-9)
    (ea,), (eb,) = [r["eval"] for r in ra if "eval" in r], [r["eval"] for r in rb if "eval" in r]  # one record, rank 0's
    assert ea["nll"] == pytest.approx(eb["nll"], rel=1e-4)
    from PIL import Image

    ga, gb = (np.asarray(Image.open(d / "samples" / "step_00000004.png"), dtype=float) for d in (single, multi))
    assert ga.shape == gb.shape and np.abs(ga - gb).max() <= 1  # 8-bit grids of the same 5 samples
    wa = load_file(str(single / "checkpoints" / "step_00000004" / "model.safetensors"))
    wb = load_file(str(multi / "checkpoints" / "step_00000004" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


EVALUATE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import test_metrics  # registers the stand-in feature extractor with torch-fidelity
from genproc.engine.distributed import init_distributed, shutdown
from genproc.metrics import evaluate

info = init_distributed("cpu")
recs = evaluate(sys.argv[2], "fid,kid,nll", n=7, n_ref=9, seed=3, batch_size=2, extractor=test_metrics.TINY_FE,
                cache_dir=sys.argv[3], log=lambda *_: None)
if info.is_main:
    open(sys.argv[4], "w").write(json.dumps(recs))
shutdown(info)
"""


def _torchrun(*args: str) -> list[str]:
    """torchrun with 2 processes; a '--' before the script keeps torchrun from reading its options (--n) as its own."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
            *args]


def test_sample_and_evaluate_across_two_gloo_ranks_match_single_process(tmp_path, tiny_runs_no_ema):
    from test_metrics import TINY_FE

    from genproc.metrics import evaluate

    run = tiny_runs_no_ema["heat"]
    # genproc sample: 5 samples in shards of 3 and 2, batches of 2, with the trajectory
    _run([sys.executable, "-m", "genproc.cli", "sample", str(run), "--n", "5", "--out", str(tmp_path / "one")], tmp_path)
    r = _run(_torchrun("-m", "--", "genproc.cli", "sample", str(run), "--n", "5", "--batch-size", "2", "--out",
                       str(tmp_path / "two")), tmp_path)
    assert r.stdout.count("5 samples from") == 1  # rank 0 alone reports and writes
    a, b = np.load(tmp_path / "one" / "samples.npz"), np.load(tmp_path / "two" / "samples.npz")
    assert a["images"].shape == b["images"].shape == (5, 1, 8, 8) and a["images"].std() > 0.01
    np.testing.assert_allclose(a["images"], b["images"], atol=1e-5)
    np.testing.assert_allclose(a["trajectory"], b["trajectory"], atol=1e-5)
    np.testing.assert_array_equal(a["trajectory_levels"], b["trajectory_levels"])

    # evaluate: FID/KID features and NLL terms across 2 ranks (7 samples: 4 + 3; 9 reference images: 5 + 4)
    one = evaluate(run, "fid,kid,nll", n=7, n_ref=9, seed=3, batch_size=2, extractor=TINY_FE, cache_dir=tmp_path / "c1",
                   log=lambda *_: None)
    script = tmp_path / "eval_ranks.py"
    script.write_text(EVALUATE_SCRIPT)
    out = tmp_path / "ranks.json"
    _run(_torchrun("--", str(script), str(REPO / "tests"), str(run), str(tmp_path / "c2"), str(out)), tmp_path)
    two = json.loads(out.read_text())
    assert [x["metric"] for x in two] == [x["metric"] for x in one] == ["fid", "kid", "nll"]
    assert [x["ranks"] for x in two] == [2, 2, 2] and not two[0]["reference"]["cached"]
    for x, y in zip(one, two):
        assert x["value"] == pytest.approx(y["value"], rel=1e-5), x["metric"]
    assert one[0]["value"] > 0 and one[2]["terms_nats"] == pytest.approx(two[2]["terms_nats"], rel=1e-6)
    assert one[2]["std_error_bits_per_dim"] == pytest.approx(two[2]["std_error_bits_per_dim"], rel=1e-5)
    # genproc evaluate itself under torchrun: rank 0 prints and writes one record, the single-process value
    r = _run(_torchrun("-m", "--", "genproc.cli", "evaluate", str(run), "--metrics", "nll", "--n", "7", "--seed", "3",
                       "--batch-size", "2"), tmp_path)
    assert r.stdout.count("wrote ") == 1
    rec = json.loads(Path(r.stdout.split("wrote ")[-1].strip()).read_text())
    assert rec["ranks"] == 2 and rec["value"] == pytest.approx(one[2]["value"], rel=1e-6)
    # the reference features the ranks embedded are torch-fidelity's own cache: one process reads them back
    cache = sorted(f.name for f in (tmp_path / "c2").iterdir())
    assert cache and not any("gathered" in f for f in cache)
    again = evaluate(run, "fid,kid", n=7, n_ref=9, seed=3, batch_size=2, extractor=TINY_FE, cache_dir=tmp_path / "c2",
                     log=lambda *_: None)
    assert again[0]["reference"]["cached"] and again[0]["value"] == pytest.approx(one[0]["value"], rel=1e-5)


def test_compare_under_torchrun_trains_and_evaluates_like_one_process(tmp_path):
    """`genproc compare` under torchrun: both processes train with DDP (the process group outlives each training),
    every rank measures and rank 0 alone writes the report, whose values equal one process's."""
    from conftest import tiny_recipe

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for p in ("ihdm", "ddpm"):
        (recipes / f"{p}_digits_small.yaml").write_text(yaml.safe_dump(tiny_recipe(p, "digits_small", adam_eps=1e-3)))
    args = ["compare", "ihdm", "ddpm", "--dataset", "digits", "--recipes-dir", str(recipes), "--budget", "4", "--n", "6",
            "--metrics", "nll", "--grid", "3"]
    _run([sys.executable, "-m", "genproc.cli", *args, "--out", str(tmp_path / "one")], tmp_path)
    r = _run(_torchrun("-m", "--", "genproc.cli", *args, "--out", str(tmp_path / "two")), tmp_path)
    assert r.stdout.count("wrote ") == 1 and "global batch 8 = 2 process(es) x 4" in r.stderr
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["process"] == rb["process"] and ra["budget_steps"] == rb["budget_steps"] == 4
        assert ra["nll"] == pytest.approx(rb["nll"], rel=1e-4)
        assert ra["grad_r50"] == pytest.approx(rb["grad_r50"], rel=1e-3, abs=1e-3)
    assert not list(Path(tempfile.gettempdir()).glob("genproc-compare-rank*"))  # the other rank's scratch report is gone
