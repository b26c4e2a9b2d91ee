"""Plugins: the user's own modules, imported before a command reads a recipe or a run dir, so that what they register
(a forward process with :func:`genproc.processes.register`, a sampler, a feature extractor) is known to it.

The user names them, on the command line (``genproc sample runs/pix --plugin mine.py``, repeatable) or in
``$GENPROC_PLUGINS`` (a list separated by ``os.pathsep``): a path ending in ``.py`` is imported as a module of its own
(``genproc_plugin_<stem>_<hash of its path>``, once per file), anything else as a dotted module name found on the
Python path or in the current directory. genproc never imports code named inside a run dir or a recipe: a run of a
process registered by a plugin is read by naming the plugin again. In Python, importing the module does the same.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from genproc.errors import GenprocError

ENV = "GENPROC_PLUGINS"
HINT = f"registered by a plugin? pass --plugin FILE_OR_MODULE or set {ENV}"  # appended to 'unknown process' errors
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def plugin_specs(given: Sequence[str] = (), env: Mapping[str, str] | None = None) -> list[str]:
    """The plugins to import, in order: ``$GENPROC_PLUGINS`` entries (``os.pathsep``-separated), then ``given``
    (``--plugin`` values); blanks dropped, each once."""
    env = os.environ if env is None else env
    listed = [s.strip() for s in env.get(ENV, "").split(os.pathsep)] + [str(s).strip() for s in given]
    return list(dict.fromkeys(s for s in listed if s))


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _module_name(path: Path) -> str:
    """A module name of its own for the plugin file ``path`` (resolved): the same file, the same name."""
    stem = re.sub(r"\W", "_", path.stem)
    return f"genproc_plugin_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def _import_file(spec: str) -> ModuleType:
    path = Path(spec).expanduser().resolve()
    if path.suffix != ".py":
        raise GenprocError(f"plugin {spec!r}: expected a module name or a path to a file ending in .py")
    if not path.is_file():
        raise GenprocError(f"plugin file {spec} not found (--plugin / {ENV} take a module name or a path to a .py file)")
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise GenprocError(f"plugin file {spec} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # its own helper modules next to it import as they do when it runs as a script
    sys.modules[name] = module  # before running it: dataclasses look their module up while it is being executed
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_module(spec: str) -> ModuleType:
    if not _DOTTED.match(spec):
        raise GenprocError(f"plugin {spec!r}: expected a module name (e.g. my_processes) or a path to a file ending in .py")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as 'python -m' finds modules in the current directory (after the installed ones)
    return importlib.import_module(spec)


def load_plugin(spec: str) -> ModuleType:
    """Import one plugin, a path ending in .py or a dotted module name; a plugin that fails to import is a
    :class:`GenprocError` naming it and the error (one line)."""
    try:
        return _import_file(spec) if _is_file(spec) else _import_module(spec)
    except GenprocError as e:
        if str(e).startswith("plugin "):
            raise
        raise GenprocError(f"plugin {spec!r} failed to import: {e}") from None
    except Exception as e:  # any error in the user's module (SyntaxError, ImportError, ...) is one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise GenprocError(f"plugin {spec!r} failed to import: {type(e).__name__}" + (f": {first}" if first else "")) from None


def load_plugins(given: Sequence[str] = (), env: Mapping[str, str] | None = None) -> list[ModuleType]:
    """Import the plugins of :func:`plugin_specs` (``$GENPROC_PLUGINS``, then ``given``), in order."""
    return [load_plugin(s) for s in plugin_specs(given, env)]
