"""Progress for logs that are not a terminal: a line every so often instead of a tqdm bar.

A 10k-sample evaluation on a CPU runs for an hour or more; under ``nohup`` or a batch scheduler
tqdm is off (stderr is not a TTY), so long loops report through :class:`Heartbeat` instead:
``sampling: 1280/10000 img, 2.61 img/s, about 56 min left``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EVERY_S = 60.0  # default seconds between lines


class Heartbeat:
    """Call ``update(k)`` after each k units of work; logs at most once per ``every_s`` seconds, and at the end."""

    def __init__(self, what: str, total: int, log: Callable[[str], Any], every_s: float | None = None, unit: str = "img",
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.log, self.unit, self.clock = what, total, log, unit, clock
        self.every_s = EVERY_S if every_s is None else every_s
        self.done = 0
        self.t0 = self.last = clock()

    def update(self, k: int) -> None:
        self.done += k
        now = self.clock()
        if now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        tail = "done" if self.done >= self.total else f"about {_duration(left)} left"
        self.log(f"{self.what}: {self.done}/{self.total} {self.unit}, {rate:.3g} {self.unit}/s, {tail}")

    def close(self) -> None:
        pass


class _Silent:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


def counter(what: str, total: int, *, progress: bool, log: Callable[[str], Any] | None, unit: str = "img") -> Any:
    """Something with ``update(k)`` and ``close()``: a tqdm bar if ``progress`` (a terminal), else a
    :class:`Heartbeat` if there is a ``log``, else nothing."""
    if progress:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=what, unit=unit, leave=False)
    return Heartbeat(what, total, log, unit=unit) if log is not None else _Silent()


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
