"""Decoded images/s of a folder of large PNGs read at a 256x256 recipe size: one thread, the DataLoader with the
default worker count (data.num_workers: auto), and the `genproc cache` array. Ratios against one thread, same process.

    python benchmarks/folder_data.py --n 96 --source-size 1024 --size 256

The sources are synthetic RGB PNGs (smooth gradients plus noise, so PNG compression is realistic) written to a
temporary folder once.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from genproc.data.folder import FolderDataset, folder_files, load_image
from genproc.data.folder_cache import build_cache, open_cache
from genproc.engine.batches import resolve_workers
from genproc.recipe import DataConfig


def make_sources(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), x * y], -1) * 100 + 128
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:04d}.png")


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--source-size", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_sources(root, args.n, args.source_size)
        cfg = DataConfig(name="folder", root=str(root), image_size=args.size, channels=3)
        base, files = folder_files(cfg, "train", str(root))
        ds = FolderDataset(files, "folder", str(root), "train", 3, cfg.image_hw, cfg.resize)
        one = rate(lambda: [ds[i] for i in range(len(ds))], args.n)
        workers = resolve_workers("auto")

        def loader() -> None:
            for _ in DataLoader(ds, batch_size=args.batch, num_workers=workers):
                pass

        multi = rate(loader, args.n)
        decode = functools.partial(load_image, channels=3, hw=cfg.image_hw, rule=cfg.resize)
        t0 = time.perf_counter()
        build_cache(files, base, "train", cfg.image_hw, 3, cfg.resize, decode)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        images = open_cache(files, base, "train", cfg.image_hw, 3, cfg.resize, warn=print)
        open_s = time.perf_counter() - t0
        order = torch.randperm(args.n)
        cached = rate(lambda: [images[order[i:i + args.batch]].float().div(255) for i in range(0, args.n, args.batch)], args.n)
    print(f"{args.n} PNGs {args.source_size}x{args.source_size} -> {args.size}x{args.size} RGB, torch threads "
          f"{torch.get_num_threads()}, auto workers {workers}")
    print("| reader | img/s | vs one thread |")
    print("|---|---:|---:|")
    print(f"| decode, one thread | {one:.1f} | 1.00 |")
    print(f"| DataLoader, {workers} workers (auto) | {multi:.1f} | {multi / one:.2f} |")
    print(f"| cache (memory-mapped, random batches) | {cached:.1f} | {cached / one:.1f} |")
    print(f"cache build {build_s:.1f} s ({args.n / build_s:.1f} img/s), open + sha256 check {open_s:.2f} s")


if __name__ == "__main__":
    main()
