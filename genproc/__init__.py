"""genproc: iterative generative models of images (IHDM, DDPM, Gaussian blur, your own) on one engine.

    import genproc
    run = genproc.train("recipes/quickstart.yaml")      # or a Recipe built in Python; returns a LoadedRun
    images = genproc.load("runs/quickstart").sample(16, seed=0).images

``train``, ``load`` and ``LoadedRun`` are imported on first use (``genproc.api``), so ``import genproc`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from genproc.errors import GenprocError  # noqa: E402
from genproc.recipe import Recipe, load_recipe  # noqa: E402

if TYPE_CHECKING:
    from genproc.api import LoadedRun, load, train

__all__ = ["__version__", "GenprocError", "LoadedRun", "Recipe", "load", "load_recipe", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "load", "LoadedRun"):
        from genproc import api

        return getattr(api, name)
    raise AttributeError(f"module 'genproc' has no attribute {name!r}")
