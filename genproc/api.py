"""The library API in two calls: ``genproc.train`` and ``genproc.load``, both returning a :class:`LoadedRun`.

    import genproc
    from genproc.recipe import Recipe, TrainConfig
    from genproc.processes.heat import HeatConfig

    run = genproc.train(Recipe(name="demo", process=HeatConfig(K=20), train=TrainConfig(max_steps=20)), "runs/demo")
    images = run.sample(16, seed=0).images                     # (16, 1, 16, 16) in [0, 1]
    noisier = genproc.load("runs/demo").with_sampling(delta=0.02)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genproc.engine.trainer import train as train_engine
from genproc.engine.trainer import with_data_root
from genproc.metrics.in_training import training_evaluator
from genproc.recipe import Recipe, load_recipe, with_overrides
from genproc.run import LoadedRun, export, load

__all__ = ["LoadedRun", "export", "load", "train"]


def train(recipe: str | Path | Recipe, run_dir: str | Path | None = None, *, data_root: str | None = None,
          max_steps: int | None = None, overrides: Sequence[str] = (), progress: bool = True,
          log: Callable[[str], Any] = print) -> LoadedRun:
    """Train (or resume) a recipe, like ``genproc train``, and return the trained run (EMA weights) ready to sample.

    recipe: a YAML path or a :class:`Recipe` built in Python. run_dir: default ``runs/<recipe name>``; an existing
    one is resumed from its latest checkpoint (the recipe must match). overrides: ``["train.lr=1e-4", ...]``.
    max_steps: train until this global step (default ``train.max_steps``). A Ctrl-C saves a checkpoint and raises
    KeyboardInterrupt; call again to resume. With ``train.eval_every`` > 0 the EMA model is evaluated during training.
    """
    r = load_recipe(recipe, overrides) if isinstance(recipe, (str, Path)) else with_overrides(recipe, overrides)
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / r.name
    r = with_data_root(r, data_root)
    evaluate = training_evaluator(r, run_dir) if r.train.eval_every > 0 else None
    res = train_engine(r, run_dir, max_steps=max_steps, progress=progress, log=log, evaluate=evaluate)
    if res.interrupted:
        raise KeyboardInterrupt(f"training interrupted at step {res.step} (checkpoint saved); call again to resume")
    return load(res.run_dir, device=r.train.device)
