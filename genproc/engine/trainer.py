"""The one training loop, for every process (it never asks which one).

Adam with linear warm-up, grad-norm clipping, EMA (timm), fp32/bf16/fp16 autocast
(GradScaler for fp16), DDP under torchrun, atomic checkpoints with bit-exact resume,
SIGINT/SIGTERM -> checkpoint and exit, tqdm + metrics.jsonl (+ TensorBoard if installed),
sample grids and generation GIFs from the EMA weights.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from genproc.data import build_dataset
from genproc.engine import checkpoint as ckpt
from genproc.engine.batches import EpochOrder, batch_iterator, local_slice, step_generator
from genproc.engine.distributed import barrier, init_distributed, mean_across, pick_device, shutdown
from genproc.engine.media import save_gif, save_grid
from genproc.engine.sampler import autocast, generate, slow_precision_warning
from genproc.errors import GenprocError
from genproc.nets import build_net, count_parameters
from genproc.processes import build_process
from genproc.recipe import Recipe, recipe_to_yaml

# Recipe keys that may change when a run is resumed (everything else must match).
RESUMABLE_CHANGES = {"data.root", "data.num_workers", "train.max_steps", "train.log_every", "train.sample_every",
                     "train.eval_every", "train.eval_metrics", "train.eval_n", "train.eval_split",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.device", "sample.n",
                     "sample.batch_size", "sample.capture_every"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_recipe(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to resume a run with a recipe that changes the model or the optimisation."""
    a, b = _flatten(saved), _flatten(current)
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

    def __enter__(self) -> "_StopFlag":
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


def _dropout_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 9_176_867 + step * 7919 + 99) % (2**63 - 1)


def _check_eval(recipe: Recipe, data_root: str | None) -> None:
    """The in-training evaluation can run: known metrics, the reference split exists, FID weights resolvable."""
    from genproc.metrics import parse_metrics
    from genproc.metrics.fidelity import FIDELITY_METRICS
    from genproc.metrics.inception import resolve_weights

    metrics = parse_metrics(recipe.train.eval_metrics)
    build_dataset(recipe.data, recipe.train.eval_split, data_root)
    if any(m in FIDELITY_METRICS for m in metrics):
        resolve_weights()


def train(recipe: Recipe, run_dir: str | Path, data_root: str | None = None, max_steps: int | None = None,
          progress: bool = True, log: Any = print) -> TrainResult:
    """Train (or resume) ``recipe`` in ``run_dir`` until global step ``max_steps``.

    Returns the final step and whether the run was interrupted by a signal.
    """
    tc = recipe.train
    stop_at = tc.max_steps if max_steps is None else max_steps
    info = init_distributed(tc.device)
    run_dir = Path(run_dir)
    try:
        device = pick_device(tc.device, info)
        if tc.precision not in ("fp32", "bf16", "fp16"):
            raise GenprocError(f"recipe field 'train.precision': expected fp32|bf16|fp16, got {tc.precision!r}")
        if tc.batch_size % info.world_size:
            raise GenprocError(f"train.batch_size {tc.batch_size} must be divisible by the number of processes {info.world_size}")
        recipe_dict = recipe.to_dict()
        if data_root is not None:
            recipe_dict["data"]["root"] = data_root
        if tc.eval_every > 0:  # fail before training: unknown metric, bad split, FID weights missing offline
            _check_eval(recipe, data_root)
        data = build_dataset(recipe.data, "train", data_root)
        process = build_process(recipe.process)
        torch.manual_seed(recipe.seed)  # same initial weights on every rank and every fresh run
        net = build_net(recipe.net, recipe.data.channels, recipe.data.image_size).to(device)
        ema = ModelEmaV3(net, decay=tc.ema)
        opt = torch.optim.Adam(net.parameters(), lr=tc.lr, betas=tc.adam_betas, eps=tc.adam_eps)
        scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")

        start = 0
        existing = ckpt.list_checkpoints(run_dir)
        if existing:
            last = existing[-1]
            meta = ckpt.load_meta(last)
            check_same_recipe(meta["recipe"], recipe_dict, run_dir)
            net.load_state_dict(ckpt.load_weights(last, "model"))
            ema.module.load_state_dict(ckpt.load_weights(last, "ema"))
            state = ckpt.load_state(last)
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            start = int(meta["step"])
            if info.is_main:
                log(f"resuming {run_dir} from step {start} ({last.name})")
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
            log(f"run dir {run_dir} | device {device} | precision {tc.precision} | {count_parameters(net):,} parameters | "
                f"global batch {tc.batch_size} = {info.world_size} process(es) x {tc.batch_size // info.world_size} | "
                f"{len(data)} training images | steps {start} -> {stop_at}")
            if (slow := slow_precision_warning(device, tc.precision)) is not None:
                log(f"warning: {slow}; on CPU use --set train.precision=fp32")
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else net

        writer = None
        if info.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # TensorBoard is optional
                writer = None

        order = EpochOrder(len(data), recipe.seed)
        sl = local_slice(tc.batch_size, info.rank, info.world_size)
        batches = batch_iterator(data, order, start, stop_at, tc.batch_size, sl, recipe.data.num_workers)

        def save(step: int) -> None:
            if info.is_main:
                state = {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state()}
                ckpt.save_checkpoint(run_dir, step, net, ema.module, state, recipe_dict, tc.keep_checkpoints)
            barrier(info)

        def sample_grid(step: int) -> None:
            if not info.is_main:
                return
            ema.module.eval()
            res = generate(process, ema.module, recipe.sample.n, data=data, seed=recipe.seed, batch_size=recipe.sample.batch_size,
                           capture_every=recipe.sample.capture_every, device=device, precision=tc.precision)
            ema.module.train()
            out = run_dir / "samples"
            save_grid(res.images, out / f"step_{step:08d}.png", scale=2)
            if res.trajectory is not None:
                save_gif(res.trajectory, out / f"step_{step:08d}.gif")
            save_grid(res.images, out / "latest.png", scale=2)

        def evaluate_now(step: int) -> None:
            """Evaluate the EMA model (train.eval_metrics on train.eval_n) and append {"step", "eval"} to metrics.jsonl."""
            if info.is_main:
                from genproc.metrics import evaluate
                from genproc.run import LoadedRun

                ema.module.eval()
                run = LoadedRun(run_dir, recipe, process, ema.module, step, run_dir / "checkpoints" / f"step_{step:08d}",
                                device, data_root, _data=data)
                t0 = time.time()
                recs = evaluate(run, tc.eval_metrics, n=tc.eval_n, split=tc.eval_split, seed=recipe.seed,
                                batch_size=recipe.sample.batch_size, data_root=data_root, log=lambda *_: None)
                ema.module.train()
                values = {r["metric"]: r["value"] for r in recs}
                with open(metrics_path, "a") as f:
                    f.write(json.dumps({"step": step, "eval": values, "eval_n": tc.eval_n, "eval_seconds": time.time() - t0,
                                        "time": time.time()}) + "\n")
                if writer is not None:
                    for name, v in values.items():
                        writer.add_scalar(f"eval/{name}", v, step)
                log(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()) + f" (n={tc.eval_n})")
            barrier(info)

        step, loss_val, interrupted = start, None, False
        t_last, n_last = time.time(), 0
        metrics_path = run_dir / "metrics.jsonl"
        bar = tqdm(total=stop_at, initial=start, desc="train", unit="step", disable=not (progress and info.is_main), dynamic_ncols=True)
        with _StopFlag() as flag:
            net.train()
            for x0 in batches:
                lr = tc.lr * min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps > 0 else tc.lr
                for group in opt.param_groups:
                    group["lr"] = lr
                g = step_generator(recipe.seed, step)
                k = process.sample_levels(tc.batch_size, g)[sl]
                eps = torch.randn((tc.batch_size, *x0.shape[1:]), generator=g)[sl]
                flip = (torch.rand(tc.batch_size, generator=g) < 0.5)[sl]
                x0 = x0.to(device, non_blocking=True)
                if recipe.data.hflip:
                    x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
                torch.manual_seed(_dropout_seed(recipe.seed, info.rank, step))
                inp, target = process.training_pair(x0, k.to(device), eps.to(device))
                with autocast(device, tc.precision):
                    out = model(inp, k.to(device))
                loss = process.loss(out, target)
                if not torch.isfinite(loss):
                    raise GenprocError(f"loss became {loss.item()} at step {step}; lower train.lr or use fp32/bf16 "
                                       f"(last good checkpoint kept in {run_dir})")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
                scaler.step(opt)
                scaler.update()
                ema.update(net)
                step += 1
                n_last += tc.batch_size
                if step % tc.log_every == 0 or step == stop_at:
                    loss_val = mean_across(loss.detach().float(), info).item()
                    now = time.time()
                    ips = n_last / max(now - t_last, 1e-9)
                    t_last, n_last = now, 0
                    if info.is_main:
                        rec = {"step": step, "loss": loss_val, "lr": lr, "img_per_s": ips, "time": now}
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                        if writer is not None:
                            writer.add_scalar("train/loss", loss_val, step)
                            writer.add_scalar("train/img_per_s", ips, step)
                        bar.set_postfix(loss=f"{loss_val:.3g}", img_s=f"{ips:.0f}")
                bar.update(1)
                if tc.sample_every > 0 and step % tc.sample_every == 0 and step != stop_at:
                    sample_grid(step)
                stopping = flag.stop
                if info.enabled:  # all ranks agree to stop together
                    t = torch.tensor([float(stopping)], device=device)
                    torch.distributed.all_reduce(t)
                    stopping = t.item() > 0
                if step % tc.checkpoint_every == 0 or step == stop_at or stopping:
                    save(step)
                if tc.eval_every > 0 and step % tc.eval_every == 0 and not stopping:
                    evaluate_now(step)
                if stopping:
                    interrupted = True
                    if info.is_main:
                        bar.close()
                        log(f"interrupted: checkpoint saved at step {step}; run the same command to resume")
                    break
        bar.close()
        if not interrupted and step == stop_at and step > start:
            sample_grid(step)
        elif not interrupted and step == start and info.is_main:
            log(f"nothing to do: {run_dir} is already at step {step} (max_steps {stop_at})")
        if writer is not None:
            writer.close()
        return TrainResult(run_dir, step, interrupted, loss_val)
    finally:
        shutdown(info)
