"""Negative log-likelihood upper bounds in bits/dim, for any process with an ELBO.

Each process brings its own bound through the contract's optional capability ``process.elbo(train_data, device)``
(:class:`genproc.processes.base.ELBO`): ``terms(net, x0, rng)`` returns additive per-image terms, each (B,) float64
nats, whose sum bounds -log p(x0); ``labels``, ``convention`` and ``convention_detail`` describe them for the report.
IHDM's is :mod:`genproc.processes.heat_elbo`, DDPM's :mod:`genproc.processes.ddpm_elbo`. This module adds the
dequantisation and the units, the same for every process.

Discrete data and units. Images are 8-bit: v = round(255 x) in {0..255}^N. With uniform
dequantisation y = v + U, U ~ U[0,1)^N, Jensen gives -log P(v) <= E_U[-log p_y(v + U)].
The model's density lives on x = y / 256 in [0,1)^N, so p_y(y) = p_x(y/256) 256^-N and

    -log P(v) <= E_U[-log p_x((v + U)/256)] + N log 256 <= E_U[negative ELBO] + N log 256,
    bits/dim  = (nats / N + log 256) / log 2,

where nats is the per-image negative ELBO on x and N = C H W. A perfect uniform density on
[0,1)^N (nats = 0) scores exactly 8 bits/dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from genproc.engine.distributed import current, gather_rows, shard
from genproc.engine.media import to_uint8
from genproc.errors import GenprocError
from genproc.processes import ELBO, SampleRNG
from genproc.progress import counter

DEQUANT_STREAM, ELBO_STREAM = 11, 12  # SampleRNG streams: image i's noise depends only on (seed, i)
LOG256 = math.log(256.0)
DEQUANTIZATION = "x = (round(255 x_data) + U) / 256, U ~ U[0,1)^N; bits/dim = (nats/N + log 256)/log 2"


def bits_per_dim(nats: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """Per-image nats of a density on [0,1)^N -> bits/dim of the 8-bit data (log 256: the Jacobian of y = 256 x)."""
    return (nats / dims + LOG256) / math.log(2.0)


def dequantize(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1] (8-bit values v/255), u: same shape in [0, 1) -> (round(255 x) + u) / 256 in [0, 1)."""
    return (to_uint8(x).to(u.dtype) + u) / 256.0


def elbo_of(run: Any) -> ELBO:
    """The ELBO terms of the run's process (the contract's optional capability); an error when it has none."""
    elbo = run.process.elbo(run.prior_data(), run.device)
    if elbo is None:
        raise GenprocError(f"process '{run.process_name}' has no likelihood bound (ELBO); metric 'nll' is unavailable")
    return elbo


@torch.no_grad()
def evaluate_nll(run: Any, data: Any, n: int, *, seed: int = 0, batch_size: int = 64,
                 progress: bool = False, log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Upper bound on the NLL of the first ``n`` images of ``data`` under a loaded run (``genproc.load``).

    ``progress``: a tqdm bar; else, given ``log``, a progress line every minute.

    data: an ImageDataset (the evaluation split). Returns total and per-term means in nats
    and bits/dim, the standard error of the total, and the number of images used. Under ``torchrun`` each rank
    bounds its own part of the images and the per-image terms are gathered (a collective), so every rank returns the
    single-process result.
    """
    elbo = elbo_of(run)
    n = min(n, len(data))
    dims = data[0].numel()
    info = current()
    part = shard(n, info)
    if not part:
        raise GenprocError(f"nll across {info.world_size} ranks needs at least one image per rank, got {n} images")
    local: dict[str, list[torch.Tensor]] = {}
    bar = counter("nll", len(part), progress=progress and info.is_main, log=log if info.is_main else None)
    for b0 in range(part.start, part.stop, batch_size):
        idx = list(range(b0, min(part.stop, b0 + batch_size)))
        x = data.get_batch(torch.tensor(idx)).to(run.device)  # (B, C, H, W) in [0, 1]
        x = dequantize(x, SampleRNG(seed, idx, DEQUANT_STREAM, run.device).rand(tuple(x.shape[1:])))
        for key, v in elbo.terms(run.net, x, SampleRNG(seed, idx, ELBO_STREAM, run.device)).items():
            local.setdefault(key, []).append(v.double().cpu())
        bar.update(len(idx))
    bar.close()
    # (n,) float64 nats per image and term, in image order; the same sums in one process and across ranks
    per_image = {k: gather_rows(torch.cat(v), info) for k, v in local.items()}
    total = sum(per_image.values())  # (n,)
    mean = float(total.sum()) / n
    std_err = math.sqrt(max(float((total**2).sum()) / n - mean**2, 0.0) / max(n - 1, 1))
    nats = {k: float(v.sum()) / n for k, v in per_image.items()}
    return {
        "bits_per_dim": bits_per_dim(mean, dims),
        "std_error_bits_per_dim": std_err / (dims * math.log(2.0)),
        "nats_per_image": mean,
        "terms_nats": nats,
        "terms_bits_per_dim": {k: v / (dims * math.log(2.0)) for k, v in nats.items()},
        "dequantization_bits_per_dim": LOG256 / math.log(2.0),
        "term_labels": dict(elbo.labels),
        "dims": dims,
        "n_images": n,
        "prior_size": len(run.prior_data()) if run.process.needs_data_for_prior else None,
        "dequantization": DEQUANTIZATION,
        "convention": elbo.convention,
        "convention_detail": elbo.convention_detail,
    }
