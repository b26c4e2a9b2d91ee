"""Image files of every mode decode to the values their closed form gives (genproc/data/decode.py, folder.py).

Every file is generated here with Pillow / numpy; expected values come from the stored samples,
never from the loader itself.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genproc.data.folder as folder_mod
from genproc.data import build_dataset
from genproc.data.decode import BACKGROUND, _samples, read_image
from genproc.data.folder import fit, list_images, load_image
from genproc.errors import GenprocError
from genproc.recipe import DataConfig

LUMA = np.array([0.299, 0.587, 0.114])
RNG = np.random.default_rng(0)


def u8(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def saved(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def png(path: Path, rows: list[bytes], w: int, depth: int, colour: int, extra: bytes = b"") -> Path:
    """A PNG written by hand (for layouts Pillow cannot write): ``rows`` of packed samples, ``colour`` 0 gray, 2 RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, len(rows), depth, colour, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + r for r in rows))  # filter type 0 on every row
    tail = (chunk(b"tRNS", extra) if extra else b"") + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + tail)
    return path


def png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG (Pillow cannot write 48-bit RGB): arr (h, w) gray or (h, w, 3) RGB uint16."""
    return png(path, [row.astype(">u2").tobytes() for row in arr], arr.shape[1], 16, 2 if arr.ndim == 3 else 0)


def values(path: Path) -> np.ndarray:
    """The decoded (c, h, w) float32 of ``path`` at its own size."""
    return read_image(path)[0]


def test_one_bit_is_exactly_zero_or_one(tmp_path):
    bits = (np.indices((4, 6)).sum(0) % 2).astype(bool)  # checkerboard
    path = saved(tmp_path / "a.png", Image.fromarray(bits))
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(values(path)[0], bits.astype(np.float32))
    np.testing.assert_array_equal(load_image(path, 1, (4, 6)).numpy()[0], bits * 255)


def test_gray_and_rgb_8bit(tmp_path):
    gray, rgb = u8((5, 7)), u8((5, 7, 3))
    np.testing.assert_array_equal(values(saved(tmp_path / "l.png", Image.fromarray(gray)))[0], gray / np.float32(255))
    path = saved(tmp_path / "rgb.png", Image.fromarray(rgb))
    np.testing.assert_array_equal(values(path), rgb.transpose(2, 0, 1) / np.float32(255))
    luma = (rgb / 255.0) @ LUMA  # ITU-R 601-2, in float
    np.testing.assert_allclose(load_image(path, 1, (5, 7)).numpy()[0], np.round(255 * luma), atol=1)
    np.testing.assert_array_equal(load_image(saved(tmp_path / "g.png", Image.fromarray(gray)), 3, (5, 7)).numpy(),
                                  np.stack([gray] * 3))


def over_background(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    return a * v + (1 - a) * BACKGROUND


def test_alpha_composited_over_background(tmp_path):
    la, rgba = u8((4, 5, 2)), u8((4, 5, 4))
    got = values(saved(tmp_path / "la.png", Image.fromarray(la, "LA")))[0]
    np.testing.assert_allclose(got, over_background(la[..., 0] / 255, la[..., 1] / 255), atol=1e-6)
    got = values(saved(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA")))
    a = rgba[..., 3] / 255
    np.testing.assert_allclose(got, np.stack([over_background(rgba[..., c] / 255, a) for c in range(3)]), atol=1e-6)
    rgb = np.full((2, 3, 3), 200, np.uint8)
    rgb[0, 1] = (10, 20, 30)  # the tRNS key colour: transparent
    got = values(saved(tmp_path / "key.png", Image.fromarray(rgb), transparency=(10, 20, 30)))
    assert np.all(got[:, 0, 1] == BACKGROUND) and np.all(got[:, 1] == np.float32(200 / 255))


def test_low_bit_gray_key_colour(tmp_path):
    v = np.array([[0, 5, 15, 5], [9, 5, 1, 15]], np.uint8)  # 4-bit gray samples; 5 is the tRNS key
    path = png(tmp_path / "g4.png", [bytes(r[0::2] << 4 | r[1::2]) for r in v], 4, 4, 0, struct.pack(">H", 5))
    np.testing.assert_allclose(values(path)[0], np.where(v == 5, BACKGROUND, v / 15), atol=1e-7)


def palette_image(index: np.ndarray, colours: np.ndarray) -> Image.Image:
    img = Image.fromarray(index, "P")
    img.putpalette(colours.ravel().tolist())
    return img


def test_palette_with_and_without_transparency(tmp_path):
    colours = u8((4, 3))
    index = RNG.integers(0, 4, (6, 5), dtype=np.uint8)
    index[0, 0], index[0, 1] = 2, 3
    expected = colours[index].transpose(2, 0, 1) / np.float32(255)  # (3, h, w)
    path = saved(tmp_path / "p.png", palette_image(index, colours))
    np.testing.assert_allclose(values(path), expected, atol=1e-7)
    path = saved(tmp_path / "p_index.png", palette_image(index, colours), transparency=2)  # index 2 transparent
    np.testing.assert_allclose(values(path), np.where(index == 2, np.float32(BACKGROUND), expected), atol=1e-7)
    alphas = np.array([255, 128, 0, 64], np.uint8)  # one alpha per palette entry
    path = saved(tmp_path / "p_table.png", palette_image(index, colours), transparency=alphas.tobytes())
    np.testing.assert_allclose(values(path), over_background(expected, alphas[index] / 255), atol=1e-6)


def test_cmyk(tmp_path):
    cmyk = u8((3, 4, 4))
    got = values(saved(tmp_path / "cmyk.tif", Image.fromarray(cmyk, "CMYK")))
    v = cmyk / 255.0
    np.testing.assert_allclose(got, ((1 - v[..., :3]) * (1 - v[..., 3:])).transpose(2, 0, 1), atol=1e-6)


GRAY16 = np.array([[0, 1, 255, 256], [32767, 32768, 65534, 65535]], np.uint16)


@pytest.mark.parametrize(("mode", "name"), [("I;16", "a.png"), ("I;16B", "a.png"), ("I;16", "a.tif"),
                                            ("I;16B", "a.tif"), ("I", "a.tif")])
def test_16bit_gray_scaled_by_65535(tmp_path, mode, name):
    path = saved(tmp_path / name, Image.fromarray(GRAY16.astype(np.int32)).convert(mode))
    got, bits = read_image(path)
    np.testing.assert_allclose(got[0], GRAY16 / 65535.0, rtol=1e-7, atol=0)
    assert bits == 16 and Image.open(path).mode in ("I;16", "I;16B", "I")


@pytest.mark.parametrize("mode", ["I;16L", "I;16N", "I"])
def test_16bit_modes_in_memory(mode):  # modes Pillow opens but has no writer for
    got, alpha, bits = _samples(Image.fromarray(GRAY16.astype(np.int32)).convert(mode), Path("x"))
    np.testing.assert_allclose(got, GRAY16 / 65535.0, rtol=1e-7, atol=0)
    assert alpha is None and bits == 16


@pytest.mark.parametrize("bad", [70000, -5])
def test_mode_i_outside_16_bits_is_an_error(tmp_path, bad):
    path = saved(tmp_path / "big.tif", Image.fromarray(np.array([[0, bad]], np.int32), "I"))
    with pytest.raises(GenprocError, match=r"0\.\.65535") as e:
        read_image(path)
    assert str(path) in str(e.value) and str(bad) in str(e.value) and "mode I " in str(e.value)


def test_float_mode(tmp_path):
    f = np.array([[0.0, 0.25, 1.0], [1e-6, 0.5, 0.999]], np.float32)
    np.testing.assert_array_equal(values(saved(tmp_path / "f.tif", Image.fromarray(f))), f[None])
    for name, bad, shown in [("big.tif", 1.5, r"\[0, 1\.5\]"), ("neg.tif", -0.25, r"\[-0\.25, 1\]"), ("nan.tif", np.nan, "nan")]:
        path = saved(tmp_path / name, Image.fromarray(np.where(f == 0.25, bad, f).astype(np.float32)))
        with pytest.raises(GenprocError, match=shown) as e:
            read_image(path)
        assert str(path) in str(e.value) and "mode F" in str(e.value) and "\n" not in str(e.value)


def test_16bit_per_channel_rgb_is_refused(tmp_path):
    path = png16(tmp_path / "rgb48.png", np.full((2, 3, 3), 5007, np.uint16))
    with pytest.raises(GenprocError, match="mode RGB stored with 16 bits per sample") as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_16bit_gradient_has_the_mean_of_its_8bit_copy(tmp_path):
    grad = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (48, 1))  # (48, 64), left to right
    png16(tmp_path / "deep/g.png", grad)
    saved(tmp_path / "flat/g.png", Image.fromarray(np.round(grad / 257).astype(np.uint8)))
    deep = build_dataset(DataConfig(name="folder", root=str(tmp_path / "deep"), image_size=16))
    flat = build_dataset(DataConfig(name="folder", root=str(tmp_path / "flat"), image_size=16))
    assert deep.images.dtype == torch.float32 and flat.images.dtype == torch.uint8  # 16-bit precision kept
    m16, m8 = deep[0].mean().item(), flat[0].mean().item()
    assert abs(m16 - m8) <= 1 / 255 and abs(m16 - 0.5) < 0.02  # not clipped to white (issue 11: it was 253.8/255)


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    arr = u8((20, 30))  # stored 30 wide, 20 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = saved(tmp_path / "o.png", Image.fromarray(arr), exif=exif)
    np.testing.assert_array_equal(values(path)[0], np.rot90(arr, k=-1) / np.float32(255))  # 20 wide, 30 tall


def test_exif_orientation_on_a_reduced_jpeg(tmp_path):
    arr = np.zeros((200, 400), np.uint8)
    arr[:, 200:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = saved(tmp_path / "o.jpg", Image.fromarray(arr), exif=exif, quality=95)
    x = load_image(path, 1, (40, 20)).float() / 255  # displayed 200 x 400: top half black, bottom white
    assert x.shape == (1, 40, 20) and x[0, :18].max() < 0.05 and x[0, 22:].min() > 0.95


def test_extensions_any_case_recursive(tmp_path):
    gray = Image.fromarray(np.full((6, 6), 77, np.uint8))
    names = ["a.PNG", "b.JPG", "sub/c.JpEg", "sub/d.BMP", "e.WEBP", "sub/deep/f.TIF", "g.TiFf", "h.png"]
    for name in names:
        saved(tmp_path / name, gray, **({"lossless": True} if name.lower().endswith("webp") else {}))
    saved(tmp_path / "skip.gif", gray)
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == sorted(names)
    ds = build_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=6))
    torch.testing.assert_close(ds.get_batch(torch.arange(len(ds))), torch.full((8, 1, 6, 6), 77 / 255), atol=2 / 255, rtol=0)


def test_undecodable_files_name_the_file(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"not an image at all" * 20)
    good = saved(tmp_path / "cut.png", Image.fromarray(u8((40, 40, 3))))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])  # truncated
    frames = [Image.fromarray(u8((4, 4))) for _ in range(2)]
    saved(tmp_path / "pages.tif", frames[0], save_all=True, append_images=frames[1:])
    for name, what in [("garbage.png", "cannot read image"), ("cut.png", "cannot read image"), ("pages.tif", "2 frames")]:
        with pytest.raises(GenprocError, match=what) as e:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def ramp(h: int, w: int, axis: int) -> np.ndarray:
    """(1, h, w) float32 rising linearly 0 -> 1 along ``axis`` (0: down, 1: right)."""
    n = (h, w)[axis]
    r = np.arange(n, dtype=np.float32) / (n - 1)
    return np.broadcast_to(r[:, None] if axis == 0 else r[None, :], (h, w))[None].copy()


def test_resize_rules_on_a_non_square_target():
    H, W = 24, 40
    white = np.ones((1, 30, 30), np.float32)
    pad = fit(white, (H, W), "pad")  # s = 0.8: 24 x 24 in columns 8..31
    assert pad.shape == (1, H, W) and np.all(pad[..., :8] == BACKGROUND) and np.all(pad[..., 32:] == BACKGROUND)
    np.testing.assert_allclose(pad[..., 8:32], 1.0, atol=1e-5)
    pad = fit(np.ones((1, 20, 60), np.float32), (H, W), "pad")  # s = 2/3: 13 x 40 in rows 5..17 (extra row at the bottom)
    assert np.all(pad[:, :5] == BACKGROUND) and np.all(pad[:, 18:] == BACKGROUND)
    np.testing.assert_allclose(pad[:, 5:18], 1.0, atol=1e-5)
    # crop: the output pixel centre i maps to the source at offset + (i + 0.5) / s - 0.5; a ramp stays linear.
    rows = np.arange(H)
    crop = fit(ramp(30, 30, 0), (H, W), "crop")  # s = 4/3, rows 6..24 of the source kept
    np.testing.assert_allclose(crop[0, :, 20], (6 + (rows + 0.5) * 0.75 - 0.5) / 29, atol=1e-4)
    cols = np.arange(W)
    crop = fit(ramp(20, 60, 1), (H, W), "crop")  # s = 1.2, columns 40/3..140/3 kept
    np.testing.assert_allclose(crop[0, 12, 3:-3], (40 / 3 + (cols[3:-3] + 0.5) / 1.2 - 0.5) / 59, atol=1e-4)
    stretch = fit(ramp(20, 60, 1), (H, W), "stretch")  # the whole width: x = (j + 0.5) * 1.5 - 0.5
    # shrinking samples the widened (antialiasing) cubic off its knots: linear to 0.03 source pixels, not exactly
    np.testing.assert_allclose(stretch[0, 12, 3:-3], ((cols[3:-3] + 0.5) * 1.5 - 0.5) / 59, atol=0.03 / 59)
    assert crop.shape == stretch.shape == (1, H, W)


@pytest.mark.parametrize("rule", ["crop", "pad", "stretch"])
def test_non_square_folder_lazy_equals_cached(tmp_path, monkeypatch, rule):
    saved(tmp_path / "a.png", Image.fromarray(u8((30, 30, 3))))
    saved(tmp_path / "b.png", Image.fromarray(u8((20, 60))))
    png16(tmp_path / "c.png", RNG.integers(0, 65536, (25, 33), dtype=np.uint16))
    cfg = DataConfig(name="folder", root=str(tmp_path), image_size=(24, 40), channels=3, resize=rule)
    cached = build_dataset(cfg)
    assert cached.in_memory and cached.images.dtype == torch.float32 and cached.image_hw == (24, 40)
    monkeypatch.setattr(folder_mod, "CACHE_MAX_IMAGES", 0)
    lazy = build_dataset(cfg)
    assert not lazy.in_memory and lazy[0].shape == (3, 24, 40)
    torch.testing.assert_close(lazy.get_batch(torch.arange(3)), cached.get_batch(torch.arange(3)), atol=0, rtol=0)


def test_square_crop_stays_close_to_the_8bit_resize(tmp_path):
    yy, xx = np.mgrid[0:30, 0:40]
    arr = np.stack([xx * 6, yy * 8, (xx + yy) * 3], -1).astype(np.uint8)  # smooth, 40 wide, 30 tall
    path = saved(tmp_path / "s.png", Image.fromarray(arr))
    before = Image.fromarray(arr).resize((16, 16), Image.Resampling.BICUBIC, box=(5, 0, 35, 30))  # the loader until issue 11
    got = load_image(path, 3, 16).numpy().astype(int)
    assert np.abs(got - np.asarray(before).transpose(2, 0, 1).astype(int)).max() <= 1


@pytest.mark.parametrize("hw", [(24, 40), (40, 24), (7, 13), (28, 28)])
def test_crop_box_never_leaves_the_source_for_any_source_size(hw):
    """For every source size up to 90 px the crop box lies inside the image (a scale like W / (W / w) can round to
    w + 1 ulp: a 61 x 80 source at 24 x 40 once made Pillow refuse a box offset of -3.6e-15)."""
    for h in range(1, 91, 7):
        for w in list(range(1, 91, 5)) + [61]:
            out = fit(np.random.default_rng(h * 100 + w).random((1, h, w), dtype=np.float32), hw, "crop")
            assert out.shape == (1, *hw) and 0.0 <= out.min() and out.max() <= 1.0
