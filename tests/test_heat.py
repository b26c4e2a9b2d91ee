"""The IHDM forward process (paper Sec. 3, App. A.1, B.5) against closed forms.

Every expected value below is derived from the math (scipy's DCT, the Laplacian's
eigenvalues, the Gaussian heat kernel, the schedule formula), never a stored number.
Tolerances are float32 round-off unless a comment derives a larger one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import scipy.special
import torch

from genproc.data.base import TensorImageDataset
from genproc.errors import GenprocError
from genproc.processes.dct import dct2, heat_forward, idct2, laplacian_eigenvalues
from genproc.processes.heat import HeatConfig, HeatProcess, blur_schedule
from genproc.processes.rng import SampleRNG

METHODS = ["matmul", "fft", "scipy"]  # "auto" only dispatches to one of them: see test_auto_dispatch
# (N, C, H, W): square MNIST/CIFAR sizes, odd and non-square sides, and a 256-wide image
# (the size at which "auto" switches to the FFT path).
SHAPES = [(2, 1, 28, 28), (2, 3, 32, 32), (2, 2, 17, 30), (1, 1, 7, 1), (1, 1, 8, 256), (1, 1, 256, 256)]
F32_TOL = 1e-5  # float32 DCT vs float64 scipy, inputs ~ N(0, 1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=_gen(seed))


def _max_err(a: torch.Tensor, b: torch.Tensor | np.ndarray) -> float:
    b = torch.as_tensor(np.asarray(b))
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------- DCT (App. A.1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dct2_idct2_match_scipy_ortho(shape, method):
    x = _randn(*shape)
    ref = scipy.fft.dctn(x.double().numpy(), type=2, axes=(-2, -1), norm="ortho")
    y = dct2(x, method)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert _max_err(y, ref) <= F32_TOL
    ref_inv = scipy.fft.idctn(x.double().numpy(), type=2, axes=(-2, -1), norm="ortho")
    assert _max_err(idct2(x, method), ref_inv) <= F32_TOL


@pytest.mark.parametrize("method", METHODS)
def test_dct2_float64_is_exact(method):
    """Both paths are dtype-generic: in float64 they agree with scipy to float64 round-off."""
    x = _randn(2, 17, 30).double()
    ref = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    assert dct2(x, method).dtype == torch.float64
    assert _max_err(dct2(x, method), ref) <= 1e-12
    assert _max_err(idct2(torch.from_numpy(ref), method), x) <= 1e-12


@pytest.mark.parametrize(
    "shape,fwd,inv",
    [((3, 2, 28, 28), "matmul", "matmul"), ((3, 2, 28, 28), "fft", "fft"), ((1, 1, 17, 30), "matmul", "fft"),
     ((1, 1, 17, 30), "fft", "matmul"), ((1, 1, 256, 256), "fft", "fft"), ((1, 1, 256, 256), "matmul", "matmul")],
)
def test_dct_round_trip(shape, fwd, inv):
    x = _randn(*shape)
    assert _max_err(idct2(dct2(x, fwd), inv), x) <= F32_TOL


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("hw", [(8, 8), (17, 30)])
def test_dct2_is_orthonormal(method, hw):
    """The DCT of every unit impulse gives the transform matrix M (HW, HW); M Mᵀ = I."""
    h, w = hw
    eye = torch.eye(h * w).reshape(h * w, h, w)
    m = dct2(eye, method).reshape(h * w, h * w).double()
    assert _max_err(m @ m.T, torch.eye(h * w)) <= 1e-5
    # Parseval on a random batch: energy is preserved per image.
    x = _randn(4, 3, h, w)
    ex, ey = x.double().pow(2).sum((-2, -1)), dct2(x, method).double().pow(2).sum((-2, -1))
    torch.testing.assert_close(ey, ex, rtol=1e-5, atol=0)


def test_laplacian_eigenvalues_closed_form():
    """Eq. (21): lambda_nm = pi^2 (n^2/H^2 + m^2/W^2) for the Neumann cosine basis."""
    h, w = 17, 30
    lam = laplacian_eigenvalues(h, w)
    n, m = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ref = np.pi**2 * (n**2 / h**2 + m**2 / w**2)
    assert lam.shape == (h, w) and lam.dtype == torch.float32
    np.testing.assert_allclose(lam.numpy(), ref, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- heat operator F(t) (Eq. 2)


def _cos_mode(h: int, w: int, n: int, m: int) -> torch.Tensor:
    """The Neumann eigenfunction cos(pi n y / H) cos(pi m x / W) sampled at pixel centres."""
    y = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    x = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    return torch.cos(math.pi * n * y)[:, None] * torch.cos(math.pi * m * x)[None, :]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (1, 2, 17, 30), (1, 1, 256, 256)], ids=lambda s: "x".join(map(str, s)))
def test_heat_t0_is_identity(shape, method):
    x = _rand(*shape)
    assert _max_err(heat_forward(x, 0.0, method), x) <= F32_TOL


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("hw", [(28, 28), (17, 30), (256, 256)])
def test_heat_eigenmode_decay(method, hw):
    """A single cosine mode (n, m) is an eigenfunction: F(t) phi = exp(-lambda_nm t) phi."""
    h, w = hw
    t = 0.7
    modes = [(0, 0), (1, 0), (0, 1), (3, 5), (h // 2, w // 3), (h - 1, w - 1)]
    x = torch.stack([_cos_mode(h, w, n, m) for n, m in modes])[:, None].float()  # (M, 1, H, W)
    decay = torch.tensor([math.exp(-(math.pi**2) * (n**2 / h**2 + m**2 / w**2) * t) for n, m in modes])
    expected = x.double() * decay.double()[:, None, None, None]
    assert _max_err(heat_forward(x, t, method), expected) <= 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_heat_semigroup(method):
    """F(a) F(b) = F(a + b): the heat flow is a one-parameter semigroup."""
    x = _rand(3, 2, 17, 30)
    a, b = 0.3, 2.45
    lhs = heat_forward(heat_forward(x, b, method), a, method)
    assert _max_err(lhs, heat_forward(x, a + b, method)) <= F32_TOL
    # ... also with per-sample times
    ta, tb = torch.tensor([0.1, 1.0, 7.0]), torch.tensor([0.5, 0.0, 3.0])
    lhs = heat_forward(heat_forward(x, tb, method), ta, method)
    assert _max_err(lhs, heat_forward(x, ta + tb, method)) <= F32_TOL


@pytest.mark.parametrize("method", METHODS)
def test_heat_preserves_channel_mean_and_tends_to_it(method):
    """Neumann boundaries conserve each channel's mean; as t -> inf the image becomes that mean."""
    x = _rand(2, 3, 17, 30)
    mean = x.double().mean((-2, -1), keepdim=True)
    for t in (0.5, 10.0, 200.0):
        assert _max_err(heat_forward(x, t, method).double().mean((-2, -1), keepdim=True), mean) <= 1e-6
    # Slowest non-constant mode decays as exp(-pi^2 t / max(H, W)^2); at t = 1e5 it is < 1e-40.
    assert _max_err(heat_forward(x, 1e5, method), mean.expand_as(x)) <= 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_heat_is_symmetric_and_differentiable(method):
    """d/dx sum(F(t)x * w) = F(t)ᵀ w = F(t) w, as F(t) = V exp(-Lambda t) Vᵀ is symmetric."""
    x = _rand(2, 3, 17, 30).requires_grad_()
    w = _randn(2, 3, 17, 30, seed=1)
    t = torch.tensor([0.8, 3.0])
    (heat_forward(x, t, method) * w).sum().backward()
    assert _max_err(x.grad, heat_forward(w, t, method)) <= F32_TOL


@pytest.mark.parametrize("method", METHODS)
def test_heat_per_sample_t_equals_separate_calls(method):
    x = _rand(4, 3, 28, 28)
    t = torch.tensor([0.0, 0.125, 3.0, 200.0])
    batched = heat_forward(x, t, method)
    for i in range(4):
        assert _max_err(batched[i : i + 1], heat_forward(x[i : i + 1], float(t[i]), method)) <= 1e-6


def test_auto_dispatch():
    """'auto' on the CPU is the matmul path up to CPU_MATMUL_MAX_SIDE and scipy above it (bit-identical); 'scipy' on
    another device is a one-line error."""
    from genproc.errors import GenprocError
    from genproc.processes.dct import CPU_MATMUL_MAX_SIDE

    small, big = _randn(1, 1, CPU_MATMUL_MAX_SIDE, 20), _randn(1, 1, 20, CPU_MATMUL_MAX_SIDE + 1)
    assert torch.equal(dct2(small, "auto"), dct2(small, "matmul"))
    assert torch.equal(idct2(small, "auto"), idct2(small, "matmul"))
    assert torch.equal(dct2(big, "auto"), dct2(big, "scipy"))
    assert torch.equal(heat_forward(big, 2.0, "auto"), heat_forward(big, 2.0, "scipy"))
    assert torch.equal(heat_forward(big, 2.0), heat_forward(big, 2.0, "auto"))  # the default
    with pytest.raises(GenprocError, match="CPU only"):
        dct2(small.to("meta"), "scipy")


@pytest.mark.parametrize("method", ["fft", "scipy", "matmul"])
def test_dct_gradient_is_the_inverse_transform(method):
    """The DCT is orthonormal, so the gradient of <g, dct2(x)> is idct2(g) (and of <g, idct2(y)> is dct2(g)): checked
    against the dense matrices, including the scipy path's autograd function, on a non-square odd size."""
    x = _randn(2, 1, 9, 14).double().requires_grad_()
    g = _randn(2, 1, 9, 14).double()
    (dct2(x, method) * g).sum().backward()
    assert _max_err(x.grad, idct2(g, "matmul")) <= 1e-12
    y = _randn(2, 1, 9, 14).double().requires_grad_()
    (idct2(y, method) * g).sum().backward()
    assert _max_err(y.grad, dct2(g, "matmul")) <= 1e-12


def test_heat_methods_agree():
    x = _rand(2, 3, 32, 32)
    t = torch.tensor([0.5, 12.0])
    ref = heat_forward(x, t, "matmul")
    assert _max_err(heat_forward(x, t, "fft"), ref) <= F32_TOL
    assert _max_err(heat_forward(x, t, "auto"), ref) <= F32_TOL


def test_heat_full_precision_under_bf16_autocast():
    """Inside a bf16 autocast region (as in training) F(t) still runs in float32.

    bf16 has an 8-bit mantissa (relative error ~4e-3); float32 round-off is ~1e-7, so a
    1e-5 tolerance tells the two apart by more than two orders of magnitude.
    """
    x = _rand(2, 3, 32, 32)
    t = torch.tensor([0.5, 4.0])
    ref = heat_forward(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = heat_forward(x, t)
        y_bf16_in = heat_forward(x.bfloat16(), t)
    assert y.dtype == torch.float32 and y_bf16_in.dtype == torch.float32
    assert _max_err(y, ref) <= F32_TOL
    assert _max_err(y_bf16_in, heat_forward(x.bfloat16().float(), t)) <= F32_TOL


def test_heat_rejects_unknown_method():
    with pytest.raises(ValueError, match="DCT method"):
        heat_forward(_rand(1, 1, 8, 8), 1.0, "dft")


# -- agreement with Gaussian blur of variance sigma_B^2 = 2t (Sec. 3.1)
#
# On the pixel grid F(t) multiplies each cosine frequency omega in [0, pi) (radians per
# pixel) by exp(-omega^2 t): the continuous heat kernel, band-limited to the Nyquist
# band. A *sampled* Gaussian of std sigma = sqrt(2t) has, by Poisson summation, the
# frequency response sum_m exp(-(omega + 2 pi m)^2 t): the same plus aliased copies.
# The two differ by those copies only, which gives closed-form tolerances:
#   * per frequency (1-D): a = sum_{m != 0} exp(-(omega + 2 pi m)^2 t) <= ~exp(-pi^2 t);
#     in 2-D |h1 h2 - g1 g2| <= a (|h2| + |g1|) <= a (2 + a);
#   * per kernel tap (1-D): |h[j] - g[j]| <= (1/2pi) int_{|omega|>pi} exp(-omega^2 t)
#     = erfc(pi sqrt(t)) / (2 sqrt(pi t)) =: e1; in 2-D e1 (max h + max g) + e1^2.
# For sigma_B = 1.5 (t = 1.125): a ~ 1.5e-5 and e1 ~ 6.5e-7. Float32 slack 1e-6 on top.

SIGMA_B = 1.5
T_GAUSS = SIGMA_B**2 / 2


def _alias_bound(t: float) -> float:
    """max over omega in [0, pi] of sum_{m != 0} exp(-(omega + 2 pi m)^2 t), attained at omega = pi."""
    return sum(math.exp(-(((2 * m + 1) * math.pi) ** 2) * t) for m in range(-4, 4) if m != 0)


@pytest.mark.parametrize("method", METHODS)
def test_heat_matches_gaussian_kernel_on_delta(method):
    """A unit impulse in the interior spreads into the heat kernel ~ sampled N(0, 2t I).

    The impulse sits 32 px (> 20 sigma) from every border, so reflections from the Neumann
    boundary are below exp(-(2*32)^2 / (4t)) ~ 0 and the comparison holds at every pixel.
    """
    h = w = 64
    x = torch.zeros(1, 1, h, w)
    x[0, 0, h // 2, w // 2] = 1.0
    y = heat_forward(x, T_GAUSS, method)[0, 0].double()

    j = torch.arange(h, dtype=torch.float64) - h // 2
    g1 = torch.exp(-(j**2) / (2 * SIGMA_B**2)) / (math.sqrt(2 * math.pi) * SIGMA_B)  # sampled 1-D Gaussian
    g = g1[:, None] * g1[None, :]
    e1 = scipy.special.erfc(math.pi * math.sqrt(T_GAUSS)) / (2 * math.sqrt(math.pi * T_GAUSS))
    tol = e1 * 2 * g1.max().item() + e1**2 + 1e-6
    assert _max_err(y, g) <= tol
    # The same closed form with sigma off by 5% is far outside the tolerance.
    g1_off = torch.exp(-(j**2) / (2 * (1.05 * SIGMA_B) ** 2)) / (math.sqrt(2 * math.pi) * 1.05 * SIGMA_B)
    assert _max_err(y, g1_off[:, None] * g1_off[None, :]) > 100 * tol


@pytest.mark.parametrize("method", METHODS)
def test_heat_matches_gaussian_filter_reflect(method):
    """Whole-image agreement with scipy.ndimage.gaussian_filter(sigma=sqrt(2t), mode='reflect').

    scipy's 'reflect' (d c b a | a b c d) is the half-sample even extension implied by the
    DCT-II, i.e. exactly the Neumann boundary, so no border needs to be cut away. Interior
    pixels are also checked against an explicit separable sampled-Gaussian convolution.
    The error bound is in L2 (Parseval): ||F(t)x - G*x||_2 <= a (2 + a) ||x||_2, and the
    max-abs error is at most the L2 norm of the error.
    """
    x = _rand(1, 3, 64, 64)
    x = torch.from_numpy(scipy.ndimage.uniform_filter(x.numpy(), size=(1, 1, 3, 3), mode="reflect"))  # smooth-ish
    y = heat_forward(x, T_GAUSS, method)[0].double().numpy()
    xn = x[0].double().numpy()
    a = _alias_bound(T_GAUSS)
    bound = a * (2 + a) * np.linalg.norm(xn) + 1e-6  # + float32 slack
    ref = np.stack([scipy.ndimage.gaussian_filter(c, SIGMA_B, mode="reflect", truncate=12.0) for c in xn])
    assert np.linalg.norm(y - ref) <= bound
    assert np.abs(y - ref).max() <= bound

    # Explicit sampled kernel, zero padding, only pixels >= radius from the border (where
    # the padding cannot reach); truncation at 8 sigma drops < erfc(8/sqrt 2) ~ 1e-15 mass.
    r = int(math.ceil(8 * SIGMA_B))
    k1 = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * SIGMA_B**2)) / (math.sqrt(2 * math.pi) * SIGMA_B)
    conv = scipy.ndimage.convolve1d(scipy.ndimage.convolve1d(xn, k1, axis=-1, mode="constant"), k1, axis=-2, mode="constant")
    inner = (slice(None), slice(r, -r), slice(r, -r))
    assert np.abs(y[inner] - conv[inner]).max() <= bound
    # the border does differ from zero padding: Neumann keeps the mass in the image
    assert np.abs(y - conv).max() > 100 * bound


# ---------------------------------------------------------------- schedule (App. B.5)


@pytest.mark.parametrize("K,smin,smax", [(100, 0.5, 20.0), (200, 0.5, 24.0), (2, 0.5, 16.0), (7, 0.3, 0.3)])
def test_blur_schedule_endpoints_and_log_spacing(K, smin, smax):
    s = blur_schedule(K, smin, smax)
    assert s.shape == (K + 1,) and s.dtype == torch.float64
    assert s[0] == 0.0
    assert s[1].item() == pytest.approx(smin, rel=1e-12)
    assert s[K].item() == pytest.approx(smax, rel=1e-12)
    ratio = s[2:] / s[1:-1]  # constant rate of resolution decrease
    expected = (smax / smin) ** (1 / (K - 1))
    torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-12, atol=0)


def test_process_times_are_half_sigma_squared():
    proc = HeatProcess(HeatConfig(K=50, sigma_blur_max=16.0))
    torch.testing.assert_close(proc.t.double(), blur_schedule(50, 0.5, 16.0) ** 2 / 2, rtol=1e-6, atol=0)
    assert proc.t.dtype == torch.float32 and proc.num_levels == 50


def test_config_validation_names_the_field():
    HeatConfig().validate()
    for bad, field in [(dict(K=0), "process.K"), (dict(sigma_blur_min=0.0), "sigma_blur_min"),
                       (dict(sigma_blur_min=30.0), "sigma_blur_min"), (dict(delta=-1.0), "process.delta"),
                       (dict(dct="dft"), "process.dct")]:
        with pytest.raises(GenprocError, match=field):
            HeatConfig(**bad).validate()


# ---------------------------------------------------------------- training (Alg. 1)


def _proc(K: int = 10, **kw) -> HeatProcess:
    return HeatProcess(HeatConfig(K=K, sigma_blur_max=8.0, **kw))


def test_training_levels_cover_1_to_K_inclusive():
    proc = _proc(K=10)
    k = proc.draw_training_levels(20_000, _gen(0))
    assert k.dtype == torch.int64 and k.shape == (20_000,)
    assert k.min() == 1 and k.max() == 10
    counts = torch.bincount(k, minlength=11)[1:].double()
    # uniform: each count ~ Binomial(20000, 0.1), std ~ 42; 6 std is a safe margin
    assert (counts - 2000).abs().max() < 6 * math.sqrt(20_000 * 0.1 * 0.9)
    assert torch.equal(k, proc.draw_training_levels(20_000, _gen(0)))  # reproducible from the generator


def test_training_pair_matches_alg1():
    proc = _proc(K=10)
    x0 = _rand(6, 3, 17, 30)
    eps = _randn(6, 3, 17, 30, seed=1)
    k = torch.tensor([1, 2, 5, 9, 10, 1])
    u, target = proc.training_pair(x0, k, eps)
    assert u.shape == target.shape == x0.shape and u.dtype == target.dtype == torch.float32
    s = blur_schedule(10, 0.5, 8.0)
    for i in range(6):
        ki = int(k[i])
        blur_k = heat_forward(x0[i : i + 1], float(s[ki]) ** 2 / 2)
        blur_km1 = heat_forward(x0[i : i + 1], float(s[ki - 1]) ** 2 / 2)
        # input u_k = F(t_k) x0 + sigma eps
        assert _max_err(u[i : i + 1], blur_k + proc.cfg.sigma * eps[i : i + 1]) <= 1e-6
        # target + input = F(t_{k-1}) x0, so mu = u + f regresses onto the less blurred image
        assert _max_err(target[i : i + 1] + u[i : i + 1], blur_km1) <= 1e-6
    # k = 1: t_0 = 0, the target is x0 - u_1 (Eq. 11)
    ones = k == 1
    assert _max_err(target[ones], x0[ones] - u[ones]) <= F32_TOL
    # The loss is the mean squared error over batch and pixels.
    net_out = _randn(*x0.shape, seed=2)
    assert proc.loss(net_out, target).item() == pytest.approx(torch.mean((net_out - target) ** 2).item(), rel=1e-6)
    assert proc.loss(net_out.bfloat16(), target).dtype == torch.float32


def test_blur_int_level_equals_tensor_levels():
    proc = _proc(K=10)
    x = _rand(3, 1, 28, 28)
    per_sample = proc.blur(x, torch.tensor([4, 4, 4]))
    assert _max_err(proc.blur(x, 4), per_sample) == 0.0
    assert _max_err(proc.blur(x, 0), x) <= F32_TOL


# ---------------------------------------------------------------- sampling (Alg. 2, Sec. 3.2)


def test_reverse_levels_run_K_to_1():
    assert _proc(K=10).reverse_levels() == list(range(10, 0, -1))


def test_reverse_step_noise_only_above_level_1():
    proc = _proc(K=10, delta=0.0125)
    u, f, noise = _rand(2, 3, 8, 8), _randn(2, 3, 8, 8, seed=1), _randn(2, 3, 8, 8, seed=2)
    # k = 1: the mean only, no noise (App. B.1)
    assert torch.equal(proc.reverse_step(u, f, 1, 0, noise), u + f)
    for k in (2, 10):
        assert _max_err(proc.reverse_step(u, f, k, k - 1, noise), u + f + 0.0125 * noise) <= 1e-7
    assert _max_err(_proc(K=10, delta=0.5).reverse_step(u, f, 5, 4, noise), u + f + 0.5 * noise) <= 1e-7
    assert torch.equal(_proc(K=10, delta=0.0).reverse_step(u, f, 5, 4, noise), u + f)
    # f from a bf16 net comes back as float32
    assert proc.reverse_step(u, f.bfloat16(), 3, 2, noise).dtype == torch.float32


def _dataset(n: int, c: int = 1, s: int = 8) -> TensorImageDataset:
    return TensorImageDataset(_rand(n, c, s, s, seed=7), name="toy", root=None, split="train")


def test_prior_is_blurred_training_image_plus_delta_noise():
    proc = _proc(K=10, delta=0.0125)
    data = _dataset(5)
    blurred = heat_forward(data.images, proc.t[10].item())  # (5, 1, 8, 8): the KDE centres
    n = 400
    # delta = 0: every prior draw is exactly one of the blurred training images
    u0 = _proc(K=10, delta=0.0).prior(SampleRNG(0, range(n), stream=1), (1, 8, 8), data)
    assert u0.shape == (n, 1, 8, 8)
    dist = (u0[:, None] - blurred[None]).abs().flatten(2).amax(-1)  # (n, 5)
    assert dist.min(1).values.max() <= 1e-6
    assert len(set(dist.argmin(1).tolist())) == 5  # all KDE components get drawn
    # delta override: the residual from the drawn centre is N(0, delta^2)
    delta = 0.3
    u = _proc(K=10, delta=delta).prior(SampleRNG(0, range(n), stream=1), (1, 8, 8), data)
    resid = u - blurred[dist.argmin(1)]  # same rng -> same centres as above
    m = resid.numel()
    assert abs(resid.mean().item()) < 5 * delta / math.sqrt(m)
    assert abs(resid.std().item() / delta - 1) < 5 / math.sqrt(2 * m)
    # default delta comes from the config
    ud = proc.prior(SampleRNG(0, range(n), stream=1), (1, 8, 8), data)
    assert abs((ud - blurred[dist.argmin(1)]).std().item() / 0.0125 - 1) < 5 / math.sqrt(2 * m)


def test_prior_mean_is_blurred_data():
    """With one training image the KDE prior is N(F(t_K) x, delta^2 I): its mean is F(t_K) x."""
    n, delta = 1000, 0.2
    proc = _proc(K=10, delta=delta)
    data = _dataset(1, c=3)
    u = proc.prior(SampleRNG(3, range(n), stream=0), (3, 8, 8), data)
    blurred = heat_forward(data.images, proc.t[10].item())
    assert _max_err(u.mean(0, keepdim=True), blurred) < 5 * delta / math.sqrt(n)


def test_prior_without_data_is_a_clear_error():
    proc = _proc()
    with pytest.raises(GenprocError, match="training images"):
        proc.prior(SampleRNG(0, [0], stream=0), (1, 8, 8), None)


def test_to_image_clamps_to_unit_interval():
    u = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5])
    assert torch.equal(_proc().to_image(u), torch.tensor([0.0, 0.0, 0.25, 1.0, 1.0]))


# ---------------------------------------------------------------- per-sample RNG (DESIGN 4.9)


def test_sample_rng_independent_of_batch_composition():
    shape = (3, 5, 5)
    big = SampleRNG(42, [0, 1, 2], stream=1)
    small = SampleRNG(42, [2], stream=1)
    assert len(big) == 3 and len(small) == 1
    assert torch.equal(big.randint(1000)[2:], small.randint(1000))
    assert torch.equal(big.randn(shape)[2:], small.randn(shape))  # the streams stay in step
    # a tensor of indices in another order gives the same rows
    perm = SampleRNG(42, torch.tensor([2, 0]), stream=1).randn(shape)
    assert torch.equal(perm[0], SampleRNG(42, [2], stream=1).randn(shape)[0])
    assert torch.equal(perm[1], SampleRNG(42, [0, 1], stream=1).randn(shape)[0])


def test_sample_rng_streams_seeds_and_samples_differ():
    shape = (4, 4)
    base = SampleRNG(1, [0, 1], stream=0).randn(shape)
    assert not torch.equal(base[0], base[1])
    assert not torch.equal(base, SampleRNG(1, [0, 1], stream=1).randn(shape))
    assert not torch.equal(base, SampleRNG(2, [0, 1], stream=0).randn(shape))
    shared = SampleRNG(1, [5, 5], stream=0).randn(shape)  # same index = same stream (share-noise)
    assert torch.equal(shared[0], shared[1])
