"""DDP on CPU: 2 gloo processes under torchrun match one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file


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
    tiny_dict["train"].update(max_steps=4, log_every=1, checkpoint_every=4, adam_eps=1e-3)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_dict))
    single, multi = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "genproc.cli", "train", str(recipe), "--run-dir", str(single), "--no-progress"], tmp_path)
    r = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
              "-m", "genproc.cli", "train", str(recipe), "--run-dir", str(multi), "--no-progress"], tmp_path)
    assert "global batch 8 = 2 process(es) x 4" in r.stdout
    la = [json.loads(x)["loss"] for x in (single / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (multi / "metrics.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 4
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-9)
    wa = load_file(str(single / "checkpoints" / "step_00000004" / "model.safetensors"))
    wb = load_file(str(multi / "checkpoints" / "step_00000004" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)
