"""Load a finished (or running) run directory, ready to sample: ``genproc.load(run_dir)``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genproc.engine import checkpoint as ckpt
from genproc.engine.distributed import DistInfo, pick_device
from genproc.engine.sampler import SampleResult, generate, slow_precision_warning
from genproc.errors import GenprocError
from genproc.nets import build_net
from genproc.processes import build_process
from genproc.recipe import Recipe, apply_overrides, recipe_from_dict


@dataclass
class LoadedRun:
    """A trained model: recipe, process, EMA network (eval mode), training data (for the prior)."""

    run_dir: Path
    recipe: Recipe
    process: Any
    net: torch.nn.Module
    step: int
    checkpoint: Path
    device: torch.device
    data_root: str | None = None
    sampling: tuple[str, ...] = ()  # sampling-time overrides applied to the trained recipe, e.g. ("process.sampler=ddim",)
    _data: Any = None

    @property
    def data(self) -> Any:
        """The training set (loaded on first use; the heat prior draws from it)."""
        if self._data is None:
            from genproc.data import build_dataset

            self._data = build_dataset(self.recipe.data, "train", self.data_root)
        return self._data

    def with_sampling(self, overrides: Sequence[str]) -> "LoadedRun":
        """The same trained network under other sampling-time settings (see :func:`sampling_recipe`), e.g.
        ``run.with_sampling(["process.sampler=ddim", "process.ddim_steps=50"])``; the net and data are shared."""
        recipe = sampling_recipe(self.recipe.to_dict(), overrides)
        return replace(self, recipe=recipe, process=build_process(recipe.process), sampling=(*self.sampling, *overrides))

    def sample(self, n: int = 64, **kwargs: Any) -> SampleResult:
        """Draw n samples; keyword arguments as :func:`genproc.engine.generate` (seed, delta, ...)."""
        kwargs.setdefault("precision", self.recipe.train.precision)
        if (slow := slow_precision_warning(self.device, kwargs["precision"])) is not None:
            warnings.warn(f"{slow}; pass precision='fp32' (genproc sample --precision fp32)", stacklevel=2)
        kwargs.setdefault("shape", (self.recipe.data.channels, self.recipe.data.image_size, self.recipe.data.image_size))
        data = self.data if getattr(self.process, "needs_data_for_prior", False) else None
        return generate(self.process, self.net, n, data=data, device=self.device, **kwargs)


def sampling_recipe(recipe_dict: dict[str, Any], overrides: Sequence[str]) -> Recipe:
    """The trained recipe with sampling-time ``process.KEY=VALUE`` overrides (the keys in the process config's
    ``SAMPLING_KEYS``, e.g. DDPM's sampler, ddim_steps, eta); anything that would change the trained model is an error."""
    recipe = recipe_from_dict(recipe_dict)
    allowed = tuple(getattr(type(recipe.process), "SAMPLING_KEYS", ()))
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        field = key.removeprefix("process.")
        if "=" not in item or not key.startswith("process.") or field not in allowed:
            what = f"'{item}' is not KEY=VALUE" if "=" not in item else f"'{key}' is not a sampling-time key"
            raise GenprocError(f"sampling override {what}; for process '{recipe_dict['process']['name']}' use process.KEY=VALUE "
                               f"with KEY in: {', '.join(allowed) or '(none)'}")
    return recipe_from_dict(apply_overrides(recipe_dict, list(overrides))) if overrides else recipe


def load(run_dir: str | Path, checkpoint: str | None = None, data_root: str | None = None, device: str = "auto",
         weights: str = "ema", sampling: Sequence[str] = ()) -> LoadedRun:
    """Load ``run_dir``'s latest (or given) checkpoint. ``weights``: 'ema' (default) or 'model'.
    ``sampling``: sampling-time overrides, e.g. ``["process.sampler=ddim", "process.ddim_steps=50"]`` for DDPM."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GenprocError(f"run dir not found: {run_dir} (expected a folder written by 'genproc train')")
    path = ckpt.resolve_checkpoint(run_dir, checkpoint)
    meta = ckpt.load_meta(path)
    recipe = sampling_recipe(meta["recipe"], sampling)
    dev = pick_device(device, DistInfo())
    net = build_net(recipe.net, recipe.data.channels, recipe.data.image_size)
    try:
        net.load_state_dict(ckpt.load_weights(path, weights))
    except RuntimeError as e:
        raise GenprocError(f"weights in {path} do not fit the recipe's net: {str(e).splitlines()[0]}") from None
    net.to(dev).eval()
    return LoadedRun(run_dir, recipe, build_process(recipe.process), net, int(meta["step"]), path, dev, data_root,
                     tuple(sampling))
