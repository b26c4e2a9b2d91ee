"""The one reading of ``data.image_size``: an int (H = W) or a pair [H, W] -> (H, W)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from genproc.errors import GenprocError


def as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) of ``image_size``: an int (H = W) or a pair of positive ints; one clear error otherwise."""
    hw = tuple(image_size) if isinstance(image_size, Sequence) else (image_size, image_size)
    if len(hw) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise GenprocError(f"recipe field 'data.image_size': expected a positive integer or [H, W], got {image_size!r}")
    return int(hw[0]), int(hw[1])
