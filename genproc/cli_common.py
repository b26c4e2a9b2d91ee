"""What every ``genproc`` command shares: the one user-error exit (one line, status 2), the one Ctrl-C exit (one line,
status 130), ``--plugin`` on every command (:class:`PluginGroup`) and the shared options."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

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


@contextmanager
def interrupts(say: Callable[[KeyboardInterrupt], str], speak: bool = True) -> Iterator[None]:
    """``with interrupts(say): ...``: Ctrl-C inside ends the command with one line on stderr, ``interrupted:
    <say(e)>`` (what was written and how to continue), and exit status 130 (128 + SIGINT); ``speak=False`` (a rank
    other than 0 under torchrun) exits without the line."""
    try:
        yield
    except KeyboardInterrupt as e:
        if speak:
            typer.echo(f"interrupted: {say(e)}", err=True)
        raise typer.Exit(130) from None


def written_since(folder: Path, since: float) -> list[Path]:
    """The files under ``folder`` written at or after time ``since`` (``time.time()``), sorted; none if it is absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= since)


def kept_in(folder: Path, since: float, rerun: str) -> str:
    """What a command that writes into ``folder`` says on Ctrl-C (:func:`interrupts`): the files it had written there
    since ``since`` (the folder is then incomplete) or that it wrote nothing, and ``rerun`` (how to continue)."""
    files = [str(p.relative_to(folder)) for p in written_since(folder, since)]
    if not files:
        return f"nothing written to {folder}; {rerun}"
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"{folder} is incomplete ({shown} written); {rerun}"


def now() -> float:
    """The time a command started writing, for :func:`kept_in` (a file's mtime is compared with it)."""
    return time.time() - 0.05  # file times come from the kernel's coarse clock, a few ms behind time.time()


# ------------------------------------------------------------------ --plugin on every command

PLUGIN_HELP = ("Import this module (dotted name) or file (ending in .py) first, e.g. the one that registers your own "
               "process (repeatable; also $GENPROC_PLUGINS, a list separated by os.pathsep, ':' on Linux and macOS). A run "
               "dir or recipe never imports code by itself.")


def _load_plugins(ctx: typer.Context, value: list[str]) -> list[str]:
    """The --plugin callback (eager: before any other option or argument is used): import $GENPROC_PLUGINS and the
    --plugin values; a plugin that fails to import ends the command with one line (exit 2)."""
    if not ctx.resilient_parsing:
        from genproc.plugins import load_plugins

        try:
            load_plugins(value)
        except GenprocError as e:
            fail(e)
    return value


def _plugin_option() -> Any:
    """The ``--plugin`` option, as typer builds it (a one-command app's parameter): not passed to the command."""
    one = typer.Typer(add_completion=False)

    @one.command()
    def _command(plugin: list[str] = typer.Option([], "--plugin", metavar="MODULE_OR_FILE", callback=_load_plugins,
                                                  expose_value=False, is_eager=True, help=PLUGIN_HELP)) -> None:
        """Never run: declares the option."""

    return next(p for p in typer.main.get_command(one).params if p.name == "plugin")


class PluginGroup(TyperGroup):
    """The ``genproc`` app's group (``typer.Typer(cls=PluginGroup)``): every command, those of sub-apps (``analyze
    ...``) included, takes ``--plugin MODULE_OR_FILE`` and reads ``$GENPROC_PLUGINS``, imported before the command
    reads a recipe or a run dir (:mod:`genproc.plugins`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        option = _plugin_option()

        def add(group: Any) -> None:
            for command in group.commands.values():
                if isinstance(command, TyperGroup):  # a sub-app (analyze): its commands take it
                    add(command)
                elif all(p.name != "plugin" for p in command.params):
                    command.params.append(option)

        add(self)
