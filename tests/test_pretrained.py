"""The released models in pretrained/: every model listed in pretrained/README.md is there (and nothing unlisted), all
fit the 30 MiB budget, and each loads and samples with no data set on the machine (its prior is stored)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import REPO
from typer.testing import CliRunner

PRETRAINED = REPO / "pretrained"
RELEASED = sorted(p.name for p in PRETRAINED.iterdir() if (p / "checkpoints").is_dir()) if PRETRAINED.is_dir() else []
BUDGET_MIB = 30


def _listed() -> list[str]:
    """The model names in the first column of pretrained/README.md's table (`name` in backticks)."""
    text = (PRETRAINED / "README.md").read_text()
    return sorted(re.findall(r"^\| `([\w.-]+)` \|", text, flags=re.M))


def test_the_listed_models_are_released_within_the_size_budget():
    assert RELEASED, "pretrained/ holds no released model"
    assert _listed() == RELEASED
    size = sum(f.stat().st_size for f in PRETRAINED.rglob("*") if f.is_file())
    assert size <= BUDGET_MIB * 2**20, f"pretrained/ is {size / 2**20:.1f} MiB"


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a data set was read")

    monkeypatch.setattr("genproc.data.build_dataset", refuse)


@pytest.mark.parametrize("name", RELEASED)
def test_a_released_model_samples_without_data(name, no_data):
    import genproc

    (ck,) = (PRETRAINED / name / "checkpoints").iterdir()
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["release"]["weights"] == "ema" and meta["recipe"]["data"]["root"] is None
    run = genproc.load(PRETRAINED / name)
    if "sampler" in type(run.recipe.process).SAMPLING_KEYS:
        run = run.with_sampling(sampler="ddim", steps=5)  # a short chain: the test checks loading, not quality
    images = run.sample(2, seed=0).images
    assert images.shape == (2, *run.image_shape) and torch.isfinite(images).all()
    assert float(images.std()) > 0.05  # not a blank image


def test_genproc_sample_on_the_released_quickstart(tmp_path, no_data):
    from genproc.cli import app

    r = CliRunner().invoke(app, ["sample", str(PRETRAINED / "quickstart"), "--n", "4", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "images").glob("*.png"))) == 4
