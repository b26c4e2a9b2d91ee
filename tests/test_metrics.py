"""Metrics: Gaussian KL and the KDE bound against closed forms, the IHDM ELBO on toys with known
answers, bits/dim, FID/KID/PRC through torch-fidelity with a tiny stand-in extractor (never the
real Inception, except in the one slow test), the reference cache, offline weights, CLI errors."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
import typer
from conftest import SHARED, TINY
from torch.distributions import Independent, Normal, kl_divergence
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from typer.testing import CliRunner

from genproc.cli_evaluate import evaluate_command
from genproc.data import TensorImageDataset, build_dataset
from genproc.engine import train
from genproc.errors import GenprocError
from genproc.metrics import bits_per_dim, evaluate
from genproc.metrics.fidelity import fidelity_metrics
from genproc.metrics.images import ReferenceImages, SampleStream, to_uint8_rgb
from genproc.metrics.inception import FILENAME, INCEPTION, ExtractorWeights, resolve_weights
from genproc.metrics.nll import dequantize
from genproc.processes.gaussian import gaussian_kl_iso, gaussian_nll_iso, kde_kl_upper_bound
from genproc.processes.heat import HeatConfig, HeatProcess
from genproc.processes.heat_elbo import HeatELBO
from genproc.processes.rng import SampleRNG
from genproc.recipe import recipe_from_dict
from genproc.run import load

TINY_FE = "genproc-test-tiny"
INCEPTION_FILE = SHARED / "weights" / FILENAME


class TinyExtractor(torch_fidelity.FeatureExtractorBase):
    """Stand-in for Inception: 4x4 average pool -> fixed random projection to 8 features."""

    loaded_from: list = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.register_buffer("proj", torch.randn(48, 8, generator=torch.Generator().manual_seed(0)))
        TinyExtractor.loaded_from.append(feature_extractor_weights_path)
        if feature_extractor_weights_path is not None:
            self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))

    @staticmethod
    def get_provided_features_list():
        return ("feat",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "feat"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        return (F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1) @ self.proj,)


if TINY_FE not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(TINY_FE, TinyExtractor)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("metrics") / "run"
    train(recipe_from_dict(json.loads(json.dumps(TINY))), run_dir, progress=False, log=lambda *_: None)
    return run_dir


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    p = tmp_path / "tiny_fe.pt"
    torch.save(TinyExtractor(TINY_FE, ["feat"]).state_dict(), p)
    return p


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every way out (DNS, connect) raises and is recorded."""
    attempts: list = []

    def deny(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    for obj, name in [(socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "getaddrinfo"),
                      (socket, "create_connection")]:
        monkeypatch.setattr(obj, name, deny)
    return attempts


# ------------------------------------------------------------------ Gaussian math


def test_gaussian_kl_and_nll_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 7, generator=g, dtype=torch.float64)
    for sq, sp in [(0.01, 0.0125), (0.3, 0.2), (1.0, 1.0)]:
        ref = kl_divergence(Independent(Normal(mq, sq), 1), Independent(Normal(mp, sp), 1))
        assert float(gaussian_kl_iso(((mq - mp) ** 2).sum(), 7, sq, sp)) == pytest.approx(float(ref), rel=1e-10)
        nll = -Independent(Normal(mp, sp), 1).log_prob(mq)
        assert float(gaussian_nll_iso(((mq - mp) ** 2).sum(), 7, sp)) == pytest.approx(float(nll), rel=1e-10)


def _exact_kde_kl(mean_q, comps, sq, sp, lo=-5.0, hi=5.0, m=1601):
    """KL[q || p], q = N(mean_q, sq^2), p = mean_i N(comps_i, sp^2), and the gap E_q[KL(phi || r(.|u))] with
    phi = softmax_i(-KL[q || N(comps_i, sp^2)]) (torch.distributions) and r(i|u) = p_i(u) / sum_j p_j(u),
    both by the trapezoid rule on a 1-D or 2-D grid. Returns (kl, gap)."""
    d = mean_q.numel()
    axis = torch.linspace(lo, hi, m, dtype=torch.float64)
    pts = torch.cartesian_prod(*([axis] * d)).reshape(-1, d)  # (M, d)
    log_q = Independent(Normal(mean_q, sq), 1).log_prob(pts)
    log_pi = Independent(Normal(comps[:, None], sp), 1).log_prob(pts[None])  # (N_T, M)
    log_p = torch.logsumexp(log_pi, 0) - math.log(len(comps))
    kl_i = kl_divergence(Independent(Normal(mean_q, sq), 1), Independent(Normal(comps, sp), 1))  # (N_T,)
    log_phi = torch.log_softmax(-kl_i, 0)[:, None]  # (N_T, 1)
    kl_phi_r = (log_phi.exp() * (log_phi - (log_pi - torch.logsumexp(log_pi, 0)))).sum(0)  # (M,)
    out = []
    for f in (log_q.exp() * (log_q - log_p), log_q.exp() * kl_phi_r):
        f = f.reshape([m] * d)
        for _ in range(d):
            f = torch.trapezoid(f, axis, dim=0)
        out.append(float(f))
    return tuple(out)


@pytest.mark.parametrize("d", [1, 2])
def test_kde_bound_is_an_upper_bound_on_the_exact_kl(d):
    g = torch.Generator().manual_seed(d)
    comps = torch.randn(5, d, generator=g, dtype=torch.float64)
    for mean_q, sq, sp in [(torch.zeros(d, dtype=torch.float64), 0.4, 0.5), (comps[0] + 0.2, 0.3, 0.6)]:
        bound = float(kde_kl_upper_bound(mean_q[None], [comps[:2], comps[2:]], sq, sp))  # two chunks
        exact, gap = _exact_kde_kl(mean_q, comps, sq, sp, m=1601 if d == 1 else 401)
        # For any weights phi: log p(u) = sum_i phi_i log(p_i(u) / (N_T phi_i)) + KL(phi || r(.|u)), so
        # KL[q || p] = log N_T + sum_i phi_i (KL_i + log phi_i) - E_q[KL(phi || r(.|u))]; at phi = softmax(-KL_i)
        # the first two terms are the bound: bound - exact = gap > 0, an identity. The trapezoid rule on these
        # Gaussians (>= 9 std inside the grid, step <= std / 12) is exact to ~1e-12.
        assert gap > 0 and bound == pytest.approx(exact + gap, abs=1e-9)
    one = comps[:1]  # one component: the bound is the exact Gaussian KL
    b1 = float(kde_kl_upper_bound(torch.zeros(1, d, dtype=torch.float64), [one], 0.4, 0.5))
    assert b1 == pytest.approx(_exact_kde_kl(torch.zeros(d, dtype=torch.float64), one, 0.4, 0.5, m=1601 if d == 1 else 401)[0], abs=1e-5)


# ------------------------------------------------------------------ the IHDM ELBO


def _toy(K=4, sigma=0.01, delta=0.0125):
    proc = HeatProcess(HeatConfig(K=K, sigma_blur_max=2.0, sigma=sigma, delta=delta))
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return proc, x, TensorImageDataset(x, "toy", None, "train")


def test_elbo_of_exact_reverse_equals_closed_form():
    """Net = the exact reverse mean of the one-image data set: all squared errors vanish and
    the bound is K Gaussian KLs plus -log N(0 | 0, delta^2) (torch.distributions), exactly."""
    proc, x, data = _toy()
    net = lambda u, k: proc.blur(x, int(k[0]) - 1) - u  # noqa: E731 - mu(u_k, k) = F(t_{k-1}) x
    t = HeatELBO(proc, data, torch.device("cpu")).terms(net, x, SampleRNG(0, [0], 12))
    assert float(t["L_kl"]) < 1e-9 and float(t["L_0"]) < 1e-9
    kl = kl_divergence(Normal(0.0, 0.01), Normal(0.0, 0.0125)) * 16
    nll0 = -Normal(torch.tensor(0.0, dtype=torch.float64), 0.0125).log_prob(torch.tensor(0.0, dtype=torch.float64)) * 16
    assert float(t["L_K"]) == pytest.approx(float(kl), rel=1e-6)  # N_T = 1: the App. A.3 bound is exact
    assert float(sum(t.values())) == pytest.approx(float(4 * kl + nll0), rel=1e-6)


@pytest.mark.parametrize("level,term", [(1, "L_0"), (2, "L_kl"), (4, "L_kl")])
def test_elbo_index_range(level, term):
    """An error c at one level lands in L_0 for k = 1 and in the KL sum for k = 2..K (not k = 1..K-1)."""
    proc, x, data = _toy()
    c = 0.003
    net = lambda u, k: proc.blur(x, int(k[0]) - 1) - u + (c if int(k[0]) == level else 0.0)  # noqa: E731
    t = HeatELBO(proc, data, torch.device("cpu")).terms(net, x, SampleRNG(0, [0], 12))
    other = "L_0" if term == "L_kl" else "L_kl"
    assert float(t[term]) == pytest.approx(16 * c**2 / (2 * 0.0125**2), rel=1e-4) and float(t[other]) < 1e-9


def test_elbo_terms_match_monte_carlo_of_eq5():
    """Eq. (7)'s closed-form terms vs a Monte Carlo estimate of Eq. (5) straight from the
    definitions of q (Eq. 4), p_theta (Eq. 8) and the one-component KDE prior."""
    K, sigma, delta, M = 3, 0.1, 0.15, 4000
    proc, x, data = _toy(K, sigma, delta)
    net = lambda u, k: -0.2 * u + 0.05 * k.view(-1, 1, 1, 1)  # noqa: E731 - an arbitrary, inexact net
    xs = x.expand(M, -1, -1, -1)
    t = HeatELBO(proc, data, torch.device("cpu")).terms(net, xs, SampleRNG(1, range(M), 12))
    closed = sum(t.values())
    g = torch.Generator().manual_seed(2)
    u = [xs] + [proc.blur(xs, k) + sigma * torch.randn(xs.shape, generator=g) for k in range(1, K + 1)]
    logn = lambda v, m, s: Normal(m, s).log_prob(v).flatten(1).sum(1)  # noqa: E731
    log_q = sum(logn(u[k], proc.blur(xs, k), sigma) for k in range(1, K + 1))
    log_p = logn(u[K], proc.blur(xs, K), delta)
    for k in range(1, K + 1):
        log_p = log_p + logn(u[k - 1], u[k] + net(u[k], torch.full((M,), k)), delta)
    mc = (log_q - log_p).double()
    se = math.sqrt(float(mc.var()) / M + float(closed.var()) / M)
    assert abs(float(mc.mean()) - float(closed.mean())) < 4 * se


def test_nll_plug_in_interface():
    """A process brings its bound through ``process.elbo(train_data, device)``; none: one clear error.

    The plugged-in model is a histogram density on [0,1)^N, p(x) = prod_i 256 P(floor(256 x_i)) with
    P(v) = (v + 1) / 32896: constant on every dequantisation bin, so Jensen's step is tight and the reported
    bits/dim must equal the exact code length -sum_i log2 P(v_i) / N of the 8-bit images, whatever U is."""
    from types import SimpleNamespace

    from genproc.metrics.nll import evaluate_nll

    seen: list = []

    class Histogram:
        labels, convention, convention_detail = {"hist": "histogram density"}, "dequantised", "test"

        def terms(self, net, x0, rng):
            seen.append((net, x0.shape[0]))
            v = torch.floor(x0.double() * 256)  # the bin of each dequantised value
            return {"hist": -torch.log(256 * (v + 1) / 32896).flatten(1).sum(1)}

    class Toy:
        needs_data_for_prior = True

        def __init__(self, has_elbo):
            self.has_elbo = has_elbo

        def elbo(self, train_data, device):
            seen.append((train_data, device))
            return Histogram() if self.has_elbo else None

    v = torch.randint(0, 256, (5, 1, 3, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    data, train, net = TensorImageDataset(v, "toy", None, "test"), TensorImageDataset(v[:2], "toy", None, "train"), object()
    run = SimpleNamespace(process=Toy(True), net=net, device=torch.device("cpu"), data=train, process_name="toy",
                          prior_data=lambda: train)
    r = evaluate_nll(run, data, 5, seed=3, batch_size=2)  # batches of 2, 2, 1
    code_length = -torch.log2((v.double() + 1) / 32896).flatten(1).sum(1)  # (5,) bits per image
    assert r["bits_per_dim"] == pytest.approx(float(code_length.mean()) / 12, rel=1e-12)
    assert r["n_images"] == 5 and r["dims"] == 12 and seen == [(train, run.device), (net, 2), (net, 2), (net, 1)]
    with pytest.raises(GenprocError, match="no likelihood"):
        evaluate_nll(SimpleNamespace(**{**vars(run), "process": Toy(False)}), data, 5)


def test_bits_per_dim_and_dequantization():
    assert bits_per_dim(0.0, 100) == pytest.approx(8.0)  # uniform density on [0,1)^N = 256 equiprobable levels
    assert bits_per_dim(-100 * math.log(2), 100) == pytest.approx(7.0)  # density 2^N on [0,1/2)^N: 128 levels
    v = torch.arange(256.0).view(1, 1, 16, 16)
    u = torch.rand(v.shape, generator=torch.Generator().manual_seed(0))
    y = dequantize(v / 255, u)
    assert torch.allclose(y, (v + u) / 256) and 0 <= y.min() and y.max() < 1


def test_nll_end_to_end_on_a_tiny_run(tiny_run):
    a = evaluate(tiny_run, "nll", n=6, batch_size=4, log=lambda *_: None)[0]
    b = evaluate(tiny_run, "nll", n=6, batch_size=6, log=lambda *_: None)[0]
    assert a["value"] == pytest.approx(b["value"], rel=1e-9)  # per-image noise: batching does not matter
    # bits per image = nats / log 2 + 8 bits per dim (the Jacobian 256^N of y = 256 x), N = 1 x 8 x 8
    assert a["value"] * 64 == pytest.approx(a["nats_per_image"] / math.log(2) + 8 * 64, rel=1e-12)
    # the (sigma, delta)-only part of Eq. (10)/(11) for K = 5, sigma = 0.01, delta = 0.0125, from torch.distributions;
    # the rest are a KL bound and squared errors, >= 0
    zero = torch.tensor(0.0, dtype=torch.float64)
    const = 64 * (4 * kl_divergence(Normal(zero, 0.01), Normal(zero, 0.0125)) - Normal(zero, 0.0125).log_prob(zero))
    assert a["terms_nats"]["const"] == pytest.approx(float(const), rel=1e-9)
    assert min(a["terms_nats"]["L_K"], a["terms_nats"]["L_kl"], a["terms_nats"]["L_0"]) >= 0
    assert sum(a["terms_nats"].values()) == pytest.approx(a["nats_per_image"], rel=1e-9)
    assert set(a["terms_nats"]) == {"L_K", "L_kl", "L_0", "const"} and a["n_samples"] == 6 and a["prior_size"] == 64
    rec = json.loads(Path(a["json"]).read_text())
    assert rec["metric"] == "nll" and "dequantisation" in rec["bound"] and rec["checkpoint_step"] == 6


# ------------------------------------------------------------------ FID / KID / PRC


def _ref(n=None, shift=0.0):
    d = build_dataset(recipe_from_dict(json.loads(json.dumps(TINY))).data, "test")
    if shift:
        d = TensorImageDataset((d.images * 0.6 + shift).clamp(0, 1), "digits", None, "test")
    return ReferenceImages(d, n)


def test_reference_images_drawn_at_random_are_a_seeded_subset():
    d = build_dataset(recipe_from_dict(json.loads(json.dumps(TINY))).data, "test")
    first, a, b, c = (ReferenceImages(d, 10), ReferenceImages(d, 10, random_seed=0), ReferenceImages(d, 10, random_seed=0),
                      ReferenceImages(d, 10, random_seed=1))
    assert len(set(a.index)) == 10 and all(0 <= i < len(d) for i in a.index) and a.index == b.index != c.index
    assert a.index != list(range(10)) and torch.equal(a[3], to_uint8_rgb(d[a.index[3]])) and torch.equal(first[3], to_uint8_rgb(d[3]))


def test_fid_kid_identical_sets_near_zero_and_shifted_larger(tmp_path):
    w = ExtractorWeights(TINY_FE, None, None, "none")
    kw = dict(weights=w, reference_name="ref-a", cache_root=tmp_path, log=lambda *_: None)
    same = fidelity_metrics(_ref(100), _ref(100), {"fid", "kid"}, **kw)
    shifted = fidelity_metrics(_ref(100, shift=0.3), _ref(100), {"fid", "kid"}, **kw)
    fid_same, fid_shift = same[torch_fidelity.KEY_METRIC_FID], shifted[torch_fidelity.KEY_METRIC_FID]
    kid_same, kid_shift = same[torch_fidelity.KEY_METRIC_KID_MEAN], shifted[torch_fidelity.KEY_METRIC_KID_MEAN]
    assert abs(fid_same) < 1e-8 and fid_shift > 1.0
    # KID's unbiased estimator is slightly negative for two copies of one set (the diagonal is
    # dropped within sets but not across them); next to a real shift it is ~0.
    assert abs(kid_same) < 0.01 * kid_shift


@pytest.mark.parametrize("metrics", [{"fid"}, {"fid", "kid"}])
def test_reference_cache_hit_on_second_call(tmp_path, metrics):
    w = ExtractorWeights(TINY_FE, None, None, "none")
    logs: list[str] = []
    first, second = _ref(), _ref()
    kw = dict(weights=w, reference_name="ref-b", cache_root=tmp_path, log=logs.append)
    r1 = fidelity_metrics(_ref(n=50), first, metrics, **kw)
    r2 = fidelity_metrics(_ref(n=50), second, metrics, **kw)
    assert first.reads > 0 and second.reads == 0  # the reference images were not read again
    assert not r1["reference_cached"] and r2["reference_cached"]
    assert "computing" in logs[0] and "cache hit" in logs[1]
    assert r1[torch_fidelity.KEY_METRIC_FID] == pytest.approx(r2[torch_fidelity.KEY_METRIC_FID])


def test_sample_stream_equals_direct_sampling(tiny_run):
    run = load(tiny_run)
    stream = SampleStream(run, 7, seed=3, batch_size=3)
    got = torch.stack([stream[i] for i in range(7)])
    want = to_uint8_rgb(run.sample(7, seed=3, batch_size=7, capture_every=-1).images)
    assert got.shape == (7, 3, 8, 8) and got.dtype == torch.uint8 and torch.equal(got, want)


def test_evaluate_fid_kid_prc_offline_with_weights_path(tiny_run, tiny_weights, tmp_path, no_network):
    logs: list[str] = []
    recs = evaluate(tiny_run, "fid,kid,prc", n=16, batch_size=8, extractor=TINY_FE, inception_weights=tiny_weights,
                    cache_dir=tmp_path / "cache", log=logs.append)
    assert no_network == [] and TinyExtractor.loaded_from[-1] == str(tiny_weights)
    assert [r["metric"] for r in recs] == ["fid", "kid", "precision", "recall"]
    for r in recs:
        rec = json.loads(Path(r["json"]).read_text())
        for key in ["metric", "value", "n_samples", "extractor", "weights_sha256", "sampling", "seed", "checkpoint_step",
                    "genproc_version", "wall_time_s"]:
            assert key in rec, key
        assert rec["reference"]["split"] == "test" and rec["reference"]["size"] == 297 and rec["n_samples"] == 16
        assert len(rec["weights_sha256"]) == 64 and rec["sampling"]["delta"] == 0.0125 and rec["checkpoint_step"] == 6
    again = evaluate(tiny_run, "fid,kid,prc", n=16, batch_size=8, extractor=TINY_FE, inception_weights=tiny_weights,
                     cache_dir=tmp_path / "cache", log=logs.append)
    assert again[0]["reference"]["cached"] and any("cache hit" in m for m in logs)
    assert again[0]["value"] == pytest.approx(recs[0]["value"])


@pytest.mark.skipif(not INCEPTION_FILE.is_file(), reason="offline Inception weights not present")
def test_real_inception_extractor_built_from_path_without_network(no_network, monkeypatch):
    """The real extractor is only built (no forward pass): its weights come from the file, no download."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from torch_fidelity.utils import create_feature_extractor

    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    w = resolve_weights(INCEPTION, INCEPTION_FILE)
    assert w.sha256 == "10ba1d7945fbe6fe5964446d24ab781e8ac70b11f8f67422528064f19fc24c4f"
    create_feature_extractor(INCEPTION, ["2048"], cuda=False, feature_extractor_weights_path=w.path, verbose=False)
    assert no_network == []


def test_env_var_and_missing_weights(tmp_path, monkeypatch, tiny_weights, no_network):
    monkeypatch.setenv("GENPROC_INCEPTION_WEIGHTS", str(tiny_weights))
    assert resolve_weights(INCEPTION).source == "env"
    monkeypatch.delenv("GENPROC_INCEPTION_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(GenprocError, match="--inception-weights PATH"):
        resolve_weights(INCEPTION)
    assert no_network  # the one download attempt was refused


# ------------------------------------------------------------------ CLI


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("evaluate")(evaluate_command)
    return app


def _one_line_error(args, *needles):
    r = CliRunner().invoke(_app(), ["evaluate", *map(str, args)])
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    for n in needles:
        assert n in text, text


def test_cli_errors(tiny_run, tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("GENPROC_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _one_line_error([tiny_run, "--metrics", "fid,fdi"], "unknown metric 'fdi'", "known: fid, kid, prc, nll")
    _one_line_error([tiny_run, "--n", "0"], "--n must be >= 1")
    _one_line_error([tmp_path, "--metrics", "fid"], "no checkpoint in")
    _one_line_error([tiny_run, "--metrics", "fid", "--inception-weights", tmp_path / "nope.pth"], "weights not found", "nope.pth")
    _one_line_error([tiny_run, "--metrics", "kid"], "no InceptionV3 weights", "--inception-weights PATH")


def test_cli_prints_table(tiny_run):
    r = CliRunner().invoke(_app(), ["evaluate", str(tiny_run), "--metrics", "nll", "--n", "4", "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    assert "bits/dim" in r.output and "dequantisation" in r.output and "wrote " in r.output


@pytest.mark.slow
def test_real_inception_fid_on_tiny_run(tiny_run, tmp_path):
    """The real InceptionV3 (minutes on CPU): FID/KID of 50 samples against the digits test split."""
    recs = evaluate(tiny_run, "fid,kid", n=50, inception_weights=INCEPTION_FILE, cache_dir=tmp_path)
    assert recs[0]["value"] > 0 and recs[0]["extractor"] == INCEPTION


class ConvExtractor(TinyExtractor):
    """A stand-in with a 4-D conv weight, to see the channels-last swap take effect."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list, **kwargs)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return super().forward((self.conv(x.float()).clamp(0, 255)).to(torch.uint8))


CONV_FE = "genproc-test-conv"
if CONV_FE not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(CONV_FE, ConvExtractor)


def test_channels_last_extractor_same_features_and_registry_restored():
    from torch_fidelity.utils import create_feature_extractor

    from genproc.metrics.fidelity import channels_last_extractor

    torch.manual_seed(0)
    plain = create_feature_extractor(CONV_FE, ["feat"], cuda=False)
    with channels_last_extractor(CONV_FE):
        torch.manual_seed(0)
        fast = create_feature_extractor(CONV_FE, ["feat"], cuda=False)
    assert FEATURE_EXTRACTORS_REGISTRY[CONV_FE] is ConvExtractor and isinstance(fast, ConvExtractor)
    assert fast.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(fast(x)[0], plain(x)[0])
    with pytest.raises(RuntimeError), channels_last_extractor(CONV_FE):
        raise RuntimeError("boom")
    assert FEATURE_EXTRACTORS_REGISTRY[CONV_FE] is ConvExtractor


def test_evaluate_keeps_finished_metrics_when_a_later_one_fails(tiny_run, tmp_path, monkeypatch):
    import sys

    ev = sys.modules["genproc.metrics.evaluate"]  # the package re-exports the function under the same name

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "_nll_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny_run, "fid,nll", n=8, seed=11, batch_size=8, extractor=TINY_FE, cache_dir=tmp_path,
                 log=lambda *_: None)
    saved = list((Path(tiny_run) / "eval").glob("fid-*-n8-seed11*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["metric"] == "fid"
    assert not list((Path(tiny_run) / "eval").glob("*.tmp"))


def test_heartbeat_logs_at_most_once_per_interval_and_at_the_end():
    from genproc.progress import Heartbeat

    now = [0.0]
    lines: list[str] = []
    beat = Heartbeat("sampling", 1000, lines.append, every_s=60, clock=lambda: now[0])
    for _ in range(10):  # 100 images every 20 s: 5 img/s
        now[0] += 20
        beat.update(100)
    assert len(lines) == 4  # at 60, 120, 180 s and at the end (200 s)
    assert lines[0] == "sampling: 300/1000 img, 5 img/s, about 2 min left"
    assert lines[-1] == "sampling: 1000/1000 img, 5 img/s, done"


def test_evaluate_logs_progress_when_not_a_terminal(tiny_run, tmp_path, monkeypatch):
    import genproc.progress

    monkeypatch.setattr(genproc.progress, "EVERY_S", 0.0)
    logs: list[str] = []
    evaluate(tiny_run, "fid,nll", n=8, seed=12, batch_size=4, extractor=TINY_FE, cache_dir=tmp_path, log=logs.append)
    assert any(m.startswith("sampling: 4/8 img") for m in logs) and any(m.startswith("nll: 8/8 img") for m in logs)
