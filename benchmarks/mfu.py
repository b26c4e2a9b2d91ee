"""Model FLOP utilisation of the training step and the sampler: FLOPs counted by torch.utils.flop_counter, rates
measured, divided by the device's dense matmul peak measured in the same process.

    python benchmarks/mfu.py                                   # ihdm_mnist_small, quickstart; fp32 (+ bf16)
    python benchmarks/mfu.py --recipes ihdm_cifar ihdm_ffhq256 --precisions fp32 bf16 fp16 --knobs all   # a GPU

For each recipe x precision x knob set (none | channels_last | compile | compile+channels_last): one training step
of the real pieces (process.training_pair, the net under autocast, loss, backward, clip, Adam, EMA) on random data
of the recipe's shape and batch (or --batch); its FLOPs (forward + backward, as FlopCounterMode counts matmuls and
convolutions); img/s after warm-up; TFLOP/s; and the fraction of the matmul peak of the same dtype (a square matmul
of --peak-size, timed here). Sampling: network calls/s of the EMA net at the sampling batch, and its fraction of
the peak. One table on stdout.

``--profile``: for the first precision and knob set of each recipe, where the training step's time goes
(torch.profiler self time by operator class: convolutions and matmuls, which carry the FLOPs, vs normalisation,
activations, elementwise, optimiser and the rest), and the bound it sets: with a fraction f of the time in FLOP-free
operators, the step reaches at most (1 - f) x (the convolutions' own rate / peak).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from genproc.engine.sampler import autocast
from genproc.nets import build_net, count_parameters
from genproc.processes import build_process
from genproc.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
KNOBS = {"none": {}, "channels_last": {"channels_last": True}, "compile": {"compile": True},
         "compile+channels_last": {"compile": True, "channels_last": True}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int, repeats: int = 5) -> float:
    """FLOP/s of a (size x size) @ (size x size) matmul in ``dtype`` (best of ``repeats``)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def train_step_fn(r, precision: str, batch: int, device: torch.device, knobs: dict):
    """A closure running one engine-like training step, and its net."""
    from timm.utils import ModelEmaV3

    c, (h, w) = r.data.channels, r.data.image_hw
    proc = build_process(r.process)
    net = build_net(r.net, c, (h, w)).to(device)
    if knobs.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(net, decay=r.train.ema)
    opt = torch.optim.Adam(net.parameters(), lr=r.train.lr, **({"fused": True} if device.type == "cuda" else {}))
    fwd = torch.compile(net) if knobs.get("compile") else net
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    x0 = torch.rand(batch, c, h, w, device=device)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        k = proc.draw_training_levels(batch, g).to(device)
        inp, target = proc.training_pair(x0, k, torch.randn(x0.shape, generator=g).to(device))
        if knobs.get("channels_last"):
            inp = inp.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = fwd(inp, k)
        loss = proc.loss(out, target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        ema.update(net)

    return step, net, fwd, proc


CLASSES = (  # (label, substrings of aten operator names), first match wins
    ("convolution + matmul (the FLOPs)", ("conv", "mm", "addmm", "linear", "matmul", "baddbmm", "_scaled_dot_product")),
    ("normalisation", ("norm",)),
    ("activation (SiLU)", ("silu",)),
    ("optimiser (Adam, EMA, clip)", ("_foreach", "adam", "lerp")),
    ("elementwise / copies / reductions", ("add", "mul", "sub", "div", "copy", "cat", "fill", "zero", "sum", "mean", "pow",
                                           "sqrt", "exp", "where", "clone", "contiguous", "to", "softmax", "neg")),
)


def profile_step(step, flops: float, peak: float) -> None:
    """Print the step's self CPU time by operator class, and the MFU bound the FLOP-free share sets."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    totals: dict[str, float] = {}
    for ev in prof.key_averages():
        name = ev.key.lower()
        label = next((lab for lab, keys in CLASSES if any(k in name for k in keys)), "other")
        totals[label] = totals.get(label, 0.0) + ev.self_cpu_time_total
    whole = sum(totals.values())
    print("\n| where the fp32 training step's time goes (torch.profiler, self CPU time, 3 steps) | share |")
    print("|---|---:|")
    for label, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {t / whole:.1%} |")
    conv = totals.get(CLASSES[0][0], 0.0) / 3 / 1e6  # seconds per step in the FLOP-carrying kernels
    rate = flops / conv if conv else float("nan")
    f = 1 - totals.get(CLASSES[0][0], 0.0) / whole
    print(f"\nconvolutions + matmuls run at {rate / 1e12:.3f} TFLOP/s = {rate / peak:.0%} of the matmul peak; the other "
          f"{f:.0%} of the step does (almost) no FLOPs, so the step's utilisation is at most "
          f"{(1 - f) * rate / peak:.0%} (profiler overhead included)\n")


def timed(fn, device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["ihdm_mnist_small", "quickstart"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--knobs", default="none", help="comma-separated of none, channels_last, compile, "
                    "compile+channels_last; or all")
    ap.add_argument("--batch", type=int, default=None, help="batch (default: the recipe's train.batch_size)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-size", type=int, default=None, help="matmul side for the peak (default 2048 CPU, 8192 GPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--profile", action="store_true", help="where the first configuration's training step spends its time")
    args = ap.parse_args()
    device = torch.device(args.device)
    knob_names = list(KNOBS) if args.knobs == "all" else args.knobs.split(",")
    size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, device {name}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    peaks = {}
    for p in args.precisions:
        if p == "fp16" and device.type != "cuda":
            continue
        peaks[p] = matmul_peak(DTYPES[p], device, size)
        print(f"matmul peak {p}: {peaks[p] / 1e12:.3f} TFLOP/s ({size}x{size})")
    print()
    print("| recipe | params | batch | precision | knobs | train GFLOP/step | train img/s | train TFLOP/s | of peak "
          "| sample calls/s | sample TFLOP/s | of peak |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.recipes:
        r = load_recipe(RECIPES / f"{name}.yaml")
        batch = args.batch or r.train.batch_size
        for p in peaks:
            for kn in knob_names:
                try:
                    step, net, fwd, proc = train_step_fn(r, p, batch, device, KNOBS[kn])
                    with FlopCounterMode(display=False) as fc:
                        step()
                    flops = fc.get_total_flops()
                    sec = timed(step, device, args.steps, args.warmup)
                    c, (h, w) = r.data.channels, r.data.image_hw
                    xs = torch.randn(r.sample.batch_size, c, h, w, device=device)
                    ks = torch.full((r.sample.batch_size,), proc.num_levels, device=device, dtype=torch.long)
                    net.eval()

                    def call(fwd=fwd, xs=xs, ks=ks, p=p) -> None:
                        with torch.no_grad(), autocast(device, p):
                            fwd(xs, ks)

                    with FlopCounterMode(display=False) as fs:
                        call()
                    s_sec = timed(call, device, args.steps, args.warmup)
                except Exception as e:  # noqa: BLE001 - one row per failing configuration, the table goes on
                    print(f"| {name} | | {batch} | {p} | {kn} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} |")
                    continue
                tf, st = flops / sec / 1e12, fs.get_total_flops() / s_sec / 1e12
                print(f"| {name} | {count_parameters(net):,} | {batch} | {p} | {kn} | {flops / 1e9:.2f} | {batch / sec:.1f} | "
                      f"{tf:.3f} | {tf * 1e12 / peaks[p]:.0%} | {r.sample.batch_size / s_sec:.1f} | {st:.3f} | "
                      f"{st * 1e12 / peaks[p]:.0%} |", flush=True)
                if args.profile and (p, kn) == (next(iter(peaks)), knob_names[0]) and device.type == "cpu":
                    net.train()
                    profile_step(step, flops, peaks[p])


if __name__ == "__main__":
    main()
