"""genproc: iterative generative models of images (IHDM, DDPM, Gaussian blur) on one engine."""

__version__ = "0.1.0"

from genproc.errors import GenprocError  # noqa: E402
from genproc.recipe import Recipe, load_recipe  # noqa: E402


def load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Load a run directory ready to sample; see :func:`genproc.run.load`."""
    from genproc.run import load as _load

    return _load(*args, **kwargs)


__all__ = ["__version__", "GenprocError", "Recipe", "load_recipe", "load"]
