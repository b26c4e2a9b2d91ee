"""A trained model, ready to sample: :class:`LoadedRun`, from :func:`load` (a run directory) or ``genproc.train``.

    run = genproc.load("runs/ihdm_mnist_small")
    images = run.sample(16, seed=0).images                       # (16, C, H, W) in [0, 1]
    fast = genproc.load("runs/ddpm_mnist_small").with_sampling(sampler="dpmpp_2m", steps=20)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genproc.engine import checkpoint as ckpt
from genproc.engine.distributed import current, pick_device
from genproc.engine.sampler import SampleResult, generate, slow_precision_warning
from genproc.errors import GenprocError
from genproc.nets import build_net
from genproc.plugins import HINT
from genproc.processes import ForwardProcess, build_process, canonical_name, name_of, registered
from genproc.recipe import Recipe, build_dataclass, parse_sampling, recipe_from_dict, stored_recipe
from genproc.samplers import Sampler, check, for_process, lookup, settings
from genproc.samplers import name_of as sampler_name
from genproc.samplers import supported as supported_samplers


@dataclass
class LoadedRun:
    """A trained model: recipe, process, network (eval mode), and the training data (for priors built from it).

    ``sampling`` holds the sampling-time settings changed since training (:meth:`with_sampling`)."""

    run_dir: Path
    recipe: Recipe
    process: ForwardProcess
    net: torch.nn.Module
    step: int
    checkpoint: Path
    device: torch.device
    data_root: str | None = None
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    _data: Any = None
    stored_prior: Any = None  # the prior rebuilt from the checkpoint's prior.safetensors (no data set needed), or None
    data_stats: dict[str, torch.Tensor] | None = None  # the checkpoint's data_stats.safetensors ("power"), or None

    @property
    def data(self) -> Any:
        """The training set (loaded on first use; the IHDM prior draws from it)."""
        if self._data is None:
            from genproc.data import build_dataset

            self._data = build_dataset(self.recipe.data, "train", self.data_root)
        return self._data

    @property
    def process_name(self) -> str:
        """The process's canonical registry name (``ihdm``, ``ddpm``, ...), for keys, figures and file names."""
        return name_of(self.recipe.process)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's images."""
        d = self.recipe.data
        return (d.channels, *d.image_hw)

    def prior_data(self) -> Any:
        """What the process's prior draws from: the checkpoint's stored prior when it has one, else the training set
        (loaded on first use); None for priors that need no data."""
        if not self.process.needs_data_for_prior:
            return None
        return self.stored_prior if self.stored_prior is not None else self.data

    @property
    def sampler(self) -> Sampler:
        """The sampler this run samples with: the recipe's ``sampler`` section, else the process's default."""
        return for_process(self.process, self.recipe.sampler)

    def sampling_record(self) -> dict[str, Any]:
        """Everything that decides how samples are drawn, for records and reports: the process's sampling-time keys,
        the sampler's name and settings, and the network calls per image."""
        sampler = self.sampler
        return {**self.process.sampling_settings(), "sampler": sampler_name(sampler.cfg), **settings(sampler.cfg),
                "calls": sampler.calls(sampler.levels(self.process))}

    def sampling_keys(self) -> list[str]:
        """The settings :meth:`with_sampling` accepts here: ``sampler``, the process's sampling-time keys and the
        current sampler's settings."""
        return ["sampler", *type(self.recipe.process).SAMPLING_KEYS, *settings(self.sampler.cfg)]

    def with_sampling(self, settings_: Mapping[str, Any] | Sequence[str] = (), /, **kwargs: Any) -> LoadedRun:
        """The same trained network under other sampling-time settings: a sampler and its settings
        (``run.with_sampling(sampler="dpmpp_2m", steps=20)``, ``clip="clamp"``, ``eta=1``; :mod:`genproc.samplers`) or
        the process's own sampling-time keys (``run.with_sampling(delta=0.02)``, IHDM). A new ``sampler`` starts from
        its default settings. A key neither has would change the trained model and is refused; so is a sampler that
        cannot drive this process (the message lists those that can). The network and the data are shared with this
        run. ``settings_`` may also be ``["sampler=ddim", "steps=20", ...]`` strings or a dict."""
        new = {**parse_sampling(settings_), **kwargs}
        if not new:
            return self
        process_keys = type(self.recipe.process).SAMPLING_KEYS
        name = new.get("sampler")
        if name is None:
            name = sampler_name(self.sampler.cfg)
            values = settings(self.sampler.cfg)
        else:
            name, values = lookup(str(name)).name, {}
        fields = set(settings(lookup(name).config_cls()))
        if bad := [k for k in new if k != "sampler" and k not in process_keys and k not in fields]:
            raise GenprocError(f"'{bad[0]}' is not a sampling-time setting of process '{self.process_name}' or of "
                               f"sampler '{name}' (process: {', '.join(process_keys) or '(none)'}; sampler: "
                               f"{', '.join(sorted(fields))}); other keys change the trained model")
        d = self.recipe.to_dict()
        d["process"].update({k: v for k, v in new.items() if k in process_keys})
        values = {**values, **{k: v for k, v in new.items() if k in fields and k not in process_keys}}
        recipe = recipe_from_dict(d)
        process = build_process(recipe.process)
        recipe.sampler = build_dataclass(lookup(check(process, name)).config_cls, values, "sampling.")
        stored = None if self.stored_prior is None else process.prior_from_state(self.stored_prior.state())
        return replace(self, recipe=recipe, process=process, sampling={**self.sampling, **new}, stored_prior=stored)

    def sample(self, n: int = 64, *, seed: int = 0, batch_size: int = 64, same_init: bool = False,
               share_noise: bool = False, capture_every: int = 0, precision: str | None = None, progress: bool = False,
               start_index: int = 0, distributed: bool = True) -> SampleResult:
        """Draw ``n`` samples: ``.images`` (n, C, H, W) in [0, 1], ``.trajectory`` (frames, n, C, H, W) or None.

        Sample i depends only on (seed, start_index + i), not on ``batch_size``. ``same_init``: every sample starts
        from the first one's prior state; ``share_noise``: every sample uses the first one's step noise.
        ``capture_every`` = m keeps every m-th state (0: about 20 frames; negative: none). ``precision``:
        fp32 | bf16 | fp16 autocast (default: the recipe's ``train.precision``). Under ``torchrun`` (a joined process
        group) the n samples are split across the ranks and gathered, so every rank must call this and every rank gets
        all n, equal to one process's; ``distributed=False`` samples on this rank alone.
        """
        precision = precision or self.recipe.train.precision
        if (slow := slow_precision_warning(self.device, precision)) is not None:
            warnings.warn(f"{slow}; pass precision='fp32' (genproc sample --precision fp32)", stacklevel=2)
        return generate(self.process, self.net, n, sampler=self.sampler, shape=self.image_shape, data=self.prior_data(), seed=seed,
                        batch_size=batch_size, same_init=same_init, share_noise=share_noise, capture_every=capture_every,
                        device=self.device, precision=precision, progress=progress, start_index=start_index,
                        info=current() if distributed else None)

    def restore(self, y: torch.Tensor, level: str | int = "auto", n: int = 1, seed: int = 0, **kwargs: Any) -> Any:
        """Deblur (or, with ``scale=s``, super-resolve) images y (N, C, H, W) in [0, 1] by running the reverse chain
        from the level that matches their blur: :func:`genproc.restore.restore` (``RestoreResult``: .samples
        (N, n, C, H, W), .mean, .levels, .estimate)."""
        from genproc.restore import restore

        return restore(self, y, level=level, n=n, seed=seed, **kwargs)


def with_sampling_where_known(runs: Sequence[LoadedRun], settings_: Mapping[str, Any] | Sequence[str]) -> list[LoadedRun]:
    """Each run with the sampling-time settings that fit it: ``sampler=NAME`` (and that sampler's settings) changes the
    runs whose process that sampler can drive (``sampler=ddim``: the Gaussian diffusions), a process key the runs with
    that key (``delta``: IHDM and blur); a setting that fits none of the runs is an error."""
    new = parse_sampling(settings_)
    name = new.get("sampler")
    out, used = [], set()
    for r in runs:
        if name is not None and lookup(str(name)).name not in supported_samplers(r.process):
            keys = set(type(r.recipe.process).SAMPLING_KEYS)
        else:
            keys = set(r.with_sampling({"sampler": name}).sampling_keys()) if name is not None else set(r.sampling_keys())
        mine = {k: v for k, v in new.items() if k in keys}
        used |= set(mine)
        out.append(r.with_sampling(mine))
    if unused := [k for k in new if k not in used]:
        raise GenprocError(f"sampling setting '{unused[0]}' fits none of the runs "
                           f"(their settings: {', '.join(sorted(set().union(*[r.sampling_keys() for r in runs])))})")
    return out


def load(run_dir: str | Path, *, checkpoint: str | int | None = None, weights: str = "ema", device: str = "auto",
         data_root: str | None = None) -> LoadedRun:
    """Load ``run_dir``'s latest (or the given) checkpoint, ready to sample.

    checkpoint: a step (``1000``), a checkpoint folder name or path, or None for the latest. weights: 'ema'
    (default) or 'model'. device: auto | cpu | cuda | cuda:N. data_root: where the training data is now, if it moved.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GenprocError(f"run dir not found: {run_dir} (expected a folder written by 'genproc train')")
    if weights not in ("ema", "model"):
        raise GenprocError(f"weights must be 'ema' or 'model', got {weights!r}")
    path = ckpt.resolve_checkpoint(run_dir, None if checkpoint is None else str(checkpoint),
                                   files=(f"{weights}.safetensors",))  # only the weights it reads need be intact
    meta = ckpt.load_meta(path)
    _check_process_known(meta["recipe"], run_dir)
    recipe = stored_recipe(meta["recipe"])
    dev = pick_device(device, current())  # under torchrun: this rank's GPU
    net = build_net(recipe.net, recipe.data.channels, recipe.data.image_hw)
    try:
        net.load_state_dict(ckpt.load_weights(path, weights))
    except RuntimeError as e:
        raise GenprocError(f"weights in {path} do not fit the recipe's net: {str(e).splitlines()[0]}") from None
    net.to(dev).eval()
    process = build_process(recipe.process)
    stats = ckpt.load_prior(path, ckpt.STATS_FILE) if ckpt.STATS_FILE in ckpt.recorded_files(path) and \
        ckpt.verify_checkpoint(path, (ckpt.STATS_FILE,)) is None else None
    return LoadedRun(run_dir, recipe, process, net, int(meta["step"]), path, dev, data_root,
                     stored_prior=_stored_prior(process, path), data_stats=stats)


def _check_process_known(recipe: Any, run_dir: Path) -> None:
    """A run of a process not registered here (one a plugin registers) is one line saying so. The code is never
    imported on the run's word: the user names it (``--plugin`` / ``$GENPROC_PLUGINS``, or imports it in Python)."""
    section = recipe.get("process") if isinstance(recipe, dict) else None
    name = section.get("name") if isinstance(section, dict) else None
    if name is None:
        return  # a malformed recipe: the recipe loader names the field
    try:
        canonical_name(str(name))
    except GenprocError:
        raise GenprocError(f"unknown process '{name}' in {run_dir} (known: {', '.join(registered())}); {HINT}") from None


def _stored_prior(process: ForwardProcess, path: Path) -> Any:
    """The prior state stored in checkpoint ``path``, rebuilt by the process; None when there is none, or (with a
    one-line warning: the training set is then read instead) when it is damaged."""
    if not process.needs_data_for_prior or ckpt.PRIOR_FILE not in ckpt.recorded_files(path):
        return None
    if (why := ckpt.verify_checkpoint(path, (ckpt.PRIOR_FILE,))) is not None:
        warnings.warn(f"stored prior of {path} is damaged ({why}); the prior reads the training set instead", stacklevel=3)
        return None
    return process.prior_from_state(ckpt.load_prior(path))


EXPORT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def export(run_dir: str | Path, out_dir: str | Path, *, checkpoint: str | int | None = None, dtype: str = "fp16",
           data_root: str | None = None, recompute_prior: bool = False, log: Any = print) -> Path:
    """Write a released copy of a run: its EMA weights in ``dtype`` (fp16 | bf16 | fp32), the prior state its process
    needs and the data statistics (both computed from the training set when the checkpoint has none, the prior also
    when ``recompute_prior``: e.g. a checkpoint written before the prior's compression improved), and the recipe
    (``data.root`` cleared: a path on this machine), as the run dir ``out_dir`` that :func:`load`, ``genproc sample``,
    ``restore``, ``evaluate`` and ``compare`` read with no training data (evaluation reads the test set). Returns the
    release's checkpoint folder. The release is written into a temporary sibling folder and renamed into place once
    complete (as checkpoints are), so an export that fails or is killed leaves no ``out_dir`` that looks complete."""
    if dtype not in EXPORT_DTYPES:
        raise GenprocError(f"export dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    if ckpt.list_checkpoints(out_dir):
        raise GenprocError(f"{out_dir} already holds a model; choose another output folder or remove it first")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise GenprocError(f"{out_dir} exists and is not an empty folder; export writes a new folder (choose another "
                           "output folder or remove it first)")
    run = load(run_dir, checkpoint=checkpoint, data_root=data_root, device="cpu")
    stats = run.data_stats
    if stats is None:
        from genproc.engine.trainer import data_statistics

        stats = data_statistics(run.data)
    prior = None
    if run.process.needs_data_for_prior:
        if run.stored_prior is None or recompute_prior:
            log(f"computing the stored prior from the training set ({run.recipe.data.name})")
            run = replace(run, stored_prior=run.process.prior_from_state(run.process.prior_state(run.data)))
        prior = run.stored_prior.state()
    recipe = run.recipe.to_dict()
    recipe["data"]["root"] = None
    from genproc.recipe import recipe_to_yaml

    tmp = out_dir.parent / f".{out_dir.name}.tmp-export-{os.getpid()}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-export-*"):  # left by a killed export
            shutil.rmtree(stale, ignore_errors=True)
        path = ckpt.export_checkpoint(run.checkpoint, tmp, dtype=EXPORT_DTYPES[dtype], prior=prior, stats=stats,
                                      recipe=recipe)
        (tmp / "recipe.yaml").write_text(recipe_to_yaml(recipe_from_dict(recipe)))
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above): the complete release takes its place
        os.rename(tmp, out_dir)
    except OSError as e:
        raise GenprocError(f"cannot write {out_dir}: {e.strerror or e} ({e.filename or out_dir})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else what a failure or Ctrl-C left
    return out_dir / path.relative_to(tmp)
