"""The KDE prior of IHDM (Sec. 3.2) stored without the training set: the centres F(t_K) x_i as the few DCT
coefficients that survive the blur.

At the last level the heat equation has removed almost everything but the lowest frequencies: coefficient (n, m) of
F(t_K) x is exp(-λ_nm t_K) times that of x, so for MNIST's σ_B,max = 20 px only 8 of 784 coefficients are above
1e-6 of their original size. :func:`compress_centres` keeps, in one frequency set S shared by every image and channel,
the coefficients whose dropping could move a pixel by more than ``tol``:

    a pixel of V c is sum_f c_f v_f(p), |v_f(p)| <= 2 / √(HW) for the orthonormal DCT-II basis, so dropping the set D
    moves any pixel of any centre by at most  bound(D) = 2 / √(HW) · sum_{f in D} max_i |c_{i,f}|.

D is the largest set of the smallest-peak frequencies with bound(D) <= tol (default 1e-3 in [0, 1] pixel units:
a twelfth of the sampling noise δ = 0.0125, a quarter of an 8-bit step). The stored state also records the bound
and the error measured on every centre (``max_error``). The same works for any operator whose last level is smooth
(the spatial-blur variant keeps more coefficients: its capped kernel leaves more low frequencies).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genproc.errors import GenprocError
from genproc.processes.dct import dct2, idct2

TOL = 1e-3  # the largest change of any pixel of any stored centre, [0, 1] units
CHUNK = 1024


class KDECentres:
    """The prior's centres, rebuilt on demand: ``len()`` images, ``centres(idx)`` -> (B, C, H, W) float32 on the CPU.

    ``coef``: (N, C, |S|) float32 DCT coefficients at the flat frequency indices ``index`` (|S|,) of an (H, W) image."""

    def __init__(self, coef: torch.Tensor, index: torch.Tensor, hw: tuple[int, int], bound: float, max_error: float,
                 dct: str = "auto"):
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
        return {"coef": self.coef.contiguous(), "index": self.index.contiguous(),
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
    """Two passes over the n centres (``centres(idx)`` -> (B, C, H, W) for idx: (B,)): the peak |coefficient| of each
    frequency, then the coefficients of the kept set S (see the module docstring). Raises if n == 0."""
    if n == 0:
        raise GenprocError("the IHDM prior needs the training images (a KDE of blurred data); none were given")
    c, h, w = shape
    peak = torch.zeros(h * w, dtype=torch.float64)
    for b0 in range(0, n, chunk):
        u = dct2(centres(torch.arange(b0, min(n, b0 + chunk))).float().cpu(), dct).double()  # (B, C, H, W)
        peak = torch.maximum(peak, u.abs().amax(dim=(0, 1)).flatten())
    order = torch.argsort(peak)  # smallest peaks first
    cum = torch.cumsum(peak[order], 0) * (2.0 / math.sqrt(h * w))
    n_drop = int((cum <= tol).sum())
    bound = float(cum[n_drop - 1]) if n_drop else 0.0
    index = torch.sort(order[n_drop:]).values
    coef = torch.empty(n, c, index.numel(), dtype=torch.float32)
    max_error = 0.0
    for b0 in range(0, n, chunk):
        idx = torch.arange(b0, min(n, b0 + chunk))
        y = centres(idx).float().cpu()
        coef[idx] = dct2(y, dct).flatten(2)[:, :, index]
        part = KDECentres(coef[idx], index, (h, w), bound, 0.0, dct)
        max_error = max(max_error, float((part.centres(torch.arange(len(idx))) - y).abs().max()))
    return KDECentres(coef, index, (h, w), bound, max_error, dct)
