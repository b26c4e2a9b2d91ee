"""The KDE prior of IHDM (Sec. 3.2) stored without the training set: the centres F(t_K) x_i as the few DCT
coefficients that survive the blur.

At the last level the heat equation has removed almost everything but the lowest frequencies: coefficient (n, m) of
F(t_K) x is exp(-λ_nm t_K) times that of x, so for MNIST's σ_B,max = 20 px only 8 of 784 coefficients are above
1e-6 of their original size. :func:`compress_centres` keeps one frequency set S, shared by every image and channel,
and stores the centres' coefficients on S, so that every pixel of every rebuilt centre is within ``tol`` of the exact
one (default 1e-3 in [0, 1] pixel units: a twelfth of the sampling noise δ = 0.0125, a quarter of an 8-bit step):

1. An a-priori set. A pixel of V c is sum_f c_f v_f(p) with |v_f(p)| <= 2 / √(HW) for the orthonormal DCT-II basis,
   so dropping the set D moves any pixel of any centre by at most  bound(D) = 2 / √(HW) · sum_{f in D} max_i |c_{i,f}|.
   D0 is the largest set of the smallest-peak frequencies with bound(D0) <= tol.
2. A measured set. The bound adds every dropped coefficient's worst case at once and is loose: for the spatial blur
   on MNIST it keeps 329 of 784 coefficients while the measured error is 5e-5, 20× under tol. So S is the shortest
   prefix of the frequencies in decreasing order of peak (within the complement of D0) whose rebuilt centres,
   from the coefficients as stored (fp16 when that still meets tol, else fp32), are within tol of every exact centre.
   Every centre the prior can ever draw is measured, so the measurement is the guarantee; it is a binary search,
   one pass over the centres per probe (held in memory up to ``HOLD_BYTES``, else recomputed), and the chosen set is
   measured once more through :meth:`KDECentres.centres`.

The stored state records tol as ``bound`` and the error measured on every centre as ``max_error``. Should the
per-image rebuild miss tol, the a-priori set is stored in fp32, and the bound is the measured error if still larger.
The same works for any operator whose last level is smooth; the spatial-blur variant keeps more coefficients (its
capped kernel leaves more low frequencies).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genproc.errors import GenprocError
from genproc.processes.dct import dct2, idct2

TOL = 1e-3  # the largest change of any pixel of any stored centre, [0, 1] units
CHUNK = 1024
HOLD_BYTES = 2**30  # compress_centres holds the centres and their coefficients in memory up to this size (MNIST: 376 MB)


class KDECentres:
    """The prior's centres, rebuilt on demand: ``len()`` images, ``centres(idx)`` -> (B, C, H, W) float32 on the CPU.

    ``coef``: (N, C, |S|) DCT coefficients (stored as fp16 or fp32, held as float32) at the flat frequency indices
    ``index`` (|S|,) of an (H, W) image."""

    def __init__(self, coef: torch.Tensor, index: torch.Tensor, hw: tuple[int, int], bound: float, max_error: float,
                 dct: str = "auto"):
        self.stored_dtype = coef.dtype if coef.dtype in (torch.float16, torch.float32) else torch.float32
        self.coef, self.index, self.hw = coef.float(), index.long(), (int(hw[0]), int(hw[1]))
        self.bound, self.max_error, self.dct = float(bound), float(max_error), dct

    def __len__(self) -> int:
        return self.coef.shape[0]

    def centres(self, idx: torch.Tensor) -> torch.Tensor:
        """F(t_K) x_i for the indices idx: (B,) -> (B, C, H, W), each pixel within ``bound`` of the exact centre."""
        c = self.coef[idx.cpu().long()]  # (B, C, |S|)
        u = torch.zeros(c.shape[0], c.shape[1], self.hw[0] * self.hw[1])
        u[:, :, self.index] = c
        u = u.reshape(*u.shape[:2], *self.hw)
        # one image at a time: a batched matmul may round differently with the batch size, and sample i must not
        # depend on which other samples share its batch
        return torch.cat([idct2(u[i:i + 1], self.dct) for i in range(u.shape[0])]) if len(u) else u

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors for a safetensors file (:meth:`from_state` reads them back)."""
        return {"coef": self.coef.to(self.stored_dtype).contiguous(), "index": self.index.contiguous(),
                "hw": torch.tensor(self.hw, dtype=torch.long),
                "bound": torch.tensor([self.bound], dtype=torch.float64),
                "max_error": torch.tensor([self.max_error], dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], dct: str = "auto") -> KDECentres:
        try:
            return cls(state["coef"], state["index"], tuple(state["hw"].tolist()), float(state["bound"][0]),
                       float(state["max_error"][0]), dct)
        except (KeyError, IndexError, TypeError) as e:
            raise GenprocError(f"stored prior is incomplete: missing or malformed {e} "
                               "(expected coef, index, hw, bound, max_error)") from None


def compress_centres(centres: Callable[[torch.Tensor], torch.Tensor], n: int, shape: tuple[int, int, int],
                     tol: float = TOL, dct: str = "auto", chunk: int = CHUNK) -> KDECentres:
    """The stored centres (``centres(idx)`` -> (B, C, H, W) for idx: (B,)) whose every pixel is within tol of the exact
    ones, with as few coefficients as the measurement allows (see the module docstring). Raises if n == 0."""
    if n == 0:
        raise GenprocError("the IHDM prior needs the training images (a KDE of blurred data); none were given")
    c, h, w = shape

    def computed():
        for b0 in range(0, n, chunk):
            idx = torch.arange(b0, min(n, b0 + chunk))
            y = centres(idx).float().cpu()
            yield idx, y, dct2(y, dct)

    # the bisection passes over the centres several times: keep them and their coefficients when they fit
    held = list(computed()) if 2 * 4 * n * c * h * w <= HOLD_BYTES else None

    def batches():
        return iter(held) if held is not None else computed()

    peak = torch.zeros(h * w, dtype=torch.float64)
    for _, _, u in batches():
        peak = torch.maximum(peak, u.double().abs().amax(dim=(0, 1)).flatten())
    order = torch.argsort(peak, descending=True, stable=True)  # largest peaks first
    cum = torch.cumsum(peak[order].flip(0), 0) * (2.0 / math.sqrt(h * w))  # bound of dropping the j smallest
    n_keep0 = h * w - int((cum <= tol).sum())  # the a-priori set's size

    def error(k: int, dtype: torch.dtype) -> float:
        """The largest pixel error over every centre, rebuilt from the k largest-peak coefficients stored in dtype."""
        keep, worst = order[:k], 0.0
        for _, y, u in batches():
            v = torch.zeros_like(u).flatten(2)
            v[:, :, keep] = u.flatten(2)[:, :, keep].to(dtype).float()
            worst = max(worst, float((idct2(v.reshape(u.shape), dct) - y).abs().max()))
        return worst

    dtype = torch.float16 if error(n_keep0, torch.float16) <= tol else torch.float32
    lo, hi = 0, n_keep0  # error(hi) <= tol (the bound, or measured for fp16); find the smallest such k by bisection
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if error(mid, dtype) <= tol else (mid, hi)
    state = _store(batches, order[:hi], n, c, (h, w), dtype, tol, dct)
    if state.max_error > tol:  # the probe's batched rebuild rounds unlike the per-image one: fall back to the a-priori set
        state = _store(batches, order[:n_keep0], n, c, (h, w), torch.float32, tol, dct)
    return state


def _store(batches: Callable, keep: torch.Tensor, n: int, c: int, hw: tuple[int, int], dtype: torch.dtype, tol: float,
           dct: str) -> KDECentres:
    """The centres' coefficients on the frequencies keep, in dtype, with the error measured through
    :meth:`KDECentres.centres` on every centre; the recorded bound is tol, or the measured error if that is larger."""
    index = torch.sort(keep).values
    coef = torch.empty(n, c, index.numel(), dtype=dtype)
    max_error = 0.0
    for idx, y, u in batches():
        coef[idx] = u.flatten(2)[:, :, index].to(dtype)
        part = KDECentres(coef[idx], index, hw, tol, 0.0, dct)
        max_error = max(max_error, float((part.centres(torch.arange(len(idx))) - y).abs().max()))
    return KDECentres(coef, index, hw, max(tol, max_error), max_error, dct)
