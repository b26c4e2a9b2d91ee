"""``evaluate(run_dir, "fid,kid,nll")``: metrics of a trained run, each saved as JSON in ``<run_dir>/eval/``."""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch_fidelity import KEY_METRIC_FID, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

from genproc import __version__
from genproc.data import build_dataset
from genproc.engine.distributed import current, shard
from genproc.errors import GenprocError, Interrupted
from genproc.metrics.fidelity import FIDELITY_METRICS, fidelity_metrics_across_ranks, reference_key
from genproc.metrics.images import ReferenceImages, SampleStream
from genproc.metrics.inception import INCEPTION, resolve_weights
from genproc.metrics.nll import evaluate_nll
from genproc.processes import ForwardProcess
from genproc.run import LoadedRun, load

METRICS = (*FIDELITY_METRICS, "nll")


def parse_metrics(spec: str | Iterable[str]) -> list[str]:
    """'fid,kid' -> ['fid', 'kid'] (order kept, duplicates dropped); unknown names are an error."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise GenprocError(f"unknown metric {', '.join(repr(b) for b in bad) or '(none given)'} in --metrics "
                           f"(known: {', '.join(METRICS)})")
    return list(dict.fromkeys(names))


# What a metric needs of a process, asked before any work: metric -> (process -> why it cannot give it, said of the
# process, or None).
NEEDS: dict[str, Callable[[ForwardProcess], str | None]] = {
    "nll": lambda p: None if p.has_elbo else "has no likelihood bound (ELBO)",
}


def unavailable(process: ForwardProcess, metrics: Iterable[str]) -> dict[str, str]:
    """Each of ``metrics`` that ``process`` cannot give -> why, said of the process (``NEEDS``; e.g. nll of a process
    without an ELBO, the contract's optional capability: "has no likelihood bound (ELBO)"); empty when it can give
    them all. Cheap: nothing is built or sampled."""
    return {m: why for m in metrics if m in NEEDS and (why := NEEDS[m](process)) is not None}


def _check_args(n: int, batch_size: int, n_ref: int | None) -> None:
    if n < 1:
        raise GenprocError(f"--n must be >= 1, got {n}")
    if batch_size < 1:
        raise GenprocError(f"--batch-size must be >= 1, got {batch_size}")
    if n_ref is not None and n_ref < 1:
        raise GenprocError(f"--n-ref must be >= 1, got {n_ref}")


def _fidelity_records(run: Any, ref: Any, metrics: set[str], n: int, n_ref: int | None, seed: int, batch_size: int,
                      weights: Any, cache_dir: Any, progress: bool,
                      log: Callable[[str], Any]) -> list[dict[str, Any]]:
    info = current()
    part = shard(n, info)  # under torchrun each rank samples and embeds its own part
    gen = SampleStream(run, len(part), seed=seed, batch_size=batch_size, start_index=part.start,
                       progress=progress and info.is_main, log=log if info.is_main else None)
    refs = ReferenceImages(ref, n_ref)
    key = reference_key(ref, len(refs), weights)
    log(f"{'/'.join(sorted(metrics))}: {n} samples vs {ref.name} {ref.split} ({len(refs)} images), {weights.extractor}"
        + (f", across {info.world_size} ranks" if info.enabled else ""))
    t0 = time.time()
    out = fidelity_metrics_across_ranks(gen, refs, metrics, info=info, weights=weights, reference_name=key,
                                        cache_root=cache_dir, batch_size=batch_size, seed=seed,
                                        cuda=run.device.type == "cuda", log=log)
    extra = {"extractor": weights.extractor, "weights_sha256": weights.sha256, "weights_path": weights.path,
             "reference": {"dataset": ref.name, "split": ref.split, "size": len(refs), "root": ref.root,
                           "cache_name": key, "cached": out["reference_cached"]},
             "n_samples": n, "wall_time_s": time.time() - t0, "wall_time_covers": sorted(metrics)}
    recs = []
    if "fid" in metrics:
        recs.append({"metric": "fid", "value": out[KEY_METRIC_FID], **extra})
    if "kid" in metrics:
        one = out["kid_subset_size"] >= max(n, len(refs))  # every subset is the whole of both sets: no spread to report
        recs.append({"metric": "kid", "value": out[KEY_METRIC_KID_MEAN], "std": None if one else out[KEY_METRIC_KID_STD],
                     "kid_subset_size": out["kid_subset_size"], "kid_one_subset": one, **extra})
    if "prc" in metrics:
        for m in ("precision", "recall"):
            recs.append({"metric": m, "value": out[m], "f_score": out["f_score"], "neighbourhood_k": 3, **extra})
    return recs


def _nll_record(run: Any, data: Any, n: int, seed: int, batch_size: int,
                progress: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    log(f"nll: {min(n, len(data))} {data.name} {data.split} images")
    t0 = time.time()
    res = evaluate_nll(run, data, n, seed=seed, batch_size=batch_size, progress=progress, log=log)
    return {"metric": "nll", "value": res.pop("bits_per_dim"), "unit": "bits/dim",
            "bound": "upper bound on the NLL (negative ELBO) of 8-bit data; " + res["convention_detail"],
            "n_samples": res["n_images"], "reference": {"dataset": data.name, "split": data.split, "size": len(data),
                                                         "root": data.root},
            "extractor": None, "weights_sha256": None, **res, "wall_time_s": time.time() - t0}


def evaluate(run_dir: str | Path | LoadedRun, metrics: str | Iterable[str] = "fid,kid", *, n: int = 10000,
             split: str = "test", n_ref: int | None = None, seed: int = 0, batch_size: int = 64,
             checkpoint: str | None = None, data_root: str | None = None, inception_weights: str | Path | None = None,
             extractor: str = INCEPTION, cache_dir: str | Path | None = None, progress: bool = False,
             log: Callable[[str], Any] = print, out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Evaluate a run; returns one record per metric, each also written to ``<out_dir>/<name>.json`` (default
    ``out_dir``: ``<run_dir>/eval``, the path in the record's ``json``) as soon as it is done. A metric the run's process
    cannot give (:func:`unavailable`: nll without an ELBO) is an error before any work; Ctrl-C raises
    :class:`genproc.errors.Interrupted` naming the records kept and the metrics left.

    fid / kid / prc: ``n`` samples vs the ``split`` images (first ``n_ref``; default all) via
    torch-fidelity. nll: bits/dim upper bound on the first ``n`` ``split`` images.
    ``run_dir`` may also be a run already loaded by :func:`genproc.load` (``checkpoint`` is then ignored), e.g.
    ``run.with_sampling(delta=0.02)`` to evaluate under other sampling-time settings; every record states how
    samples were drawn (``sampling``: the process's sampling keys, the sampler, its settings and its network calls per
    image, :meth:`LoadedRun.sampling_record`) and which settings differ from the trained recipe (``sampling_overrides``);
    the file name says the sampler and its calls.
    Under ``torchrun`` the samples, their features and the NLL images are split across the ranks (a collective: every
    rank calls it and gets the records; rank 0 logs and writes the JSON), with the single-process result.
    """
    names = parse_metrics(metrics)
    info = current()
    if not info.is_main:
        log = quiet
    _check_args(n, batch_size, n_ref)
    run = run_dir if isinstance(run_dir, LoadedRun) else load(run_dir, checkpoint=checkpoint, data_root=data_root)
    run_dir = run.run_dir
    if bad := unavailable(run.process, names):  # before anything is sampled
        m, why = next(iter(bad.items()))
        rest = [x for x in METRICS if x not in bad]
        raise GenprocError(f"metric '{m}' is not available for {run_dir}: process '{run.process_name}' {why}; "
                           f"ask for {', '.join(rest)}")
    fid_set = {m for m in names if m in FIDELITY_METRICS}
    weights = resolve_weights(extractor, inception_weights) if fid_set else None  # fail before any sampling
    data = build_dataset(run.recipe.data, split, data_root)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    how = run.sampling_record()  # the process's sampling keys, the sampler, its settings and its network calls
    stag = f"-{how['sampler']}-nfe{how['calls']}" + "".join(f"-{k}{v}" for k, v in run.sampling.items()
                                                          if k not in ("sampler", "steps"))

    def save(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write each record as soon as its metric is done, so a later failure or Ctrl-C loses nothing."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for r in recs:
            r.update(process=run.process_name, sampling=how, seed=seed,
                     sampling_overrides=dict(run.sampling), checkpoint_step=run.step, checkpoint=str(run.checkpoint),
                     genproc_version=__version__, created=now, run_dir=str(run_dir), ranks=info.world_size)
            path = out_dir / f"{r['metric']}-step{run.step:08d}-{split}-n{n}-seed{seed}{stag}.json"
            if info.is_main:
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(r, indent=1, sort_keys=False))
                os.replace(tmp, path)
            r["json"] = str(path)
        return recs

    records: list[dict[str, Any]] = []
    done: list[str] = []
    try:
        if fid_set:
            records += save(_fidelity_records(run, data, fid_set, n, n_ref, seed, batch_size, weights, cache_dir,
                                              progress, log))
            done += fid_set
        if "nll" in names:
            records += save([_nll_record(run, data, n, seed, batch_size, progress, log)])
            done.append("nll")
    except KeyboardInterrupt as e:  # say what was kept: each finished metric's record is on disk
        raise Interrupted([f"{r['metric']} in {r['json']}" for r in records], [m for m in names if m not in done]) from e
    return records


def quiet(*_: Any) -> None:
    """The log of a rank other than 0: rank 0 speaks for all."""


def kid_spread(std: float | None, one_subset: bool = False) -> str:
    """' ± std' of KID over its subsets; ' (one subset)' when every subset was the whole set (no spread); else ''."""
    if one_subset:
        return " (one subset)"
    return "" if std is None else f" ± {std:.4f}"


def format_table(records: list[dict[str, Any]]) -> str:
    """A small text table of the records, plus the NLL breakdown when present."""
    lines = [f"{'metric':<10} {'value':>22} {'n':>7}  reference"]
    for r in records:
        val = f"{r['value']:.4f}" + kid_spread(r.get("std"), r.get("kid_one_subset", False))
        ref = r["reference"]
        lines.append(f"{r['metric']:<10} {val:>22} {r['n_samples']:>7}  {ref['dataset']} {ref['split']} ({ref['size']})"
                     + ("  [reference cached]" if ref.get("cached") else ""))
    for r in records:
        if r["metric"] == "nll":
            lines.append(f"nll: {r['bound']}")
            lines.append(f"  {'term (per image)':<48} {'nats':>12} {'bits/dim':>9}")
            for k, v in r["terms_nats"].items():
                lines.append(f"  {r['term_labels'].get(k, k):<48} {v:>12.2f} {r['terms_bits_per_dim'][k]:>9.4f}")
            lines.append(f"  {'dequantisation, log 256 per dim':<48} {'':>12} {r['dequantization_bits_per_dim']:>9.4f}")
            lines.append(f"  {'total (± std. error)':<48} {r['nats_per_image']:>12.2f} {r['value']:>9.4f}"
                         f" ± {r['std_error_bits_per_dim']:.4f}")
    return "\n".join(lines)
