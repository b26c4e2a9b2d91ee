"""The README's library example runs as written (keeps the front door true); only its step budget is cut."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    section = README.read_text().split("## Library use", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert len([s for s in code.splitlines() if s.strip()]) <= 8 and "max_steps=300" in code
    scope: dict = {}
    exec(compile(code.replace("max_steps=300", "max_steps=12"), "README.md", "exec"), scope)
    run, noisier = scope["run"], scope["noisier"]
    assert run.step == 12 and (tmp_path / "runs/demo/recipe.yaml").is_file()
    assert (tmp_path / "runs/demo/my_samples/grid.png").is_file() and (tmp_path / "runs/demo/my_samples/samples.npz").is_file()
    assert noisier.shape == (16, 1, 16, 16) and noisier.dtype == torch.float32
    assert 0.0 <= noisier.min() and noisier.max() <= 1.0
    # delta changed the samples: same seed, same prior images, more noise
    plain = run.sample(16, seed=0).images
    assert not torch.equal(plain, noisier)
