"""Where a reduced-precision CPU training step spends its time: torch profiler over one forward + backward.

    python benchmarks/bf16_profile.py --recipe quickstart --precision bf16

Builds the recipe's U-Net, runs one warm-up forward + backward (MSE against a random target) under the
engine's autocast, then profiles one more on random inputs of the recipe's shape and random levels in
1..K (batch = the recipe's), and prints the share of self CPU
time spent in ``_slow_conv2d`` ops (torch's fallback when oneDNN has no kernels for the precision) and
the top ops.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from genproc.engine.sampler import autocast
from genproc.nets import build_net
from genproc.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    r = load_recipe(RECIPES / f"{args.recipe}.yaml")
    c, (h, w), b = r.data.channels, r.data.image_hw, r.train.batch_size
    net = build_net(r.net, c, (h, w))
    num_levels = int(getattr(r.process, "K", None) or r.process.T)
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(b, c, h, w, generator=g)

    def step() -> None:
        k = torch.randint(1, num_levels + 1, (b,), generator=g)
        target = torch.randn(x0.shape, generator=g)
        with autocast(device, args.precision):
            out = net(x0, k)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        net.zero_grad(set_to_none=True)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    slow = sum(e.self_cpu_time_total for e in events if "slow_conv2d" in e.key)
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()} | recipe {args.recipe} | batch {b} | precision {args.precision}")
    print(f"one forward + backward: {total / 1e6:.2f} s self CPU time; _slow_conv2d ops {slow / 1e6:.2f} s = "
          f"{slow / max(total, 1):.1%}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"  {e.self_cpu_time_total / max(total, 1):6.1%}  {e.key}")


if __name__ == "__main__":
    main()
