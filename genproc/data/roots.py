"""Where a data set lives on disk.

Precedence: the explicit ``data_root`` argument (CLI ``--data-root``), then the
recipe's ``data.root``, then ``$GENPROC_DATA/<default subfolder>``. The root is
the data set's own folder (e.g. ``../shared/data/mnist``), not its parent.
Relative paths are taken from the current directory; ``~`` and ``$VARS`` are expanded.
"""

from __future__ import annotations

import os

from genproc.errors import GenprocError
from genproc.recipe import DataConfig

ENV_VAR = "GENPROC_DATA"

# Sub-folder of $GENPROC_DATA used when no root is given; None = a root is required.
DEFAULT_SUBFOLDERS: dict[str, str | None] = {
    "mnist": "mnist",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar10",
    "folder": None,
}

# Data sets that ship with a library and never touch the disk.
BUILTIN = ("digits",)


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(os.path.expandvars(path)))


def resolve_root(cfg: DataConfig, data_root: str | None = None) -> str | None:
    """Absolute path of the folder holding data set ``cfg.name``; ``None`` for built-in sets.

    Raises :class:`GenprocError` when no root can be determined.
    """
    if cfg.name in BUILTIN:
        return None
    if data_root:
        return _absolute(data_root)
    if cfg.root:
        return _absolute(cfg.root)
    if cfg.name not in DEFAULT_SUBFOLDERS:
        raise GenprocError(f"unknown data set '{cfg.name}' (known: {', '.join([*BUILTIN, *DEFAULT_SUBFOLDERS])})")
    sub = DEFAULT_SUBFOLDERS[cfg.name]
    if sub is None:
        raise GenprocError(
            f"data set '{cfg.name}' needs a folder: set data.root in the recipe or pass --data-root PATH"
        )
    base = os.environ.get(ENV_VAR)
    if not base:
        raise GenprocError(
            f"no folder for data set '{cfg.name}': set data.root, pass --data-root PATH, "
            f"or set ${ENV_VAR} (then ${ENV_VAR}/{sub} is used)"
        )
    return _absolute(os.path.join(base, sub))
