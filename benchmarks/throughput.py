"""Training and sampling throughput (images/s) of shipped recipes, fp32 vs bf16 (and fp16 on GPU).

    python benchmarks/throughput.py                       # quickstart, ihdm_mnist_small, ihdm_mnist
    python benchmarks/throughput.py --recipes quickstart --steps 5 --sample-n 16

Training img/s: one optimiser step of the real engine pieces (process.training_pair, net under
autocast, loss, backward, grad clip, Adam, EMA) on random data of the recipe's shape, timed after
warm-up. Sampling img/s: `genproc.engine.generate` with all K reverse steps, EMA net in eval mode.
Ratios are against fp32 in the same process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from timm.utils import ModelEmaV3

from genproc.data.base import TensorImageDataset
from genproc.engine import generate
from genproc.engine.sampler import autocast
from genproc.nets import build_net, count_parameters
from genproc.processes import build_process
from genproc.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def train_ips(r, precision: str, steps: int, batch: int, device: torch.device) -> float:
    c, (h, w) = r.data.channels, r.data.image_hw
    proc = build_process(r.process)
    net = build_net(r.net, c, (h, w)).to(device)
    ema = ModelEmaV3(net, decay=r.train.ema)
    opt = torch.optim.Adam(net.parameters(), lr=r.train.lr)
    x0 = torch.rand(batch, c, h, w, device=device)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        k = proc.draw_training_levels(batch, g).to(device)
        inp, target = proc.training_pair(x0, k, torch.randn(x0.shape, generator=g).to(device))
        with autocast(device, precision):
            out = net(inp, k)
        loss = proc.loss(out, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema.update(net)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    return batch / (sum(times) / len(times))


def sample_ips(r, precision: str, n: int, device: torch.device) -> float:
    c, (h, w) = r.data.channels, r.data.image_hw
    proc = build_process(r.process)
    net = build_net(r.net, c, (h, w)).to(device).eval()
    data = TensorImageDataset(torch.rand(64, c, h, w), name="random", root=None, split="train")
    t0 = time.perf_counter()
    generate(proc, net, n, shape=(c, h, w), data=data, batch_size=n, capture_every=-1, device=device, precision=precision)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["quickstart", "ihdm_mnist_small", "ihdm_mnist"])
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32 bf16 (+ fp16 on CUDA)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps after 2 warm-up steps")
    ap.add_argument("--batch", type=int, default=None, help="training batch (default: the recipe's)")
    ap.add_argument("--sample-n", type=int, default=32, help="samples drawn for sampling img/s (0 = skip)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precs = args.precisions or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    print(f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print("| recipe | params | K | batch | precision | train img/s | vs fp32 | sample img/s (all K steps) | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.recipes:
        r = load_recipe(RECIPES / f"{name}.yaml")
        batch = args.batch or r.train.batch_size
        params = count_parameters(build_net(r.net, r.data.channels, r.data.image_hw))
        base_t = base_s = None
        for p in precs:
            ti = train_ips(r, p, args.steps, batch, device)
            si = sample_ips(r, p, args.sample_n, device) if args.sample_n > 0 else float("nan")
            base_t, base_s = base_t or ti, base_s or si
            print(f"| {name} | {params / 1e6:.2f}M | {r.process.K} | {batch} | {p} | {ti:.1f} | {ti / base_t:.2f}x | "
                  f"{si:.2f} | {si / base_s:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
