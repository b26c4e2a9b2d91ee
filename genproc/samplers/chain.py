"""The process's own reverse chain: ``process.reverse_step`` over ``process.reverse_levels()`` (IHDM's Alg. 2, a user's
Cold-Diffusion-style process). Every process that defines its own step supports it; it is their default sampler.
``steps``: keep that many of the chain's levels, evenly spaced (rounded) along it; None keeps every one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genproc.processes import ForwardProcess, Net
from genproc.samplers.base import Noise, OnStep, Sampler, SamplerConfig, call


@dataclass
class ChainConfig(SamplerConfig):
    """``steps`` only."""


class Chain(Sampler):
    description = "the process's own reverse chain (its reverse_step over its reverse_levels)"
    cfg: ChainConfig

    def supports(self, process: ForwardProcess) -> bool:
        return process.has_own_chain

    @classmethod
    def needs(cls) -> str:
        return "a process with its own reverse step"

    def levels(self, process: ForwardProcess, start: int | None = None) -> list[int]:
        own = [k for k in process.reverse_levels() if start is None or k <= start]
        if start is not None and (not own or own[0] != start):
            own = [int(start), *own]
        if self.cfg.steps is None or self.cfg.steps >= len(own):
            return own
        pick = torch.linspace(0, len(own) - 1, self.cfg.steps).round().long().unique_consecutive().tolist()
        return [own[i] for i in pick]

    def stochastic(self, process: ForwardProcess) -> bool:
        return process.reverse_is_stochastic

    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        for j, k in enumerate(levels):
            k_next = levels[j + 1] if j + 1 < len(levels) else 0
            x = process.reverse_step(x, call(net, x, k), k, k_next, noise(j).to(x.device))
            if on_step is not None:
                on_step(j, k_next, x)
        return x
