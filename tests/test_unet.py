"""The IHDM U-Net f(u, k) (App. B.1): shapes, zero-initialised output, level conditioning.

Nets are tiny (8-16 channels, one residual block per resolution) so the file runs in
about a second on a CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genproc.errors import GenprocError
from genproc.nets import build_net, count_parameters
from genproc.nets.unet import AttnBlock, ResBlock, UNet, UNetConfig, level_embedding

# (image size, channels, channel_mult, attn_resolutions, resample, image channels)
CONFIGS = [
    (28, 8, (1, 2, 2), (7,), "avgpool", 1),  # MNIST layout: 28 -> 14 -> 7
    (32, 8, (1, 2, 2, 2), (8, 4), "avgpool", 3),  # CIFAR-10 layout: 32 -> 16 -> 8 -> 4
    (16, 16, (1, 2), (8,), "avgpool", 3),
    (28, 8, (1, 2, 2), (7,), "conv", 1),  # strided-conv down / nearest + conv up
    (32, 8, (1, 2, 2, 2), (8, 4), "conv", 3),
]
IDS = [f"{s}px-{'x'.join(map(str, m))}-attn{'_'.join(map(str, a))}-{r}" for s, _, m, a, r, _ in CONFIGS]


def _net(size: int, ch: int, mult: tuple, attn: tuple, resample: str, c: int, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    cfg = UNetConfig(channels=ch, channel_mult=mult, num_res_blocks=1, attn_resolutions=attn, dropout=0.0, resample=resample)
    cfg.validate()
    return UNet(cfg, image_channels=c, image_size=size).eval()


def _inputs(n: int, c: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, c, size, size, generator=g), torch.tensor([1, 7, 50, 100][:n])


def _randomise_zero_init(net: nn.Module) -> None:
    """Give every zero-initialised parameter random values, so outputs depend on everything."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("size,ch,mult,attn,resample,c", CONFIGS, ids=IDS)
def test_output_shape_dtype_and_zero_init(size, ch, mult, attn, resample, c):
    net = _net(size, ch, mult, attn, resample, c)
    x, k = _inputs(3, c, size)
    out = net(x, k)
    assert out.shape == x.shape and out.dtype == torch.float32
    # Zero-initialised output layer: f(u, k) = 0, i.e. mu(u, k) = u at the start of training.
    assert torch.equal(out, torch.zeros_like(out))
    # Once the zero-initialised layers move, the output is a real function of u.
    _randomise_zero_init(net)
    out = net(x, k)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() > 0


@pytest.mark.parametrize("size,ch,mult,attn,resample,c", CONFIGS[:2], ids=IDS[:2])
def test_attention_runs_at_the_configured_resolutions(size, ch, mult, attn, resample, c):
    net = _net(size, ch, mult, attn, resample, c)
    seen: list[tuple[str, int]] = []
    for name, m in net.named_modules():
        if isinstance(m, AttnBlock):
            m.register_forward_hook(lambda mod, inp, out, part=name.split(".")[0]: seen.append((part, inp[0].shape[-1])))
    net(*_inputs(2, c, size))
    lowest = (size + 2 ** (len(mult) - 1) - 1) // 2 ** (len(mult) - 1)
    assert ("mid", lowest) in seen
    assert {r for p, r in seen if p == "down"} == set(attn)
    assert {r for p, r in seen if p == "up"} == set(attn)


def test_attention_in_up_path_after_odd_downsampling():
    """28 -> 14 -> 7 -> 4: the up path must use attention at 7 too, not at a phantom 8."""
    net = _net(28, 8, (1, 2, 2, 2), (7,), "avgpool", 1)
    seen: list[tuple[str, int]] = []
    for name, m in net.named_modules():
        if isinstance(m, AttnBlock):
            m.register_forward_hook(lambda mod, inp, out, part=name.split(".")[0]: seen.append((part, inp[0].shape[-1])))
    net(*_inputs(2, 1, 28))
    assert ("up", 7) in seen


def test_level_embedding_closed_form():
    """Sinusoidal embedding: [cos(k w_i), sin(k w_i)], w_i = 10000^(-i / half); odd dim zero-padded."""
    k = torch.tensor([0, 1, 37, 100])
    for dim in (8, 9):
        emb = level_embedding(k, dim)
        half = dim // 2
        assert emb.shape == (4, dim) and emb.dtype == torch.float32
        for row, kk in zip(emb, k.tolist()):
            for i in range(half):
                w = 10000 ** (-i / half)
                assert row[i].item() == pytest.approx(math.cos(kk * w), abs=1e-5)
                assert row[half + i].item() == pytest.approx(math.sin(kk * w), abs=1e-5)
        if dim % 2:
            assert torch.equal(emb[:, -1], torch.zeros(4))
    # every level 1..K gets its own embedding
    e = level_embedding(torch.arange(1, 201), 16)
    assert torch.cdist(e, e).add(torch.eye(200) * 10).min() > 1e-3


def test_different_levels_give_different_internal_embeddings():
    net = _net(28, 8, (1, 2, 2), (7,), "avgpool", 1)
    x, _ = _inputs(2, 1, 28)
    k = torch.tensor([3, 80])
    added: list[torch.Tensor] = []  # the per-block level term added to the features
    for m in net.modules():
        if isinstance(m, ResBlock):
            m.emb.register_forward_hook(lambda mod, inp, out: added.append(out))
    net(x, k)
    assert len(added) == sum(isinstance(m, ResBlock) for m in net.modules())
    for a in added:
        assert a.shape[0] == 2 and not torch.allclose(a[0], a[1])
    # ... and, once the zero-initialised layers have moved, the same u at two levels gives two outputs
    _randomise_zero_init(net)
    same_u = x[:1].expand(2, -1, -1, -1)
    out = net(same_u, k)
    assert not torch.allclose(out[0], out[1])
    assert torch.allclose(net(same_u, torch.tensor([3, 3]))[1], out[0], atol=1e-6)  # depends on k only via k


@pytest.mark.parametrize("resample", ["avgpool", "conv"])
def test_backward_reaches_every_parameter(resample):
    net = _net(16, 8, (1, 2), (8,), resample, 3).train()
    _randomise_zero_init(net)
    x, k = _inputs(2, 3, 16)
    x.requires_grad_()
    out = net(x, k)
    out.pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().max() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_zero_init_still_trains_the_output_layer():
    """At init only the zero output conv gets a gradient (f = 0); one SGD step makes f non-zero."""
    net = _net(16, 8, (1, 2), (8,), "avgpool", 1).train()
    x, k = _inputs(2, 1, 16)
    target = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ((net(x, k) - target) ** 2).mean().backward()
    assert net.out[-1].weight.grad.abs().max() > 0
    opt.step()
    assert net(x, k).abs().max() > 0


def test_bf16_autocast_returns_float32():
    net = _net(16, 8, (1, 2), (8,), "avgpool", 3)
    _randomise_zero_init(net)
    x, k = _inputs(2, 3, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, k)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, net(x, k), rtol=0.1, atol=0.05)  # bf16: ~3 significant digits


def test_registry_and_validation():
    cfg = UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0)
    net = build_net(cfg, image_channels=1, image_size=16)
    assert isinstance(net, UNet) and count_parameters(net) > 0
    for bad, field in [(dict(resample="bilinear"), "net.resample"), (dict(dropout=1.0), "net.dropout"),
                       (dict(channels=0), "net.channels")]:
        with pytest.raises(GenprocError, match=field):
            UNetConfig(**bad).validate()
