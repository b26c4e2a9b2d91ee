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


# ------------------------------------------------------------------ EMA warm-up (issue 21)
def _ckpt_file(run_dir, step, which):
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / f"{which}.safetensors"))


def _sq_dist(a, b):
    return sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a if a[k].is_floating_point())


def test_ema_after_a_short_run_is_nearer_the_trained_weights_than_the_initial_ones(tmp_path, tiny_dict):
    """With the default warm-up the EMA of a 12-step run sits by the trained weights; with the constant decay 0.999 from
    step 0 (what runs did before) it is still ~99% the initial net, nearer those."""
    from genproc.nets import build_net

    tiny_dict["train"].update(max_steps=12, checkpoint_every=12, lr=1e-2, warmup_steps=1, ema=0.999)
    r = recipe_from_dict(tiny_dict)
    assert r.train.ema_warmup  # the default of a new recipe
    torch.manual_seed(r.seed)  # the trainer builds its initial net from the recipe's seed
    init = build_net(r.net, r.data.channels, r.data.image_hw).state_dict()
    for warmup, nearer_trained in ((True, True), (False, False)):
        tiny_dict["train"]["ema_warmup"] = warmup
        run = tmp_path / str(warmup)
        train(recipe_from_dict(tiny_dict), run, progress=False, log=lambda *_: None)
        raw, ema = _ckpt_file(run, 12, "model"), _ckpt_file(run, 12, "ema")
        assert _sq_dist(raw, init) > 0
        assert (_sq_dist(ema, raw) < _sq_dist(ema, init)) is nearer_trained, warmup


def test_ema_warmup_decay_is_timms_ramp_from_the_global_step(tmp_path, tiny_dict):
    """EMA after update 1 = the weights after step 1 (decay 0); after update 2 = d W1 + (1 - d) W2 with
    d = 1 - (1 + 1/gamma)^-power (timm ModelEmaV3 / diffusers EMAModel warm-up), capped at train.ema."""
    tiny_dict["train"].update(max_steps=2, checkpoint_every=1, keep_checkpoints=5, ema_warmup_gamma=2.0,
                              ema_warmup_power=0.5)
    train(recipe_from_dict(tiny_dict), tmp_path, progress=False, log=lambda *_: None)
    w1, w2, e1, e2 = (_ckpt_file(tmp_path, s, w) for s, w in ((1, "model"), (2, "model"), (1, "ema"), (2, "ema")))
    d = 1 - (1 + 1 / 2.0) ** -0.5  # 0.18 < ema 0.999
    for k in w1:
        torch.testing.assert_close(e1[k], w1[k], rtol=0, atol=1e-7)
        torch.testing.assert_close(e2[k], d * w1[k] + (1 - d) * w2[k], rtol=1e-5, atol=1e-7)


def test_a_run_recorded_before_the_ema_warmup_resumes_without_it(tmp_path, tiny_dict):
    """A stored recipe without train.ema_warmup reads as warm-up off (what such a run did), a new one as on; resuming
    such a run with today's default recipe keeps its constant-decay EMA, bit-equal to an uninterrupted run of it."""
    import genproc
    from genproc.recipe import Recipe, stored_recipe

    old = {k: v for k, v in tiny_dict.items()}
    old["train"] = {k: v for k, v in tiny_dict["train"].items() if not k.startswith("ema_warmup")}
    assert stored_recipe(old).train.ema_warmup is False
    assert recipe_from_dict(old).train.ema_warmup is True and Recipe().train.ema_warmup is True
    assert stored_recipe({**old, "train": {**old["train"], "ema_warmup": True}}).train.ema_warmup is True

    tiny_dict["train"].update(max_steps=4, ema_warmup=False)
    whole, old_run = tmp_path / "whole", tmp_path / "old"
    train(recipe_from_dict(tiny_dict), whole, progress=False, log=lambda *_: None)
    train(recipe_from_dict(tiny_dict), old_run, max_steps=2, progress=False, log=lambda *_: None)
    meta_path = old_run / "checkpoints" / "step_00000002" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("ema_warmup", "ema_warmup_gamma", "ema_warmup_power"):  # as written before these keys existed
        del meta["recipe"]["train"][key]
    meta_path.write_text(json.dumps(meta))
    assert genproc.load(old_run).recipe.train.ema_warmup is False
    del tiny_dict["train"]["ema_warmup"]  # today's default: on
    logs: list[str] = []
    train(recipe_from_dict(tiny_dict), old_run, progress=False, log=logs.append)
    assert any("recorded before train.ema_warmup existed" in m and "train.ema_warmup=false" in m for m in logs), logs
    a, b = _ckpt_file(whole, 4, "ema"), _ckpt_file(old_run, 4, "ema")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((old_run / "checkpoints" / "step_00000004" / "meta.json").read_text())["recipe"]["train"]["ema_warmup"] is False


@pytest.mark.parametrize("key, value, expected", [("ema_warmup_power", 0, "expected a number > 0, got 0"),
                                                  ("ema_warmup_gamma", -1.0, "expected a number > 0, got -1.0"),
                                                  ("ema_warmup", "yes", "expected true/false, got 'yes'")])
def test_bad_ema_warmup_values_name_the_field(tiny_dict, key, value, expected):
    from genproc.errors import GenprocError

    tiny_dict["train"][key] = value
    with pytest.raises(GenprocError) as e:
        recipe_from_dict(tiny_dict)
    assert f"'train.{key}'" in str(e.value) and expected in str(e.value) and "\n" not in str(e.value)


def test_the_stored_prior_line_is_logged_only_when_a_prior_is_written(tmp_path, tiny_dict, monkeypatch):
    """IHDM writes prior.safetensors and says so; a process whose prior_state gives None writes none and says that."""
    from genproc.processes.heat import HeatProcess

    tiny_dict["train"].update(max_steps=2)
    for gives_none in (False, True):
        if gives_none:
            monkeypatch.setattr(HeatProcess, "prior_state", lambda self, data: None)
        logs: list[str] = []
        run = tmp_path / str(gives_none)
        train(recipe_from_dict(tiny_dict), run, progress=False, log=logs.append)
        written = (run / "checkpoints" / "step_00000002" / "prior.safetensors").exists()
        said = [m for m in logs if "written into every checkpoint as prior.safetensors" in m]
        assert written is (not gives_none) and len(said) == (0 if gives_none else 1), logs
        assert any(m.startswith("no stored prior") for m in logs) is gives_none, logs
