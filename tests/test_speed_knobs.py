"""The engine's speed knobs (train.compile, channels_last, fused_adam, tf32) change no result beyond float tolerance:
the same losses at every logged step and the same trained function (outputs on fixed inputs) as the default run, on
CPU; compilation failures fall back to eager with one line; the knobs are resumable changes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from genproc.engine import train
from genproc.errors import GenprocError
from genproc.recipe import recipe_from_dict


def _run(tmp_path, name: str, steps: int = 6, logs: list | None = None, **train_kw):
    d = tiny_recipe("ihdm", max_steps=steps, log_every=1, **train_kw)
    run_dir = tmp_path / name
    train(recipe_from_dict(d), run_dir, progress=False, log=(logs.append if logs is not None else lambda *_: None))
    losses = [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    (ck,) = sorted((run_dir / "checkpoints").iterdir())[-1:]
    from genproc.nets import build_net

    r = recipe_from_dict(d)
    net = build_net(r.net, r.data.channels, r.data.image_hw)
    net.load_state_dict(load_file(str(ck / "model.safetensors")))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the trained function on fixed inputs (Adam makes tiny weights sign-sensitive: compare outputs)
        return losses, net.eval()(x, torch.tensor([1, 2, 3, 5]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("knobs"), "default")


@pytest.mark.parametrize("knobs", [{"channels_last": True}, {"fused_adam": "on"},
                                   {"channels_last": True, "fused_adam": "on"}])  # tf32 acts on CUDA only: test_cuda.py
def test_knobs_keep_the_loss_curve_and_the_weights(tmp_path, reference, knobs):
    losses, out = _run(tmp_path, "knob", **knobs)
    ref_losses, ref_out = reference
    assert len(losses) == len(ref_losses) == 6
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out, ref_out, rtol=1e-3, atol=1e-3 * float(ref_out.abs().max()))


def test_compile_matches_eager_on_cpu(tmp_path, reference):
    """train.compile = true (inductor on CPU; about a minute of compilation): it really compiles (no fallback line)
    and gives the same loss curve and trained function within float tolerance."""
    logs: list[str] = []
    losses, out = _run(tmp_path, "compiled", logs=logs, compile=True)
    assert not [m for m in logs if "torch.compile" in m], logs
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference[0]), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(out, reference[1], rtol=1e-3, atol=1e-3 * float(reference[1].abs().max()))


def test_a_failing_compile_falls_back_to_eager_with_one_line(tmp_path, reference, monkeypatch):
    def broken(model, *a, **k):
        def call(*args, **kwargs):
            raise RuntimeError("inductor: no C++ compiler\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    logs: list[str] = []
    d = tiny_recipe("ihdm", max_steps=6, log_every=1, compile=True)
    train(recipe_from_dict(d), tmp_path / "fallback", progress=False, log=logs.append)
    warnings = [m for m in logs if "torch.compile failed" in m]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0] and "more detail" not in warnings[0]
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "fallback" / "metrics.jsonl").read_text().splitlines())]
    assert losses == reference[0]  # eager: bit-identical to the default run


def test_knobs_are_validated_and_resumable(tmp_path):
    with pytest.raises(GenprocError, match="train.tf32"):
        recipe_from_dict(tiny_recipe("ihdm", tf32="yes"))
    d = tiny_recipe("ihdm", max_steps=2)
    train(recipe_from_dict(d), tmp_path / "r", progress=False, log=lambda *_: None)
    d2 = tiny_recipe("ihdm", max_steps=4, channels_last=True, fused_adam="on")
    res = train(recipe_from_dict(d2), tmp_path / "r", progress=False, log=lambda *_: None)
    assert res.step == 4
