"""The forward-process contract: what the engine, the metrics, the analyses and ``compare`` may ask of a process.

A process is a small object built from its config dataclass (``ProcessCls(cfg)``), pure math on tensors, that
never imports a network: the network reaches it as a plain callable ``net(x, k) -> tensor`` with x (B, C, H, W)
and k (B,) int64. Every tensor is NCHW float32. Data enter in [0, 1]; a process that works in another range
(DDPM in [-1, 1]) maps inside itself and maps back in :meth:`ForwardProcess.to_data_scale`.

Levels are integers: level 0 is the data, level ``num_levels`` the most degraded (IHDM: k = K, DDPM: t = T).
The *training levels* are drawn at random for each step (:meth:`draw_training_levels`); the *reverse schedule*
is the ordered list of levels the sampler visits (:meth:`reverse_levels`): two different things, named apart.

Adding a process = a module with a config (subclass of :class:`ProcessConfig`) and a process (subclass of
:class:`ForwardProcess`) + one call ``genproc.processes.register(name, ProcessCls, ConfigCls, aliases=())``.
The contract test suite (tests/test_contract.py) then runs over it with everything else.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from genproc.errors import GenprocError
from genproc.processes.rng import SampleRNG

Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # net(x: (B, C, H, W), k: (B,) int64) -> (B, C, H, W)


@dataclass
class ProcessConfig:
    """Base of every process config (a dataclass: each field is a recipe key under ``process:``).

    ``SAMPLING_KEYS`` names the fields that may change after training (they affect sampling and the ELBO,
    not the trained network), e.g. IHDM's sampling noise ``delta`` or DDPM's ``sampler``; every other field
    is fixed by the checkpoint. ``validate`` raises a one-line :class:`genproc.GenprocError` naming the field.
    """

    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """Check the values (types are checked by the recipe loader)."""


class ELBO(Protocol):
    """The optional capability "negative ELBO terms" (see :meth:`ForwardProcess.elbo`).

    ``terms(net, x0, rng)``: x0 (B, C, H, W), the dequantised data in [0, 1); rng: one random stream per image
    (:class:`SampleRNG`). Returns additive per-image terms, each (B,) float64 nats, whose sum is an upper bound on
    -log p(x0) of the model's density on [0, 1)^N (the metrics add the dequantisation and convert to bits/dim).
    """

    labels: dict[str, str]  # term key -> a human label for the report, e.g. "L_0, squared error (Eq. 11)"
    convention: str  # "dequantised" (a density on [0,1)^N) or "discrete" (a discretised decoder, exact bins)
    convention_detail: str  # one sentence for the report

    def terms(self, net: Net, x0: torch.Tensor, rng: SampleRNG) -> dict[str, torch.Tensor]: ...


class ForwardProcess(abc.ABC):
    """One forward process and its learned reverse. Subclasses set ``label`` and implement the abstract members.

    Attributes: ``cfg`` (the config it was built from), ``num_levels`` (K or T), ``label`` (display name, e.g.
    "IHDM"), ``needs_data_for_prior`` (True when :meth:`prior` draws from the training images).
    """

    label: ClassVar[str] = "process"
    needs_data_for_prior: ClassVar[bool] = False

    def __init__(self, cfg: ProcessConfig, num_levels: int):
        self.cfg = cfg
        self.num_levels = int(num_levels)

    # -- training
    def draw_training_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) int64 training levels, uniform on {1, ..., num_levels} (IHDM Alg. 1; Ho et al. Alg. 1). On the CPU."""
        return torch.randint(1, self.num_levels + 1, (n,), generator=generator)

    @abc.abstractmethod
    def training_pair(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's input and regression target at levels k (IHDM Alg. 1: F(t_k) x0 + sigma eps and the residual
        to F(t_{k-1}) x0; DDPM, Ho et al. Alg. 1: x_t and eps).

        x0: (B, C, H, W) data in [0, 1]; k: (B,) int64 in 1..num_levels; eps: (B, C, H, W) ~ N(0, I).
        Returns (input, target), both (B, C, H, W) float32; the input is a draw of :meth:`forward_marginal`.
        """

    def loss(self, net_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss: squared error averaged over batch and pixels (IHDM Alg. 1; Ho et al. L_simple)."""
        return torch.mean((net_out.float() - target) ** 2)

    @abc.abstractmethod
    def forward_marginal(self, x0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_k | x0) in model units, the state the reverse chain passes through at level k
        (IHDM Eq. 4: F(t_k) x0 + sigma eps; DDPM, Ho et al. Eq. 4: sqrt(ab_t) (2 x0 - 1) + sqrt(1 - ab_t) eps).
        Level 0 is the data itself: ``to_data_scale(forward_marginal(x0, 0, 0)) == x0``.

        x0: (B, C, H, W) in [0, 1]; k: (B,) int64 in 0..num_levels; eps: (B, C, H, W) ~ N(0, I).
        """

    # -- generation
    @abc.abstractmethod
    def prior(self, rng: SampleRNG, shape: tuple[int, int, int], data: Any = None) -> torch.Tensor:
        """(B, C, H, W) starting states, row i from ``rng``'s stream i, on ``rng.device``; B = len(rng)
        (IHDM Sec. 3.2: the KDE F(t_K) x_train + delta eps; DDPM: N(0, I)).

        shape: (C, H, W). data: given when ``needs_data_for_prior`` (else None): the training set, or the object
        :meth:`prior_from_state` rebuilt from a checkpoint (a run that ships without its data). The training set is a
        :class:`genproc.data.base.ImageDataset`: ``len(data)`` images, ``data.get_batch(idx)`` with ``idx`` an int64
        tensor (B,) gives them as (B, C, H, W) float32 in [0, 1] (on the CPU, or on the data's device after
        ``on_device``: move the result to ``rng.device``), ``data[i]`` one (C, H, W); ``data.channels`` and
        ``data.image_hw``. Draw the indices from ``rng`` (e.g. ``rng.randint(len(data))``) so row i depends on
        stream i only. IHDM's :meth:`~genproc.processes.heat.HeatProcess.prior` is a worked example.
        """

    def prior_state(self, data: Any) -> dict[str, torch.Tensor] | None:
        """What :meth:`prior` needs from the training set ``data``, as tensors small enough to store in a checkpoint
        (``prior.safetensors``), or None when the prior needs no data (the default). IHDM: the KDE's centres
        F(t_K) x_i as the DCT coefficients that survive (:mod:`genproc.processes.kde_prior`)."""
        return None

    def prior_from_state(self, state: dict[str, torch.Tensor]) -> Any:
        """The ``data`` to pass to :meth:`prior` (and :meth:`elbo`) in place of the training set, from
        :meth:`prior_state`'s tensors."""
        raise GenprocError(f"process {self.label} stores no prior state")

    # -- the process's own reverse chain (optional: a process exposing a sampler view, genproc.processes.views, gets
    #    its chains from genproc.samplers instead; one defining these is sampled by the generic ``chain`` sampler)
    def reverse_levels(self) -> list[int]:
        """The own chain's schedule: the levels it visits, decreasing, first = num_levels, all >= 1."""
        return list(range(self.num_levels, 0, -1))

    def reverse_step(self, x: torch.Tensor, net_out: torch.Tensor, k: int, k_next: int,
                     noise: torch.Tensor) -> torch.Tensor:
        """One step of the process's own learned reverse chain from level k to k_next < k (the next entry of
        :meth:`reverse_levels`, 0 after the last); IHDM Eq. 8 / Alg. 2: x + f(x, k) + delta eps.
        x, net_out, noise: (B, C, H, W); noise ~ N(0, I). Returns the state at k_next (B, C, H, W) float32."""
        raise GenprocError(f"process {self.label} defines no reverse step of its own; sample it with a sampler of "
                           f"genproc.samplers over the view it exposes")

    @property
    def reverse_is_stochastic(self) -> bool:
        """Whether :meth:`reverse_step` uses its ``noise`` (False: a deterministic chain given the prior state)."""
        return True

    @property
    def has_own_chain(self) -> bool:
        """Whether the process defines its own :meth:`reverse_step` (the generic ``chain`` sampler needs it)."""
        return type(self).reverse_step is not ForwardProcess.reverse_step

    @abc.abstractmethod
    def to_data_scale(self, x: torch.Tensor) -> torch.Tensor:
        """A state in the data's units ([0, 1] scale), not clamped: the identity for IHDM, (x + 1) / 2 for DDPM."""

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """A state as an image in [0, 1]: :meth:`to_data_scale`, clamped."""
        return self.to_data_scale(x).clamp(0.0, 1.0)

    # -- restoration (optional capability): start the reverse chain from an observed, degraded image
    def degradation_time(self, k: int) -> float:
        """The heat-equation time t (pixels², σ_B = √(2 t)) of the blur that level k applies to the data: IHDM's t_k,
        BDM's τ_t; 0 for a process that does not blur (DDPM). Restoration matches an image's estimated blur to it."""
        return 0.0

    def level_noise_std(self, k: int) -> float:
        """The std, in data units ([0, 1] pixels, relative to the level's signal scale), of the white noise in the
        level-k state: IHDM's σ; DDPM's √((1 - ᾱ_t) / ᾱ_t) / 2. Restoration compares an image's noise with it."""
        raise GenprocError(f"process {self.label} does not support restoration (no level_noise_std)")

    def observe(self, y: torch.Tensor, tau: torch.Tensor, noise_std: torch.Tensor, k: int,
                eps: torch.Tensor) -> torch.Tensor | None:
        """The level-k state for observed images y (B, C, H, W) in [0, 1] that are data blurred by heat time ``tau``
        (B,) with white noise of std ``noise_std`` (B,): blurred further to the level's blur where the process blurs
        (heat semigroup), scaled to the state's units, its noise topped up with ``eps`` (B, C, H, W) ~ N(0, I) to the
        level's. None when the observation's noise is above what level k holds (restore then looks further along
        the chain). DDPM's is SDEdit (Meng et al. 2022): the image noised to level k."""
        raise GenprocError(f"process {self.label} does not support restoration")

    # -- likelihood (optional capability)
    def elbo(self, train_data: Any, device: torch.device | str) -> ELBO | None:
        """The process's negative-ELBO terms (:class:`ELBO`), or None when it has no likelihood bound
        (IHDM Eq. 7 with App. A.2/A.3; DDPM Ho et al. Eq. 5 with a discretised decoder).

        ``train_data``: the training set (for priors built from it); ``device``: where ``terms`` runs.
        """
        return None

    @property
    def has_elbo(self) -> bool:
        """Whether :meth:`elbo` gives a bound, known without building it (``compare`` and ``evaluate`` ask before any
        work, so that ``nll`` of a process without one is refused up front). Default: whether the class overrides
        :meth:`elbo`; override this too when the bound depends on the config."""
        return type(self).elbo is not ForwardProcess.elbo

    # -- reporting
    def sampling_settings(self) -> dict[str, Any]:
        """The current values of the config's sampling-time keys (``cfg.SAMPLING_KEYS``), for records."""
        return {key: getattr(self.cfg, key) for key in type(self.cfg).SAMPLING_KEYS}
