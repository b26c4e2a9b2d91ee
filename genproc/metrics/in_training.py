"""In-training evaluation: the callback :func:`genproc.engine.train` calls every ``train.eval_every`` steps.

The engine imports no metrics; the library's ``genproc.train`` builds this callback and passes it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genproc.data import build_dataset
from genproc.engine.trainer import EvalCallback
from genproc.errors import GenprocError
from genproc.metrics.evaluate import evaluate, parse_metrics, unavailable
from genproc.metrics.fidelity import FIDELITY_METRICS
from genproc.metrics.inception import resolve_weights
from genproc.processes import ForwardProcess, build_process, name_of
from genproc.recipe import Recipe
from genproc.run import LoadedRun


def check_training_evaluation(recipe: Recipe) -> None:
    """Fail before training when the evaluation could not run: unknown metric, one the process cannot give (nll without
    an ELBO), missing split, FID weights offline."""
    metrics = parse_metrics(recipe.train.eval_metrics)
    if bad := unavailable(build_process(recipe.process), metrics):
        m, why = next(iter(bad.items()))
        raise GenprocError(f"recipe field 'train.eval_metrics': '{m}' is not available for process "
                           f"'{name_of(recipe.process)}', which {why}")
    build_dataset(recipe.data, recipe.train.eval_split)
    if any(m in FIDELITY_METRICS for m in metrics):
        resolve_weights()


def training_evaluator(recipe: Recipe, run_dir: str | Path) -> EvalCallback:
    """``recipe.train.eval_metrics`` on ``eval_n`` samples / ``eval_split`` images, as {metric: value}; checked now."""
    check_training_evaluation(recipe)
    tc = recipe.train

    def evaluate_now(step: int, net: torch.nn.Module, process: ForwardProcess, data: Any, prior: Any) -> dict[str, float]:
        device = next(net.parameters()).device
        run = LoadedRun(Path(run_dir), recipe, process, net, step, Path(run_dir) / "checkpoints" / f"step_{step:08d}",
                        device, _data=data, stored_prior=prior)
        recs = evaluate(run, tc.eval_metrics, n=tc.eval_n, split=tc.eval_split, seed=recipe.seed,
                        batch_size=recipe.sample.batch_size, log=lambda *_: None)
        return {r["metric"]: r["value"] for r in recs}

    return evaluate_now
