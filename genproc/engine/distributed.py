"""DistributedDataParallel under ``torchrun`` (NCCL on GPUs, gloo on CPU), and the helpers that split sampling and
evaluation across the ranks: :func:`shard` (this rank's contiguous part of n items) and :func:`gather_rows` (every
rank's rows, in rank order, on every rank). Sample i depends only on (seed, i), so sharded work reproduces the
single-process result."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def current() -> DistInfo:
    """The process group this process has joined (:func:`init_distributed`), or a single process when none."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def shard(n: int, info: DistInfo) -> range:
    """This rank's contiguous part of ``range(n)``: the ranks' parts, in rank order, tile it; sizes differ by at most
    one (the first ``n % world`` ranks take one more)."""
    base, extra = divmod(n, info.world_size)
    lo = info.rank * base + min(info.rank, extra)
    return range(lo, lo + base + (1 if info.rank < extra else 0))


def gather_rows(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's ``x`` (n_r, ...) concatenated along dim 0 in rank order, returned on the CPU on every rank (a
    collective: every rank must call it). The ranks' n_r may differ; the other dims and the dtype must agree. NCCL
    gathers on this rank's GPU, gloo on the CPU."""
    if not info.enabled:
        return x
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    count = torch.tensor([x.shape[0]], dtype=torch.long, device=dev)
    counts = [torch.zeros_like(count) for _ in range(info.world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[: x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).cpu()


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's ``obj`` (picklable) on every rank (a collective)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def pick_device(pref: str, info: DistInfo) -> torch.device:
    """'auto' -> CUDA (this rank's GPU) when present, else CPU."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda" and info.enabled:
        pref = f"cuda:{info.local_rank}"
    dev = torch.device(pref)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def mean_across(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= info.world_size
    return x


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
