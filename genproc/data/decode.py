"""Faithful decoding of one image file to float32 values in ``[0, 1]``.

:func:`read_image` opens a file with Pillow, applies its EXIF orientation
(``ImageOps.exif_transpose``) and returns ``values``: ``(c, h, w)`` float32 in
``[0, 1]`` with c = 1 (gray) or 3 (RGB), computed in float from the decoded samples
at their full precision, plus ``bits``, the bits per sample stored in the file
(1, 8, 16 or 32). Resizing and channel conversion come after (:mod:`genproc.data.folder`).

How each Pillow mode is read (v: the stored sample):

- ``1``: 0 or 1 exactly (gray).
- ``L``, ``LA``: v / 255 (gray).
- ``P``, ``PA``: the palette colour / 255 (RGB); a transparent index or the
  palette's alpha table gives the alpha.
- ``RGB``, ``RGBX``, ``YCbCr``, ``RGBA``, ``RGBa``: v / 255 per channel (``YCbCr``
  and the premultiplied ``RGBa`` through Pillow's own conversion to RGB / RGBA).
- ``CMYK``: no colour profile applied: R = (1 - C)(1 - K), G = (1 - M)(1 - K),
  B = (1 - Y)(1 - K), with C, M, Y, K = v / 255.
- ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``: v / 65535 (gray).
- ``I`` (32-bit integer): v / 65535. Pillow opens some 16-bit files as ``I``
  (depending on its version and the format), so ``I`` is read as 16-bit data; a
  value outside 0..65535 is an error naming the file and the range, never clipped.
- ``F`` (32-bit float): taken as stored; every value must lie in ``[0, 1]``, else
  an error naming the file and the actual range (NaN or infinity included).

Alpha (``LA``, ``PA``, ``RGBA``, ``P`` with transparency, and a PNG ``tRNS`` key
colour on ``1``, ``L``, ``I;16``, ``RGB``) is composited over :data:`BACKGROUND`:
x = a v + (1 - a) BACKGROUND. The background is black (0.0): the result is the
premultiplied colour, defined whatever colour an encoder left in transparent
pixels, and it is the value ``data.resize: pad`` fills with in every data set.

Refused with a :class:`GenprocError` naming the file (and its mode once the header
is read), never changed silently: files that are not images or are damaged; other
modes (``LAB``, ``HSV``, ``I;16S``, ...); files with several frames (animated WebP,
multi-page TIFF; a camera MPO is read, its first frame being the primary image by
that format's definition); and 16-bit-per-channel colour or gray+alpha (48/64-bit
RGB(A) PNG or TIFF, 32-bit LA PNG), which Pillow decodes keeping only the high byte
of each sample. Embedded ICC colour profiles are not applied (samples are taken as
stored, as sRGB).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from genproc.errors import GenprocError

BACKGROUND = 0.0  # gray level, every channel, under transparent pixels and in ``pad`` margins
GRAY_8BIT_MODES = ("1", "L", "LA", "La")
COLOUR_8BIT_MODES = ("P", "PA", "RGB", "RGBX", "RGBA", "RGBa", "YCbCr", "CMYK")
MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")
DEEP_RAWMODE = re.compile(r"^I;16|;16[BLN]$")  # 16 bits per sample (not BMP's packed 5-6-5 "BGR;16")
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that exchange width and height


def _error(path: Path, what: str) -> GenprocError:
    return GenprocError(f"cannot read image {path}: {what}")


def _rawmodes(img: Image.Image) -> list[str]:
    """The raw sample layouts of ``img``'s tiles, e.g. ``RGB;16B`` for a 48-bit PNG (before ``load``)."""
    out = []
    for tile in img.tile:
        args = tile.args if hasattr(tile, "args") else tile[3]
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str):
            out.append(raw)
    return out


def _check_decodable(img: Image.Image, path: Path) -> None:
    """Refuse files Pillow would decode with lost bits or lost frames (call before ``load``)."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":  # MPO: a camera JPEG whose first frame is the primary image
        raise _error(path, f"mode {img.mode} with {frames} frames (an animation or multi-page file); expected one image")
    if img.mode in GRAY_8BIT_MODES + COLOUR_8BIT_MODES:
        deep = [r for r in _rawmodes(img) if DEEP_RAWMODE.search(r)]
        if deep:
            raise _error(path, f"mode {img.mode} stored with 16 bits per sample ({deep[0]}), which Pillow decodes to "
                         "8 bits; save it with 8 bits per channel, or as single-channel 16-bit gray")


def _scale_low_bit_key(img: Image.Image) -> None:
    """A 2- or 4-bit gray PNG's tRNS key is stored in 0..3 / 0..15; Pillow scales the pixels to 0..255: scale the key."""
    low = {"L;2": 85, "L;4": 17}
    raw = _rawmodes(img)
    if img.mode == "L" and isinstance(img.info.get("transparency"), int) and raw and raw[0] in low:
        img.info["transparency"] *= low[raw[0]]


def _draft(img: Image.Image, hw: tuple[int, int], rule: str) -> None:
    """Let a JPEG decode at a reduced scale that still covers what ``rule`` resizes it to (no-op otherwise)."""
    if img.format not in ("JPEG", "MPO"):
        return
    H, W = hw
    if img.getexif().get(ExifTags.Base.Orientation) in SWAPPING_ORIENTATIONS:
        H, W = W, H  # the stored image is the transpose of the displayed one
    w, h = img.size
    if rule == "stretch":
        sx, sy = W / w, H / h
    else:
        sx = sy = max(H / h, W / w) if rule == "crop" else min(H / h, W / w)
    if sx < 1 and sy < 1:
        img.draft(None, (max(1, math.ceil(w * sx)), max(1, math.ceil(h * sy))))


def _key_alpha(arr: np.ndarray, key: object) -> np.ndarray | None:
    """Alpha (h, w) float32, 0 where ``arr`` (h, w) or (h, w, c) equals the PNG ``tRNS`` key colour, else 1."""
    if isinstance(key, (bytes, bytearray)):
        return None  # only palettes carry an alpha table; handled through convert("RGBA")
    hit = arr == np.asarray(key, dtype=arr.dtype)
    return (~(hit.all(axis=-1) if arr.ndim == 3 else hit)).astype(np.float32)


def _checked_range(arr: np.ndarray, path: Path, mode: str, lo: float, hi: float, what: str) -> None:
    amin, amax = (float(arr.min()), float(arr.max())) if arr.size else (lo, hi)
    if not (np.isfinite(amin) and np.isfinite(amax) and lo <= amin and amax <= hi):
        raise _error(path, f"mode {mode} values span [{amin:.6g}, {amax:.6g}], expected {what}")


def _samples(img: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(values (h, w) or (h, w, c) float32 in [0, 1] before alpha, alpha (h, w) float32 or None, bits per sample)."""
    mode = img.mode
    if mode in ("La", "PA", "RGBa") or (mode == "P" and "transparency" in img.info):
        img = img.convert("LA" if mode == "La" else "RGBA")  # Pillow's palette / un-premultiply lookup
    elif mode in ("P", "RGBX", "YCbCr"):
        img = img.convert("RGB")
    mode = img.mode
    arr = np.asarray(img)
    keyed = mode in ("1", "L", "RGB", "I") + MODES_16BIT and "transparency" in img.info
    alpha = _key_alpha(arr, img.info["transparency"]) if keyed else None
    if mode == "1":
        return arr.astype(np.float32), alpha, 1
    if mode in ("L", "RGB"):
        return arr.astype(np.float32) / 255.0, alpha, 8
    if mode in ("LA", "RGBA"):
        return arr[..., :-1].astype(np.float32) / 255.0, arr[..., -1].astype(np.float32) / 255.0, 8
    if mode == "CMYK":
        v = arr.astype(np.float32) / 255.0
        return (1.0 - v[..., :3]) * (1.0 - v[..., 3:]), None, 8
    if mode in MODES_16BIT or mode == "I":
        if mode == "I":
            _checked_range(arr, path, mode, 0, 65535, "0..65535 (mode I is read as 16-bit data)")
        return (arr.astype(np.float64) / 65535.0).astype(np.float32), alpha, 16
    if mode == "F":
        _checked_range(arr, path, mode, 0.0, 1.0, "floats in [0, 1]")
        return arr.astype(np.float32), None, 32
    raise _error(path, f"unsupported image mode {mode!r} (expected 1, L, LA, P, PA, RGB, RGBA, CMYK, I;16, I or F)")


def composite(values: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """values (c, h, w) float32 in [0, 1], alpha (h, w) in [0, 1] or None -> a v + (1 - a) BACKGROUND, same shape."""
    if alpha is None:
        return values
    return alpha * values + (1.0 - alpha) * np.float32(BACKGROUND)


def read_image(path: Path, hw: tuple[int, int] | None = None, rule: str = "crop") -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``(values, bits)``: values ``(c, h, w)`` float32 in ``[0, 1]``, c = 1 or 3, alpha composited.

    ``hw`` = (H, W) and ``rule`` (crop | pad | stretch) say what the caller will resize to; they only let a
    JPEG decode at a reduced scale still at least that large (``Image.draft``). ``bits``: bits per stored
    sample (1, 8, 16 or 32). Raises :class:`GenprocError` naming the file when it cannot be read faithfully.
    """
    opened = ""  # "PNG mode RGB: " once the header is read, so a decoder error names the mode
    try:
        with Image.open(path) as img:
            opened = f"{img.format} mode {img.mode}: "
            _check_decodable(img, path)
            _scale_low_bit_key(img)
            if hw is not None:
                _draft(img, hw, rule)
            img.load()
            img = ImageOps.exif_transpose(img)
            values, alpha, bits = _samples(img, path)
    except GenprocError:
        raise
    except UnidentifiedImageError:
        raise _error(path, "not an image file Pillow can identify") from None
    except Exception as e:  # whatever a decoder raises for this one file, name the file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _error(path, opened + msg) from None
    values = values[None] if values.ndim == 2 else values.transpose(2, 0, 1)  # (c, h, w)
    return np.ascontiguousarray(composite(values, alpha), dtype=np.float32), bits
