"""The FID-per-network-call frontier: every process with every sampler it supports at every cost.

For each run, each sampler variant (a registered sampler and settings, e.g. ``ddim:clip=clamp``; default: every
sampler the run's process supports, at its default settings) and each target number of network calls per image, the
sampler takes the most steps whose calls fit the target (:func:`steps_for_calls`; a point whose calls repeat an
earlier one of the same variant is dropped), and FID is measured with the same n and seeds for every point
(:func:`genproc.metrics.evaluate`, torch-fidelity). Each run's default sampler is also measured at its own full chain.
Every point is written to ``<out>/points/*.json`` as soon as it is done, and a rerun skips the points already there,
so a frontier of CPU hours resumes point by point. :func:`frontier_report` then writes the table (``frontier.md``),
the plot (``frontier.png``: log calls on x, one line per process and sampler, the seed range as a band) and
``frontier.json``, with the real-vs-real FID floor at the same n beside them.

    from genproc.frontier import frontier
    frontier([load(d) for d in dirs], calls=[10, 20, 50], n=500, seeds=[0], out="frontier")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genproc.errors import GenprocError
from genproc.recipe import parse_setting
from genproc.run import LoadedRun
from genproc.samplers import lookup, supported

Variant = tuple[str, dict[str, Any]]  # (sampler name, settings)


def parse_variants(specs: Sequence[str]) -> list[Variant]:
    """``["ddim:clip=clamp,eta=0", "heun"]`` -> [("ddim", {"clip": "clamp", "eta": 0}), ("heun", {})]."""
    out = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        settings = dict(parse_setting(kv, "--samplers", "ddim:clip=clamp") for kv in rest.split(",") if kv.strip())
        out.append((lookup(name.strip()).name, settings))
    return out


def variant_label(name: str, settings: dict[str, Any]) -> str:
    """``ddim`` or ``ddim clip=clamp``: a variant's name in tables and legends."""
    return " ".join([name, *(f"{k}={v}" for k, v in settings.items())])


def steps_for_calls(run: LoadedRun, name: str, settings: dict[str, Any], target: int) -> tuple[int, int] | None:
    """(steps, calls): the most steps of sampler ``name`` (with ``settings``) on ``run`` whose network calls per image
    are at most ``target``; None when even one step costs more."""
    for steps in range(min(target, run.process.num_levels), 0, -1):
        r = run.with_sampling({"sampler": name, **settings, "steps": steps})
        calls = r.sampler.calls(r.sampler.levels(r.process))
        if calls <= target:
            return steps, calls
    return None


def plan(run: LoadedRun, calls: Sequence[int], variants: Sequence[Variant] | None,
         full_chain: bool = True) -> list[dict[str, Any]]:
    """The points of one run: {"sampler", "settings", "steps", "calls", "target"} for each variant the run's process
    supports and each target (repeated calls dropped), then (``full_chain``) the default sampler's own full chain."""
    ok = supported(run.process)
    chosen = [(n, s) for n, s in (variants if variants is not None else [(n, {}) for n in ok]) if n in ok]
    points, seen = [], set()
    for name, settings in chosen:
        for target in sorted(calls):
            got = steps_for_calls(run, name, settings, target)
            key = (name, json.dumps(settings, sort_keys=True), None if got is None else got[1])
            if got is None or key in seen:
                continue
            seen.add(key)
            points.append({"sampler": name, "settings": settings, "steps": got[0], "calls": got[1], "target": target})
    name = run.sampling_record()["sampler"]
    full = run.sampler.calls(run.sampler.levels(run.process))
    if full_chain and (name, json.dumps({}, sort_keys=True), full) not in seen:
        points.append({"sampler": name, "settings": {}, "steps": None, "calls": full, "target": None})
    return points


def run_key(run: LoadedRun) -> str:
    """What names a run's points and records: its run dir's name (two runs of one process, e.g. IHDM with K = 10 and
    K = 20, stay apart)."""
    return Path(run.run_dir).name


def point_path(out: Path, run: str, p: dict[str, Any], n: int, seed: int) -> Path:
    tag = "".join(f"-{k}{v}" for k, v in p["settings"].items())
    return out / "points" / f"{run}-{p['sampler']}{tag}-nfe{p['calls']}-n{n}-seed{seed}.json"


def frontier(runs: Sequence[LoadedRun], calls: Sequence[int], *, out: str | Path, variants: Sequence[Variant] | None = None,
             n: int = 500, seeds: Sequence[int] = (0,), n_ref: int | None = None, batch_size: int = 64,
             inception_weights: str | Path | None = None, cache_dir: str | Path | None = None, extractor: str | None = None,
             full_chain: bool = True, log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Measure every point of every run (see the module docstring); returns the point records (also in
    ``<out>/points/``), resuming from those already written."""
    from genproc.metrics import evaluate
    from genproc.metrics.inception import INCEPTION

    if not calls or min(calls) < 1:
        raise GenprocError(f"--calls expects positive integers, e.g. 10,20,50; got {list(calls)}")
    out = Path(out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    done = []
    for run in runs:
        for p in plan(run, calls, variants, full_chain):
            for seed in seeds:
                path = point_path(out, run_key(run), p, n, seed)
                if path.is_file():
                    done.append(json.loads(path.read_text()))
                    continue
                log(f"{run_key(run)}: {variant_label(p['sampler'], p['settings'])}, {p['calls']} calls, seed {seed}")
                r = run.with_sampling({"sampler": p["sampler"], **p["settings"],
                                       **({} if p["steps"] is None else {"steps": p["steps"]})})
                rec = evaluate(r, "fid", n=n, seed=seed, n_ref=n_ref, batch_size=batch_size,
                               out_dir=out / "evals" / run_key(run), data_root=run.data_root,  # one folder per run
                               inception_weights=inception_weights, cache_dir=cache_dir,
                               extractor=extractor or INCEPTION, log=log)[0]
                point = {"process": run.process_name, "label": run.process.label, "run": run_key(run), **p,
                         "seed": seed, "n": n,
                         "fid": rec["value"], "sampling": rec["sampling"], "reference": rec["reference"],
                         "run_dir": str(run.run_dir), "checkpoint_step": run.step, "record": rec.get("json")}
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(point, indent=1))
                os.replace(tmp, path)
                done.append(point)
    return done


def read_points(out: str | Path) -> list[dict[str, Any]]:
    """Every point measured into ``<out>/points`` so far (by any number of runs of :func:`frontier`), in name order."""
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "points").glob("*.json"))]


def row_label(p: dict[str, Any], points: Sequence[dict[str, Any]]) -> str:
    """The process's label, and the run's name too when ``points`` hold several runs of that process."""
    runs = {q.get("run") for q in points if q["label"] == p["label"]}
    return p["label"] if len(runs) <= 1 else f"{p['label']} ({p.get('run')})"


def _sampler_of(p: dict[str, Any]) -> str:
    return variant_label(p["sampler"], p["settings"]) + (" (full chain)" if p["target"] is None else "")


def frontier_table(points: Sequence[dict[str, Any]], calls: Sequence[int]) -> str:
    """Markdown: one row per process and sampler variant, one column per target (the process's full chains in a last
    column); a cell is FID (the seed range when several seeds) and, when they differ from the target, the calls."""
    rows: dict[tuple[str, str], dict[Any, list[dict[str, Any]]]] = {}
    for p in points:
        rows.setdefault((row_label(p, points), variant_label(p["sampler"], p["settings"])), {}) \
            .setdefault(p["target"], []).append(p)
    cols = [*sorted(calls)] + ([None] if any(p["target"] is None for p in points) else [])  # full chains, if any
    head = "| process | sampler | " + " | ".join(f"{c} calls" if c else "full chain" for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for (label, sampler), cells in rows.items():
        txt = []
        for c in cols:
            ps = cells.get(c, [])
            if not ps:
                txt.append("–")
                continue
            fids = sorted(q["fid"] for q in ps)
            v = f"{sum(fids) / len(fids):.1f}" + (f" ({fids[0]:.1f}–{fids[-1]:.1f})" if len(fids) > 1 else "")
            if c is None or ps[0]["calls"] != c:
                v += f" @{ps[0]['calls']}"
            txt.append(v)
        lines.append(f"| {label} | {sampler} | " + " | ".join(txt) + " |")
    return "\n".join(lines)


def largest_n(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points of each (process, sampler variant, target) at the largest n measured for it (FID's bias depends on
    n, so one line never mixes sample counts)."""
    def key(p: dict[str, Any]) -> tuple[Any, ...]:
        return p.get("run"), p["label"], variant_label(p["sampler"], p["settings"]), p["target"]

    top: dict[tuple[Any, ...], int] = {}
    for p in points:
        top[key(p)] = max(top.get(key(p), 0), p["n"])
    return [p for p in points if p["n"] == top[key(p)]]


def frontier_plot(points: Sequence[dict[str, Any]], path: Path) -> Path:
    """FID against network calls per image (log x), one line per process and sampler variant, the min–max over
    seeds as a band, full chains as single markers; each point at the largest n measured for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, dict[int, list[float]]] = {}
    for p in largest_n(points):
        groups.setdefault(f"{row_label(p, points)} · {_sampler_of(p)}", {}).setdefault(p["calls"], []).append(p["fid"])
    fig, ax = plt.subplots(figsize=(8, 5))
    styles: dict[str, str] = {}  # one line style per process, a colour per line (tab20: no colour repeats up to 20)
    colours = plt.get_cmap("tab20").colors
    for i, (name, by_calls) in enumerate(sorted(groups.items())):
        xs = sorted(by_calls)
        mean = [sum(by_calls[x]) / len(by_calls[x]) for x in xs]
        style = styles.setdefault(name.split(" · ")[0], ["-", "--", ":", "-."][len(styles) % 4])
        (line,) = ax.plot(xs, mean, marker="o", label=name, linestyle=style, color=colours[i % len(colours)])
        ax.fill_between(xs, [min(by_calls[x]) for x in xs], [max(by_calls[x]) for x in xs], color=line.get_color(),
                        alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullLocator

    ticks = sorted({p["target"] or p["calls"] for p in points})  # the targets (a sampler may land a call below)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("network calls per image")
    ax.set_ylabel("FID (torch-fidelity)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def real_floor(run: LoadedRun, n: int, n_ref: int | None = None, *, seed: int = 0, batch_size: int = 64,
               inception_weights: str | Path | None = None, cache_dir: str | Path | None = None,
               extractor: str | None = None, log: Callable[[str], Any] = print) -> float:
    """FID of ``n`` *training* images drawn at random (``torch.randperm`` under ``seed``: a folder is sorted by name,
    so its first images are no sample of the whole) against the same reference (the first ``n_ref`` test images): what
    a perfect sampler would score at this n (FID is biased upward at small n), printed beside the frontier."""
    from torch_fidelity import KEY_METRIC_FID

    from genproc.data import build_dataset
    from genproc.metrics.fidelity import fidelity_metrics, reference_key
    from genproc.metrics.images import ReferenceImages
    from genproc.metrics.inception import INCEPTION, resolve_weights

    weights = resolve_weights(extractor or INCEPTION, inception_weights)
    ref = build_dataset(run.recipe.data, "test", run.data_root)
    refs = ReferenceImages(ref, n_ref)
    train = ReferenceImages(build_dataset(run.recipe.data, "train", run.data_root), n, random_seed=seed)
    out = fidelity_metrics(train, refs, {"fid"}, weights=weights, reference_name=reference_key(ref, len(refs), weights),
                           cache_root=cache_dir, batch_size=batch_size, seed=seed, log=log)
    return float(out[KEY_METRIC_FID])


def floor_path(out: str | Path, n: int, n_ref: int | None) -> Path:
    """Where the real-vs-real floor at ``n`` against the first ``n_ref`` test images (None: all) is kept."""
    return Path(out) / "floor" / f"n{n}-ref{'all' if n_ref is None else n_ref}.json"


def _read_floor(path: Path, n: int) -> dict[str, Any]:
    """A kept floor record; one written before the training images were drawn at random (no ``train_images``) used
    the first n."""
    rec = json.loads(path.read_text())
    rec.setdefault("train_images", f"the first {n} training images")
    return rec


def floor_record(out: str | Path, n: int) -> dict[str, Any] | None:
    """The real-vs-real floor kept in ``<out>/floor`` for sample count n (against any reference), if one was measured."""
    kept = sorted(Path(out).glob(f"floor/n{n}-ref*.json"))
    return _read_floor(kept[0], n) if kept else None


def kept_floor(run: LoadedRun, n: int, n_ref: int | None, out: str | Path, *, seed: int = 0,
               log: Callable[[str], Any] = print, **kw: Any) -> dict[str, Any]:
    """The real-vs-real floor (:func:`real_floor`) measured once per (n, reference) into ``<out>/floor`` like a
    frontier point: a rerun reads it back instead of embedding the reference again. Returns its record
    ({n, n_ref, dataset, fid, train_images})."""
    path = floor_path(out, n, n_ref)
    if path.is_file():
        rec = _read_floor(path, n)
        log(f"real-vs-real floor: kept in {path}: FID {rec['fid']:.2f}")
        return rec
    fid = real_floor(run, n, n_ref, seed=seed, log=log, **kw)
    rec = {"n": n, "n_ref": n_ref, "dataset": run.recipe.data.name, "fid": fid,
           "train_images": f"{n} training images drawn at random (seed {seed})"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(path)
    log(f"real-vs-real floor: {rec['train_images']} vs the reference: FID {fid:.2f} (kept in {path})")
    return rec


def frontier_report(points: Sequence[dict[str, Any]], out: str | Path, *, floor: float | None = None,
                    command: str = "") -> dict[str, Any]:
    """Write ``frontier.md`` (a table per sample count n with its real-vs-real floor, the plot, the protocol),
    ``frontier.json`` and ``frontier.png`` into ``out`` for ``points`` (e.g. :func:`read_points`: every point measured
    there); ``floor``: the floor at the smallest n when not kept in ``<out>/floor``. Returns the report dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calls = sorted({p["target"] for p in points if p["target"] is not None})
    ns, seeds = sorted({p["n"] for p in points}), sorted({p["seed"] for p in points})
    records = {n: floor_record(out, n) for n in ns}
    floors = {n: None if records[n] is None else float(records[n]["fid"]) for n in ns}
    if ns and floors[ns[0]] is None:
        floors[ns[0]] = floor
    tables = []  # one table per sample count, the largest first: FID's bias depends on n
    for n in reversed(ns):
        at_n = [p for p in points if p["n"] == n]
        head = f"n = {n} samples per point, sample seed(s) {', '.join(map(str, sorted({p['seed'] for p in at_n})))}"
        if floors[n] is not None:
            drawn = records[n]["train_images"] if records[n] is not None else f"{n} training images"
            head += f"; real-vs-real floor at this n ({drawn}): FID {floors[n]:.1f}"
        tables.append(f"{head}.\n\n" + frontier_table(at_n, sorted({p["target"] for p in at_n if p["target"] is not None})))
    ref = points[0]["reference"] if points else {}
    report = {"calls": calls, "n": ns, "seeds": seeds, "reference": ref,
              "real_floor_fid": floors[ns[0]] if ns else floor, "real_floor_fid_by_n": {str(n): floors[n] for n in ns},
              "table": "\n\n".join(tables), "points": list(points), "command": command}
    (out / "frontier.json").write_text(json.dumps(report, indent=1))
    if points:
        frontier_plot(points, out / "frontier.png")
    md = ["# FID per network call", "",
          f"FID (torch-fidelity's InceptionV3 and resizing) against {ref.get('dataset', '?')} {ref.get('split', '?')} "
          f"({ref.get('size', '?')} images), one table per number of samples n (FID's bias depends on n: compare "
          "within a table). A cell is the mean over seeds (their range in brackets) and, after @, the network calls "
          "per image when they differ from the column's target (a sampler takes the most steps that fit). Full "
          "chain: the process's default sampler over all its levels. The real-vs-real floor is what a perfect "
          "sampler would score at that n. The plot shows each point at the largest n measured for it.", "",
          report["table"], "", "![FID against network calls](frontier.png)", ""]
    if command:
        md += ["Last command:", "", "```", command, "```", ""]
    (out / "frontier.md").write_text("\n".join(md))
    return report
