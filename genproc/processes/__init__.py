"""Forward processes: pure math, no networks, and the registry that names them.

The contract is code: :class:`genproc.processes.base.ForwardProcess` and :class:`ProcessConfig`. Processes are
registered by explicit calls, the built-in ones at the bottom of this file the same way as a user's::

    from genproc.processes import register
    register("mine", MyProcess, MyConfig, aliases=("my-process",))

after which ``process: {name: mine, ...}`` works in recipes, ``genproc compare mine ...``, the analyses and the
metrics. One canonical name per process (used in saved recipes, reports, figure and file names); aliases are
accepted wherever a name is read. Installed packages can add processes through the ``genproc.processes``
entry-point group (each entry point is a callable that calls :func:`register`), loaded on first lookup; a module or
file of the user's is imported by every ``genproc`` command given ``--plugin`` or ``$GENPROC_PLUGINS``
(:mod:`genproc.plugins`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points

from genproc.errors import GenprocError
from genproc.plugins import HINT
from genproc.processes.base import ELBO, ForwardProcess, Net, ProcessConfig
from genproc.processes.bdm import BDMConfig, BDMProcess
from genproc.processes.blur import BlurConfig, BlurProcess
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.heat import HeatConfig, HeatProcess
from genproc.processes.rng import SampleRNG

__all__ = ["ELBO", "ForwardProcess", "Net", "ProcessConfig", "Registration", "SampleRNG", "build_process",
           "canonical_name", "lookup", "name_of", "register", "registered", "unregister"]

ENTRY_POINT_GROUP = "genproc.processes"


@dataclass(frozen=True)
class Registration:
    name: str  # canonical name
    process_cls: type[ForwardProcess]
    config_cls: type[ProcessConfig]
    aliases: tuple[str, ...] = ()


_REGISTRY: dict[str, Registration] = {}  # canonical name -> registration
_ALIASES: dict[str, str] = {}  # alias -> canonical name
_entry_points_loaded = False


def register(name: str, process_cls: type[ForwardProcess], config_cls: type[ProcessConfig],
             aliases: tuple[str, ...] | list[str] = ()) -> Registration:
    """Add a process under ``name`` (lower case), also found as any of ``aliases``.

    ``process_cls(cfg)`` must build the process from a ``config_cls`` instance; ``config_cls`` is a dataclass
    (ideally a :class:`ProcessConfig`). Registering a name again replaces it (re-running a notebook cell).
    """
    name, aliases = name.strip().lower(), tuple(a.strip().lower() for a in aliases)
    if not (isinstance(process_cls, type) and issubclass(process_cls, ForwardProcess)):
        raise GenprocError(f"register('{name}'): the process class must subclass genproc.processes.base.ForwardProcess")
    for other in (name, *aliases):
        owner = _ALIASES.get(other, other if other in _REGISTRY else None)
        if owner is not None and owner != name:
            raise GenprocError(f"register('{name}'): '{other}' already names process '{owner}'")
    for reg in list(_REGISTRY.values()):
        if reg.config_cls is config_cls and reg.name != name:
            raise GenprocError(f"register('{name}'): config {config_cls.__name__} is already registered as '{reg.name}'")
    unregister(name)
    reg = Registration(name, process_cls, config_cls, aliases)
    _REGISTRY[name] = reg
    _ALIASES.update({a: name for a in aliases})
    return reg


def unregister(name: str) -> None:
    """Remove a process and its aliases (tests, notebooks); an unknown name is ignored."""
    reg = _REGISTRY.pop(name, None)
    if reg is not None:
        for a in reg.aliases:
            _ALIASES.pop(a, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()()


def registered() -> list[str]:
    """Canonical names of every registered process, in registration order."""
    _load_entry_points()
    return list(_REGISTRY)


def canonical_name(name: str) -> str:
    """The canonical name of a registered process given its name or an alias (case-insensitive).
    An unknown name is a GenprocError that names the nearest known one."""
    _load_entry_points()
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        known = [*_REGISTRY, *_ALIASES]
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise GenprocError(f"unknown process '{name}'{hint} (known: {', '.join(_REGISTRY)})" + ("" if near else f"; {HINT}"))
    return key


def lookup(name: str) -> Registration:
    """The registration of a process name or alias."""
    return _REGISTRY[canonical_name(name)]


def name_of(cfg: ProcessConfig) -> str:
    """The canonical name of the process whose config ``cfg`` is (exact class match)."""
    _load_entry_points()
    for reg in _REGISTRY.values():
        if type(cfg) is reg.config_cls:
            return reg.name
    raise GenprocError(f"no process is registered for config {type(cfg).__name__}; call genproc.processes.register first")


def build_process(cfg: ProcessConfig) -> ForwardProcess:
    """Instantiate the process whose config ``cfg`` is."""
    return _REGISTRY[name_of(cfg)].process_cls(cfg)


# The built-in processes, registered like any other.
register("ihdm", HeatProcess, HeatConfig, aliases=("heat",))
register("blur", BlurProcess, BlurConfig)
register("ddpm", DDPMProcess, DDPMConfig)
register("bdm", BDMProcess, BDMConfig, aliases=("blurring-diffusion",))
