"""``genproc analyze delta``: parsing the δ list, argmin / paper comparison, and the sweep end to end through
the CLI on tiny runs (FID with the tiny stand-in extractor, never the network), with its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import analyze_errors, analyze_ok
from PIL import Image
from test_metrics import TINY_FE, no_network  # noqa: F401 - registers the tiny stand-in extractor; a fixture
from typer.testing import CliRunner

from genproc.analysis.delta import agrees_with_paper, argmin_delta, parse_deltas
from genproc.cli import app
from genproc.errors import GenprocError

runner = CliRunner()


def test_parse_deltas():
    assert parse_deltas("0.01, 0,0.0125,0.01,") == [0.0, 0.01, 0.0125]
    assert parse_deltas([0.02, 0.005]) == [0.005, 0.02]
    with pytest.raises(GenprocError, match="'abc' is not a number"):
        parse_deltas("0.01,abc")
    with pytest.raises(GenprocError, match=">= 0, got -0.01"):
        parse_deltas("0,-0.01")
    with pytest.raises(GenprocError, match="no values given"):
        parse_deltas(" , ")
    with pytest.raises(GenprocError, match="finite"):
        parse_deltas("nan")


def test_argmin_and_paper_agreement():
    ds = [0.0, 0.005, 0.01, 0.0125, 0.015, 0.02]
    assert argmin_delta(ds, [None, 3.0, 2.0, 2.5, None, 4.0]) == 0.01
    assert argmin_delta(ds, [None] * 6) is None and argmin_delta(ds, [math.inf, 1.0, 1.0, 2, 3, 4]) == 0.005
    assert agrees_with_paper(ds, 0.01, 0.01, 1.0, 1.0) is True
    assert agrees_with_paper(ds, 0.0125, 0.01, 1.25, 1.33) is True
    assert agrees_with_paper([0.0, 0.01, 0.015, 0.02], 0.015, 0.01, 1.25, 1.33) is True  # nearest grid point to 1.33 sigma
    assert agrees_with_paper(ds, 0.02, 0.01, 1.25, 1.33) is False
    assert agrees_with_paper(ds, None, 0.01, 1.0, 1.0) is None and agrees_with_paper(ds, 0.01, 0.0, 1.0, 1.0) is None


def test_delta_command_end_to_end(tiny_runs, tmp_path, no_network):  # noqa: F811 - the imported fixture
    out = tmp_path / "d"
    r = analyze_ok("delta", tiny_runs.values(), out, "--deltas", "0,0.01,0.0125", "--n", "6", "--n-ref", "20",
                   "--metrics", "fid,nll", "--grid", "4", "--extractor", TINY_FE, "--cache-dir", str(tmp_path / "cache"),
                   "--batch-size", "6")
    assert "skipping ddpm" in r.output and "ihdm nll: 0: –, 0.01: " in r.output and "lowest at delta" in r.output
    assert no_network == []
    for f in ["delta_samples.png", "delta_metrics.png", "delta.json"]:
        assert (out / f).is_file(), f
    w, h = Image.open(out / "delta_samples.png").size
    assert w > h  # three grids side by side
    rep = json.loads((out / "delta.json").read_text())
    assert rep["settings"]["deltas"] == [0.0, 0.01, 0.0125] and rep["settings"]["nll_at_zero"].startswith("not measured")
    assert set(rep["results"]) == {"ihdm"} and set(rep["skipped"]) == {"ddpm"} and set(rep["runs"]) == {"ihdm"}
    assert rep["paper"]["fid_argmin_over_sigma"] == [1.25, 1.33]
    res = rep["results"]["ihdm"]
    assert res["sigma"] == 0.01 and res["trained_delta"] == 0.0125
    fid, nll = res["values"]["fid"], res["values"]["nll"]
    assert len(fid) == 3 and all(v is not None and math.isfinite(v) and v >= 0 for v in fid)
    assert nll[0] is None and "skipped" in res["records"]["nll"][0]
    assert all(v is not None and math.isfinite(v) and v > 0 for v in nll[1:])
    for rec in res["records"]["nll"][1:]:
        assert rec["unit"] == "bits/dim" and set(rec["terms_bits_per_dim"]) >= {"L_K", "L_kl", "L_0"}
    assert res["records"]["fid"][0]["extractor"] == TINY_FE
    # every evaluation ran at its own delta (the run's sampling settings), so the values move with delta
    assert [rec["sampling"]["delta"] for rec in res["records"]["fid"]] == [0.0, 0.01, 0.0125]
    assert [rec["sampling"]["delta"] for rec in res["records"]["nll"][1:]] == [0.01, 0.0125]
    assert len(set(fid)) == 3 and nll[1] != nll[2]
    # the argmin is the delta of the smallest reported value (numpy's argmin, NLL without delta = 0), in units of sigma
    deltas = rep["settings"]["deltas"]
    assert res["argmin"]["fid"] == deltas[int(np.argmin(fid))] and res["argmin"]["nll"] == deltas[1 + int(np.argmin(nll[1:]))]
    assert res["argmin_over_sigma"] == {m: pytest.approx(res["argmin"][m] / 0.01) for m in ("fid", "nll")}
    assert res["agrees_with_paper"] == {"fid": 1.25 * 0.01 - 1e-12 <= res["argmin"]["fid"] <= 1.33 * 0.01 + 1e-12,
                                        "nll": res["argmin"]["nll"] == 0.01}  # on this grid: in range or nearest its end
    assert not res["notes"]


def test_delta_errors(tiny_runs, tmp_path, no_network):  # noqa: F811 - the imported fixture
    heat = tiny_runs["heat"]
    analyze_errors("delta", tmp_path / "x", ([tiny_runs["ddpm"]], "needs a run whose process has the sampling-time key 'delta'", "ddpm"),
                   ([heat, "--deltas", "0.01,x"], "--deltas", "'x' is not a number"),
                   ([heat, "--deltas", "-0.01"], "--deltas", ">= 0"), ([tmp_path / "nope"], "run dir not found", "nope"),
                   ([heat, "--metrics", "fid,prc"], "prc", "not available"), options=("--extractor", TINY_FE, "--n", "2"))
    assert no_network == []


def test_help():
    r = runner.invoke(app, ["analyze", "delta", "--help"])
    assert r.exit_code == 0 and "--deltas" in r.output and "--inception-weights" in r.output
    assert "--extractor" not in r.output  # hidden, for tests
