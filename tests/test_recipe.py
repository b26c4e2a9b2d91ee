"""Recipes: every shipped recipe validates and builds; user mistakes give one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genproc.errors import GenprocError
from genproc.nets import build_net
from genproc.processes import build_process
from genproc.recipe import apply_overrides, load_recipe, recipe_from_dict

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "ihdm_mnist_small", "ihdm_mnist", "ihdm_cifar", "ihdm_afhq64", "ihdm_afhq256",
            "ihdm_ffhq128", "ihdm_ffhq256", "ihdm_lsun_church128"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_net_builds_and_runs_on_tiny_input(path):
    r = load_recipe(path)
    proc = build_process(r.process)
    assert proc.num_levels >= 1
    # same architecture family, shrunk in width so that the 150M-parameter recipes stay cheap:
    r.net.channels = 8
    short = min(r.data.image_hw)  # attn_resolutions count the shorter side of a feature map
    size = min(short, 64)
    r.net.attn_resolutions = tuple(a * size // short for a in r.net.attn_resolutions)
    hw = tuple(s * size // short for s in r.data.image_hw)  # (size, size) for square recipes
    net = build_net(r.net, r.data.channels, hw)
    x = torch.rand(2, r.data.channels, *hw)
    out = net(x, torch.tensor([1, proc.num_levels]))
    assert out.shape == x.shape


def test_paper_values():
    r = load_recipe(RECIPES[0].parent / "ihdm_cifar.yaml")
    assert (r.process.K, r.process.sigma_blur_max, r.process.delta) == (200, 24.0, 0.01325)
    assert (r.net.channels, r.net.channel_mult, r.net.num_res_blocks, r.net.attn_resolutions) == (128, (1, 2, 2, 2), 4, (8, 4))
    assert (r.train.lr, r.train.ema, r.train.batch_size, r.train.warmup_steps, r.train.grad_clip) == (2e-4, 0.999, 128, 5000, 1.0)


def test_unknown_key_names_nearest(tiny_dict):
    tiny_dict["train"]["batchsize"] = 1
    with pytest.raises(GenprocError, match=r"unknown recipe key 'train.batchsize'; did you mean 'train.batch_size'"):
        recipe_from_dict(tiny_dict)
    del tiny_dict["train"]["batchsize"]
    tiny_dict["train"]["learning_rate"] = 1.0  # nothing close: list the valid keys
    with pytest.raises(GenprocError, match=r"unknown recipe key 'train.learning_rate'; valid keys: .*\blr\b"):
        recipe_from_dict(tiny_dict)
    del tiny_dict["train"]["learning_rate"]
    tiny_dict["process"]["sigma_blur_mx"] = 3
    with pytest.raises(GenprocError, match=r"'process.sigma_blur_mx'.*'process.sigma_blur_max'"):
        recipe_from_dict(tiny_dict)


def test_wrong_type_names_field(tiny_dict):
    tiny_dict["train"]["batch_size"] = "big"
    with pytest.raises(GenprocError, match=r"recipe field 'train.batch_size': expected an integer"):
        recipe_from_dict(tiny_dict)


def test_unknown_process_name(tiny_dict):
    tiny_dict["process"]["name"] = "haet"
    with pytest.raises(GenprocError, match=r"did you mean 'heat'"):
        recipe_from_dict(tiny_dict)


def test_overrides(tiny_dict):
    d = apply_overrides(tiny_dict, ["train.lr=3e-4", "net.channel_mult=[1,2,2]", "process.K=7"])
    r = recipe_from_dict(d)
    assert r.train.lr == 3e-4 and r.net.channel_mult == (1, 2, 2) and r.process.K == 7
    with pytest.raises(GenprocError, match="KEY=VALUE"):
        apply_overrides(tiny_dict, ["train.lr"])


def test_roundtrip(tiny_dict):
    r = recipe_from_dict(tiny_dict)
    assert recipe_from_dict(r.to_dict()).to_dict() == r.to_dict()


def test_missing_file():
    with pytest.raises(GenprocError, match="recipe file not found"):
        load_recipe("no/such/recipe.yaml")


def test_bad_values_name_the_field(tiny_dict):
    tiny_dict["train"]["precision"] = "fp8"
    with pytest.raises(GenprocError, match=r"'train.precision': expected fp32\|bf16\|fp16"):
        recipe_from_dict(tiny_dict)


@pytest.mark.parametrize("text,where", [
    ("name: x\ndata:\n  name: digits\n  image_size: [16, 16\ntrain:\n  lr: 1\n",
     "at line 5, column 6: expected ',' or ']', but got ':' (while parsing a flow sequence started at line 4, column 15)"),
    ("name: x\ndata:\n name: digits\n  image_size: 16\n", "at line 4, column 13: mapping values are not allowed here"),
])
def test_a_yaml_syntax_error_names_line_and_column(tmp_path, text, where):
    from conftest import one_line_error
    from typer.testing import CliRunner

    from genproc.cli import app

    (tmp_path / "r.yaml").write_text(text)
    one_line_error(CliRunner().invoke(app, ["train", str(tmp_path / "r.yaml"), "--dry-run"]),
                   f"recipe {tmp_path / 'r.yaml'} is not valid YAML {where}")
    (tmp_path / "list.yaml").write_text("- data\n- train\n")
    with pytest.raises(GenprocError, match="must be a YAML mapping of sections .* got a list"):
        load_recipe(tmp_path / "list.yaml")
