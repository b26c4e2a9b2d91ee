"""Shared fixtures: a tiny recipe that trains in about a second on the embedded digits."""

from __future__ import annotations

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


@pytest.fixture
def tiny_dict() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_recipe_file(tmp_path: Path, tiny_dict: dict) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(tiny_dict))
    return p
