"""Per-sample random streams, so sample i does not depend on batch size or device count.

The generators live on the device the model runs on: on CUDA the noise of a reverse step is drawn there, never copied
from the host (for 64 x 3 x 256 x 256 samples that copy was ~50 MB per step). Sample i still depends only on
(seed, i) on each device type, but CPU and CUDA streams are different random number generators: the same seed gives
different (equally valid) samples on a CPU and on a GPU.
"""

from __future__ import annotations

import torch

from genproc.seeding import derive_seed


class SampleRNG:
    """One ``torch.Generator`` per sample on ``device``, seeded from (seed, sample index, stream).

    ``randn((C, H, W))`` returns (B, C, H, W): row i comes from sample i's own generator.
    Sharing a stream (``same-init``, ``share-noise``) is done by giving every sample the
    same index.
    """

    def __init__(self, seed: int, indices: list[int] | torch.Tensor, stream: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.gens = [torch.Generator(device=gen_device).manual_seed(derive_seed(seed, int(i), stream)) for i in indices]

    def __len__(self) -> int:
        return len(self.gens)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) float32 standard normal on the RNG's device."""
        return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in self.gens]).to(self.device)

    def randint(self, high: int) -> torch.Tensor:
        """(B,) int64 uniform in [0, high)."""
        return torch.stack([torch.randint(high, (), generator=g, device=g.device) for g in self.gens]).to(self.device)

    def rand(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) float32 uniform in [0, 1) on the RNG's device."""
        return torch.stack([torch.rand(shape, generator=g, device=g.device) for g in self.gens]).to(self.device)
