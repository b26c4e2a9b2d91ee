"""The one seeding rule: every random stream's seed is an integer function of (seed, and up to three indices).

Sample i's streams (:class:`genproc.processes.rng.SampleRNG`), a training step's global batch noise
(:func:`genproc.engine.batches.step_generator`) and each rank's dropout seed all come from :func:`derive_seed`, so
results depend only on those integers, never on batch size, device count or the order of calls.
"""

from __future__ import annotations

import torch

_MOD = 2**63 - 1


def derive_seed(seed: int, a: int = 0, b: int = 0, c: int = 0, offset: int = 0) -> int:
    """A 63-bit seed from the base ``seed`` and indices a, b, c (e.g. sample, stream; step, salt; step, -, rank)."""
    return (int(seed) * 1_000_003 + int(a) * 7919 + int(b) * 104_729 + int(c) * 9_176_867 + int(offset)) % _MOD


def generator(seed: int, a: int = 0, b: int = 0, c: int = 0, offset: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(seed, a, b, c, offset))
