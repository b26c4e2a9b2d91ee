"""CUDA checks (``pytest -m cuda``; skipped without a GPU): reduced-precision training steps stay finite (fp16 with the
GradScaler, bf16), checkpoint/resume is exact on the GPU, samples do not depend on the batch size there, a run loads
onto CUDA, in-memory data goes to the GPU once, the speed knobs work, and DDP under torchrun with NCCL trains. Run
by benchmarks/gpu_check.sh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_recipe
from safetensors.torch import load_file

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _train(tmp_path, name, **kw):
    from genproc.engine import train
    from genproc.recipe import recipe_from_dict

    d = tiny_recipe("ihdm", device="cuda", log_every=1, **kw)
    return train(recipe_from_dict(d), tmp_path / name, progress=False, log=lambda *_: None)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_steps_are_finite(tmp_path, precision):
    res = _train(tmp_path, precision, max_steps=8, precision=precision)
    lines = [json.loads(s) for s in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [d["loss"] for d in lines if "loss" in d and "skipped" not in d]
    assert res.step == 8 and losses and all(v is not None and v == v for v in losses)


def test_resume_on_cuda_is_exact(tmp_path):
    _train(tmp_path, "whole", max_steps=6)
    _train(tmp_path, "split", max_steps=3)
    _train(tmp_path, "split", max_steps=6)
    a = load_file(str(tmp_path / "whole/checkpoints/step_00000006/model.safetensors"))
    b = load_file(str(tmp_path / "split/checkpoints/step_00000006/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sampling_on_cuda_is_batch_size_invariant_and_loads(tmp_path):
    import genproc

    _train(tmp_path, "run", max_steps=2)
    run = genproc.load(tmp_path / "run", device="cuda")
    assert next(run.net.parameters()).device.type == "cuda"
    a = run.sample(6, seed=3, batch_size=6).images
    b = run.sample(6, seed=3, batch_size=2).images
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_in_memory_data_goes_to_the_gpu_once():
    """An in-memory training set is placed on the GPU by the batch iterator; its batches equal the CPU ones."""
    from genproc.data import build_dataset
    from genproc.engine.batches import EpochOrder, batch_iterator
    from genproc.recipe import recipe_from_dict

    data = build_dataset(recipe_from_dict(tiny_recipe("ihdm")).data, "train")
    order = EpochOrder(len(data), 0)
    cpu = list(batch_iterator(data, order, 0, 3, 8, slice(0, 8)))
    gpu = list(batch_iterator(data, order, 0, 3, 8, slice(0, 8), device="cuda"))
    assert all(b.device.type == "cuda" for b in gpu) and all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu))


def test_speed_knobs_on_cuda(tmp_path):
    res = _train(tmp_path, "knobs", max_steps=4, compile=True, channels_last=True, precision="bf16")
    assert res.step == 4


@pytest.mark.skipif(torch.cuda.device_count() < 2 or shutil.which("torchrun") is None, reason="needs 2 GPUs and torchrun")
def test_ddp_with_nccl(tmp_path):
    import yaml

    d = tiny_recipe("ihdm", max_steps=4, device="cuda")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(["torchrun", "--nproc-per-node", "2", "-m", "genproc.cli", "train", str(tmp_path / "r.yaml"),
                    "--run-dir", str(tmp_path / "ddp"), "--no-progress"], check=True, env=env, cwd=REPO, timeout=600,
                   stdout=sys.stdout, stderr=sys.stderr)
    assert (tmp_path / "ddp/checkpoints/step_00000004").is_dir()
