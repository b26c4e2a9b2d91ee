"""Which feature-extractor weights to use, offline first, and their sha256.

For torch-fidelity's InceptionV3 (``inception-v3-compat``) the file is looked up in order:
the explicit path (CLI ``--inception-weights``), ``$GENPROC_INCEPTION_WEIGHTS``, torch.hub's
cache (``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``), and only
then downloaded into that cache. Whatever is found is passed to torch-fidelity as
``feature_extractor_weights_path``, so torch-fidelity itself never touches the network.
Any failure is one line saying how to get the file.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from genproc.errors import GenprocError
from genproc.filehash import sha256_file

INCEPTION = "inception-v3-compat"
ENV_VAR = "GENPROC_INCEPTION_WEIGHTS"
FILENAME = "weights-inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{FILENAME}"


@dataclass(frozen=True)
class ExtractorWeights:
    """A feature extractor (torch-fidelity registry name) and the weights file it will load."""

    extractor: str
    path: str | None  # None: the extractor needs no file
    sha256: str | None
    source: str  # 'argument' | 'env' | 'hub-cache' | 'download' | 'none'


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (memoised on path, size and mtime)."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def _checked(path: str, where: str) -> str:
    """``path`` made absolute, after checking it is a readable state dict (torch.load weights_only=True)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise GenprocError(f"feature-extractor weights not found: {path} (from {where}); expected the file {FILENAME}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise GenprocError(f"feature-extractor weights {path} (from {where}) are not a readable state dict: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(state, dict):
        raise GenprocError(f"feature-extractor weights {path} (from {where}) hold a {type(state).__name__}, not a state dict")
    return path


def _hub_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FILENAME


def _download(dst: Path) -> str:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(URL, str(dst), progress=False)
    except Exception as e:  # noqa: BLE001 - no network, proxy, disk: all end in the same advice
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise GenprocError(
            f"no InceptionV3 weights for FID/KID: none given (--inception-weights PATH or ${ENV_VAR}), none in "
            f"{dst.parent}, and downloading {URL} failed ({reason}); get {FILENAME} on a machine with network "
            f"(or a converted copy) and pass --inception-weights PATH"
        ) from None
    return str(dst)


def resolve_weights(extractor: str = INCEPTION, path: str | Path | None = None, download: bool = True) -> ExtractorWeights:
    """The weights ``extractor`` will load, and their sha256 (for cache keys and the result JSON).

    For other extractors (e.g. a stand-in registered with torch-fidelity) ``path`` is optional
    and passed on as given.
    """
    if path is not None:
        p, source = _checked(str(path), "--inception-weights" if extractor == INCEPTION else "weights"), "argument"
    elif extractor != INCEPTION:
        return ExtractorWeights(extractor, None, None, "none")
    elif os.environ.get(ENV_VAR):
        p, source = _checked(os.environ[ENV_VAR], f"${ENV_VAR}"), "env"
    elif _hub_path().is_file():
        p, source = _checked(str(_hub_path()), "the torch.hub cache"), "hub-cache"
    elif download:
        p, source = _checked(_download(_hub_path()), "download"), "download"
    else:
        raise GenprocError(f"no InceptionV3 weights: pass --inception-weights PATH or set ${ENV_VAR} "
                           f"(the file {FILENAME}), or copy it to {_hub_path().parent}")
    return ExtractorWeights(extractor, p, file_sha256(p), source)
