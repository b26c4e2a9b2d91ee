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

Across DDP ranks (:func:`fidelity_metrics_across_ranks`, under ``torchrun``) each rank embeds its own shard of the
generated samples (and of the reference set when it is not cached); the features are gathered in index order and
handed to torch-fidelity through its own cache files, so the metrics are computed by the same torch-fidelity code as
in one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch.utils.data import Dataset, Subset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from genproc.engine.distributed import DistInfo, broadcast_object, gather_rows, shard
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


def feature_layers(metrics: set[str], extractor: str) -> list[str]:
    """The extractor layers torch-fidelity reads for ``metrics``."""
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    return sorted({cls.get_default_feature_layer_for_metric(m) for m in metrics})


def feature_file(cache_root: Path, key: str, extractor: str, layer: str) -> Path:
    """torch-fidelity 0.4.0's cache file of input ``key``'s features at ``layer`` (a (N, D) tensor)."""
    return cache_root / f"{key}-{extractor}-features-{layer}.pt"


def cached_files(metrics: set[str], key: str, extractor: str, cache_root: Path) -> list[Path]:
    """The files torch-fidelity 0.4.0 reads for input2 instead of recomputing (FID alone: its statistics)."""
    layers = feature_layers(metrics, extractor)
    if metrics == {"fid"}:
        return [cache_root / f"{key}-{extractor}-stat-fid-{layers[0]}.pt"]
    return [feature_file(cache_root, key, extractor, layer) for layer in layers]


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
                     cuda: bool = False, log: Callable[[str], Any] = print,
                     generated_name: str | None = None) -> dict[str, Any]:
    """Run torch-fidelity on two uint8 (3, H, W) datasets; returns its raw dict plus cache info.

    metrics: a subset of {"fid", "kid", "prc"}. Keys added: ``reference_cached`` (bool),
    ``kid_subset_size``. ``generated_name``: the cache name under which ``cache_root`` already holds the generated
    set's features (:func:`fidelity_metrics_across_ranks`); None: embed ``generated`` (never cached).
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
    if generated_name is not None:
        kwargs["input1_cache_name"] = generated_name
    if weights.path is not None:
        kwargs["feature_extractor_weights_path"] = weights.path
    try:
        with channels_last_extractor(weights.extractor):
            out = torch_fidelity.calculate_metrics(**kwargs)
    except ValueError as e:  # torch-fidelity's vassert
        raise GenprocError(f"torch-fidelity: {str(e).splitlines()[0]}") from None
    return {**out, "reference_cached": hit, "kid_subset_size": kid_subset}


def embed(dataset: Dataset, layers: list[str], *, weights: ExtractorWeights, batch_size: int = 64,
          cuda: bool = False) -> dict[str, torch.Tensor]:
    """torch-fidelity's features of a uint8 (3, H, W) dataset at ``layers``: {layer: (N, D) on the CPU}, with the
    extractor built as :func:`fidelity_metrics` builds it (same weights, channels-last)."""
    kwargs: dict[str, Any] = {"verbose": False}
    if weights.path is not None:
        kwargs["feature_extractor_weights_path"] = weights.path
    with channels_last_extractor(weights.extractor):
        extractor = create_feature_extractor(weights.extractor, layers, cuda=cuda, **kwargs)
    return get_featuresdict_from_dataset(dataset, extractor, batch_size, cuda, True, False)


class _Embedded(Dataset):
    """The gathered samples' stand-in for torch-fidelity's input1: their features are in its cache, so it only needs
    their number (KID's subset size); reading an image is a bug."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        raise RuntimeError("the gathered samples are read from torch-fidelity's cache, not embedded again")


def fidelity_metrics_across_ranks(generated: Dataset, reference: Dataset, metrics: set[str], *, info: DistInfo,
                                  weights: ExtractorWeights, reference_name: str, cache_root: str | Path | None = None,
                                  batch_size: int = 64, seed: int = 0, cuda: bool = False,
                                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """:func:`fidelity_metrics` split across DDP ranks (a collective: every rank calls it, every rank gets the result).

    ``generated``: this rank's shard of the samples, the shards in rank order making up the whole set
    (:func:`genproc.engine.distributed.shard`); ``reference``: the whole reference set, embedded shard by shard when
    its features are not cached yet. Rank 0 writes the gathered features into torch-fidelity's cache (the reference
    under ``reference_name``, as torch-fidelity itself would; the samples under a temporary name, removed afterwards)
    and runs torch-fidelity on them.
    """
    if not info.enabled:
        return fidelity_metrics(generated, reference, metrics, weights=weights, reference_name=reference_name,
                                cache_root=cache_root, batch_size=batch_size, seed=seed, cuda=cuda, log=log)
    if min(len(generated), len(shard(len(reference), info))) < 1:
        raise GenprocError(f"every one of the {info.world_size} ranks needs at least one generated and one reference "
                           f"image; use --n and --n-ref of at least {info.world_size}")
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    layers = feature_layers(metrics, weights.extractor)
    hit = broadcast_object(all(f.is_file() for f in cached_files(metrics, reference_name, weights.extractor, cache_root)),
                           info)
    gen = {k: gather_rows(v, info) for k, v in sorted(embed(generated, layers, weights=weights, batch_size=batch_size,
                                                            cuda=cuda).items())}
    ref = None
    if not hit:
        part = Subset(reference, list(shard(len(reference), info)))
        ref = {k: gather_rows(v, info) for k, v in sorted(embed(part, layers, weights=weights, batch_size=batch_size,
                                                                cuda=cuda).items())}
    out: Any = None
    if info.is_main:
        cache_root.mkdir(parents=True, exist_ok=True)
        name = f"genproc-gathered-{uuid.uuid4().hex[:12]}"
        try:
            for key, feats in ((name, gen), (reference_name, ref)):
                for layer, f in (feats or {}).items():
                    path = feature_file(cache_root, key, weights.extractor, layer)
                    torch.save(f, path.with_suffix(".pt.tmp"))
                    os.replace(path.with_suffix(".pt.tmp"), path)
            out = fidelity_metrics(_Embedded(len(next(iter(gen.values())))), reference, metrics, weights=weights,
                                   reference_name=reference_name,
                                   cache_root=cache_root, batch_size=batch_size, seed=seed, cuda=cuda,
                                   log=lambda *_: None, generated_name=name)
            out["reference_cached"] = hit
            log(f"reference features: {'cache hit' if hit else f'embedded across {info.world_size} ranks and cached'} "
                f"in {cache_root}")
        except Exception as e:  # noqa: BLE001 - told to every rank below, so none waits for a result that never comes
            out = e
        finally:
            for f in cache_root.glob(f"{name}-*"):
                f.unlink(missing_ok=True)
    res = broadcast_object(out if not isinstance(out, Exception) else {"error": str(out).splitlines()[0] if str(out)
                                                                                else type(out).__name__}, info)
    if isinstance(out, Exception):
        raise out
    if "error" in res:
        raise GenprocError(f"rank 0 failed to compute {'/'.join(sorted(metrics))}: {res['error']}")
    return res
