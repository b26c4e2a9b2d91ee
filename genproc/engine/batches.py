"""Deterministic data order: the global batch of step s depends only on (seed, s).

Epoch e is a permutation of the data seeded by (seed, e); step s takes global positions
[s B, (s+1) B) of the concatenated epochs. Every DDP rank computes the same global batch
and keeps its own contiguous slice, so a run on R ranks sees exactly the samples (and,
via :func:`step_generator`, the noise) of a single-process run with the same global batch,
and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from genproc.seeding import generator


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """The generator of global step ``step``'s randomness (levels, noise, flips); salt 7: the epoch order."""
    return generator(seed, step, salt, offset=12345)


class EpochOrder:
    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=step_generator(self.seed, epoch, salt=7))
        return self._cache[epoch]

    def global_batch(self, step: int, batch_size: int) -> torch.Tensor:
        """(batch_size,) int64 data indices of global step ``step``."""
        pos = torch.arange(step * batch_size, (step + 1) * batch_size)
        epochs = pos // self.n
        out = torch.empty(batch_size, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(e)[pos[sel] % self.n]
        return out


def local_slice(batch_size: int, rank: int, world: int) -> slice:
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


class _StepSampler(Sampler[list[int]]):
    def __init__(self, order: EpochOrder, start: int, stop: int, batch_size: int, sl: slice):
        self.order, self.start, self.stop, self.bs, self.sl = order, start, stop, batch_size, sl

    def __iter__(self) -> Iterator[list[int]]:
        for s in range(self.start, self.stop):
            yield self.order.global_batch(s, self.bs)[self.sl].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def resolve_workers(num_workers: int | str, world_size: int = 1) -> int:
    """``data.num_workers``: an integer as given; "auto": this machine's CPUs shared by the ranks, at most 8."""
    if num_workers != "auto":
        return int(num_workers)
    return max(1, min(8, (os.cpu_count() or 1) // max(1, world_size)))


# an in-memory data set goes to the GPU once when it takes at most this share of the GPU's free memory
GPU_DATA_SHARE = 0.25


def on_training_device(data, device: torch.device | str | None):
    """``data`` with its images on ``device`` when that is a GPU, the data set keeps all images in one tensor
    (``on_device``) and they fit in :data:`GPU_DATA_SHARE` of the free GPU memory; else ``data`` itself."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not hasattr(data, "on_device"):
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.on_device(device) if data.images.nbytes <= GPU_DATA_SHARE * free else data


def batch_iterator(data, order: EpochOrder, start: int, stop: int, batch_size: int, sl: slice,
                   num_workers: int | str = "auto", world_size: int = 1,
                   device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
    """Yields this rank's (B_local, C, H, W) float32 batches for steps start..stop-1: straight from memory for
    in-memory data sets (placed on a GPU ``device`` once: :func:`on_training_device`), else from a DataLoader with
    ``resolve_workers`` worker processes (kept for the whole run; pinned memory on CUDA machines)."""
    if getattr(data, "in_memory", False):
        data = on_training_device(data, device)
        for s in range(start, stop):
            yield data.get_batch(order.global_batch(s, batch_size)[sl])
        return
    workers = resolve_workers(num_workers, world_size)
    loader = DataLoader(data, batch_sampler=_StepSampler(order, start, stop, batch_size, sl), num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    yield from loader
