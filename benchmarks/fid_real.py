"""FID/KID of real images against real images (two samples of one distribution), and the cost of
embedding images in InceptionV3 on this machine.

    python benchmarks/fid_real.py --data mnist --n 10000 --inception-weights ../shared/weights/weights-inception-2015-12-05-6726825d.pth

1. Speed: ``--speed-n`` test images embedded by torch-fidelity's extractor as torch-fidelity builds it,
   and as genproc builds it (weights channels-last, :func:`genproc.metrics.fidelity.channels_last_extractor`),
   in the same process: images/s, seconds per 1k images, the ratio, and the largest feature difference.
2. FID/KID of ``--n`` train images (input1) against the first ``--n`` test images (input2), through the same
   :func:`genproc.metrics.fidelity.fidelity_metrics` as ``genproc evaluate``. The test statistics use the same
   cache key as ``genproc evaluate --n-ref N``, so either one reuses the other's. The train images are drawn at
   random under ``--pick-seed`` (``genproc frontier``'s floor draws them the same way); ``--pick-seed -1`` takes
   the first n, which for a folder sorted by name (Twemoji: by code point) is no sample of the whole.
3. With ``--train-vs-train``: FID/KID of two disjoint random halves of the train split, n each (the floor when the
   test split differs in content from the training split).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch_fidelity
from torch.utils.data import Subset
from torch_fidelity.utils import create_feature_extractor

from genproc.data import build_dataset
from genproc.metrics.fidelity import channels_last_extractor, fidelity_metrics, reference_key
from genproc.metrics.images import ReferenceImages
from genproc.metrics.inception import INCEPTION, resolve_weights
from genproc.recipe import DataConfig


def embed_rate(images: torch.Tensor, weights_path: str, channels_last: bool, batch: int = 64) -> tuple[float, torch.Tensor]:
    """(images per second, features) for embedding ``images`` (uint8 N×3×H×W) with the Inception extractor."""
    with channels_last_extractor(INCEPTION) if channels_last else contextlib.nullcontext():
        fe = create_feature_extractor(INCEPTION, ["2048"], cuda=False, feature_extractor_weights_path=weights_path,
                                      verbose=False)
    fe(images[:2])  # warm-up
    t0 = time.perf_counter()
    feats = torch.cat([fe(images[i:i + batch])[0] for i in range(0, len(images), batch)])
    return len(images) / (time.perf_counter() - t0), feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist", help="data set name (mnist, fashion_mnist, cifar10, ...)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--n", type=int, default=10000, help="images per side")
    ap.add_argument("--speed-n", type=int, default=256, help="images for the speed comparison (0: skip it)")
    ap.add_argument("--pick-seed", type=int, default=0, help="seed of the random train images (-1: the first n)")
    ap.add_argument("--train-vs-train", action="store_true", help="also two disjoint random sets of n train images")
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = DataConfig(name=args.data, image_size=args.image_size, channels=args.channels)
    train, test = build_dataset(cfg, "train", args.data_root), build_dataset(cfg, "test", args.data_root)
    weights = resolve_weights(INCEPTION, args.inception_weights)
    print(f"torch {torch.__version__} | torch-fidelity {torch_fidelity.__version__} | threads {torch.get_num_threads()} "
          f"| weights sha256 {weights.sha256[:12]}")
    if args.speed_n:
        imgs = torch.stack([ReferenceImages(test, args.speed_n)[i] for i in range(min(args.speed_n, len(test)))])
        plain, f0 = embed_rate(imgs, weights.path, channels_last=False)
        fast, f1 = embed_rate(imgs, weights.path, channels_last=True)
        print("| extractor build | img/s | s per 1k images |\n|---|---:|---:|")
        print(f"| torch-fidelity default | {plain:.2f} | {1000 / plain:.0f} |")
        print(f"| genproc (channels-last weights) | {fast:.2f} | {1000 / fast:.0f} |")
        print(f"speed-up {fast / plain:.2f}× on {len(imgs)} images; max |feature difference| "
              f"{(f1 - f0).abs().max().item():.2e} (features' mean |value| {f0.abs().mean().item():.3f})", flush=True)
    pick = None if args.pick_seed < 0 else args.pick_seed
    gen, ref = ReferenceImages(train, args.n, random_seed=pick), ReferenceImages(test, args.n)
    which = f"first {len(gen)}" if pick is None else f"{len(gen)} at random, seed {pick}"
    key = reference_key(test, len(ref), weights)
    t0 = time.perf_counter()
    out = fidelity_metrics(gen, ref, {"fid", "kid"}, weights=weights, reference_name=key, cache_root=args.cache_dir)
    wall = time.perf_counter() - t0
    embedded = len(gen) + (0 if out["reference_cached"] else len(ref))
    print(f"FID {args.data} train ({which}) vs test (first {len(ref)}): {out[torch_fidelity.KEY_METRIC_FID]:.4f}")
    print(f"KID: {out[torch_fidelity.KEY_METRIC_KID_MEAN]:.6f} ± {out[torch_fidelity.KEY_METRIC_KID_STD]:.6f} "
          f"(subsets of {out['kid_subset_size']})")
    print(f"wall {wall:.0f} s for {embedded} images embedded (test statistics cached: {out['reference_cached']}); "
          f"{1000 * wall / embedded:.0f} s per 1k images", flush=True)
    if args.train_vs_train:
        if 2 * args.n > len(train):
            raise SystemExit(f"--train-vs-train needs 2 n = {2 * args.n} train images, the split has {len(train)}")
        seed = pick or 0
        both = ReferenceImages(train, 2 * args.n, random_seed=seed)
        half_a, half_b = Subset(both, range(args.n)), Subset(both, range(args.n, 2 * args.n))
        out = fidelity_metrics(half_a, half_b, {"fid", "kid"}, weights=weights, cache_root=args.cache_dir,
                               reference_name=f"{key}-train-second-half-n{args.n}-seed{seed}")
        print(f"FID {args.data} train vs train (two disjoint random sets of {args.n}): "
              f"{out[torch_fidelity.KEY_METRIC_FID]:.4f}")
        print(f"KID: {out[torch_fidelity.KEY_METRIC_KID_MEAN]:.6f} ± {out[torch_fidelity.KEY_METRIC_KID_STD]:.6f} "
              f"(subsets of {out['kid_subset_size']})")


if __name__ == "__main__":
    main()
