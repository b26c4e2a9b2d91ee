"""``genproc analyze <what>``: a typer group whose commands are collected from the ``COMMANDS`` dict of
every module in :mod:`genproc.analysis` (each analysis owns its command). Registered in cli.py as
``app.add_typer(analyze_app, name="analyze")``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import typer

import genproc.analysis

analyze_app = typer.Typer(help="Analyses of trained runs (spectra, interpolation, gradients, ...): figures (PNG) and numbers (JSON).",
                          no_args_is_help=True, pretty_exceptions_enable=False)


def collect_commands() -> dict[str, Callable[..., Any]]:
    """name -> typer command function, from every ``genproc.analysis.<module>.COMMANDS``."""
    found: dict[str, Callable[..., Any]] = {}
    for mod in pkgutil.iter_modules(genproc.analysis.__path__):
        module = importlib.import_module(f"genproc.analysis.{mod.name}")
        found.update(getattr(module, "COMMANDS", {}))
    return dict(sorted(found.items()))


for _name, _fn in collect_commands().items():
    analyze_app.command(_name)(_fn)

