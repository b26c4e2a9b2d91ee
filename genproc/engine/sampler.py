"""The one sampling driver: prior -> a sampler's chain (:mod:`genproc.samplers`) -> images, for any process and sampler.

Randomness is per sample (``SampleRNG``): sample i depends only on (seed, i), not on
the batch size, so the same seed gives the same images in any batching, and the samples split across DDP ranks
(``info``) are those of one process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genproc.engine.distributed import DistInfo, gather_rows, shard
from genproc.engine.media import save_gif, save_grid, save_pngs
from genproc.processes import ForwardProcess, Net, SampleRNG
from genproc.progress import counter
from genproc.samplers import Sampler, for_process

INIT_STREAM, NOISE_STREAM = 1, 2
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` in {fp32, bf16, fp16} (fp32: no-op)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


@functools.cache
def _native_cpu_kernels(precision: str) -> bool:
    """Whether oneDNN has native ``precision`` (bf16/fp16) kernels on this CPU; True when torch cannot tell."""
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    fn = getattr(torch.ops.mkldnn, check, None)
    try:
        return bool(fn()) if fn is not None else True
    except Exception:  # noqa: BLE001 - an op this torch build lacks: assume fine rather than warn wrongly
        return True


def slow_precision_warning(device: torch.device, precision: str) -> str | None:
    """A one-line warning when ``precision`` has no fast kernels on this CPU, else None.

    Without native bf16/fp16 (AVX512-BF16/AMX/AVX512-FP16), oneDNN has no reduced-precision
    convolutions and torch falls back to ``_slow_conv2d_forward``: on this project's AVX2 machine
    a bf16 U-Net forward pass is ~20× slower than fp32.
    """
    if device.type != "cpu" or precision == "fp32" or _native_cpu_kernels(precision):
        return None
    return (f"precision {precision} on this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
            f"{precision} convolutions and runs many times slower than fp32")


@dataclass
class SampleResult:
    images: torch.Tensor  # (n, C, H, W) float32 in [0, 1]
    trajectory: torch.Tensor | None  # (T, n, C, H, W) float32 in [0, 1], T captured states
    levels: list[int]  # the level of each trajectory frame (prior level first, 0 = final)

    def save(self, out: str | Path, individual: bool = True) -> dict[str, str]:
        """Write grid.png, sequence.gif, samples.npz (and images/*.png) into the folder ``out``; see :func:`write_samples`."""
        return write_samples(self, out, individual=individual)


def auto_capture_every(num_steps: int, frames: int = 20) -> int:
    return max(1, num_steps // frames)


def autocast_net(net: Net, device: torch.device, precision: str) -> Net:
    """``net`` called under ``precision``'s autocast, its output float32: what samplers call."""
    def wrapped(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return net(x, k).float()
    return wrapped


@torch.no_grad()
def run_chain(process: ForwardProcess, sampler: Sampler, net: Net, x: torch.Tensor, noise: Callable[[int], torch.Tensor], *,
              device: torch.device | str = "cpu", precision: str = "fp32",
              on_step: Callable[[int, int, torch.Tensor], Any] | None = None,
              levels: list[int] | None = None) -> torch.Tensor:
    """The sampler's chain from the state ``x`` (B, C, H, W, on ``device``) at level ``levels[0]`` (default:
    ``sampler.levels(process)``, from the top level; restoration starts part-way) to level 0.

    ``noise(j)`` gives the chain's j-th standard-normal draw, shaped like ``x``; ``on_step(j, level, x)`` sees the state
    after each step. Returns the final model state (not yet ``process.to_image``).
    """
    device = torch.device(device)
    levels = sampler.levels(process) if levels is None else levels
    return sampler.run(process, autocast_net(net, device, precision), x.to(device), lambda j: noise(j).to(device),
                       levels, on_step)


@torch.no_grad()
def generate(
    process: ForwardProcess,
    net: Net,
    n: int,
    *,
    sampler: Sampler | None = None,
    shape: tuple[int, int, int],
    data: Any = None,
    seed: int = 0,
    batch_size: int = 64,
    same_init: bool = False,
    share_noise: bool = False,
    capture_every: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    start_index: int = 0,
    info: DistInfo | None = None,
) -> SampleResult:
    """Draw ``n`` samples, indices ``start_index .. start_index + n - 1``, with ``sampler``'s chain (default: the
    process's default sampler, :func:`genproc.samplers.for_process`). ``net(x, k)`` is called with x (B, C, H, W) and
    k (B,) int64.

    same_init: every sample starts from sample ``start_index``'s prior state; share_noise: every sample uses its step
    noise. capture_every = m keeps every m-th state (0: ~20 frames, negative: none). ``shape``: (C, H, W) of one
    sample; ``data``: the training set, for processes whose prior draws from it (``process.needs_data_for_prior``).
    ``progress``: a tqdm bar (:func:`genproc.progress.counter`). ``info``: DDP ranks to split the n samples across
    (a collective: every rank calls it and every rank returns all n, on the CPU); None: this process alone.
    """
    device = torch.device(device)
    info = info or DistInfo()
    sampler = sampler if sampler is not None else for_process(process)
    levels = sampler.levels(process)
    m = auto_capture_every(len(levels)) if capture_every == 0 else capture_every
    part = shard(n, info)
    images, trajs = [], []
    bar = counter("sampling", len(part), progress=progress and info.is_main, log=None)
    for b0 in range(part.start, part.stop, batch_size):
        idx = list(range(start_index + b0, start_index + min(part.stop, b0 + batch_size)))
        init = SampleRNG(seed, [start_index if same_init else i for i in idx], INIT_STREAM, device)
        noise = SampleRNG(seed, [start_index if share_noise else i for i in idx], NOISE_STREAM, device)
        x = process.prior(init, shape, data).to(device)  # (B, C, H, W)
        final, frames, _ = chain_with_frames(process, sampler, net, x, lambda j, rng=noise: rng.randn(tuple(shape)), m,
                                             device=device, precision=precision)
        images.append(final)
        bar.update(len(idx))
        if m > 0:
            trajs.append(torch.stack(frames))
    bar.close()
    frame_levels = captured_levels(levels, m)
    out = torch.cat(images) if images else torch.empty((0, *shape))
    traj = (torch.cat(trajs, dim=1) if trajs else torch.empty((len(frame_levels), 0, *shape))) if m > 0 else None
    if info.enabled:
        out = gather_rows(out, info)
        traj = None if traj is None else gather_rows(traj.transpose(0, 1).contiguous(), info).transpose(0, 1)
    return SampleResult(out, traj, frame_levels)


def captured_levels(levels: list[int], m: int) -> list[int]:
    """The levels of the states :func:`chain_with_frames` keeps for capture step m > 0: the prior level, then the level
    after every m-th step and after the last (none for m <= 0)."""
    if m <= 0:
        return []
    nxt = [*levels[1:], 0]
    return [levels[0]] + [nxt[j] for j in range(len(levels)) if (j + 1) % m == 0 or j == len(levels) - 1]


def chain_with_frames(process: ForwardProcess, sampler: Sampler, net: Net, x: torch.Tensor,
                      noise: Callable[[int], torch.Tensor], m: int, *, device: torch.device | str = "cpu",
                      precision: str = "fp32") -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """:func:`run_chain` from the prior state x (B, C, H, W) keeping, for m > 0, the prior, every m-th state and the
    last as images. Returns (final images (B, C, H, W) in [0, 1], frames (each (B, C, H, W)), the level of each frame),
    all on the CPU."""
    levels = sampler.levels(process)
    frames = [process.to_image(x).cpu()] if m > 0 else []

    def on_step(j: int, k_next: int, state: torch.Tensor) -> None:
        if m > 0 and ((j + 1) % m == 0 or j == len(levels) - 1):
            frames.append(process.to_image(state).cpu())

    x = run_chain(process, sampler, net, x.to(device), noise, device=device, precision=precision, on_step=on_step,
                  levels=levels)
    return process.to_image(x).cpu(), frames, captured_levels(levels, m)


def write_samples(result: SampleResult, out: str | Path, gif_max: int = 64, individual: bool = True) -> dict[str, str]:
    """Write grid.png, sequence.gif, samples.npz and images/*.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"grid": str(save_grid(result.images, out / "grid.png", scale=2))}
    arrays = {"images": result.images.numpy()}
    if result.trajectory is not None:
        files["gif"] = str(save_gif(result.trajectory[:, :gif_max], out / "sequence.gif"))
        arrays["trajectory"] = result.trajectory.numpy()
        arrays["trajectory_levels"] = np.asarray(result.levels)
    np.savez_compressed(out / "samples.npz", **arrays)
    files["npz"] = str(out / "samples.npz")
    if individual:
        save_pngs(result.images, out / "images")
        files["images"] = str(out / "images")
    return files
