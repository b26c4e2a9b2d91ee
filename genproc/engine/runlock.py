"""One trainer per run dir: an OS lock (``flock``) on ``<run_dir>/train.lock``, held for the life of a training.

The lock file records its holder (pid, host, start time) once the lock is taken; a second training of the same run
dir fails with one line naming that holder. The OS releases a ``flock`` when its holder exits however it exits
(SIGKILL, power loss of a local disk), so a stale lock file never blocks: only a live holder does. Sampling,
evaluating and analysing never take the lock. Under ``torchrun`` only rank 0 locks (:func:`lock_run_dir`).

``flock`` belongs to the open file description, so a second ``open`` of the file in the same process conflicts with
the first, and a process forked while the lock is held (a DataLoader worker) closes its copy of the descriptor at once
(:func:`os.register_at_fork`): a worker outliving a killed trainer never keeps the run dir locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genproc.engine.distributed import DistInfo
from genproc.errors import GenprocError

LOCK_FILE = "train.lock"
_HELD: set[int] = set()  # descriptors of the locks this process holds (closed in forked children)


def _close_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)  # the child's copy only: the parent's descriptor keeps the lock
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """A held lock on a run dir (``fd`` None: the file system cannot lock, nothing is held). :meth:`release` ends it."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Unlock and close (the file stays: it tells the last holder; the next training overwrites it)."""
        if self.fd is not None:
            _HELD.discard(self.fd)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(path: Path) -> dict[str, Any]:
    """The holder record in lock file ``path`` ({} when it cannot be read or is not written yet)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def describe_holder(run_dir: Path, holder: dict[str, Any]) -> str:
    """'run dir X is being trained by pid N on host H since T' (or by an unnamed process, when the holder has not
    written its record yet)."""
    if "pid" not in holder:
        return f"run dir {run_dir} is being trained by another process (it has not written its pid yet)"
    return (f"run dir {run_dir} is being trained by pid {holder['pid']} on host {holder.get('host', '?')} "
            f"since {holder.get('since', '?')}")


def _stderr_warning(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def acquire(run_dir: str | Path, warn: Callable[[str], Any] = _stderr_warning) -> RunLock:
    """Lock ``run_dir`` (created if missing) for one training, without waiting: a run dir another process is training
    is one :class:`GenprocError` line naming the holder. On a file system without locks, ``warn`` says so and the
    training goes on unlocked."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise GenprocError(f"cannot write to run dir {run_dir}: {e.strerror or e} ({e.filename or path})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise GenprocError(f"{describe_holder(run_dir, _read_holder(path))}; stop that training first (Ctrl-C or "
                           "kill -TERM saves a checkpoint) or use another --run-dir") from None
    except OSError as e:  # e.g. ENOLCK / EOPNOTSUPP: a file system without flock
        os.close(fd)
        warn(f"cannot lock {path} ({e.strerror or e}); nothing stops a second training of this run dir")
        return RunLock(path, None)
    _HELD.add(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
              "time": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return RunLock(path, fd)


def lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """Whether a training holds ``run_dir`` now: its record {"pid", "host", "since", "time"} ({} when not written yet)
    if so, else None (no lock file, or one left by a finished or killed training). Takes nothing: a shared lock is
    tried without waiting and released at once."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path)
    except OSError:  # no locks on this file system: nothing can tell
        return None
    finally:
        os.close(fd)  # closing releases the shared lock, if it was taken
    return None


def lock_run_dir(run_dir: Path, info: DistInfo, device: torch.device, warn: Callable[[str], Any]) -> RunLock | None:
    """Rank 0 locks ``run_dir`` (:func:`acquire`) and every rank learns whether it could (a collective under
    ``torchrun``): all ranks fail together, rank 0 naming the holder. The other ranks hold None."""
    lock, error = None, None
    if info.is_main:
        try:
            lock = acquire(run_dir, warn)
        except GenprocError as e:
            error = e
    if info.enabled:
        failed = torch.tensor([float(error is not None)], device=device)
        torch.distributed.broadcast(failed, src=0)
        if failed.item() > 0 and error is None:
            raise GenprocError(f"rank 0 could not lock run dir {run_dir} (its message names the holder)")
    if error is not None:
        raise error
    return lock
