"""Recipes: typed, validated dataclasses loaded from YAML.

A recipe has five sections::

    name: ihdm_mnist_small
    seed: 0
    data:    {name: mnist, image_size: 28, channels: 1, ...}     -> DataConfig
    process: {name: heat, K: 50, sigma_blur_max: 20, ...}        -> the process's own config
    net:     {name: unet, channels: 32, ...}                     -> the net's own config
    train:   {batch_size: 128, lr: 2e-4, ...}                    -> TrainConfig
    sample:  {n: 64, batch_size: 64, ...}                        -> SampleConfig

``process`` and ``net`` are validated against the dataclass that the chosen
process / net registers (see :func:`genproc.processes.register` and
``genproc.nets.NETS``), so each component owns its parameters. A process may be
named by an alias (``heat`` for ``ihdm``); saved recipes carry the canonical name.

A recipe built in Python is first-class: ``Recipe(name=..., data=DataConfig(...),
process=HeatConfig(K=10), net=UNetConfig(...))`` round-trips through
:meth:`Recipe.to_dict`, :func:`recipe_to_yaml` and :func:`recipe_from_dict`.

Unknown keys are rejected with the nearest valid key; wrong types name the field.
``--set a.b=v`` overrides are parsed as YAML scalars and validated the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genproc.errors import GenprocError
from genproc.imagesize import as_hw


@dataclass
class DataConfig:
    """Where the images come from. Images are (C, H, W) float32 in [0, 1]."""

    name: str = "digits"  # digits | mnist | fashion_mnist | cifar10 | folder
    root: str | None = None  # folder holding the data set; else --data-root or $GENPROC_DATA
    image_size: int | tuple[int, int] = 16  # output size: H = W (an int) or [H, W] (see ``image_hw``)
    resize: str = "crop"  # folder images: crop (cover H x W, centre-crop) | pad (fit inside, pad) | stretch
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    hflip: bool = False  # random horizontal flips during training
    max_images: int | None = None  # use only the first N training images (tiny runs, tests)
    max_upscale: float = 4.0  # folder images: refuse one the resize would enlarge more than this (a 1x1 icon, a thumbnail)
    num_workers: int | str = "auto"  # DataLoader workers for file-backed data sets; auto: the CPUs per rank, at most 8

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of every image: ``image_size`` if it is a pair, else (image_size, image_size)."""
        return as_hw(self.image_size)

    def validate(self) -> None:
        as_hw(self.image_size)  # a positive int or a pair of them, else one clear error
        if self.resize not in ("crop", "pad", "stretch"):
            raise GenprocError(f"recipe field 'data.resize': expected crop|pad|stretch, got {self.resize!r}")
        if not self.max_upscale >= 1:
            raise GenprocError(f"recipe field 'data.max_upscale': expected a number >= 1, got {self.max_upscale!r}")
        if not (self.num_workers == "auto" or (isinstance(self.num_workers, int) and self.num_workers >= 0)):
            raise GenprocError(f"recipe field 'data.num_workers': expected auto or an integer >= 0, got {self.num_workers!r}")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping; every field is a recipe key under ``train:``."""

    batch_size: int = 128  # global batch (split across DDP ranks)
    lr: float = 2e-4  # Adam learning rate after warm-up
    warmup_steps: int = 5000  # linear warm-up from 0 to lr (paper App. B.1)
    grad_clip: float = 1.0  # global grad-norm clip (paper App. B.1)
    ema: float = 0.999  # EMA decay of the weights used for sampling (with ema_warmup: the most the ramp reaches)
    # EMA warm-up: the decay after s updates is min(ema, 1 - (1 + s / ema_warmup_gamma) ** -ema_warmup_power), 0 at the
    # first, so a short run samples from its trained weights (timm's ModelEmaV3 use_warmup, diffusers' EMAModel
    # use_ema_warmup; both default to gamma 1, power 2/3). A run recorded without this key had none and keeps none.
    ema_warmup: bool = True
    ema_warmup_gamma: float = 1.0
    ema_warmup_power: float = 2 / 3
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    precision: str = "fp32"  # fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_steps: int = 10000  # train until this global step
    log_every: int = 50  # steps between metrics.jsonl lines
    sample_every: int = 1000  # steps between sample grids / GIFs (0 = only at the end)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 3  # how many recent checkpoints to keep
    store_prior: bool = True  # store what the prior needs from the data in each checkpoint (IHDM: the KDE centres)
    eval_every: int = 0  # steps between in-training evaluations of the EMA model (0 = off), logged to metrics.jsonl
    eval_metrics: str = "fid"  # comma-separated, as 'genproc evaluate --metrics' (fid needs $GENPROC_INCEPTION_WEIGHTS offline)
    eval_n: int = 2000  # samples (fid/kid/prc) or test images (nll) per in-training evaluation
    eval_split: str = "test"  # reference split of the in-training evaluation
    max_nonfinite_steps: int = 20  # this many consecutive skipped (non-finite loss or gradient) steps stop the run
    # speed knobs (results equal within float tolerance either way; resumable changes)
    compile: bool = False  # torch.compile the training forward (falls back to eager with one line if compilation fails)
    channels_last: bool = False  # NHWC memory format for the network and its inputs
    tf32: str = "auto"  # auto (on for CUDA) | on | off: TF32 matmuls and convolutions on Ampere+ GPUs
    fused_adam: str = "auto"  # auto (on for CUDA) | on | off: the fused Adam kernel

    def validate(self) -> None:
        for name in ("tf32", "fused_adam"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise GenprocError(f"recipe field 'train.{name}': expected auto|on|off, got {getattr(self, name)!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise GenprocError(f"recipe field 'train.precision': expected fp32|bf16|fp16, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise GenprocError(f"recipe field 'train.device': expected auto|cpu|cuda|cuda:N, got {self.device!r}")
        for name in ("batch_size", "max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "eval_n",
                     "max_nonfinite_steps"):
            if getattr(self, name) < (0 if name in ("max_steps", "eval_every") else 1):
                raise GenprocError(f"recipe field 'train.{name}': expected a positive integer, got {getattr(self, name)}")
        for name in ("ema_warmup_gamma", "ema_warmup_power"):
            if not getattr(self, name) > 0:
                raise GenprocError(f"recipe field 'train.{name}': expected a number > 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.ema < 1 or self.grad_clip <= 0:
            raise GenprocError(f"recipe fields 'train.lr' > 0, 0 <= 'train.ema' < 1, 'train.grad_clip' > 0 expected, "
                               f"got {self.lr}, {self.ema}, {self.grad_clip}")


@dataclass
class SampleConfig:
    """Defaults for the sample grids written during training and by ``genproc sample``."""

    n: int = 64  # samples in a grid
    batch_size: int = 64
    capture_every: int = 0  # keep every m-th state of the trajectory for the GIF (0 = auto, ~20 frames)

    def validate(self) -> None:
        if self.n < 1 or self.batch_size < 1:
            raise GenprocError(f"recipe fields 'sample.n' and 'sample.batch_size' must be >= 1, got {self.n}, {self.batch_size}")


@dataclass
class Recipe:
    name: str = "unnamed"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    process: Any = None  # the registered process's config dataclass
    net: Any = None  # the registered net's config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    sampler: Any = None  # the registered sampler's config dataclass (genproc.samplers); None: the process's default

    def __post_init__(self) -> None:
        if self.process is None:
            from genproc.processes.heat import HeatConfig

            self.process = HeatConfig()
        if self.net is None:
            from genproc.nets.unet import UNetConfig

            self.net = UNetConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML serialisable), with ``name`` inside process and net."""
        from genproc.nets import name_of as net_name
        from genproc.processes import name_of as process_name

        out: dict[str, Any] = {"name": self.name, "seed": self.seed}
        out["data"] = dataclasses.asdict(self.data)
        out["process"] = {"name": process_name(self.process), **dataclasses.asdict(self.process)}
        out["net"] = {"name": net_name(self.net), **dataclasses.asdict(self.net)}
        out["train"] = dataclasses.asdict(self.train)
        out["sample"] = dataclasses.asdict(self.sample)
        if self.sampler is not None:
            from genproc.samplers import name_of as sampler_name

            out["sampler"] = {"name": sampler_name(self.sampler), **dataclasses.asdict(self.sampler)}
        return json.loads(json.dumps(out))  # tuples -> lists


# ---------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except GenprocError:
                pass
        raise GenprocError(f"recipe field '{where}': expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GenprocError(f"recipe field '{where}': expected a list of {len(args)} values, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise GenprocError(f"recipe field '{where}': expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise GenprocError(f"recipe field '{where}': expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise GenprocError(f"recipe field '{where}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise GenprocError(f"recipe field '{where}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise GenprocError(f"recipe field '{where}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise GenprocError(f"recipe field '{where}': expected a string, got {value!r}")
    raise GenprocError(f"recipe field '{where}': unsupported type {_type_name(tp)}")


def _unknown_key(key: str, valid: list[str], where: str) -> GenprocError:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{where}{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
    return GenprocError(f"unknown recipe key '{where}{key}'{hint}")


def build_dataclass(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and wrong types."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise GenprocError(f"recipe section '{where.rstrip('.')}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key(str(key), names, where)
        kwargs[key] = _coerce(value, hints[key], where + key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def _registered(section: str, values: Any, registry: dict[str, type]) -> Any:
    """Build the config of section ``process`` or ``net`` from ``registry`` (canonical name -> config class)."""
    if not isinstance(values, dict) or "name" not in values:
        raise GenprocError(f"recipe section '{section}' needs a 'name' (one of: {', '.join(registry)})")
    values = dict(values)
    name = values.pop("name")
    if name not in registry:
        near = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise GenprocError(f"recipe field '{section}.name': unknown {section} '{name}'{hint} (known: {', '.join(registry)})")
    return build_dataclass(registry[name], values, f"{section}.")


def _process_config(values: Any) -> Any:
    """The ``process`` section: its name (or alias) resolved through :mod:`genproc.processes`' registry."""
    from genproc import processes

    if isinstance(values, dict) and "name" in values:
        try:
            values = {**values, "name": processes.canonical_name(values["name"])}
        except GenprocError as e:
            raise GenprocError(f"recipe field 'process.name': {e}") from None
    return _registered("process", values, {n: processes.lookup(n).config_cls for n in processes.registered()})


# Sampler keys that lived in the process section before samplers were their own units (DDPM's and BDM's ``sampler``,
# ``ddim_steps``, ``eta``): read from recipes and checkpoints written then, never written again.
_OLD_SAMPLER_KEYS = ("sampler", "ddim_steps", "eta")


def _old_sampler_keys(d: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict whose process section has the old sampler keys, with them moved to a ``sampler`` section that
    samples exactly as they did (their DDIM clamped x̂₀ to [-1, 1]; their ancestral chain did not clip)."""
    proc = d.get("process")
    if not isinstance(proc, dict) or not any(k in proc for k in _OLD_SAMPLER_KEYS) or "name" not in proc:
        return d
    from genproc import processes

    try:
        fields = {f.name for f in dataclasses.fields(processes.lookup(proc["name"]).config_cls)}
    except GenprocError:
        return d  # the unknown process is reported where the section is built
    old = {k: proc[k] for k in _OLD_SAMPLER_KEYS if k in proc and k not in fields}
    if not old:
        return d
    d = {**d, "process": {k: v for k, v in proc.items() if k not in old}}
    if d.get("sampler") is None:
        name = old.get("sampler", "ancestral")
        d["sampler"] = {"name": name, "clip": "none"} if name != "ddim" else \
            {"name": "ddim", "steps": old.get("ddim_steps", 50), "eta": old.get("eta", 0.0), "clip": "clamp"}
    return d


def _sampler_config(values: Any) -> Any:
    """The ``sampler`` section (None: the process's default), built through :mod:`genproc.samplers`' registry."""
    if values is None:
        return None
    from genproc import samplers

    return _registered("sampler", values, {n: samplers.lookup(n).config_cls for n in samplers.registered()})


# Keys added after runs were recorded, each with the value that reproduces what a run recorded without it did: a
# stored recipe (a checkpoint's meta.json) lacking the key reads with this value (:func:`stored_recipe`), and resuming
# such a run keeps it (:func:`keep_recorded`); a new recipe gets the field's default. ``train.ema_warmup``: runs before
# it averaged with the constant decay ``train.ema`` from the first step.
_ADDED_KEYS: dict[tuple[str, str], Any] = {("train", "ema_warmup"): False}


def _recorded_values(d: Any) -> Any:
    """A stored recipe dict with each of :data:`_ADDED_KEYS` it lacks set to the value its run was trained with."""
    if not isinstance(d, dict):
        return d
    out = dict(d)
    for (section, key), value in _ADDED_KEYS.items():
        values = out.get(section)
        if isinstance(values, dict) and key not in values:
            out[section] = {**values, key: value}
    return out


def stored_recipe(d: dict[str, Any]) -> Recipe:
    """The recipe a run was trained with, from its stored dict (a checkpoint's ``meta["recipe"]``): as
    :func:`recipe_from_dict`, but a key added to genproc after the run was recorded reads as what the run did (no EMA
    warm-up for a run recorded before ``train.ema_warmup``), not as today's default."""
    return recipe_from_dict(_recorded_values(d))


def keep_recorded(recipe: Recipe, stored: dict[str, Any]) -> tuple[Recipe, list[str]]:
    """``recipe`` resuming a run whose stored recipe dict is ``stored``: each key added after the run was recorded
    (absent from ``stored``) set to what the run did, so the resumed run keeps its recorded behaviour; also the
    ``section.key=value`` settings so kept (none: ``recipe`` itself)."""
    kept = {(s, k): v for (s, k), v in _ADDED_KEYS.items()
            if isinstance(stored.get(s), dict) and k not in stored[s] and getattr(getattr(recipe, s), k) != v}
    if not kept:
        return recipe, []
    d = recipe.to_dict()
    for (section, key), value in kept.items():
        d[section][key] = value
    return recipe_from_dict(d), [f"{s}.{k}={json.dumps(v)}" for (s, k), v in kept.items()]


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Validate a nested dict (as read from YAML) into a :class:`Recipe` (a recipe stored by a run:
    :func:`stored_recipe`)."""
    from genproc.nets import NETS

    if not isinstance(d, dict):
        raise GenprocError(f"a recipe must be a YAML mapping, got {type(d).__name__}")
    valid = [f.name for f in dataclasses.fields(Recipe)]
    for key in d:
        if key not in valid:
            raise _unknown_key(str(key), valid, "")
    d = _old_sampler_keys(d)
    return Recipe(
        name=_coerce(d.get("name", "unnamed"), str, "name"),
        seed=_coerce(d.get("seed", 0), int, "seed"),
        data=build_dataclass(DataConfig, d.get("data"), "data."),
        process=_process_config(d.get("process")),
        net=_registered("net", d.get("net"), {name: cfg_cls for name, (_, cfg_cls) in NETS.items()}),
        train=build_dataclass(TrainConfig, d.get("train"), "train."),
        sample=build_dataclass(SampleConfig, d.get("sample"), "sample."),
        sampler=_sampler_config(d.get("sampler")),
    )


def parse_setting(item: str, flag: str = "--set", example: str = "train.lr=1e-4") -> tuple[str, Any]:
    """'KEY=VALUE' -> (KEY, VALUE parsed as a YAML scalar): the one parser of command-line settings."""
    if "=" not in item:
        raise GenprocError(f"{flag} expects KEY=VALUE (e.g. {example}), got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def parse_sampling(items: Sequence[str] | Mapping[str, Any], flag: str = "--sampling") -> dict[str, Any]:
    """Sampling-time settings as keyword arguments: ``["sampler=ddim", "process.ddim_steps=50"]`` ->
    ``{"sampler": "ddim", "ddim_steps": 50}`` (the ``process.`` prefix is optional); a mapping passes through."""
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items:
        key, value = parse_setting(item, flag, "sampler=ddim")
        out[key.removeprefix("process.")] = value
    return out


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=v`` overrides (v parsed as a YAML scalar) to a nested recipe dict."""
    d = json.loads(json.dumps(d))
    for item in overrides:
        key, value = parse_setting(item)
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {} if node.get(p) is None else node[p]
                if not isinstance(node[p], dict):
                    raise GenprocError(f"--set {key}: '{p}' is not a section")
            node = node[p]
        node[parts[-1]] = value
    return d


def load_recipe_dict(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GenprocError(f"recipe file not found: {path} (expected a YAML file such as recipes/quickstart.yaml)")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark, ctx = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        if getattr(e, "context", None) and ctx is not None:  # e.g. "while parsing a flow sequence" opened earlier
            what += f" ({e.context} started at line {ctx.line + 1}, column {ctx.column + 1})"  # type: ignore[attr-defined]
        raise GenprocError(f"recipe {path} is not valid YAML{where}: {what}") from None
    if d is not None and not isinstance(d, dict):
        raise GenprocError(f"recipe {path} must be a YAML mapping of sections (data:, process:, net:, train:, "
                           f"sample:), got a {type(d).__name__}")
    return d or {}


def load_recipe(path: str | Path, overrides: Sequence[str] | None = None) -> Recipe:
    """Load, override and validate a recipe file."""
    return recipe_from_dict(apply_overrides(load_recipe_dict(path), overrides or []))


def with_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """A validated copy of ``recipe`` with ``a.b=v`` overrides applied (none: the recipe itself)."""
    return recipe_from_dict(apply_overrides(recipe.to_dict(), overrides)) if overrides else recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
