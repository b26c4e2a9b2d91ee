"""Per-sample random streams, so sample i does not depend on batch size or device count."""

from __future__ import annotations

import torch

from genproc.seeding import generator


class SampleRNG:
    """One ``torch.Generator`` per sample, seeded from (seed, sample index, stream).

    ``randn((C, H, W))`` returns (B, C, H, W): row i comes from sample i's own generator.
    Sharing a stream (``same-init``, ``share-noise``) is done by giving every sample the
    same index.
    """

    def __init__(self, seed: int, indices: list[int] | torch.Tensor, stream: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.gens = [generator(seed, int(i), stream) for i in indices]

    def __len__(self) -> int:
        return len(self.gens)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) float32 standard normal on the RNG's device."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.gens]).to(self.device)

    def randint(self, high: int) -> torch.Tensor:
        """(B,) int64 uniform in [0, high)."""
        return torch.stack([torch.randint(high, (), generator=g) for g in self.gens]).to(self.device)

    def rand(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) float32 uniform in [0, 1) on the RNG's device."""
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens]).to(self.device)
