"""Nearest neighbours of samples in the training set (App. D.4) and the memorisation check.

App. D.4 shows samples beside their Euclidean nearest neighbours among the training images, to show that
samples are not copies of training images. Here that picture (``neighbours_<label>.png``) comes with numbers:
the distribution of nearest-neighbour (NN) distances to the training set of generated samples is compared
with that of held-out TEST images. Test images are by construction not copies, so if samples were copies
(or near-copies) their NN distances would sit far below the test images': the fraction of samples below the
test distances' 1st percentile would be well above 1 %, the median ratio well below 1, and a two-sample
Kolmogorov-Smirnov statistic large.

Distances are Euclidean in pixel space: images in [0, 1], flattened to D = C*H*W values (an image at RMS
per-pixel difference r from another lies at distance r*sqrt(D)).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.analysis.common import new_figure, run_info, save_figure, unique_labels, write_payload
from genproc.errors import GenprocError

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NEAR_COPY_RMS = 1.0 / 255  # a sample within this RMS per-pixel distance of a training image counts as a near-copy
DISTANCE = "Euclidean in pixel space: images in [0, 1] flattened to D = C*H*W values"


def _rows(x: Any, lo: int, hi: int) -> torch.Tensor:
    """Rows lo:hi of a tensor (N, ...) or an ImageDataset (via get_batch), flattened to (hi - lo, D) float64 on CPU."""
    if isinstance(x, torch.Tensor):
        block = x[lo:hi]
    else:
        block = x.get_batch(torch.arange(lo, hi))
    return block.reshape(hi - lo, -1).to("cpu", torch.float64)


@torch.no_grad()
def nearest_neighbours(samples: torch.Tensor, train: Any, k: int = 1, batch_size: int = 4096,
                       query_batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` Euclidean nearest training images of every sample, searched in chunks.

    samples: (N, C, H, W) or (N, D) float; train: (M, C, H, W) / (M, D) tensor or an ImageDataset (read with
    ``get_batch`` ``batch_size`` images at a time, so a 60k-image MNIST set never sits in one distance matrix).
    Distances are computed with ``torch.cdist`` in float64 on chunks of ``query_batch`` x ``batch_size``, keeping a
    running top-k. Returns (indices (N, k) int64 into ``train``, distances (N, k) float64), nearest first (exact
    ties are broken deterministically, across chunks towards the lower index).
    Memory: O(query_batch * (batch_size + k) + batch_size * D).
    """
    m = train.shape[0] if isinstance(train, torch.Tensor) else len(train)
    if k < 1 or k > m:
        raise GenprocError(f"--k must be between 1 and the training-set size {m}, got {k}")
    if batch_size < 1 or query_batch < 1:
        raise GenprocError(f"chunk sizes must be >= 1, got batch_size={batch_size}, query_batch={query_batch}")
    q = samples.reshape(samples.shape[0], -1).to("cpu", torch.float64)
    n = q.shape[0]
    best_d = torch.full((n, k), math.inf, dtype=torch.float64)
    best_i = torch.full((n, k), -1, dtype=torch.long)
    for t0 in range(0, m, batch_size):
        t1 = min(m, t0 + batch_size)
        tb = _rows(train, t0, t1)
        if tb.shape[1] != q.shape[1]:
            raise GenprocError(f"samples have {q.shape[1]} values per image but training images {tb.shape[1]}")
        idx = torch.arange(t0, t1)
        for q0 in range(0, n, query_batch):
            q1 = min(n, q0 + query_batch)
            d = torch.cdist(q[q0:q1], tb)  # (nq, nt)
            top_d, top_j = torch.topk(d, min(k, t1 - t0), dim=1, largest=False, sorted=True)
            cand_d = torch.cat([best_d[q0:q1], top_d], dim=1)  # (nq, <= 2k): running best, then this chunk's best
            cand_i = torch.cat([best_i[q0:q1], idx[top_j]], dim=1)
            order = torch.sort(cand_d, dim=1, stable=True).indices[:, :k]  # stable: earlier chunks win ties
            best_d[q0:q1] = cand_d.gather(1, order)
            best_i[q0:q1] = cand_i.gather(1, order)
    return best_i, best_d


def ks_statistic(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| of the empirical CDFs (ties handled exactly)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        raise GenprocError("the KS statistic needs two non-empty samples")
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / a.size
    fb = np.searchsorted(b, x, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def ks_pvalue(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Two-sided p-value of the two-sample KS test (scipy's ``ks_2samp``); None without scipy."""
    try:
        from scipy.stats import ks_2samp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return None
    return float(ks_2samp(np.asarray(a), np.asarray(b)).pvalue)


def p_closer(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """P(A < B) + P(A = B) / 2 for A drawn from ``a`` and B from ``b`` (1-D), from ranks: O((n + m) log(n + m))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    bs = np.sort(b)
    above = bs.size - np.searchsorted(bs, a, side="right")  # b > a
    ties = np.searchsorted(bs, a, side="right") - np.searchsorted(bs, a, side="left")
    return float((above + 0.5 * ties).sum() / (a.size * b.size))


def distance_summary(d: np.ndarray) -> dict[str, Any]:
    """Mean, min, max, median and QUANTILES of 1-D distances d."""
    d = np.asarray(d, dtype=np.float64)
    return {"n": int(d.size), "mean": float(d.mean()), "min": float(d.min()), "max": float(d.max()),
            "median": float(np.median(d)), "quantiles": {f"{q:g}": float(np.quantile(d, q)) for q in QUANTILES}}


def memorisation_stats(sample_d: np.ndarray, test_d: np.ndarray, dims: int) -> dict[str, Any]:
    """Compare NN distances to the training set of samples (n,) and of test images (m,), both 1-D float.

    frac_samples_below_test_p01: share of samples closer to the training set than the closest 1 % of test images
    (about 0.01 when samples are no closer than held-out data; far above it for copies). n_near_copies: samples
    within RMS per-pixel distance NEAR_COPY_RMS of a training image (d < NEAR_COPY_RMS * sqrt(dims)).
    p_sample_closer_than_test: the probability that a random sample lies closer to the training set than a random test
    image (ties count half; the Mann-Whitney U statistic / (n m)): about 0.5 when samples are as far from the training
    images as held-out data, towards 1 for copies, towards 0 for samples farther off than the test images. When the
    test split differs in content from the training split (Twemoji: whole emoji families held out) the test images
    are farther off than unseen images of the training distribution would be, so this probability is then an upper
    bound on memorisation, not a measure of it: read it beside the near-copy count.
    """
    p01 = float(np.quantile(test_d, 0.01))
    med_s, med_t = float(np.median(sample_d)), float(np.median(test_d))
    return {
        "samples": distance_summary(sample_d),
        "test": distance_summary(test_d),
        "test_p01": p01,
        "frac_samples_below_test_p01": float(np.mean(np.asarray(sample_d) < p01)),
        "median_ratio_samples_to_test": med_s / med_t if med_t > 0 else None,
        "near_copy_threshold": NEAR_COPY_RMS * math.sqrt(dims),
        "n_near_copies": int(np.sum(np.asarray(sample_d) < NEAR_COPY_RMS * math.sqrt(dims))),
        "p_sample_closer_than_test": p_closer(sample_d, test_d),
        "ks_statistic": ks_statistic(sample_d, test_d),
        "ks_pvalue": ks_pvalue(sample_d, test_d),
    }


def compute_neighbours(run: Any, samples: torch.Tensor, test_d: np.ndarray, k: int = 3,
                       batch_size: int = 4096) -> dict[str, Any]:
    """NN search of ``samples`` (n, C, H, W) in ``run.data`` (the training set) plus the memorisation stats
    against the test images' NN distances ``test_d`` (m,). The result holds the samples and their k neighbour
    images (n, k, C, H, W) for :func:`plot_neighbours`."""
    idx, dist = nearest_neighbours(samples, run.data, k=k, batch_size=batch_size)
    dims = int(samples[0].numel())
    nbrs = run.data.get_batch(idx.reshape(-1)).reshape(*idx.shape, *samples.shape[1:])
    return {"sample_images": samples, "neighbour_images": nbrs, "indices": idx, "distances": dist, "dims": dims,
            "train_size": len(run.data), "test_nn_distances": test_d,
            **memorisation_stats(dist[:, 0].numpy(), test_d, dims)}


def _layout(n: int, k: int) -> tuple[int, int]:
    """(rows per block, blocks) so that n samples x (1 + k) columns make a roughly square picture."""
    rows = min(n, max(1, math.ceil(math.sqrt(n * (k + 1)))))
    return rows, math.ceil(n / rows)


def plot_neighbours(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Each sample (first column of a block, framed) beside its k nearest training images, nearest first, with
    their distances; samples are laid out in blocks of rows so the figure stays roughly square."""
    from matplotlib.patches import Rectangle

    s, nb, dist = result["sample_images"], result["neighbour_images"], result["distances"]
    n, k = nb.shape[0], nb.shape[1]
    c, h, w = s.shape[1:]
    rows, blocks = _layout(n, k)
    pad, gap = max(1, h // 8), max(2, h // 3)  # pad between cells, gap between blocks (and after the sample column)
    cell_w, cell_h = w + pad, h + pad
    block_w = (k + 1) * cell_w + gap
    canvas = np.ones((rows * cell_h + pad, blocks * block_w + pad, 3))
    fig, ax = new_figure(figsize=(min(2 + 0.9 * blocks * (k + 1), 24), min(1 + 0.9 * rows, 24)))
    for i in range(n):
        b, r = divmod(i, rows)
        y = pad + r * cell_h
        for j, img in enumerate([s[i], *nb[i]]):
            x = pad + b * block_w + j * cell_w + (gap // 2 if j else 0)
            arr = img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            canvas[y:y + h, x:x + w] = arr if c == 3 else np.repeat(arr, 3, axis=2)
            if j:
                ax.text(x + w - 0.5, y + h - 0.5, f"{float(dist[i, j - 1]):.2f}", fontsize=5, color="yellow",
                        ha="right", va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
            else:
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="tab:red", lw=1.0))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"samples (red frame) and their {k} nearest training images (Euclidean distance)", fontsize=9)
    return save_figure(fig, path)


def plot_neighbours_hist(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Histograms (densities) of NN distances to the training set: each run's samples vs the test images, with
    the test distances' 1st percentile marked. ``results``: label -> :func:`compute_neighbours` output."""
    fig, ax = new_figure(figsize=(6.5, 4))
    tests: dict[str, np.ndarray] = {}
    for r in results.values():
        tests.setdefault(json.dumps(r["test_key"]), np.asarray(r["test_nn_distances"]))
    every = np.concatenate([*(r["distances"][:, 0].numpy() for r in results.values()), *tests.values()])
    bins = np.linspace(0.0, float(every.max()) * 1.02 + 1e-12, 41)
    for i, d in enumerate(tests.values()):
        name = "test images" if len(tests) == 1 else f"test images ({i + 1})"
        ax.hist(d, bins=bins, density=True, color="0.6", alpha=0.6, label=f"{name} (n={d.size})")
        ax.axvline(float(np.quantile(d, 0.01)), color="0.3", ls=":", lw=1, label=f"{name}: 1st percentile")
    for lab, r in results.items():
        d = r["distances"][:, 0].numpy()
        ax.hist(d, bins=bins, density=True, histtype="step", lw=1.8,
                label=f"{lab} samples (n={d.size}, KS={r['ks_statistic']:.2f})")
    ax.set_xlabel("Euclidean distance to nearest training image (pixels in [0, 1])")
    ax.set_ylabel("density")
    ax.set_title("Nearest-neighbour distances to the training set: samples vs held-out test images", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _test_nn_distances(run: Any, n_test: int, batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """NN distances (m,) to ``run.data`` of the first ``n_test`` images of the run's test split, and their provenance."""
    from genproc.data import build_dataset

    test = build_dataset(run.recipe.data, "test", run.data_root)
    m = min(n_test, len(test))
    x = test.get_batch(torch.arange(m))
    _, d = nearest_neighbours(x, run.data, k=1, batch_size=batch_size)
    return d[:, 0].numpy(), {"dataset": test.name, "split": test.split, "root": test.root, "size": len(test), "used": m}


def analyze_neighbours(runs: Sequence[Any], out: str | Path, *, n: int = 64, k: int = 3, n_test: int = 1000, seed: int = 0,
                       batch_size: int = 64, nn_batch: int = 4096, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """App. D.4 for each loaded run: ``n`` samples (seed ``seed``), their ``k`` nearest training images, and the
    NN-distance distribution of samples vs the first ``n_test`` test images.

    Writes ``out/neighbours_<label>.png`` per run, ``out/neighbours_hist.png`` and ``out/neighbours.json``;
    returns the JSON payload. ``batch_size``: images per sampling pass; ``nn_batch``: training images per
    distance chunk (neither changes the results).
    """
    for name, v in (("--n", n), ("--k", k), ("--n-test", n_test), ("--batch-size", batch_size)):
        if v < 1:
            raise GenprocError(f"{name} must be >= 1, got {v}")
    for run in runs:
        if k > len(run.data):
            raise GenprocError(f"--k {k} exceeds the {len(run.data)} training images of {run.run_dir}")
    out = Path(out)
    labels = unique_labels(runs)
    test_cache: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for lab, run in zip(labels, runs):
        key = json.dumps([run.recipe.to_dict()["data"], str(run.data_root)], sort_keys=True)
        if key not in test_cache:
            log(f"neighbours: NN distances of {n_test} test images to the {len(run.data)} training images")
            test_cache[key] = _test_nn_distances(run, n_test, nn_batch)
        test_d, test_info = test_cache[key]
        log(f"neighbours: {lab}: {n} samples, {k} nearest training images each")
        samples = run.sample(n, seed=seed, batch_size=batch_size, capture_every=-1).images
        res = compute_neighbours(run, samples, test_d, k=k, batch_size=nn_batch)
        res.update(test_key=key, test_reference=test_info)
        safe = lab.replace(":", "_").replace("/", "_")
        files[f"neighbours_{lab}"] = plot_neighbours(res, out / f"neighbours_{safe}.png",
                                                     f"{lab}: samples (red frame) and their {k} nearest training images").name
        results[lab] = res
    files["hist"] = plot_neighbours_hist(results, out / "neighbours_hist.png").name
    keep = ("dims", "train_size", "test_reference", "samples", "test", "test_p01", "frac_samples_below_test_p01",
            "median_ratio_samples_to_test", "near_copy_threshold", "n_near_copies", "p_sample_closer_than_test",
            "ks_statistic", "ks_pvalue")
    payload = {
        "analysis": "neighbours",
        "paper": "App. D.4: samples beside their Euclidean nearest neighbours in the training data (samples are not copies)",
        "settings": {"n": n, "k": k, "n_test": n_test, "seed": seed, "distance": DISTANCE,
                     "near_copy_rms_per_pixel": NEAR_COPY_RMS, "test_images": "the first n_test images of the test split"},
        "runs": run_info(runs),
        "results": {lab: {**{key: r[key] for key in keep}, "nn_indices": r["indices"], "nn_distances": r["distances"]}
                    for lab, r in results.items()},
        "files": files,
    }
    return write_payload(out, "neighbours", payload, list_json=True)
