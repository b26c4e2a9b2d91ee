"""Tests for genproc.data: every loader on tiny generated data (plus real MNIST when present)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genproc.data.cifar as cifar_mod
import genproc.data.folder as folder_mod
from genproc.data import build_dataset, resolve_root
from genproc.errors import GenprocError
from genproc.recipe import DataConfig

MNIST_DIR = Path(__file__).parents[2] / "shared/data/mnist"


def write_idx(path: Path, images: np.ndarray, magic: int = 2051) -> Path:
    """Write uint8 ``(N, H, W)`` images as an IDX file (gzipped if the name ends in .gz)."""
    n, h, w = images.shape
    data = struct.pack(">IIII", magic, n, h, w) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tiny_mnist(folder: Path, n: int = 5, gz: bool = False) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", images[:2])
    return images


def check_images(ds, n: int, c: int, s: int) -> None:
    assert len(ds) == n
    x = ds[0]
    assert x.shape == (c, s, s) and x.dtype == torch.float32
    b = ds.get_batch(torch.arange(min(n, 4)))
    assert b.shape == (min(n, 4), c, s, s) and b.dtype == torch.float32
    assert 0.0 <= b.min() and b.max() <= 1.0
    torch.testing.assert_close(b[0], x)


def test_digits_shapes_range_and_split():
    train = build_dataset(DataConfig(name="digits", image_size=16, channels=1))
    test = build_dataset(DataConfig(name="digits", image_size=16, channels=1), split="test")
    check_images(train, 1500, 1, 16)
    check_images(test, 297, 1, 16)
    assert train.in_memory and train.root is None and train.images.max() > 0.9
    rgb = build_dataset(DataConfig(name="digits", image_size=8, channels=3, max_images=10))
    check_images(rgb, 10, 3, 8)
    assert torch.equal(rgb[3][0], rgb[3][2])


@pytest.mark.slow  # imports scikit-learn (~1.5 s)
def test_digits_match_sklearn_load_digits():
    from sklearn.datasets import load_digits

    from genproc.data.digits import digits_pixels

    np.testing.assert_array_equal(digits_pixels(), load_digits().images)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="shared MNIST copy not present")
def test_mnist_real_files():
    ds = build_dataset(DataConfig(name="mnist", root=str(MNIST_DIR), image_size=28, max_images=100))
    check_images(ds, 100, 1, 28)
    assert ds.images.dtype == torch.uint8 and ds.root == str(MNIST_DIR.resolve())
    assert ds.get_batch(torch.arange(100)).mean().item() == pytest.approx(0.13, abs=0.03)
    small = build_dataset(DataConfig(name="mnist", image_size=16, channels=3, max_images=8), data_root=str(MNIST_DIR))
    check_images(small, 8, 3, 16)
    assert len(build_dataset(DataConfig(name="mnist", root=str(MNIST_DIR)), split="test")) == 10000


@pytest.mark.parametrize("gz", [False, True])
def test_idx_raw_and_gz(tmp_path, gz):
    images = tiny_mnist(tmp_path, gz=gz)
    ds = build_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), image_size=28))
    check_images(ds, 5, 1, 28)
    torch.testing.assert_close(ds.get_batch(torch.arange(5))[:, 0], torch.from_numpy(images).float() / 255)
    assert len(build_dataset(DataConfig(name="mnist", root=str(tmp_path)), split="test")) == 2
    rgb = build_dataset(DataConfig(name="mnist", root=str(tmp_path), image_size=14, channels=3))  # gray -> RGB
    check_images(rgb, 5, 3, 14)
    assert torch.equal(rgb[1][0], rgb[1][1]) and torch.equal(rgb[1][0], rgb[1][2])


def test_mnist_missing_folder_and_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(GenprocError) as e:
        build_dataset(DataConfig(name="mnist", root=str(missing)))
    msg = str(e.value)
    assert str(missing) in msg and "train-images-idx3-ubyte" in msg and "t10k-images-idx3-ubyte" in msg
    assert "\n" not in msg
    with pytest.raises(GenprocError, match="t10k-images-idx3-ubyte"):
        build_dataset(DataConfig(name="mnist", root=str(tmp_path)), split="test")


def test_idx_truncated_or_bad_magic(tmp_path):
    tiny_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])  # cut gzip stream
    with pytest.raises(GenprocError, match="train-images-idx3-ubyte.gz"):
        build_dataset(DataConfig(name="mnist", root=str(tmp_path)))
    raw = tmp_path / "raw"
    tiny_mnist(raw)
    t10k = raw / "t10k-images-idx3-ubyte"
    t10k.write_bytes(t10k.read_bytes()[:-5])
    with pytest.raises(GenprocError, match="t10k-images-idx3-ubyte is truncated"):
        build_dataset(DataConfig(name="mnist", root=str(raw)), split="test")
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8), magic=2049)
    with pytest.raises(GenprocError, match="magic number 2049"):
        build_dataset(DataConfig(name="mnist", root=str(raw)))


def make_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    specs = [("a.png", "RGB", (40, 30)), ("sub/b.PNG", "L", (17, 50)), ("sub/deep/c.jpg", "RGB", (64, 64)),
             ("d.jpeg", "RGB", (9, 12)), ("sub/e.png", "RGBA", (20, 20)), ("f.png", "P", (33, 21))]
    for name, mode, size in specs:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(root / name)
    (root / "sub/notes.txt").write_text("not an image")


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path, monkeypatch, lazy, channels):
    make_image_folder(tmp_path)
    if lazy:
        monkeypatch.setattr(folder_mod, "CACHE_MAX_IMAGES", 0)
    ds = build_dataset(DataConfig(name="folder", image_size=16, channels=channels), data_root=str(tmp_path))
    assert ds.in_memory is not lazy
    check_images(ds, 6, channels, 16)


def test_image_folder_centre_crop_and_luma(tmp_path):
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, 20:40] = (255, 0, 0)  # red centre square, black sides
    Image.fromarray(arr).save(tmp_path / "wide.png")
    rgb = build_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=10, channels=3))[0]
    torch.testing.assert_close(rgb[:, 2:-2, 2:-2].mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]))
    gray = build_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=10, channels=1))[0]
    assert gray[0, 5, 5].item() == pytest.approx(0.299, abs=0.01)  # ITU-R 601 luma of pure red


@pytest.mark.parametrize("lazy", [False, True])
def test_image_folder_corrupt_file(tmp_path, monkeypatch, lazy):
    make_image_folder(tmp_path)
    bad = tmp_path / "sub/broken.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    if lazy:
        monkeypatch.setattr(folder_mod, "CACHE_MAX_IMAGES", 0)
    with pytest.raises(GenprocError, match="broken.png") as e:
        ds = build_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=8))
        ds.get_batch(torch.arange(len(ds)))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_image_folder_empty_and_splits(tmp_path):
    (tmp_path / "empty/sub").mkdir(parents=True)
    with pytest.raises(GenprocError, match=r"empty.*\.png, \.jpg, \.jpeg"):
        build_dataset(DataConfig(name="folder", root=str(tmp_path / "empty")))
    with pytest.raises(GenprocError, match="test/"):
        build_dataset(DataConfig(name="folder", root=str(tmp_path / "empty")), split="test")
    make_image_folder(tmp_path / "set")
    make_image_folder(tmp_path / "set/test")
    cfg = DataConfig(name="folder", root=str(tmp_path / "set"), image_size=8, max_images=4)
    assert len(build_dataset(cfg)) == 4
    assert len(build_dataset(DataConfig(name="folder", root=str(tmp_path / "set")))) == 6  # test/ left out
    assert len(build_dataset(cfg, split="test")) == 6  # max_images is for training only


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPROC_DATA", str(tmp_path))
    tiny_mnist(tmp_path / "fashion-mnist")
    ds = build_dataset(DataConfig(name="fashion_mnist"))
    assert ds.root == str(tmp_path / "fashion-mnist") and len(ds) == 5
    cfg = DataConfig(name="mnist", root=str(tmp_path / "from-cfg"))
    assert resolve_root(cfg) == str(tmp_path / "from-cfg")
    assert resolve_root(cfg, data_root=str(tmp_path / "cli")) == str(tmp_path / "cli")
    assert resolve_root(DataConfig(name="cifar10")) == str(tmp_path / "cifar10")
    assert resolve_root(DataConfig(name="digits")) is None
    with pytest.raises(GenprocError, match="data.root"):
        resolve_root(DataConfig(name="folder"))
    monkeypatch.delenv("GENPROC_DATA")
    with pytest.raises(GenprocError, match="GENPROC_DATA"):
        resolve_root(DataConfig(name="mnist"))


def test_bad_config():
    with pytest.raises(GenprocError, match="known: digits"):
        build_dataset(DataConfig(name="imagenet"))
    with pytest.raises(GenprocError, match="data.channels"):
        build_dataset(DataConfig(name="digits", channels=2))
    with pytest.raises(GenprocError, match="split"):
        build_dataset(DataConfig(name="digits"), split="val")


def make_fake_cifar(root: Path, per_batch: int = 3) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 python layout: same pickled dicts as the real batches, random pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        entry = {"batch_label": name, "labels": [0] * per_batch, "data": data, "filenames": ["x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        out[name] = data
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def test_cifar_fake_layout(tmp_path):
    batches = make_fake_cifar(tmp_path)
    ds = build_dataset(DataConfig(name="cifar10", root=str(tmp_path), image_size=32, channels=3))
    check_images(ds, 15, 3, 32)
    first = torch.from_numpy(batches["data_batch_1"][0].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(ds[0], first)
    test = build_dataset(DataConfig(name="cifar10", image_size=16, channels=1), "test", str(tmp_path / "cifar-10-batches-py"))
    check_images(test, 3, 1, 16)
    assert len(build_dataset(DataConfig(name="cifar10", root=str(tmp_path), max_images=4))) == 4


def test_cifar_absent_and_download_fails(tmp_path, monkeypatch):
    def no_network(root):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(cifar_mod, "torchvision_download", no_network)
    with pytest.raises(GenprocError, match="download failed") as e:
        build_dataset(DataConfig(name="cifar10", root=str(tmp_path / "c10")))
    assert str(tmp_path / "c10") in str(e.value) and "cifar-10-batches-py/data_batch_1..5" in str(e.value)


def test_in_memory_set_on_another_device_gives_the_same_batches():
    """on_device gives a data set that indexes its images on that device, in their stored dtype; the batch iterator
    leaves a CPU run's data where it is (the GPU path: tests/test_cuda.py)."""
    from genproc.engine.batches import on_training_device

    data = build_dataset(DataConfig(name="digits", image_size=8, channels=1, max_images=20))
    moved = data.on_device("cpu")
    idx = torch.tensor([3, 0, 19, 3])
    assert torch.equal(moved.get_batch(idx), data.get_batch(idx)) and moved.images.dtype == data.images.dtype
    assert moved is not data and on_training_device(data, "cpu") is data and on_training_device(data, None) is data


@pytest.mark.parametrize("kind", ["digits", "folder", "folder-lazy"])
def test_every_data_set_offers_what_prior_documents(tmp_path, monkeypatch, kind):
    """ForwardProcess.prior's docstring tells a process author what ``data`` offers; every data set kind keeps it:
    len, get_batch(int64 (B,)) -> (B, C, H, W) float32 in [0, 1], data[i] (its row), channels, image_hw."""
    if kind == "digits":
        ds = build_dataset(DataConfig(name="digits", image_size=16))
    else:
        make_image_folder(tmp_path)
        if kind == "folder-lazy":
            monkeypatch.setattr(folder_mod, "CACHE_MAX_IMAGES", 0)
        ds = build_dataset(DataConfig(name="folder", image_size=(12, 16), channels=3), data_root=str(tmp_path))
    idx = torch.tensor([len(ds) - 1, 0, 2], dtype=torch.int64)
    x = ds.get_batch(idx)
    assert x.shape == (3, ds.channels, *ds.image_hw) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and len(ds) >= 3
    torch.testing.assert_close(x[1], ds[0], rtol=0, atol=0)
    torch.testing.assert_close(x[0], ds[len(ds) - 1], rtol=0, atol=0)


@pytest.mark.parametrize("lazy", [False, True])
def test_a_far_smaller_image_is_refused_not_blown_up(tmp_path, monkeypatch, lazy):
    """A 1x1 image in a folder for 32x32 is refused with its name and size (in memory: when the set is built; lazy:
    when it is read); raising data.max_upscale lets it through; a 2x enlargement passes by default."""
    if lazy:
        monkeypatch.setattr(folder_mod, "CACHE_MAX_IMAGES", 0)
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(tmp_path / "tiny.png")
    cfg = DataConfig(name="folder", image_size=32, channels=3)
    with pytest.raises(GenprocError, match=r"tiny.png is 1x1: fitting it to 32x32 by 'crop' would enlarge it 32.0x, "
                                           r"more than data.max_upscale = 4"):
        ds = build_dataset(cfg, data_root=str(tmp_path))
        ds.get_batch(torch.arange(len(ds)))
    ds = build_dataset(DataConfig(name="folder", image_size=32, channels=3, max_upscale=32), data_root=str(tmp_path))
    assert ds.get_batch(torch.arange(2)).shape == (2, 3, 32, 32)
    with pytest.raises(GenprocError, match="data.max_upscale': expected a number >= 1"):
        DataConfig(max_upscale=0.5).validate()
