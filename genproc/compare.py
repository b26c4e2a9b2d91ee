"""``genproc compare ihdm ddpm``: forward processes head to head on one engine, data set and budget.

Each process trains from ``<recipes>/<process>_<dataset>_small.yaml`` (``scale="paper"``: the GPU-scale recipe of that
process and data set, e.g. ``ihdm_cifar.yaml``; or explicit ``recipe_paths``, one per process) for the same number of steps
into ``<out>/runs/<process>`` (rerunning resumes), or given ``runs`` are used; each is then evaluated
with the same metrics, seed and counts (:func:`genproc.metrics.evaluate`) and measured. Data-driven:
a measure adds keys to a row (``MEASURES``), a column formats them (``COLUMNS``), a figure writes
files (``FIGURES``); later analyses append to these lists. E.g.
``compare(["ihdm", "ddpm"], "mnist", budget=2400, n=1000, metrics="fid,kid,nll")``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genproc import GenprocError, __version__
from genproc.errors import Interrupted
from genproc.metrics.evaluate import kid_spread
from genproc.processes import build_process, canonical_name, name_of
from genproc.run import LoadedRun, load, with_sampling_where_known

REPO_RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # default --recipes-dir (else ./recipes)


def canonical_names(names: Sequence[str]) -> list[str]:
    """Registered process names with aliases resolved (``heat`` -> ``ihdm``); an unknown (nearest valid name
    given) or repeated name is an error."""
    out: list[str] = []
    for raw in names:
        name = canonical_name(raw)
        if name in out:
            raise GenprocError(f"process '{name}' given twice; name each process once")
        out.append(name)
    return out


def _check_same(names: list[str], items: list[tuple[Path, Any]], dataset: str | None, what: str) -> None:
    """Each (where, recipe) holds the named process, and all use one data set (``dataset``, if given)."""
    keys = [(r.data.name, r.data.image_hw, r.data.channels, r.data.max_images) for _, r in items]  # 28 == [28, 28]
    size = lambda hw: f"{hw[0]}px" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}px"  # noqa: E731
    desc = lambda k: f"{k[0]} {size(k[1])} {k[2]}ch" + (f" (first {k[3]} images)" if k[3] else "")  # noqa: E731
    for name, (where, r), key in zip(names, items, keys):
        if (got := name_of(r.process)) != name:
            raise GenprocError(f"{what}: {where} has process '{got}' but was given as '{name}'; "
                               f"give them in the order of the names")
        if key != keys[0] or (dataset is not None and key[0] != dataset):
            want = f"{desc(keys[0])} like {items[0][0]}" if key != keys[0] else dataset
            raise GenprocError(f"{what}: {where} uses {desc(key)}, not {want}; the comparison needs one data set")


SCALES = ("small", "paper")


def _paper_recipe(name: str, dataset: str, recipes_dir: Path) -> Path:
    """The one GPU-scale recipe (not ``*_small.yaml``) in ``recipes_dir`` whose process is ``name`` and whose data set is
    ``dataset``, found by reading the recipes (e.g. ``ihdm_cifar.yaml`` for ihdm on cifar10)."""
    import yaml

    def matches(path: Path) -> bool:
        try:
            d = yaml.safe_load(path.read_text()) or {}
            return canonical_name(d["process"]["name"]) == name and d["data"]["name"] == dataset
        except (GenprocError, KeyError, TypeError, yaml.YAMLError):
            return False

    found = [p for p in sorted(recipes_dir.glob("*.yaml")) if not p.stem.endswith("_small") and matches(p)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise GenprocError(f"{what} paper-scale recipe for '{name}' on '{dataset}' in {recipes_dir}; "
                           f"give the recipe files with --recipe (one per process)")
    return found[0]


def _recipes(names: list[str], dataset: str, recipes_dir: Path, budget: int | None, overrides: Sequence[str],
             scale: str = "small", recipe_paths: Sequence[str | Path] | None = None) -> tuple[list[Any], int]:
    """The checked recipes (``recipe_paths``; else per name ``<recipes_dir>/<name>_<dataset>_small.yaml`` at
    ``scale="small"``, the GPU-scale recipe of that process and data set at ``scale="paper"``) and the shared budget
    (default: their ``train.max_steps``, if equal)."""
    from genproc.recipe import load_recipe

    if scale not in SCALES:
        raise GenprocError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if recipe_paths is not None:
        if len(recipe_paths) != len(names):
            raise GenprocError(f"--recipe: {len(recipe_paths)} recipe(s) for {len(names)} process name(s); give one per name")
        paths = [Path(p) for p in recipe_paths]
    elif scale == "paper":
        paths = [_paper_recipe(n, dataset, recipes_dir) for n in names]
    else:
        paths = [recipes_dir / f"{n}_{dataset}_small.yaml" for n in names]
    if missing := [(name, p) for name, p in zip(names, paths) if not p.is_file()]:
        have = ", ".join(sorted(q.name for q in recipes_dir.glob(f"*_{dataset}_small.yaml"))) or "none"
        raise GenprocError(f"missing recipe {missing[0][1]} for '{missing[0][0]}' on '{dataset}' (found for {dataset}: {have})")
    recipes = [load_recipe(p, list(overrides)) for p in paths]
    _check_same(names, list(zip(paths, recipes)), dataset if recipe_paths is None else None, "recipes")
    if budget is None and len(steps := {r.train.max_steps for r in recipes}) != 1:
        raise GenprocError(f"the recipes train for different numbers of steps {sorted(steps)}; give --budget STEPS")
    return recipes, recipes[0].train.max_steps if budget is None else budget


@dataclass
class Entry:
    """One process of the comparison: its run, evaluation records, a timed sample draw, its table row."""

    name: str  # the process's canonical name
    run: LoadedRun
    records: list[dict[str, Any]]
    sample: Any  # genproc.engine.SampleResult, with trajectory
    sample_seconds: float
    row: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    more_records: list[list[dict[str, Any]]] = field(default_factory=list)  # the sample metrics at each further seed
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why this process cannot give it (shown –)


def measure_metrics(e: Entry) -> dict[str, Any]:
    """The evaluation values, KID std, NLL std. error and bits/dim convention (as in the NLL record); with further
    sample seeds, each sample metric's value per seed ("<metric>_by_seed", the first seed's first) and their mean
    ("<metric>_mean"); the table shows the first seed's value and the range over seeds."""
    row: dict[str, Any] = {r["metric"]: r["value"] for r in e.records}
    more = [r for recs in e.more_records for r in recs]  # the sample metrics at the further seeds
    for metric in list(row):
        values = [row[metric]] + [r["value"] for r in more if r["metric"] == metric]
        if len(values) > 1:
            row[f"{metric}_by_seed"], row[f"{metric}_mean"] = values, sum(values) / len(values)
    row["unavailable"] = dict(e.unavailable)  # the table shows – there, the report a footnote
    for r in e.records:
        if r["metric"] == "kid":
            row.update(kid_std=r["std"], kid_one_subset=r.get("kid_one_subset", False))
        if r["metric"] == "nll":
            row.update(nll_std_error=r["std_error_bits_per_dim"], nll_convention=r["convention"])
    return row


def measure_run(e: Entry) -> dict[str, Any]:
    """Training img/s (median of metrics.jsonl's img_per_s), sampling img/s (the timed grid draw) and steps,
    parameter count, and the step of the evaluated checkpoint (the budget actually spent)."""
    from genproc.nets import count_parameters

    path = e.run.run_dir / "metrics.jsonl"
    lines = [json.loads(s) for s in (path.read_text().splitlines() if path.is_file() else []) if s.strip()]
    ips = [d["img_per_s"] for d in lines if "img_per_s" in d]  # evaluation lines ({"step", "eval"}) have none
    return {"train_img_s": float(torch.tensor(ips).median()) if ips else None, "sampling_calls": e.run.sampling_record()["calls"],
            "sample_img_s": e.sample.images.shape[0] / max(e.sample_seconds, 1e-9), "params": count_parameters(e.run.net),
            "budget_steps": e.run.step, "run_dir": str(e.run.run_dir)}


def measure_interpolation(e: Entry) -> dict[str, Any]:
    """Interpolation smoothness (8 pairs x 9 frames; genproc.analysis.interpolation): jump and path ratios."""
    from genproc.analysis.interpolation import interpolation_smoothness_summary

    return interpolation_smoothness_summary(e.run, seed=e.seed)


def measure_gradients(e: Entry) -> dict[str, Any]:
    """Input-gradient locality (genproc.analysis.gradients): mean 50%- and 90%-mass radii in pixels, circular symmetry."""
    from genproc.analysis.gradients import gradient_locality_summary

    return gradient_locality_summary(e.run, seed=e.seed)


_pair = lambda a, b: lambda r: "–" if r.get(a) is None else f"{r[a]:.2f} / {r[b]:.2f}"  # noqa: E731 - pixel / shape space
_num = lambda key, fmt: lambda row: "–" if row.get(key) is None else format(row[key], fmt)  # noqa: E731 - a column
MEASURES: list[Callable[[Entry], dict[str, Any]]] = [measure_metrics, measure_run, measure_interpolation, measure_gradients]
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("process", lambda r: r.get("label", r["process"])),
    ("FID", lambda r: "–" if r.get("fid") is None else f"{r['fid']:.2f}" + seed_range(r.get("fid_by_seed"), ".2f")),
    ("KID", lambda r: "–" if r.get("kid") is None else f"{r['kid']:.4f}" + kid_spread(r.get("kid_std"), r.get("kid_one_subset"))),
    ("NLL bits/dim", lambda r: "–" if r.get("nll") is None else f"{r['nll']:.3f} ({r['nll_convention']})"),
    ("train img/s", _num("train_img_s", ".1f")), ("sample img/s", _num("sample_img_s", ".2f")),
    ("network calls / image", _num("sampling_calls", "d")), ("params", _num("params", ",")),
    ("budget steps", _num("budget_steps", "d")),
    ("interp. jump ratio px / shape", _pair("jump_ratio_mean", "jump_ratio_shape_mean")),
    ("interp. path ratio px / shape", _pair("path_ratio_mean", "path_ratio_shape_mean")),
    ("grad. r50 / r90 px", _pair("grad_r50", "grad_r90")), ("grad. symmetry", _num("grad_symmetry", ".2f")),
]


def footnotes(rows: list[dict[str, Any]]) -> list[str]:
    """A note for each – that stands for a metric a process cannot give, naming why."""
    return [f"– {m} of {r['process']}: process '{r['process']}' {why}, so the metric is not defined for it"
            for r in rows for m, why in r.get("unavailable", {}).items()]


def seed_range(values: Sequence[float] | None, fmt: str) -> str:
    """' (lo–hi over S seeds)' for the values of a metric at several sample seeds, else ''."""
    if not values or len(values) < 2:
        return ""
    return f" ({min(values):{fmt}}–{max(values):{fmt}} over {len(values)} seeds)"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The ``COLUMNS`` of every row as a Markdown table."""
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(f(r) for _, f in COLUMNS) + " |" for r in rows])


def figure_samples(entries: list[Entry], out: Path, strip: int = 10, rows: int = 4, gif: int = 20) -> dict[str, str]:
    """samples.png (a grid per process, left to right, same seed), sequences.png (per process, top to bottom:
    ``rows`` samples from prior to sample in ``strip`` frames) and sequences.gif (grids side by side)."""
    from torchvision.utils import make_grid

    from genproc.engine.media import save_gif, save_grid

    frame = lambda t, f, k: t[round(f * (t.shape[0] - 1) / (k - 1))]  # noqa: E731 - frame f of k, spread over (T, ...)
    grid = lambda x, nrow=None: make_grid(x, nrow or max(1, round(x.shape[0] ** 0.5)), padding=2, pad_value=1.0)  # noqa: E731
    save_grid(torch.stack([grid(e.sample.images) for e in entries]), out / "samples.png", len(entries), scale=2)
    strips = [grid(torch.stack([frame(e.sample.trajectory, f, strip)[:rows] for f in range(strip)]).transpose(0, 1)
                   .flatten(0, 1), strip) for e in entries]  # (rows * strip, C, H, W), a row per sample
    save_grid(torch.stack(strips), out / "sequences.png", 1, scale=2)
    frames = torch.stack([torch.stack([grid(frame(e.sample.trajectory, f, gif)) for e in entries]) for f in range(gif)])
    save_gif(frames, out / "sequences.gif", nrow=len(entries))  # (gif, P, C, H', W')
    return {"samples": "samples.png", "sequences": "sequences.png", "sequences_gif": "sequences.gif"}


def figure_recipes(entries: list[Entry], out: Path) -> dict[str, str]:
    """recipes/<process>.yaml: the resolved recipe of each run."""
    from genproc.recipe import recipe_to_yaml

    (out / "recipes").mkdir(exist_ok=True)
    for e in entries:
        (out / "recipes" / f"{e.name}.yaml").write_text(recipe_to_yaml(e.run.recipe))
    return {f"recipe_{e.name}": f"recipes/{e.name}.yaml" for e in entries}


def figure_spectra(entries: list[Entry], out: Path) -> dict[str, str]:
    """spectra.png / spectra.json (genproc.analysis.spectra): PSDs along each forward process and generative trajectory."""
    from genproc.analysis.spectra import analyze_spectra

    analyze_spectra([e.run for e in entries], out, seed=entries[0].seed)
    return {"spectra": "spectra.png", "spectra_json": "spectra.json"}


FIGURES: list[Callable[[list[Entry], Path], dict[str, str]]] = [figure_samples, figure_recipes, figure_spectra]


def compare(names: Sequence[str], dataset: str | None = None, *, runs: Sequence[str | Path] | None = None,
            budget: int | None = None, n: int = 1000, metrics: str = "fid,kid,nll", out: str | Path = "compare",
            data_root: str | None = None, overrides: Sequence[str] = (), recipes_dir: str | Path | None = None,
            inception_weights: str | Path | None = None, extractor: str | None = None, cache_dir: str | Path | None = None,
            seed: int = 0, more_seeds: Sequence[int] = (), grid_n: int = 16, batch_size: int = 64,
            sampling: dict[str, Any] | Sequence[str] = (), n_ref: int | None = None, scale: str = "small",
            recipe_paths: Sequence[str | Path] | None = None, n_nll: int | None = None, floor: bool = True,
            progress: bool = False, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train (or take ``runs``), evaluate, measure, write ``out``/report.{md,json} + figures; returns the report.
    dataset: default 'mnist' when training; with ``runs``, None takes the runs' (given: must match). scale: "small"
    (the CPU recipes ``<process>_<dataset>_small.yaml``) or "paper" (the GPU-scale recipe of each process for
    ``dataset``, e.g. ``compare(["ihdm", "ddpm", "bdm"], "cifar10", scale="paper")``); recipe_paths: explicit
    recipes, one per name. names: registered process names or aliases. sampling: sampling-time settings ({"sampler":
    "ddim"} or ["sampler=ddim"]), each applied to the runs whose process has the key (``sampler`` changes only
    DDPM); one that fits no run is an error; ``NAME:key=value`` (e.g. ``"ddpm:sampler=heun"``) applies to that
    process's run alone and must fit it (each process at its own best sampler). more_seeds: further sample seeds at
    which the sample metrics (fid, kid, prc) are evaluated again, so the table shows their spread (NLL, the grids
    and the analyses use ``seed``). n_nll: the test images the NLL is measured on (default n; the ELBO costs a
    network call per sampled level and image). A metric a process cannot give (nll without an ELBO) is found before
    any work and shown as – with a footnote naming why. floor: with fid, also the real-vs-real FID at the same n and
    reference (n training images drawn at random under ``seed``; :func:`genproc.frontier.kept_floor`, kept in
    ``out``/floor), printed beside the models' FIDs. Ctrl-C raises :class:`genproc.errors.Interrupted` naming what
    was kept (trained runs, evaluation records)."""
    from genproc.api import train
    from genproc.engine.distributed import current
    from genproc.metrics import evaluate, parse_metrics
    from genproc.metrics.evaluate import quiet
    from genproc.metrics.fidelity import FIDELITY_METRICS
    from genproc.metrics.inception import INCEPTION, resolve_weights

    names, metric_list, out, extractor = canonical_names(names), parse_metrics(metrics), Path(out), extractor or INCEPTION
    if not current().is_main:  # under torchrun every rank does the same work (its collectives match); rank 0 speaks
        log = quiet
    for bad, msg in [
        (not names, "name at least one process to compare (e.g. 'genproc compare ihdm ddpm')"),
        (runs is not None and len(runs) != len(names), f"--runs: {len(runs or [])} run dir(s) for {len(names)} process "
         f"name(s) ({', '.join(names)}); give one run per name, in the same order"),
        (runs is not None and (budget is not None or bool(overrides) or recipe_paths is not None), "--budget, --set and "
         "--recipe configure training; with --runs nothing is trained (the runs' own steps are reported)"),
        (budget is not None and budget < 1, f"--budget must be >= 1 training step, got {budget}"),
        (n < 1 or grid_n < 1 or (n_nll is not None and n_nll < 1),
         f"--n, --n-nll and the grid size must be >= 1, got {n}, {n_nll} and {grid_n}")]:
        if bad:
            raise GenprocError(msg)
    fid = any(m in FIDELITY_METRICS for m in metric_list)  # weights: after the cheap checks, before the costly work
    run_dirs, trained, kept = [Path(r) for r in runs or []], [], []  # kept: what a Ctrl-C leaves, a phrase each
    try:
        if runs is None:
            rdir = Path(recipes_dir or (REPO_RECIPES if REPO_RECIPES.is_dir() else "recipes"))
            recipes, budget = _recipes(names, dataset or ("cifar10" if scale == "paper" else "mnist"), rdir, budget,
                                       overrides, scale, recipe_paths)
            skip = _unavailable(names, [build_process(r.process) for r in recipes], metric_list, log)
            if fid:
                resolve_weights(extractor, inception_weights)
            for name, r in zip(names, recipes):
                r.train.max_steps = budget  # the shared budget, stated in the saved recipe
                log(f"== {name}: training {r.name} to step {budget} in {out / 'runs' / name}")
                trained.append(out / "runs" / name)
                run_dirs.append(train(r, trained[-1], data_root=data_root, progress=progress, log=log).run_dir)
        shared, own = split_sampling(names, sampling)
        loaded = [load(d, data_root=data_root) for d in run_dirs]
        loaded = [r.with_sampling(own.get(name, [])) for name, r in zip(names, loaded)]
        loaded = with_sampling_where_known(loaded, shared) if shared else loaded
        _check_same(names, [(r.run_dir, r.recipe) for r in loaded], dataset if runs is not None else None, "--runs")
        if runs is not None:
            skip = _unavailable(names, [r.process for r in loaded], metric_list, log)
            if fid:
                resolve_weights(extractor, inception_weights)
        entries = []
        for name, run in zip(names, loaded):
            mine = [m for m in metric_list if m not in skip[name]]  # what this process can give
            recs = []
            for ms, size in ([(mine, n)] if n_nll in (None, n) else
                             [([m for m in mine if m != "nll"], n), ([m for m in mine if m == "nll"], n_nll)]):
                if ms:
                    log(f"== {name}: evaluating {', '.join(ms)} on {size} samples/images (seed {seed})")
                    recs += evaluate(run, ms, n=size, n_ref=n_ref, seed=seed, batch_size=batch_size, data_root=data_root,
                                     extractor=extractor, inception_weights=inception_weights, cache_dir=cache_dir,
                                     progress=progress, log=log)
                    kept.append(f"{', '.join(ms)} of {name} in {run.run_dir / 'eval'}")
            more = []
            sample_metrics = [m for m in mine if m in FIDELITY_METRICS]
            for s in more_seeds:
                log(f"== {name}: evaluating {', '.join(sample_metrics)} on {n} samples (seed {s})")
                more.append(evaluate(run, sample_metrics, n=n, n_ref=n_ref, seed=s, batch_size=batch_size,
                                     data_root=data_root, extractor=extractor, inception_weights=inception_weights,
                                     cache_dir=cache_dir, progress=progress, log=log) if sample_metrics else [])
                kept += [f"{', '.join(sample_metrics)} of {name} at seed {s} in {run.run_dir / 'eval'}"] if sample_metrics else []
            run.prior_data()  # load the prior's data (if any) before timing the sampler
            t0 = time.perf_counter()
            res = run.sample(grid_n, seed=seed, batch_size=grid_n, capture_every=0)
            entries.append(Entry(name, run, recs, res, time.perf_counter() - t0, seed=seed, more_records=more,
                                 unavailable=skip[name]))
        floor_rec = None
        if floor and "fid" in metric_list:
            from genproc.frontier import kept_floor

            log(f"== real-vs-real floor: {n} training images against the same reference")
            floor_rec = kept_floor(loaded[0], n, n_ref, out, seed=seed, batch_size=batch_size,
                                   inception_weights=inception_weights, cache_dir=cache_dir, extractor=extractor, log=log)
            kept.append(f"the real-vs-real floor in {out / 'floor'}")
        return write_report(entries, out, {"budget_steps": budget, "n": n, "n_nll": n_nll or n, "n_ref": n_ref,
                                           "real_floor": floor_rec,
                                           "seed": seed, "more_seeds": list(more_seeds), "metrics": metric_list,
                                           "sample_overrides": {e.name: dict(e.run.sampling) for e in entries}})
    except KeyboardInterrupt as e:  # say what was kept: the trained runs (their checkpoints) and the records written
        from genproc.engine.checkpoint import list_checkpoints

        runs_kept = [f"run {d}" for d in trained if list_checkpoints(d)]
        raise Interrupted([*runs_kept, *kept, *(e.kept if isinstance(e, Interrupted) else [])], ["report"]) from e


def split_sampling(names: Sequence[str], sampling: Mapping[str, Any] | Sequence[str]) -> tuple[Any, dict[str, list[str]]]:
    """Sampling settings -> (the shared ones, {process name: its own}): ``NAME:key=value`` belongs to process NAME (a
    name or alias among ``names``; processes named with their aliases are matched by their registered name)."""
    if isinstance(sampling, Mapping):
        return sampling, {}
    shared: list[str] = []
    own: dict[str, list[str]] = {}
    for item in sampling:
        head, colon, rest = str(item).partition(":")
        if colon and "=" not in head:
            try:
                name = canonical_name(head)
            except GenprocError:
                name = None
            if name not in names:
                raise GenprocError(f"--sampling {item}: '{head}' is not one of the compared processes "
                                   f"({', '.join(names)}); expected NAME:key=value, e.g. {names[0]}:steps=20")
            own.setdefault(name, []).append(rest)
        else:
            shared.append(item)
    return shared, own


def _unavailable(names: list[str], processes: list[Any], metrics: list[str],
                 log: Callable[[str], Any]) -> dict[str, dict[str, str]]:
    """Per process name, each requested metric its process cannot give -> why (asked before any work: nothing is
    trained, sampled or evaluated for it; the report shows – there with a footnote)."""
    from genproc.metrics.evaluate import unavailable

    skip = {name: unavailable(p, metrics) for name, p in zip(names, processes)}
    for name, bad in skip.items():
        for m, why in bad.items():
            log(f"== {name}: {m} not available (process '{name}' {why}); the report shows – there")
    return skip


def write_report(entries: list[Entry], out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Measure every entry (``MEASURES``), draw ``FIGURES``, write report.json and report.md into ``out``. Under
    ``torchrun`` every rank measures (the analyses sample across the ranks) and rank 0 writes ``out``; the others write
    into a temporary folder, removed afterwards."""
    from genproc.engine.distributed import current

    if not current().is_main:
        import shutil
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="genproc-compare-rank"))
        try:
            return _write_report(entries, tmp, settings)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _write_report(entries, out, settings)


def _write_report(entries: list[Entry], out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    for e in entries:
        e.row.update({"process": e.name, "label": e.run.process.label}, **{k: v for m in MEASURES for k, v in m(e).items()})
    out.mkdir(parents=True, exist_ok=True)
    files = {k: v for fig in FIGURES for k, v in fig(entries, out).items()}
    rows = [e.row for e in entries]
    report = {"dataset": entries[0].run.recipe.data.name, **settings, "columns": [h for h, _ in COLUMNS], "rows": rows,
              "table": markdown_table(rows), "footnotes": footnotes(rows), "records": {e.name: e.records for e in entries},
              "records_more_seeds": {e.name: e.more_records for e in entries if e.more_records}, "files": files,
              "genproc_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(report_markdown(report, entries))
    return report


def report_markdown(report: dict[str, Any], entries: list[Entry]) -> str:
    """report.md: settings, the table, the NLL conventions and timing notes, the figures, the recipes."""
    steps, order = sorted({r["budget_steps"] for r in report["rows"]}), " | ".join(e.name for e in entries)
    conv = {r["convention"]: r["convention_detail"] for e in entries for r in e.records if r["metric"] == "nll"}
    return "\n".join([
        f"# genproc compare: {order} on {report['dataset']}", "", f"Budget: {' / '.join(map(str, steps))} training steps"
        f"{'' if len(steps) == 1 else ' (UNEQUAL: not a fair comparison)'}; metrics {', '.join(report['metrics'])} on "
        f"{report['n']} samples/images (FID/KID reference: {report.get('n_ref') or 'all'} test images"
        + (f"; NLL on the first {report['n_nll']} test images"
           if "nll" in report["metrics"] and report.get("n_nll", report["n"]) != report["n"] else "")
        + f"), seed {report['seed']}"
        + (f" (sample metrics also at seeds {', '.join(map(str, report['more_seeds']))})" if report.get("more_seeds") else "")
        + "; "
        f"genproc {report['genproc_version']}, {report['created']}.",
        *[f"Sampling settings changed for {k}: {', '.join(f'{a}={b}' for a, b in v.items())}."
          for k, v in report.get("sample_overrides", {}).items() if v],
        "", report["table"], "",
        *([f"- Real-vs-real floor: FID {report['real_floor']['fid']:.2f} for {report['real_floor']['train_images']} "
           "against the same reference, what a model drawing exactly the training distribution would score at this n "
           "(FID is biased upward at small n)."] if report.get("real_floor") else []),
        *[f"- {note}" for note in report.get("footnotes", [])],
        *[f"- NLL convention *{k}*: {v}" for k, v in conv.items()],
        f"- train img/s: median over metrics.jsonl; sample img/s: wall time of the grid draw below "
        f"({entries[0].sample.images.shape[0]} images in one batch, trajectory captured).", "",
        f"## Samples (same seed; left to right: {order})", "", "![samples](samples.png)", "",
        f"## Generation sequences (prior -> sample; top to bottom / left to right: {order})", "",
        "![sequences](sequences.png)", "", "![sequences](sequences.gif)", "",
        "## Spectra (radially averaged DCT power; forward process and generative trajectory)", "", "![spectra](spectra.png)", "",
        "- interp. jump ratio: max / mean distance between consecutive frames of an interpolation (1 = even steps), "
        "path ratio: path length / endpoint distance (1 = straight); mean over 8 pairs x 9 frames, in pixels / in a "
        "blurred, mean-removed 'shape' space (genproc.analysis.interpolation).",
        "- grad. r50 / r90: radii (pixels) holding 50% / 90% of the |input gradient| mass of an output pixel of each "
        "model's noise-free step to the next level, the pixel itself left out (r90 also "
        "counts the diffuse low-level background, r50 the compact core); grad. symmetry: 1 - ||g - g_rad||² / ||g||², "
        "g_rad the map's mean over rings of equal rounded distance, in the largest disc around the pixel that fits in the "
        "image (1 = circularly symmetric, ~0 = no radial structure); means over levels, pixels and images "
        "(genproc.analysis.gradients).", "", "## Recipes", "",
        *[f"- [{e.name}](recipes/{e.name}.yaml): run `{e.run.run_dir}`" for e in entries]]) + "\n"
