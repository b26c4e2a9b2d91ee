"""Engine behaviour: the loss falls, resume equals an uninterrupted run, atomic checkpoints, sampler RNG."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Normal, kl_divergence

from genproc.engine import checkpoint as ckpt
from genproc.engine import generate, train
from genproc.engine.batches import EpochOrder
from genproc.recipe import recipe_from_dict


def _weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


def test_resume_equals_uninterrupted(tmp_path, tiny_dict):
    r = recipe_from_dict(tiny_dict)
    a, b = tmp_path / "a", tmp_path / "b"
    train(r, a, max_steps=6, progress=False, log=lambda *_: None)
    train(r, b, max_steps=3, progress=False, log=lambda *_: None)  # stops at 3 (a checkpoint at 2 and 3)
    shutil.rmtree(b / "checkpoints" / "step_00000003")  # as if killed right after step 2's checkpoint
    res = train(r, b, max_steps=6, progress=False, log=lambda *_: None)
    assert res.step == 6
    wa, wb = _weights(a, 6), _weights(b, 6)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bit-exact on CPU in fp32
    ea = load_file(str(a / "checkpoints" / "step_00000006" / "ema.safetensors"))
    eb = load_file(str(b / "checkpoints" / "step_00000006" / "ema.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_max_steps_is_a_global_step_and_rerun_is_noop(tmp_path, tiny_dict):
    r = recipe_from_dict(tiny_dict)
    train(r, tmp_path, max_steps=4, progress=False, log=lambda *_: None)
    res = train(r, tmp_path, max_steps=4, progress=False, log=lambda *_: None)
    assert res.step == 4
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]


def test_loss_falls_on_tiny_data(tmp_path, tiny_dict):
    tiny_dict["train"].update(max_steps=60, log_every=10, checkpoint_every=60, batch_size=16)
    tiny_dict["net"]["dropout"] = 0.0
    train(recipe_from_dict(tiny_dict), tmp_path, progress=False, log=lambda *_: None)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2])


def test_interrupted_checkpoint_write_leaves_previous_loadable(tmp_path, tiny_dict, monkeypatch):
    r = recipe_from_dict(tiny_dict)
    train(r, tmp_path, max_steps=2, progress=False, log=lambda *_: None)

    # a process killed mid-write leaves a partial temporary folder behind (SIGKILL runs no cleanup)
    stray = tmp_path / "checkpoints" / ".tmp-step_00000004-999999"
    stray.mkdir()
    (stray / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002"]  # never counted as a checkpoint
    latest = ckpt.resolve_checkpoint(tmp_path)
    assert latest.name == "step_00000002"
    ckpt.load_weights(latest, "ema")
    res = train(r, tmp_path, max_steps=4, progress=False, log=lambda *_: None)  # resumes from step 2
    assert res.step == 4 and not stray.exists()  # the next save sweeps it away


def test_epoch_order_covers_data_and_is_deterministic():
    o1, o2 = EpochOrder(10, seed=3), EpochOrder(10, seed=3)
    first = torch.cat([o1.global_batch(s, 5) for s in range(2)])
    assert sorted(first.tolist()) == list(range(10))  # one epoch = a permutation
    assert torch.equal(o1.global_batch(7, 4), o2.global_batch(7, 4))


class _ZeroNet(torch.nn.Module):
    def forward(self, x, k):
        return torch.zeros_like(x)


def test_sample_i_independent_of_batch_size(tiny_dict):
    from genproc.data import build_dataset
    from genproc.processes import build_process

    r = recipe_from_dict(tiny_dict)
    data, proc = build_dataset(r.data), build_process(r.process)
    a = generate(proc, _ZeroNet(), 6, shape=(1, 8, 8), data=data, seed=5, batch_size=6, capture_every=-1)
    b = generate(proc, _ZeroNet(), 6, shape=(1, 8, 8), data=data, seed=5, batch_size=4, capture_every=-1)
    assert torch.equal(a.images, b.images)
    c = generate(proc, _ZeroNet(), 6, shape=(1, 8, 8), data=data, seed=6, batch_size=6, capture_every=-1)
    assert not torch.equal(a.images, c.images)


def test_same_init_and_share_noise(tiny_dict):
    from genproc.data import build_dataset
    from genproc.processes import build_process

    r = recipe_from_dict(tiny_dict)
    data, proc = build_dataset(r.data), build_process(r.process)
    both = generate(proc, _ZeroNet(), 3, shape=(1, 8, 8), data=data, seed=1, same_init=True, share_noise=True, capture_every=1)
    assert torch.equal(both.images[0], both.images[2])
    init = generate(proc, _ZeroNet(), 3, shape=(1, 8, 8), data=data, seed=1, same_init=True, capture_every=1)
    assert torch.equal(init.trajectory[0, 0], init.trajectory[0, 1])  # same prior state
    assert not torch.equal(init.images[0], init.images[1])  # different noise
    assert init.trajectory.shape[0] == r.process.K + 1 and init.levels[0] == r.process.K and init.levels[-1] == 0


def test_in_training_evaluation_is_logged(tmp_path, tiny_dict):
    """train.eval_every: the EMA model is evaluated during training and the values land in metrics.jsonl
    (NLL here: FID needs Inception weights); a bad metric fails before any training step."""
    import genproc  # the library's train builds the evaluation callback the engine calls
    from genproc.errors import GenprocError

    tiny_dict["train"].update(max_steps=4, eval_every=2, eval_metrics="nll", eval_n=3)
    genproc.train(recipe_from_dict(tiny_dict), tmp_path / "run", progress=False, log=lambda *_: None)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [d for d in lines if "eval" in d]
    assert [d["step"] for d in evals] == [2, 4] and all(d["eval_n"] == 3 for d in evals)
    # The bound's terms are a KL bound and squared errors (>= 0) plus the (sigma, delta)-only part of Eq. (10)/(11):
    # (K-1) KL(N(0, sigma^2) || N(0, delta^2)) - log N(0 | 0, delta^2) per dim, so bits/dim >= (that + log 256) / log 2.
    z = torch.tensor(0.0, dtype=torch.float64)
    per_dim = 4 * kl_divergence(Normal(z, 0.01), Normal(z, 0.0125)) - Normal(z, 0.0125).log_prob(z)  # K = 5
    assert all(d["eval"]["nll"] >= (float(per_dim) + math.log(256)) / math.log(2) for d in evals)
    assert sorted((tmp_path / "run" / "eval").glob("nll-step00000002-test-n3-*.json"))
    # it is the EMA weights of that step: the saved checkpoint, evaluated afresh, gives the same number
    from genproc.metrics import evaluate

    for d in evals:
        (rec,) = evaluate(tmp_path / "run", "nll", n=3, checkpoint=str(d["step"]), seed=tiny_dict["seed"], log=lambda *_: None)
        assert rec["value"] == pytest.approx(d["eval"]["nll"], rel=1e-9)
    tiny_dict["train"]["eval_metrics"] = "nll,fd"
    with pytest.raises(GenprocError, match="unknown metric 'fd'"):
        genproc.train(recipe_from_dict(tiny_dict), tmp_path / "bad", progress=False, log=lambda *_: None)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("native", [True, False])
def test_slow_precision_warning_only_without_native_kernels(monkeypatch, request, native):
    from genproc.engine.sampler import _native_cpu_kernels, slow_precision_warning

    class FakeMkldnn:
        @staticmethod
        def _is_mkldnn_bf16_supported():
            return native

        @staticmethod
        def _is_mkldnn_fp16_supported():
            return native

    monkeypatch.setattr(torch.ops, "mkldnn", FakeMkldnn)
    _native_cpu_kernels.cache_clear()  # the check is memoised per process: start and end with a fresh one
    request.addfinalizer(_native_cpu_kernels.cache_clear)
    cpu = torch.device("cpu")
    assert slow_precision_warning(cpu, "fp32") is None
    assert slow_precision_warning(torch.device("cuda", 0), "bf16") is None  # GPUs have the kernels
    for p in ("bf16", "fp16"):
        msg = slow_precision_warning(cpu, p)
        assert (msg is None) if native else (p in msg and "slower than fp32" in msg and "\n" not in msg)
