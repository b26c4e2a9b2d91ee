"""torch Datasets that feed torch-fidelity: uint8 (3, H, W) images, generated or real.

torch-fidelity's extractors take uint8 RGB at any size and resize themselves (Inception:
TF1-style bilinear to 299x299), so here images are only quantised and grayscale is
repeated to three channels. Generated samples are streamed: the sampler runs one batch
at a time as the DataLoader asks for it (sequentially, ``num_workers=0``), never holding
all ``n`` samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from genproc.engine.media import to_uint8
from genproc.progress import counter


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) float in [0, 1], C in {1, 3} -> (..., 3, H, W) uint8 (round to nearest)."""
    x = to_uint8(x)
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous() if x.shape[-3] == 1 else x


class SampleStream(Dataset):
    """``n`` samples of a loaded run as uint8 (3, H, W), generated ``batch_size`` at a time.

    Sample i depends only on (seed, i) (per-sample RNG), so any access order gives the same
    images; sequential access generates each batch exactly once. Item i is sample ``start_index + i`` (a DDP rank's
    shard), drawn on this process alone. ``progress``: a tqdm bar; else, given ``log``, a
    :class:`~genproc.progress.Heartbeat` line every minute.
    """

    def __init__(self, run: Any, n: int, *, seed: int = 0, batch_size: int = 64, start_index: int = 0,
                 progress: bool = False, log: Callable[[str], Any] | None = None):
        self.run, self.n, self.seed, self.batch_size, self.start_index = run, n, seed, batch_size, start_index
        self._start, self._images = -1, torch.empty(0)
        self._progress = counter("sampling", n, progress=progress, log=log)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        start = (i // self.batch_size) * self.batch_size
        if start != self._start:
            count = min(self.batch_size, self.n - start)
            res = self.run.sample(count, seed=self.seed, batch_size=count, capture_every=-1,
                                  start_index=self.start_index + start, distributed=False)
            self._start, self._images = start, to_uint8_rgb(res.images)  # (count, 3, H, W)
            self._progress.update(count)
            if start + count == self.n:
                self._progress.close()
        return self._images[i - start]


class ReferenceImages(Dataset):
    """``n`` images of an ImageDataset as uint8 (3, H, W): the first ``n``, or with ``random_seed`` ``n`` drawn without
    replacement by ``torch.randperm`` under that seed (for a folder sorted by name, whose first images are no sample
    of the whole); ``reads`` counts accesses."""

    def __init__(self, data: Any, n: int | None = None, *, random_seed: int | None = None):
        self.data = data
        self.n = len(data) if n is None else min(n, len(data))
        self.index = (None if random_seed is None else
                      torch.randperm(len(data), generator=torch.Generator().manual_seed(random_seed))[:self.n].tolist())
        self.reads = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.reads += 1
        return to_uint8_rgb(self.data[i if self.index is None else self.index[i]])
