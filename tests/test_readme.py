"""The README's library example runs as written (keeps the front door true)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs(monkeypatch):
    monkeypatch.chdir(README.parent)
    section = README.read_text().split("## Library use", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    samples = scope["samples"]
    assert samples.shape == (16, 1, 16, 16) and samples.dtype == torch.float32
    assert 0.0 <= samples.min() and samples.max() <= 1.0
