"""``genproc analyze neighbours``: the chunked nearest-neighbour search against brute force, the KS statistic
against scipy, the memorisation numbers on planted copies, and the command end to end on tiny runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import DDIM_4_STEPS_OLD_FLAG, analyze_errors, analyze_ok
from PIL import Image
from typer.testing import CliRunner

from genproc.analysis.neighbours import ks_statistic, memorisation_stats, nearest_neighbours, p_closer
from genproc.cli import app
from genproc.data import TensorImageDataset
from genproc.errors import GenprocError

runner = CliRunner()


def _brute(q: torch.Tensor, t: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.cdist(q.reshape(len(q), -1).double(), t.reshape(len(t), -1).double(), compute_mode="donot_use_mm_for_euclid_dist")
    dist, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
    return idx, dist


@pytest.mark.parametrize("k", [1, 4])
def test_chunked_search_equals_brute_force(k):
    g = torch.Generator().manual_seed(0)
    q, t = torch.rand(13, 1, 5, 5, generator=g), torch.rand(50, 1, 5, 5, generator=g)
    ref_i, ref_d = _brute(q, t, k)
    for batch_size, query_batch in [(1, 1024), (7, 3), (50, 5), (1000, 13)]:
        idx, dist = nearest_neighbours(q, t, k=k, batch_size=batch_size, query_batch=query_batch)
        assert idx.shape == dist.shape == (13, k) and dist.dtype == torch.float64
        assert torch.equal(idx, ref_i), (batch_size, query_batch)
        torch.testing.assert_close(dist, ref_d, atol=1e-9, rtol=0)
    # an ImageDataset is read in chunks with get_batch; same answer
    idx, dist = nearest_neighbours(q, TensorImageDataset(t, "rand", None, "train"), k=k, batch_size=8)
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(dist, ref_d, atol=1e-9, rtol=0)


def test_training_image_is_its_own_neighbour():
    g = torch.Generator().manual_seed(1)
    t = torch.rand(40, 3, 4, 4, generator=g)
    q = torch.cat([t[[17, 3]], torch.rand(2, 3, 4, 4, generator=g)])
    idx, dist = nearest_neighbours(q, t, k=2, batch_size=6)
    assert idx[0, 0] == 17 and idx[1, 0] == 3
    assert dist[0, 0] < 1e-6 and dist[1, 0] < 1e-6 and (dist[:2, 1] > 0.1).all()
    with pytest.raises(GenprocError, match="--k must be between 1 and the training-set size 40"):
        nearest_neighbours(q, t, k=41)


def test_ks_statistic_matches_scipy_and_hand_cases():
    from scipy.stats import ks_2samp

    assert ks_statistic([1, 2, 3], [4, 5]) == 1.0
    assert ks_statistic([1, 2, 3, 4], [2.5]) == 0.5
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    rng = np.random.default_rng(0)
    for a, b in [(rng.normal(size=37), rng.normal(0.3, 1.2, size=80)), (rng.integers(0, 5, 30), rng.integers(0, 6, 45))]:
        assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)


def test_memorisation_stats_flag_copies():
    rng = np.random.default_rng(0)
    test_d = rng.uniform(2.0, 4.0, 200)
    copies = memorisation_stats(np.zeros(10), test_d, dims=64)
    assert copies["frac_samples_below_test_p01"] == 1.0 and copies["n_near_copies"] == 10 and copies["ks_statistic"] == 1.0
    alike = memorisation_stats(rng.uniform(2.0, 4.0, 100), test_d, dims=64)
    assert alike["frac_samples_below_test_p01"] < 0.05 and alike["n_near_copies"] == 0 and alike["ks_statistic"] < 0.25
    assert alike["samples"]["quantiles"]["0.5"] == alike["samples"]["median"]
    assert 0.8 < alike["median_ratio_samples_to_test"] < 1.2 and 0 < alike["ks_pvalue"] <= 1
    assert copies["p_sample_closer_than_test"] == 1.0 and 0.4 < alike["p_sample_closer_than_test"] < 0.6


def test_p_closer_against_pairwise_counting():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float)  # many ties
    pairs = (a[:, None] < b[None, :]) + 0.5 * (a[:, None] == b[None, :])
    assert p_closer(a, b) == pytest.approx(pairs.mean(), abs=1e-12)
    assert p_closer(b + 10, b) == 0.0 and p_closer(b, b + 10) == 1.0


def test_neighbours_command_end_to_end(tiny_runs, tmp_path):
    out = tmp_path / "nb"
    r = analyze_ok("neighbours", tiny_runs.values(), out, "--n", "5", "--k", "2", "--n-test", "30", "--batch-size", "4",
                   *DDIM_4_STEPS_OLD_FLAG)  # the renamed flag's hidden alias still works
    assert "ihdm: median NN distance samples" in r.output and "wrote " in r.output
    for f in ["neighbours_ihdm.png", "neighbours_ddpm.png", "neighbours_hist.png", "neighbours.json"]:
        assert (out / f).is_file(), f
    assert Image.open(out / "neighbours_ihdm.png").size[0] > 50
    rep = json.loads((out / "neighbours.json").read_text())
    assert rep["settings"]["k"] == 2 and set(rep["runs"]) == set(rep["results"]) == {"ihdm", "ddpm"}
    for res in rep["results"].values():
        assert res["train_size"] == 64 and res["dims"] == 64 and res["test_reference"]["used"] == 30
        assert np.array(res["nn_indices"]).shape == (5, 2) and np.array(res["nn_distances"]).shape == (5, 2)
        d = np.array(res["nn_distances"])
        assert (np.diff(d, axis=1) >= 0).all() and np.isfinite(d).all()
        assert res["samples"]["n"] == 5 and res["test"]["n"] == 30
        assert 0 <= res["frac_samples_below_test_p01"] <= 1 and 0 <= res["ks_statistic"] <= 1
        assert all(math.isfinite(res[key]) for key in ("test_p01", "median_ratio_samples_to_test", "ks_pvalue"))
    assert rep["runs"]["ddpm"]["sampling_overrides"] == {"sampler": "ddim", "steps": 4}
    assert rep["runs"]["ihdm"]["sampling_overrides"] == {}
    # the test images' distances do not depend on the run (same data): computed once, reported alike
    assert rep["results"]["ihdm"]["test"] == rep["results"]["ddpm"]["test"]


def test_neighbours_errors(tiny_runs, tmp_path):
    heat = tiny_runs["heat"]
    analyze_errors("neighbours", tmp_path / "x", ([tmp_path / "nope"], "run dir not found", "nope"),
                   ([heat, "--k", "65"], "--k 65 exceeds the 64 training images"), ([heat, "--n", "0"], "--n must be >= 1"))


def test_help():
    r = runner.invoke(app, ["analyze", "neighbours", "--help"])
    assert r.exit_code == 0 and "--n-test" in r.output and "--sampling" in r.output and "--sample-set" not in r.output
