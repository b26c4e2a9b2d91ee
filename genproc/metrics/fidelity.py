"""FID, KID and precision/recall through torch-fidelity (no Fréchet distance or Inception of our own).

Generated samples are input1 (never cached); the reference split is input2, cached by
torch-fidelity itself under ``cache_root`` with ``input2_cache_name`` = :func:`reference_key`,
which names (data set, split, size, resolution, weights sha256); torch-fidelity appends the
extractor name. A second evaluation against the same reference loads its features /
statistics from that cache instead of reading and embedding the images again.

Precision/recall (Kynkäänniemi et al. 2019) use the same Inception '2048' features as FID
(torch-fidelity's default for PRC is VGG-16, which would need a second weights download).

Speed: while torch-fidelity runs, the extractor class in its registry is swapped for a subclass
that stores its weights channels-last (:func:`channels_last_extractor`). On this project's 2-core
AVX2 CPU that embeds 28×28 images into InceptionV3 at 7.38 instead of 5.00 img/s
(``benchmarks/fid_real.py``); features differ by at most ~1e-5 (float reassociation), so
statistics and cache files stay interchangeable. The registry entry is restored afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from genproc.errors import GenprocError
from genproc.metrics.inception import ExtractorWeights

FIDELITY_METRICS = ("fid", "kid", "prc")
CACHE_ENV_VAR = "GENPROC_CACHE"
KID_SUBSET_SIZE = 1000  # torch-fidelity's default, lowered to the number of samples when smaller


def default_cache_root() -> Path:
    """``$GENPROC_CACHE/fidelity``, else ``~/.cache/genproc/fidelity``."""
    base = os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "genproc")
    return Path(base) / "fidelity"


def reference_key(data: Any, n_ref: int, weights: ExtractorWeights) -> str:
    """Cache name of a reference set: readable prefix + digest of everything that changes its features.

    ``data``: an ImageDataset; its (H, W) = ``data.image_hw`` is in the prefix (``3x24x40``) and the digest, and so is
    its resize rule ``data.resize`` unless it is the default ``crop`` (so square crop sets hash exactly what they did
    before non-square support, and their existing caches stay valid).
    """
    h, w = data.image_hw
    ident = {"name": data.name, "root": data.root, "split": data.split, "channels": data.channels,
             "size": h if h == w else [h, w], "n": n_ref, "weights_sha256": weights.sha256}
    if data.resize != "crop":
        ident["resize"] = data.resize
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    sha = (weights.sha256 or "none")[:8]
    return f"genproc-{data.name}-{data.split}-n{n_ref}-{data.channels}x{h}x{w}-w{sha}-{digest}"


def cached_files(metrics: set[str], key: str, extractor: str, cache_root: Path) -> list[Path]:
    """The files torch-fidelity 0.4.0 reads for input2 instead of recomputing (FID alone: its statistics)."""
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    layers = sorted({cls.get_default_feature_layer_for_metric(m) for m in metrics})
    if metrics == {"fid"}:
        return [cache_root / f"{key}-{extractor}-stat-fid-{layers[0]}.pt"]
    return [cache_root / f"{key}-{extractor}-features-{layer}.pt" for layer in layers]


@contextlib.contextmanager
def channels_last_extractor(name: str) -> Iterator[None]:
    """Within the block, torch-fidelity builds extractor ``name`` with channels-last weights.

    The registered class is replaced by a subclass whose ``__init__`` ends with
    ``self.to(memory_format=torch.channels_last)`` (a no-op for parameters that are not 4-D),
    and put back on exit, also on error.
    """
    base = FEATURE_EXTRACTORS_REGISTRY[name]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        self.to(memory_format=torch.channels_last)

    FEATURE_EXTRACTORS_REGISTRY[name] = type(f"ChannelsLast{base.__name__}", (base,), {"__init__": __init__})
    try:
        yield
    finally:
        FEATURE_EXTRACTORS_REGISTRY[name] = base


def fidelity_metrics(generated: Dataset, reference: Dataset, metrics: set[str], *, weights: ExtractorWeights,
                     reference_name: str, cache_root: str | Path | None = None, batch_size: int = 64, seed: int = 0,
                     cuda: bool = False, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run torch-fidelity on two uint8 (3, H, W) datasets; returns its raw dict plus cache info.

    metrics: a subset of {"fid", "kid", "prc"}. Keys added: ``reference_cached`` (bool),
    ``kid_subset_size``.
    """
    unknown = metrics - set(FIDELITY_METRICS)
    if unknown or not metrics:
        raise ValueError(f"expected a non-empty subset of {FIDELITY_METRICS}, got {sorted(metrics)}")
    if weights.extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise GenprocError(f"feature extractor '{weights.extractor}' is not registered with torch-fidelity")
    need = 4 if "prc" in metrics else 2  # PRC: k-th (3rd) neighbour; FID/KID: a covariance
    if min(len(generated), len(reference)) < need:
        raise GenprocError(f"{'/'.join(sorted(metrics))} need at least {need} generated and reference images, "
                           f"got {len(generated)} and {len(reference)}")
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    files = cached_files(metrics, reference_name, weights.extractor, cache_root)
    hit = all(f.is_file() for f in files)
    if hit:
        log(f"reference features: cache hit, loading {', '.join(f.name for f in files)} from {cache_root}")
    else:
        log(f"reference features: computing for {len(reference)} images (cached in {cache_root} as {reference_name}-*)")
    kid_subset = min(KID_SUBSET_SIZE, len(generated), len(reference))
    kwargs: dict[str, Any] = dict(
        input1=generated, input2=reference, input2_cache_name=reference_name, cache=True, cache_root=str(cache_root),
        fid="fid" in metrics, kid="kid" in metrics, prc="prc" in metrics, kid_subset_size=kid_subset,
        feature_extractor=weights.extractor, batch_size=batch_size, rng_seed=seed, cuda=cuda, verbose=False,
        save_cpu_ram=True,  # num_workers = 0: the generated set samples in-process, batch by batch
    )
    if weights.path is not None:
        kwargs["feature_extractor_weights_path"] = weights.path
    try:
        with channels_last_extractor(weights.extractor):
            out = torch_fidelity.calculate_metrics(**kwargs)
    except ValueError as e:  # torch-fidelity's vassert
        raise GenprocError(f"torch-fidelity: {str(e).splitlines()[0]}") from None
    return {**out, "reference_cached": hit, "kid_subset_size": kid_subset}
