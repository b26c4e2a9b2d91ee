"""Sampling speed of a trained DDPM run: 1000-step ancestral vs DDIM with fewer steps, same network, same
process, same batch (and, given, an IHDM run for reference). Ratios are against ancestral in the same process.

    python benchmarks/sampler_speed.py runs/ddpm_mnist_small --n 16 --ddim-steps 50 --ihdm runs/ihdm_mnist_small
"""

from __future__ import annotations

import argparse
import time

import torch

import genproc


def timed(run, n: int) -> tuple[float, int]:
    """(images per second, network calls per image) for one batch of n samples, no trajectory kept."""
    if getattr(run.process, "needs_data_for_prior", False):
        run.data  # noqa: B018 - load the prior's data before timing
    t0 = time.perf_counter()
    run.sample(n, seed=0, batch_size=n, capture_every=-1)
    return n / (time.perf_counter() - t0), len(run.process.reverse_levels())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ddpm_run")
    ap.add_argument("--n", type=int, default=16, help="samples per timing (one batch)")
    ap.add_argument("--ddim-steps", type=int, nargs="+", default=[50])
    ap.add_argument("--ihdm", default=None, help="an IHDM run dir to time beside (its own K steps)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ddpm = genproc.load(args.ddpm_run)
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | n {args.n} per timing | {args.ddpm_run} step {ddpm.step}")
    print("| sampler | network calls / image | img/s | speed vs ancestral |")
    print("|---|---:|---:|---:|")
    base, calls = timed(ddpm, args.n)
    print(f"| DDPM ancestral | {calls} | {base:.3f} | 1.00× |", flush=True)
    for s in args.ddim_steps:
        ips, calls = timed(ddpm.with_sampling(sampler="ddim", steps=s), args.n)
        print(f"| DDPM DDIM (eta 0) | {calls} | {ips:.3f} | {ips / base:.1f}× |", flush=True)
    if args.ihdm:
        ips, calls = timed(genproc.load(args.ihdm), args.n)
        print(f"| IHDM | {calls} | {ips:.3f} | {ips / base:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
