"""The one training loop, for every process (it never asks which one).

Adam with linear warm-up, grad-norm clipping, EMA (timm, its decay warmed up), fp32/bf16/fp16 autocast (GradScaler
for fp16), DDP under torchrun, atomic checkpoints with bit-exact resume, one trainer per run dir (an OS lock,
:mod:`genproc.engine.runlock`), SIGINT/SIGTERM -> checkpoint and exit, a progress counter + metrics.jsonl (+ TensorBoard
if installed), sample grids and generation GIFs from the EMA weights.

Read top-down: :func:`train` drives a :class:`Trainer`, whose parts are :meth:`Trainer.resume` (build/resume),
:meth:`Trainer.step` (one optimisation step), :meth:`Trainer.log_step`, :meth:`Trainer.save` (checkpoint),
:meth:`Trainer.sample_grid` and :meth:`Trainer.evaluate` (the caller's in-training evaluation callback).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from genproc.data import build_dataset
from genproc.engine.batches import EpochOrder, batch_iterator, local_slice, step_generator
from genproc.engine.checkpoint import list_checkpoints, load_meta, load_state, load_weights, resolve_checkpoint, save_checkpoint
from genproc.engine.distributed import DistInfo, barrier, current, init_distributed, mean_across, pick_device, shutdown
from genproc.engine.media import save_gif, save_grid
from genproc.engine.runlock import RunLock, lock_run_dir
from genproc.engine.sampler import autocast, generate, slow_precision_warning
from genproc.errors import GenprocError
from genproc.nets import build_net, count_parameters
from genproc.processes import ForwardProcess, build_process
from genproc.processes.dct import mean_power
from genproc.progress import counter
from genproc.recipe import Recipe, TrainConfig, keep_recorded, recipe_to_yaml, stored_recipe
from genproc.samplers import for_process
from genproc.seeding import derive_seed

# Recipe keys that may change when a run is resumed (everything else must match).
RESUMABLE_CHANGES = {"data.root", "data.num_workers", "train.max_steps", "train.log_every", "train.sample_every",
                     "train.eval_every", "train.eval_metrics", "train.eval_n", "train.eval_split",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.store_prior", "train.device", "train.compile",
                     "train.channels_last", "train.tf32", "train.fused_adam",
                     "train.max_nonfinite_steps", "sample.n", "sample.batch_size", "sample.capture_every"}

# In-training evaluation, passed in by the caller (the engine imports no metrics):
# (step, EMA network in eval mode, process, training data, stored prior or None) -> {metric name: value}. Under DDP it
# is called on every rank (genproc's own evaluation splits its work across them); rank 0's values are logged.
EvalCallback = Callable[[int, torch.nn.Module, ForwardProcess, Any, Any], dict[str, float]]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


STATS_IMAGES = 5000  # training images in the stored data statistics


def data_statistics(data: Any) -> dict[str, torch.Tensor]:
    """{"power": (C, H, W) float64}: the mean DCT power of the first ``STATS_IMAGES`` images of ``data``."""
    return {"power": mean_power(data.get_batch(torch.arange(min(len(data), STATS_IMAGES))))}


def check_same_recipe(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to resume a run with a recipe that changes the model or the optimisation (names compared canonical)."""
    a, b = _flatten(stored_recipe(saved).to_dict()), _flatten(current)
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_CHANGES or key == "name":
            continue
        if a.get(key) != b.get(key):
            raise GenprocError(
                f"run dir {where} holds a checkpoint from a different recipe ({key}: {a.get(key)!r} there, "
                f"{b.get(key)!r} now); use another --run-dir or the same recipe"
            )


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool
    last_loss: float | None


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and exits."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def with_data_root(recipe: Recipe, data_root: str | None) -> Recipe:
    """The recipe with ``data.root`` set to ``data_root`` (the folder the run really read), if given."""
    return recipe if data_root is None else dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=data_root))


class Trainer:
    """Everything one run needs: data, process, net, EMA, optimiser, scaler, writers. Built by :meth:`resume`."""

    def __init__(self, recipe: Recipe, run_dir: Path, info: DistInfo, log: Callable[[str], Any],
                 evaluate: EvalCallback | None):
        tc = recipe.train
        if tc.batch_size % info.world_size:
            raise GenprocError(f"train.batch_size {tc.batch_size} must be divisible by the number of processes {info.world_size}")
        self.recipe, self.run_dir, self.info, self.log, self.eval_fn = recipe, run_dir, info, log, evaluate
        self.device = pick_device(tc.device, info)
        self.data = build_dataset(recipe.data, "train")
        self.process = build_process(recipe.process)
        self.sampler = for_process(self.process, recipe.sampler)  # a sampler that cannot drive it fails here, not later
        torch.manual_seed(recipe.seed)  # same initial weights on every rank and every fresh run
        self.net = build_net(recipe.net, recipe.data.channels, recipe.data.image_hw).to(self.device)
        cuda = self.device.type == "cuda"
        if tc.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if cuda and tc.tf32 != "off":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.ema = _ema(self.net, tc)
        fused = tc.fused_adam == "on" or (tc.fused_adam == "auto" and cuda)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=tc.lr, betas=tc.adam_betas, eps=tc.adam_eps,
                                    **({"fused": True} if fused else {}))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=tc.precision == "fp16")
        self.model = (DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                      if info.enabled else self.net)
        self.forward = _compiled(self.model, log if info.is_main else lambda *_: None) if tc.compile else None
        self.sl = local_slice(tc.batch_size, info.rank, info.world_size)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.writer = None
        self._prior: dict[str, torch.Tensor] | None = None
        self._prior_done = False  # prior_state computed (it may be None: nothing is stored)
        self._prior_source: Any = None
        self._stats: dict[str, torch.Tensor] | None = None

    # -- build / resume
    def resume(self) -> int:
        """Load the latest checkpoint if there is one (same recipe required); write recipe.yaml; return the start step."""
        start = 0
        if list_checkpoints(self.run_dir):
            last = resolve_checkpoint(self.run_dir, warn=self._warn)  # the newest intact one (damaged ones set aside)
            meta = load_meta(last)
            self.recipe, kept = keep_recorded(self.recipe, meta["recipe"])
            if kept:  # e.g. a run recorded before the EMA warm-up existed averages on without one
                self.ema = _ema(self.net, self.recipe.train)
                if self.info.is_main:
                    self.log(f"{self.run_dir} was recorded before {', '.join(k.split('=')[0] for k in kept)} existed; "
                             f"it keeps what it did: {', '.join(kept)}")
            check_same_recipe(meta["recipe"], self.recipe.to_dict(), self.run_dir)
            self.net.load_state_dict(load_weights(last, "model"))
            self.ema.module.load_state_dict(load_weights(last, "ema"))
            state = load_state(last)
            self.opt.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            start = int(meta["step"])
            if self.info.is_main:
                self.log(f"resuming {self.run_dir} from step {start} ({last.name})")
        if self.info.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "recipe.yaml").write_text(recipe_to_yaml(self.recipe))
            except OSError as e:
                raise GenprocError(f"cannot write to run dir {self.run_dir}: {e.strerror or e} ({e.filename})") from None
            self.writer = _tensorboard(self.run_dir)
        return start

    def _warn(self, msg: str) -> None:
        if self.info.is_main:
            self.log(f"warning: {msg}")

    def describe(self, start: int, stop: int) -> None:
        """The run's one-line summary (and a warning for slow CPU precisions)."""
        tc, info = self.recipe.train, self.info
        if not info.is_main:
            return
        self.log(f"run dir {self.run_dir} | device {self.device} | precision {tc.precision} | "
                 f"{count_parameters(self.net):,} parameters | global batch {tc.batch_size} = {info.world_size} "
                 f"process(es) x {tc.batch_size // info.world_size} | {len(self.data)} training images | steps {start} -> {stop}")
        if (slow := slow_precision_warning(self.device, tc.precision)) is not None:
            self.log(f"warning: {slow}; on CPU use --set train.precision=fp32")

    # -- one step
    def step(self, step: int, x0: torch.Tensor) -> tuple[torch.Tensor, float, str | None]:
        """One optimisation step on this rank's batch x0 (B_local, C, H, W); returns (loss, lr, skipped).

        The global batch's levels, noise and flips come from (seed, step), each rank taking its slice. A non-finite
        loss or gradient norm (on any rank; under fp16 also the GradScaler's overflow) skips the optimiser and EMA
        update: ``skipped`` is then "loss" or "gradient", else None."""
        tc, dev, sl = self.recipe.train, self.device, self.sl
        lr = tc.lr * min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps > 0 else tc.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        g = step_generator(self.recipe.seed, step)
        k = self.process.draw_training_levels(tc.batch_size, g)[sl].to(dev)  # (B_local,)
        if dev.type == "cuda":  # the noise is drawn where the model runs (a different stream from the CPU's)
            g_dev = torch.Generator(device=dev).manual_seed(derive_seed(self.recipe.seed, step, 1, offset=12345))
            eps = torch.randn((tc.batch_size, *x0.shape[1:]), generator=g_dev, device=dev)[sl]
        else:
            eps = torch.randn((tc.batch_size, *x0.shape[1:]), generator=g)[sl]  # (B_local, C, H, W)
        flip = (torch.rand(tc.batch_size, generator=g) < 0.5)[sl].to(dev)
        x0 = x0.to(dev, non_blocking=True)
        if self.recipe.data.hflip:
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        torch.manual_seed(derive_seed(self.recipe.seed, step, 0, self.info.rank, offset=99))  # dropout
        inp, target = self.process.training_pair(x0, k, eps)
        if tc.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with autocast(dev, tc.precision):
            out = self._forward(inp, k)
        loss = self.process.loss(out, target)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # always: under DDP every rank must join the gradient all-reduce
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), tc.grad_clip)
        skipped = self._nonfinite(loss, grad_norm)
        if skipped is None:
            self.scaler.step(self.opt)
            # the warm-up's update count is the global step (1 at the first), so a resumed run equals an uninterrupted
            # one; without warm-up no count is passed (timm then uses the constant decay from the first update on)
            self.ema.update(self.net, step=step + 1 if tc.ema_warmup else None)
        if self.scaler.is_enabled():
            self.scaler.update()  # fp16: an overflow lowers the scale (the scaler's own skip)
        return loss, lr, skipped

    def _forward(self, inp: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The training forward: compiled (``train.compile``) unless compilation failed, then eager for good."""
        if self.forward is not None:
            try:
                return self.forward(inp, k)
            except Exception as e:  # noqa: BLE001 - inductor/dynamo raise many types; eager is always correct
                if self.info.is_main:
                    self.log(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                             "training continues uncompiled")
                self.forward = None
        return self.model(inp, k)

    def _nonfinite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> str | None:
        """"loss" / "gradient" when the step must be skipped (agreed across DDP ranks), else None."""
        bad = torch.tensor([float(not torch.isfinite(loss)), float(not torch.isfinite(grad_norm))], device=self.device)
        if self.info.enabled:
            torch.distributed.all_reduce(bad)
        return "loss" if bad[0] > 0 else "gradient" if bad[1] > 0 else None

    # -- logging, checkpoints, samples, evaluation
    def log_step(self, step: int, loss: torch.Tensor, lr: float, img_per_s: float, skipped_total: int) -> float:
        """Append {step, loss, lr, img_per_s, skipped_steps, time} to metrics.jsonl (and TensorBoard); returns the
        rank-mean loss (NaN when this step was skipped)."""
        loss_val = mean_across(loss.detach().float(), self.info).item()
        if self.info.is_main:
            self._append({"step": step, "loss": loss_val if math.isfinite(loss_val) else None, "lr": lr,
                          "img_per_s": img_per_s, "skipped_steps": skipped_total, "time": time.time()})
            self._scalars({"train/loss": loss_val, "train/img_per_s": img_per_s}, step)
        return loss_val

    def log_skip(self, step: int, why: str, loss: torch.Tensor, run: int) -> None:
        """Append {step, skipped: "loss" | "gradient", loss, consecutive} to metrics.jsonl for a skipped step."""
        if self.info.is_main:
            val = loss.detach().float().item()
            self._append({"step": step, "skipped": why, "loss": val if math.isfinite(val) else str(val),
                          "consecutive": run, "time": time.time()})
            self.log(f"warning: step {step}: non-finite {why} ({val:g}), optimiser and EMA update skipped ({run} in a row)")

    def save(self, step: int) -> None:
        """Checkpoint ``step`` (rank 0 writes, every rank waits)."""
        if self.info.is_main:
            state = {"optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state()}
            save_checkpoint(self.run_dir, step, self.net, self.ema.module, state, self.recipe.to_dict(),
                            self.recipe.train.keep_checkpoints, prior=self.prior_state(), stats=self.data_stats())
        barrier(self.info)

    def prior_state(self) -> dict[str, torch.Tensor] | None:
        """The process's stored prior (``prior.safetensors``: sampling the run needs no data set), computed from the
        training set at the first checkpoint and kept; None when the process needs none or ``train.store_prior`` is
        off."""
        if not (self.recipe.train.store_prior and self.process.needs_data_for_prior):
            return None
        if not self._prior_done:
            t0 = time.time()
            self._prior, self._prior_done = self.process.prior_state(self.data), True
            if self.info.is_main:  # the line says what is written: nothing when prior_state gives None
                self.log(f"stored prior: {len(self.data)} training images, {time.time() - t0:.1f} s (written into every "
                         "checkpoint as prior.safetensors)" if self._prior is not None else
                         f"no stored prior: process {self.process.label}'s prior_state gives none, so sampling this run "
                         "will read its training data")
        return self._prior

    def data_stats(self) -> dict[str, torch.Tensor]:
        """{"power": (C, H, W)}: the mean DCT power of up to 5000 training images (computed once), stored in every
        checkpoint as the reference spectrum of restoration."""
        if self._stats is None:
            self._stats = data_statistics(self.data)
        return self._stats

    def prior_data(self) -> Any:
        """What the prior draws from: the stored prior when the run stores one (so the grids and evaluations during
        training are those of ``genproc sample`` / ``evaluate`` on the checkpoint), else the training set; None when
        the prior needs no data."""
        if not self.process.needs_data_for_prior:
            return None
        state = self.prior_state()
        if state is None:
            return self.data
        if self._prior_source is None:
            self._prior_source = self.process.prior_from_state(state)
        return self._prior_source

    def sample_grid(self, step: int) -> None:
        """samples/step_XXXXXXXX.png (+ .gif) and samples/latest.png from the EMA weights: the samples split across
        the DDP ranks (:func:`generate`'s ``info``), rank 0 writes them."""
        r, d = self.recipe, self.recipe.data
        self.ema.module.eval()
        res = generate(self.process, self.ema.module, r.sample.n, sampler=self.sampler,
                       shape=(d.channels, *d.image_hw),
                       data=self.prior_data(), seed=r.seed,
                       batch_size=r.sample.batch_size, capture_every=r.sample.capture_every, device=self.device,
                       precision=r.train.precision, info=self.info)
        self.ema.module.train()
        if not self.info.is_main:
            return
        out = self.run_dir / "samples"
        try:
            save_grid(res.images, out / f"step_{step:08d}.png", scale=2)
            if res.trajectory is not None:
                save_gif(res.trajectory, out / f"step_{step:08d}.gif")
            save_grid(res.images, out / "latest.png", scale=2)
        except OSError as e:
            raise GenprocError(f"cannot write samples to {out}: {e.strerror or e} ({e.filename or out}); "
                               f"the checkpoints are not affected") from None

    def evaluate(self, step: int) -> None:
        """The caller's evaluation of the EMA model, appended to metrics.jsonl as {"step", "eval", ...}: called on every
        DDP rank (genproc's evaluation splits its samples across them: no rank idles past a collective's timeout), rank 0
        writes."""
        if self.eval_fn is not None:
            self.ema.module.eval()
            t0 = time.time()
            prior = self.prior_data()
            values = self.eval_fn(step, self.ema.module, self.process, self.data, None if prior is self.data else prior)
            self.ema.module.train()
            if self.info.is_main:
                self._append({"step": step, "eval": values, "eval_n": self.recipe.train.eval_n,
                              "eval_seconds": time.time() - t0, "time": time.time()})
                self._scalars({f"eval/{name}": v for name, v in values.items()}, step)
                self.log(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items())
                         + f" (n={self.recipe.train.eval_n})")
        barrier(self.info)

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, v in values.items():
                self.writer.add_scalar(name, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _ema(net: torch.nn.Module, tc: TrainConfig) -> ModelEmaV3:
    """The EMA of ``net``'s weights (timm's ModelEmaV3). With ``train.ema_warmup`` the decay after s updates is
    min(ema, 1 - (1 + s / gamma) ** -power), 0 at s = 1 (timm's warm-up after @crowsonkb, the same ramp as diffusers'
    EMAModel(use_ema_warmup=True, inv_gamma=1, power=2/3)): the average forgets the initial weights at once and reaches
    0.999 at ~31.6k steps; without it the decay is ``ema`` from the first update (runs recorded before the warm-up)."""
    return ModelEmaV3(net, decay=tc.ema, use_warmup=tc.ema_warmup, warmup_gamma=tc.ema_warmup_gamma,
                      warmup_power=tc.ema_warmup_power)


def _compiled(model: torch.nn.Module, log: Callable[[str], Any]) -> Any:
    """``torch.compile(model)`` (compilation happens on the first call), or None with one line when it is unavailable."""
    try:
        return torch.compile(model)
    except Exception as e:  # noqa: BLE001 - e.g. an unsupported Python or platform
        log(f"warning: torch.compile unavailable ({type(e).__name__}: {e}); training uncompiled")
        return None


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter, or None when TensorBoard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(run_dir / "tensorboard"))
    except Exception:  # noqa: BLE001 - any import/setup failure means: no TensorBoard
        return None


def _agree_to_stop(stopping: bool, trainer: Trainer) -> bool:
    """All DDP ranks stop together when any one was signalled."""
    if not trainer.info.enabled:
        return stopping
    t = torch.tensor([float(stopping)], device=trainer.device)
    torch.distributed.all_reduce(t)
    return t.item() > 0


def _too_many_skips(run_dir: Path, step: int, count: int, why: str) -> str:
    """The one-line message when ``train.max_nonfinite_steps`` consecutive steps were skipped."""
    last = list_checkpoints(run_dir)
    return (f"{count} consecutive steps up to {step} had a non-finite {why} (train.max_nonfinite_steps); stopped, the "
            f"last checkpoint {last[-1].name if last else '(none)'} kept (skipped steps never change its weights); resume "
            f"with: genproc train {run_dir / 'recipe.yaml'} --run-dir {run_dir}, or start a new run dir with a lower "
            f"train.lr or fp32/bf16")


def train(recipe: Recipe, run_dir: str | Path, *, data_root: str | None = None, max_steps: int | None = None,
          progress: bool = True, log: Callable[[str], Any] = print, evaluate: EvalCallback | None = None) -> TrainResult:
    """Train (or resume) ``recipe`` in ``run_dir`` until global step ``max_steps`` (default ``train.max_steps``).

    ``data_root`` (CLI ``--data-root``) is written into the recipe's ``data.root``, so recipe.yaml and every
    checkpoint hold the recipe the run really used. ``evaluate``: called every ``train.eval_every`` steps with
    the EMA network (see :data:`EvalCallback`). Returns the final step and whether a signal interrupted the run.
    """
    recipe = with_data_root(recipe, data_root)
    tc, run_dir = recipe.train, Path(run_dir)
    stop_at = tc.max_steps if max_steps is None else max_steps
    owned = not current().enabled  # a process group the caller joined (genproc compare under torchrun) stays joined
    info = init_distributed(tc.device)
    lock: RunLock | None = None
    try:
        t = Trainer(recipe, run_dir, info, log, evaluate if tc.eval_every > 0 else None)
        lock = lock_run_dir(run_dir, info, t.device, t._warn)  # one trainer per run dir, held until the end
        start = t.resume()
        t.describe(start, stop_at)
        batches = batch_iterator(t.data, EpochOrder(len(t.data), recipe.seed), start, stop_at, tc.batch_size, t.sl,
                                 recipe.data.num_workers, info.world_size, t.device)
        step, loss_val, interrupted = start, None, False
        t_last, n_last, skipped_total, run_of_skips = time.time(), 0, 0, 0
        bar = counter("train", stop_at - start, progress=progress and info.is_main, log=None, unit="step")
        with _StopFlag() as flag:
            t.net.train()
            for x0 in batches:
                loss, lr, skipped = t.step(step, x0)
                step, n_last = step + 1, n_last + tc.batch_size
                run_of_skips = run_of_skips + 1 if skipped else 0
                if skipped:
                    skipped_total += 1
                    t.log_skip(step, skipped, loss, run_of_skips)
                    if run_of_skips >= tc.max_nonfinite_steps:
                        raise GenprocError(_too_many_skips(run_dir, step, run_of_skips, skipped))
                if step % tc.log_every == 0 or step == stop_at:
                    now = time.time()
                    loss_val = t.log_step(step, loss, lr, n_last / max(now - t_last, 1e-9), skipped_total)
                    t_last, n_last = now, 0
                bar.update(1)
                if tc.sample_every > 0 and step % tc.sample_every == 0 and step != stop_at:
                    t.sample_grid(step)
                stopping = _agree_to_stop(flag.stop, t)
                if step % tc.checkpoint_every == 0 or step == stop_at or stopping:
                    t.save(step)
                if t.eval_fn is not None and step % tc.eval_every == 0 and not stopping:
                    t.evaluate(step)
                if stopping:
                    interrupted = True
                    if info.is_main:
                        log(f"interrupted: checkpoint saved at step {step}; run the same command to resume")
                    break
        bar.close()
        if not interrupted and step == stop_at and step > start:
            t.sample_grid(step)
        elif not interrupted and step == start and info.is_main:
            log(f"nothing to do: {run_dir} is already at step {step} (max_steps {stop_at})")
        t.close()
        return TrainResult(run_dir, step, interrupted, loss_val)
    finally:
        if lock is not None:
            lock.release()
        if owned:
            shutdown(info)
