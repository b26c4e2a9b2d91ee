"""genproc: iterative generative models of images (IHDM, DDPM, Gaussian blur, your own) on one engine.

    import genproc
    run = genproc.train("recipes/quickstart.yaml")      # or a Recipe built in Python; returns a LoadedRun
    images = genproc.load("runs/quickstart").sample(16, seed=0).images

``train``, ``load``, ``export`` and ``LoadedRun`` are imported on first use (``genproc.api``), so ``import genproc`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from genproc.errors import GenprocError  # noqa: E402
from genproc.recipe import DataConfig, Recipe, SampleConfig, TrainConfig, load_recipe  # noqa: E402

if TYPE_CHECKING:
    from genproc.api import LoadedRun, export, load, train
    from genproc.nets.unet import UNetConfig
    from genproc.processes.bdm import BDMConfig
    from genproc.processes.blur import BlurConfig
    from genproc.processes.ddpm import DDPMConfig
    from genproc.processes.heat import HeatConfig

__all__ = ["__version__", "BDMConfig", "BlurConfig", "DDPMConfig", "DataConfig", "GenprocError", "HeatConfig", "LoadedRun", "Recipe",
           "SampleConfig", "TrainConfig", "UNetConfig", "export", "load", "load_recipe", "train"]

_LAZY = {"train": "genproc.api", "load": "genproc.api", "export": "genproc.api", "LoadedRun": "genproc.api",
         "HeatConfig": "genproc.processes.heat", "BlurConfig": "genproc.processes.blur", "DDPMConfig": "genproc.processes.ddpm",
         "BDMConfig": "genproc.processes.bdm", "UNetConfig": "genproc.nets.unet"}


def __getattr__(name: str) -> Any:
    """The names in ``_LAZY`` are imported on first use (they pull in torch)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genproc' has no attribute {name!r}")
