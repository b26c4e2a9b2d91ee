"""`genproc cache`: a folder decoded once into a checksummed uint8 array that the loader then reads memory-mapped,
equal to decoding the files; stale, damaged and 16-bit cases; data.num_workers auto."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import one_line_error
from PIL import Image
from typer.testing import CliRunner

from genproc.cli import app
from genproc.data import build_dataset
from genproc.data.folder_cache import CACHE_DIR
from genproc.engine.batches import resolve_workers
from genproc.errors import GenprocError
from genproc.recipe import DataConfig, recipe_from_dict


def _folder(tmp_path, n=7):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(n):
        h, w = rng.integers(20, 40, size=2)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def _recipe_file(tmp_path, root):
    d = {"name": "c", "data": {"name": "folder", "root": str(root), "image_size": [12, 16], "channels": 3},
         "process": {"name": "ihdm", "K": 3}, "net": {"name": "unet", "channels": 8, "channel_mult": [1]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    return tmp_path / "r.yaml", recipe_from_dict(d).data


def test_cache_reads_what_decoding_gives_and_rejects_stale_or_damaged(tmp_path, capsys):
    root = _folder(tmp_path)
    rfile, cfg = _recipe_file(tmp_path, root)
    decoded = build_dataset(cfg, "train").get_batch(torch.arange(7))
    r = CliRunner().invoke(app, ["cache", str(rfile)])
    assert r.exit_code == 0, r.output
    assert "cached 7 train images at 12x16 (crop)" in r.output
    ds = build_dataset(cfg, "train")
    assert isinstance(ds.images, torch.Tensor) and ds.images.dtype == torch.uint8
    assert not ds.images.is_shared() and ds.images.untyped_storage().nbytes() == 7 * 3 * 12 * 16  # the mapped array
    assert torch.equal(ds.get_batch(torch.arange(7)), decoded)
    # a changed file makes the cache stale: one warning, the files are decoded, nothing is lost
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "03.png")
    ds2 = build_dataset(cfg, "train")
    assert "is stale" in capsys.readouterr().err
    assert float(ds2.get_batch(torch.tensor([3])).max()) == 0.0
    # rebuilt, then damaged: one warning, decoded again
    assert CliRunner().invoke(app, ["cache", str(rfile)]).exit_code == 0
    (u8,) = (root / CACHE_DIR).glob("*.u8")
    raw = bytearray(u8.read_bytes())
    raw[5] ^= 1
    u8.write_bytes(bytes(raw))
    ds3 = build_dataset(cfg, "train")
    assert "is damaged" in capsys.readouterr().err
    assert torch.equal(ds3.get_batch(torch.tensor([0])), decoded[:1])


def test_cache_refuses_16_bit_images_and_non_folder_recipes(tmp_path):
    root = _folder(tmp_path, n=2)
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(root / "deep.png")
    rfile, _ = _recipe_file(tmp_path, root)
    one_line_error(CliRunner().invoke(app, ["cache", str(rfile)]), "more than 8 bits")
    assert not list((root / CACHE_DIR).glob("*.u8"))  # no half-written cache left behind
    mn = tmp_path / "m.yaml"
    mn.write_text(yaml.safe_dump({"name": "m", "data": {"name": "digits"}, "process": {"name": "ihdm", "K": 3},
                                  "net": {"name": "unet", "channels": 8, "channel_mult": [1]}}))
    one_line_error(CliRunner().invoke(app, ["cache", str(mn)]), "image folders")


def test_num_workers_auto(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_workers("auto", 1) == 8 and resolve_workers("auto", 4) == 4 and resolve_workers(3, 4) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_workers("auto", 1) == 2 and resolve_workers("auto", 8) == 1
    with pytest.raises(GenprocError, match="num_workers"):
        DataConfig(num_workers=-1).validate()
