"""The sampler contract: one class per sampler, one signature for all, over what a process exposes.

A sampler is built from its config dataclass (``SamplerCls(cfg)``: every field is a sampling-time setting, e.g.
``steps``, DDIM's ``eta``, the x̂₀ ``clip``) and needs one view of the process (``view``: a contract type of
:mod:`genproc.processes.views`, or :class:`ForwardProcess` itself for a process's own chain). It knows nothing of any
particular process, and no process knows it.

    levels = sampler.levels(process, start)                      # the levels it visits, decreasing, each >= 1
    x = sampler.run(process, net, x, noise, levels, on_step)     # the state at level 0

``net(x, k)``: x (B, C, H, W) float32, k (B,) int64 -> (B, C, H, W) float32 (the engine wraps autocast around it).
``noise(j)``: the j-th standard-normal draw (B, C, H, W) of this chain (j = 0, 1, ... in the order the sampler asks;
the engine draws it from each sample's own stream, so sample i depends only on (seed, i)). ``on_step(j, level, x)``:
called with the state after step j (``level`` is where it is: 0 after the last step). A sampler may call the network
more than once per step (:meth:`Sampler.calls`) and keep history between steps; it holds no state between chains.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genproc.errors import GenprocError
from genproc.processes import ForwardProcess, Net

Noise = Callable[[int], torch.Tensor]  # noise(j) -> (B, C, H, W) ~ N(0, I), the chain's j-th draw
OnStep = Callable[[int, int, torch.Tensor], Any]  # on_step(j, level reached, state (B, C, H, W))


def evenly_spaced_levels(start: int, steps: int) -> list[int]:
    """``steps`` levels evenly spaced from ``start`` down to 1 (rounded, repeats dropped; at most ``start``): the DDIM
    schedule (Song et al. 2021, Sec. 4.2's "linear" τ), the chain then steps to level 0."""
    return torch.linspace(start, 1, min(steps, start)).round().long().unique_consecutive().tolist()


def call(net: Net, x: torch.Tensor, k: int) -> torch.Tensor:
    """net(x, k) with k broadcast to the batch: (B, C, H, W) float32."""
    return net(x, torch.full((x.shape[0],), int(k), dtype=torch.long, device=x.device)).float()


@dataclass
class SamplerConfig:
    """Base of every sampler's config: each field is a sampling-time setting (``--sampling KEY=VALUE``).

    ``steps``: the number of levels the sampler visits (None: the sampler's default, e.g. every level for the
    ancestral chain); the network calls per image follow from it (:meth:`Sampler.calls`)."""

    steps: int | None = None

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise GenprocError(f"sampler setting 'steps': expected an integer >= 1, got {self.steps}")


class Sampler(abc.ABC):
    """One sampler. Subclasses set ``view`` (the contract type a process must implement), ``description`` (one line,
    citing the paper), ``default_steps`` (None: every level) and implement :meth:`run`."""

    view: ClassVar[type] = ForwardProcess
    description: ClassVar[str] = ""
    default_steps: ClassVar[int | None] = None
    cfg: SamplerConfig

    def __init__(self, cfg: SamplerConfig):
        self.cfg = cfg

    def supports(self, process: ForwardProcess) -> bool:
        """Whether ``process`` exposes the view this sampler needs."""
        return isinstance(process, self.view)

    @classmethod
    def needs(cls) -> str:
        """What a process must expose for this sampler, in words (for messages and listings)."""
        return f"a process exposing {cls.view.__name__}"

    def levels(self, process: ForwardProcess, start: int | None = None) -> list[int]:
        """The levels visited, decreasing from ``start`` (default: the top level), each >= 1; the chain ends at 0.
        Default: ``steps`` evenly spaced (every level when ``steps`` is None and there is no default)."""
        start = process.num_levels if start is None else int(start)
        steps = self.cfg.steps if self.cfg.steps is not None else self.default_steps
        return evenly_spaced_levels(start, start if steps is None else steps)

    def calls(self, levels: list[int]) -> int:
        """Network calls per image for a chain over ``levels`` (default: one per level)."""
        return len(levels)

    def stochastic(self, process: ForwardProcess) -> bool:
        """Whether the chain draws noise after the prior (False: deterministic given the prior state)."""
        return True

    @abc.abstractmethod
    def run(self, process: ForwardProcess, net: Net, x: torch.Tensor, noise: Noise, levels: list[int],
            on_step: OnStep | None = None) -> torch.Tensor:
        """The chain from the state ``x`` (B, C, H, W) float32 at level ``levels[0]`` through ``levels`` to level 0.
        Returns the final state (B, C, H, W) float32 in model units (``process.to_image`` makes it an image)."""


class _FirstStepDone(Exception):
    pass


def first_step(sampler: Sampler, process: ForwardProcess, net: Net, x: torch.Tensor, k: int, k_next: int) -> torch.Tensor:
    """The state after ``sampler``'s step from level k to k_next < k with zero noise: the mean of its reverse step
    (IHDM: x + f(x, k); the ancestral chain: the posterior mean at x̂₀). Differentiable in x where the sampler is."""
    got: list[torch.Tensor] = []

    def on_step(j: int, level: int, state: torch.Tensor) -> None:
        got.append(state)
        raise _FirstStepDone

    try:
        sampler.run(process, net, x, lambda j: torch.zeros_like(x), [k, k_next] if k_next > 0 else [k], on_step)
    except _FirstStepDone:
        pass
    return got[0]
