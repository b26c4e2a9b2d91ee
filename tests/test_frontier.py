"""The FID-per-network-call frontier end to end through the CLI, on tiny runs with torch-fidelity's stand-in extractor."""

from __future__ import annotations

import json
import shutil

from conftest import one_line_error
from test_metrics import TINY_FE, no_network  # noqa: F401 - registers the tiny stand-in extractor; a fixture
from typer.testing import CliRunner

from genproc.cli import app
from genproc.frontier import largest_n, plan, steps_for_calls
from genproc.run import load

runner = CliRunner()


def test_steps_for_calls_take_the_most_steps_that_fit(tiny_runs):
    """One call per step for DDIM, 2 N - 1 for Heun; the chain of a K = 5 process cannot go above 5."""
    ddpm, heat = load(tiny_runs["ddpm"]), load(tiny_runs["heat"])
    assert steps_for_calls(ddpm, "ddim", {}, 7) == (7, 7)
    steps, calls = steps_for_calls(ddpm, "heun", {}, 7)
    assert calls <= 7 and calls == 2 * len(ddpm.with_sampling(sampler="heun", steps=steps).sampler.levels(ddpm.process)) - 1
    assert steps_for_calls(heat, "chain", {}, 50) == (5, 5)
    points = plan(heat, [2, 3, 50], None)
    assert {(p["sampler"], p["calls"]) for p in points} == {("chain", 2), ("chain", 3), ("chain", 5),
                                                            ("heat_jump", 2), ("heat_jump", 3), ("heat_jump", 5)}
    assert [p for p in points if p["sampler"] == "chain" and p["calls"] == 5][0]["target"] == 50  # not repeated


def test_frontier_command_measures_every_pair_and_resumes(tiny_runs, tmp_path):
    out = tmp_path / "front"
    args = ["frontier", str(tiny_runs["heat"]), str(tiny_runs["ddpm"]), "--calls", "2,3", "--n", "6", "--n-ref", "12",
            "--seeds", "0,1", "--extractor", TINY_FE, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--samplers", "ddim:clip=clamp",
            "--samplers", "heat_jump", "--samplers", "dpmpp_2m"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "frontier.json").read_text())
    got = {(p["process"], p["sampler"], p["calls"], p["seed"]) for p in rep["points"]}
    want = {(proc, s, c, seed) for seed in (0, 1) for proc, s, c in
            [("ihdm", "heat_jump", 2), ("ihdm", "heat_jump", 3), ("ihdm", "chain", 5),  # + its full chain
             ("ddpm", "ddim", 2), ("ddpm", "ddim", 3), ("ddpm", "dpmpp_2m", 2), ("ddpm", "dpmpp_2m", 3),
             ("ddpm", "ancestral", 20)]}
    assert got == want
    assert all(p["sampling"]["calls"] == p["calls"] for p in rep["points"])  # the record says the calls it made
    assert all(p["sampling"]["clip"] == "clamp" for p in rep["points"] if p["sampler"] == "ddim")
    assert rep["real_floor_fid"] is not None and (out / "frontier.png").is_file()
    md = (out / "frontier.md").read_text()
    assert "| DDPM | ddim clip=clamp |" in md and "real-vs-real floor at this n" in md and "full chain" in md
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    r = runner.invoke(app, args)  # a rerun measures nothing again, the floor included
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == before
    assert "real-vs-real floor: kept in" in r.output
    assert json.loads((out / "frontier.json").read_text())["real_floor_fid"] == rep["real_floor_fid"]
    # a second sample count into the same folder: its own table (FID's bias depends on n), the plot at the largest n;
    # two runs of one process stay apart (their points, records and rows name the run)
    other = tmp_path / "heat_b"
    shutil.copytree(tiny_runs["heat"], other)
    r = runner.invoke(app, ["frontier", str(tiny_runs["heat"]), str(other), "--calls", "2", "--n", "8", "--n-ref", "12",
                            "--seeds", "0", "--extractor", TINY_FE, "--out", str(out), "--cache-dir",
                            str(tmp_path / "cache"), "--samplers", "heat_jump", "--no-full-chain", "--no-floor"])
    assert r.exit_code == 0, r.output
    md = (out / "frontier.md").read_text()
    big, small = md.index("n = 8 samples per point, sample seed(s) 0."), md.index("n = 6 samples per point")
    rows = [line for line in md[big:small].splitlines() if line.startswith("| IHDM (")]
    assert big < small and len(rows) == 2 and "| IHDM (heat_b) | heat_jump |" in rows[1] and "DDPM" not in md[big:small]
    recs = [json.loads(p.read_text()) for p in (out / "points").glob("*-n8-seed0.json")]
    assert sorted(q["run"] for q in recs) == sorted([tiny_runs["heat"].name, "heat_b"])
    assert all(json.loads(open(q["record"]).read())["run_dir"] == q["run_dir"] for q in recs)  # no record overwritten
    assert "real-vs-real floor at this n (6 training images drawn at random (seed 0))" in md[small:]
    one_line_error(runner.invoke(app, ["frontier", str(tiny_runs["heat"]), "--calls", "ten", "--out", str(tmp_path / "x")]),
                   "--calls expects comma-separated integers")
    one_line_error(runner.invoke(app, ["frontier", str(tiny_runs["heat"]), "--samplers", "nope", "--out", str(tmp_path / "y")]),
                   "unknown sampler 'nope'")


def test_largest_n_keeps_one_sample_count_per_cell():
    def pt(n, seed, target=20):
        return {"label": "IHDM", "sampler": "heat_jump", "settings": {}, "target": target, "n": n, "seed": seed}
    pts = [pt(500, 0), pt(1000, 0), pt(1000, 1), pt(500, 0, target=10)]
    assert largest_n(pts) == [pt(1000, 0), pt(1000, 1), pt(500, 0, target=10)]
