"""Samplers, apart from processes, and the registry that names them.

A sampler drives any process that exposes the view it needs (:mod:`genproc.processes.views`): the Gaussian samplers
every Gaussian diffusion (DDPM, BDM, a user's own), the heat-chain samplers IHDM and the blur variant, ``chain`` every
process that defines its own reverse step. The contract is :class:`genproc.samplers.base.Sampler`. Adding a sampler =
its module + one call::

    from genproc.samplers import register
    register("mine", MySampler, MyConfig)

after which ``--sampling sampler=mine`` and ``run.with_sampling(sampler="mine")`` work for every process it supports.
A process's default sampler is the first registered one that supports it (``chain`` before the others, so a process
with its own chain keeps it; a Gaussian diffusion without one gets ``ancestral``).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from genproc.errors import GenprocError
from genproc.processes import ForwardProcess
from genproc.samplers.ancestral import Ancestral, AncestralConfig
from genproc.samplers.base import Sampler, SamplerConfig, evenly_spaced_levels
from genproc.samplers.chain import Chain, ChainConfig
from genproc.samplers.ddim import DDIM, DDIMConfig
from genproc.samplers.dpm_solver import DPMpp2M, DPMpp2MConfig
from genproc.samplers.edm import Heun, HeunConfig
from genproc.samplers.heat import HeatJump, HeatJumpConfig

__all__ = ["Registration", "Sampler", "SamplerConfig", "build_sampler", "check", "evenly_spaced_levels",
           "for_process", "lookup", "name_of", "register", "registered", "settings", "supported", "unregister"]


@dataclass(frozen=True)
class Registration:
    name: str
    sampler_cls: type[Sampler]
    config_cls: type[SamplerConfig]


_REGISTRY: dict[str, Registration] = {}


def register(name: str, sampler_cls: type[Sampler], config_cls: type[SamplerConfig]) -> Registration:
    """Add a sampler under ``name`` (lower case). ``sampler_cls(cfg)`` builds it from a ``config_cls`` instance (a
    dataclass deriving from :class:`SamplerConfig`, one class per sampler: a recipe names its sampler by it).
    Registering a name again replaces it."""
    name = name.strip().lower()
    if not (isinstance(sampler_cls, type) and issubclass(sampler_cls, Sampler)):
        raise GenprocError(f"register('{name}'): the sampler class must subclass genproc.samplers.base.Sampler")
    if not (isinstance(config_cls, type) and issubclass(config_cls, SamplerConfig)):
        raise GenprocError(f"register('{name}'): the config must subclass genproc.samplers.base.SamplerConfig")
    for other in _REGISTRY.values():
        if other.config_cls is config_cls and other.name != name:
            raise GenprocError(f"register('{name}'): config {config_cls.__name__} is already registered as '{other.name}'")
    reg = Registration(name, sampler_cls, config_cls)
    _REGISTRY[name] = reg
    return reg


def unregister(name: str) -> None:
    """Remove a sampler (tests, notebooks); an unknown name is ignored."""
    _REGISTRY.pop(name, None)


def registered() -> list[str]:
    """Every registered sampler's name, in registration order."""
    return list(_REGISTRY)


def lookup(name: str) -> Registration:
    """The registration of a sampler name; an unknown one is an error naming the nearest."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        near = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise GenprocError(f"unknown sampler '{name}'{hint} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[key]


def name_of(cfg: SamplerConfig) -> str:
    """The name of the sampler whose config ``cfg`` is (exact class match)."""
    for reg in _REGISTRY.values():
        if type(cfg) is reg.config_cls:
            return reg.name
    raise GenprocError(f"no sampler is registered for config {type(cfg).__name__}")


def build_sampler(name: str, cfg: SamplerConfig | None = None) -> Sampler:
    """The sampler ``name`` with settings ``cfg`` (default: its config's defaults)."""
    reg = lookup(name)
    return reg.sampler_cls(cfg if cfg is not None else reg.config_cls())


def supported(process: ForwardProcess) -> list[str]:
    """The names of the samplers that can drive ``process`` (those whose view it exposes)."""
    return [n for n, reg in _REGISTRY.items() if reg.sampler_cls(reg.config_cls()).supports(process)]


def check(process: ForwardProcess, name: str | None) -> str:
    """The canonical name of sampler ``name`` (None: the process's default) after checking that it can drive
    ``process``: one line naming the samplers this process supports otherwise."""
    ok = supported(process)
    if name is None:
        if not ok:
            raise GenprocError(f"no registered sampler can drive process {process.label}: it exposes no sampler view "
                               f"and defines no reverse step of its own")
        return ok[0]
    reg = lookup(name)
    if reg.name not in ok:
        raise GenprocError(f"sampler '{reg.name}' cannot drive process {process.label} (it needs "
                           f"{reg.sampler_cls.needs()}); samplers for {process.label}: {', '.join(ok) or 'none'}")
    return reg.name


def for_process(process: ForwardProcess, cfg: SamplerConfig | None = None) -> Sampler:
    """The sampler a recipe's ``sampler`` section names (its config ``cfg``), checked against ``process``; None: the
    process's default sampler with its default settings."""
    name = check(process, None if cfg is None else name_of(cfg))
    if cfg is not None:
        cfg.validate()
    return build_sampler(name, cfg)


def settings(cfg: SamplerConfig) -> dict[str, Any]:
    """A config's fields as a plain dict, for records."""
    return dataclasses.asdict(cfg)


# The built-in samplers, registered like any other. The order sets the defaults: a process's own chain first.
register("chain", Chain, ChainConfig)
register("ancestral", Ancestral, AncestralConfig)
register("ddim", DDIM, DDIMConfig)
register("dpmpp_2m", DPMpp2M, DPMpp2MConfig)
register("heun", Heun, HeunConfig)
register("heat_jump", HeatJump, HeatJumpConfig)
