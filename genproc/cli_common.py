"""What every ``genproc`` command shares: the one user-error exit (one line, status 2) and the shared options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from genproc.errors import GenprocError


def fail(e: BaseException) -> NoReturn:
    """Print a user error as one line ``error: <message>`` on stderr and exit with status 2.

    A message re-raised from a DataLoader worker spans lines; its last line is the original one."""
    msg = str(e).strip()
    if "\n" in msg:
        msg = msg.splitlines()[-1].removeprefix("genproc.errors.GenprocError: ")
    typer.echo(f"error: {msg or type(e).__name__}", err=True)
    raise typer.Exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """``with user_errors(): ...``: a :class:`GenprocError` inside ends the command through :func:`fail`; so does an
    OSError from the file system (disk full, no permission, ...), as one line naming the path and the cause."""
    try:
        yield
    except GenprocError as e:
        fail(e)
    except OSError as e:
        fail(GenprocError(f"cannot access {e.filename or 'a file'}: {e.strerror or e}"))


@contextmanager
def joined_ranks() -> Iterator[bool]:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group for the command (NCCL on GPUs, gloo on the CPU),
    leave it afterwards, and yield whether this is rank 0 (the one that writes and prints); else yield True."""
    from genproc.engine.distributed import init_distributed, shutdown

    info = init_distributed("auto")
    try:
        yield info.is_main
    finally:
        shutdown(info)


def sampling_option() -> list[str]:
    """``--sampling KEY=VALUE`` (repeatable): sampling-time settings, parsed by :func:`genproc.recipe.parse_sampling`."""
    return typer.Option([], "--sampling",
                        help="Sampling-time setting: the sampler and its settings, e.g. --sampling sampler=NAME "
                             "--sampling steps=20 --sampling clip=clamp ('genproc samplers RUN' lists them), or the "
                             "process's, e.g. --sampling delta=0.02 (IHDM); "
                             "'process.' prefix optional; repeatable. With several runs each takes the settings that "
                             "fit it.")


def old_flag(flag: str) -> list[str]:
    """A renamed flag kept as a hidden alias for one release (e.g. ``--sample-set`` for ``--sampling``)."""
    return typer.Option([], flag, hidden=True)
