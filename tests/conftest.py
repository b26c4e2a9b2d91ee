"""Shared fixtures: a tiny recipe that trains in about a second on the embedded digits, tiny trained runs
(trained once per session) and the check of the CLI's one-line errors."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
import yaml

# Tiny nets run fastest on one thread; with other jobs on the cores torch's thread pool waits on
# busy cores (measured: 2 s instead of 0.02 s for one tiny U-Net forward).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "digits", "image_size": 8, "channels": 1, "max_images": 64},
    "process": {"name": "heat", "K": 5, "sigma_blur_max": 4.0},
    "net": {"name": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.1},
    "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "precision": "fp32", "max_steps": 6,
              "log_every": 2, "sample_every": 0, "checkpoint_every": 2, "keep_checkpoints": 2},
    "sample": {"n": 4, "batch_size": 4},
}
PROCESSES = {"ihdm": {"name": "heat", "K": 5, "sigma_blur_max": 4.0}, "blur": {"name": "blur", "K": 5, "sigma_blur_max": 4.0},
             "ddpm": {"name": "ddpm", "T": 20}}


def tiny_recipe(process: str, name: str = "tiny", **train: float) -> dict:
    """TINY with the process PROCESSES[process], dropout 0 and the ``train`` fields overridden; named ``<process>_<name>``."""
    d = copy.deepcopy(TINY)
    d.update(name=f"{process}_{name}", process=PROCESSES[process])
    d["net"]["dropout"] = 0.0
    d["train"].update(train)
    return d


def make_sampler(name: str, **settings):
    """The registered sampler ``name`` with ``settings`` (e.g. ``make_sampler("ddim", steps=6, eta=1.0)``)."""
    from genproc.samplers import build_sampler, lookup

    return build_sampler(name, lookup(name).config_cls(**settings))


def one_line_error(result, *needles: str) -> None:
    """A CLI result that failed with exit code 2 and one line ``error: ...`` (no traceback) holding every needle."""
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    for s in needles:
        assert s in text, text


# --sampling options that switch a DDPM run to 4 DDIM steps (other runs lack the keys and ignore them);
# the 'process.' prefix is optional. The old flag --sample-set (hidden alias) does the same.
DDIM_4_STEPS = ("--sampling", "sampler=ddim", "--sampling", "steps=4")
DDIM_4_STEPS_OLD_FLAG = ("--sample-set", "process.sampler=ddim", "--sample-set", "steps=4")


def invoke_analyze(command: str, args: Iterable, out: Path, *options: str):
    """The CliRunner result of ``genproc analyze <command> ARGS... --out out OPTIONS...`` (ARGS: run dirs and options)."""
    from typer.testing import CliRunner

    from genproc.cli import app

    return CliRunner().invoke(app, ["analyze", command, *map(str, args), "--out", str(out), *options])


def analyze_ok(command: str, run_dirs: Iterable, out: Path, *options: str):
    """:func:`invoke_analyze`, asserted to exit 0; returns the result."""
    result = invoke_analyze(command, run_dirs, out, *options)
    assert result.exit_code == 0, result.output
    return result


def analyze_errors(command: str, out: Path, *cases: tuple, options: tuple[str, ...] = ()) -> None:
    """:func:`invoke_analyze` fails with a one-line error for every case ``(ARGS, needle, ...)``
    (see :func:`one_line_error`), and none of them creates ``out``."""
    for args, *needles in cases:
        one_line_error(invoke_analyze(command, args, out, *options), *needles)
    assert not out.exists()


def _train_tiny_runs(tmp_path_factory, folder: str, **train: float) -> dict[str, Path]:
    from genproc.engine import train as train_run
    from genproc.recipe import recipe_from_dict

    root = tmp_path_factory.mktemp(folder)
    runs = {}
    for key, process in (("heat", "ihdm"), ("ddpm", "ddpm")):
        runs[key] = root / key
        train_run(recipe_from_dict(tiny_recipe(process, **train)), runs[key], progress=False, log=lambda *_: None)
    return runs


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """{"heat": run_dir, "ddpm": run_dir}: tiny runs (heat K=5, sigma_B,max = 4 on 8 px; DDPM T=20; 6 steps, ~1 s each)
    trained once per session with the recipe's EMA (warmed up: after 6 steps its decay is at most 1 - 7^(-2/3) = 0.73,
    so the sampled weights are mostly the trained ones)."""
    return _train_tiny_runs(tmp_path_factory, "tiny_runs")


@pytest.fixture(scope="session")
def tiny_runs_no_ema(tmp_path_factory) -> dict[str, Path]:
    """Like :func:`tiny_runs` but with EMA off (train.ema = 0), so the sampled net is the trained one and not near
    its zero-initialised output."""
    return _train_tiny_runs(tmp_path_factory, "tiny_runs_no_ema", ema=0.0)


@pytest.fixture
def tiny_dict() -> dict:
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_recipe_file(tmp_path: Path, tiny_dict: dict) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(tiny_dict))
    return p
