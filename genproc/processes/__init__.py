"""Forward processes: pure math, no networks. The registry maps a recipe name to
(process class, config dataclass); the engine talks to a process only through its
methods (``num_steps``, ``sample_levels``, ``training_pair``, ``loss``, ``prior``,
``sampling_levels``, ``reverse_step``, ``to_image``).

Contract details: ``prior(data, rng, delta=None, shape=None)`` returns the starting states
(heat/blur draw from ``data``, DDPM uses ``shape``); ``reverse_step(x, net_out, k, noise,
delta=None, k_next=None)`` moves from level k to k_next (the next entry of ``sampling_levels()``)."""

from __future__ import annotations

from typing import Any

from genproc.processes.blur import BlurConfig, BlurProcess
from genproc.processes.ddpm import DDPMConfig, DDPMProcess
from genproc.processes.heat import HeatConfig, HeatProcess

PROCESSES: dict[str, tuple[type, type]] = {
    "heat": (HeatProcess, HeatConfig),
    "blur": (BlurProcess, BlurConfig),
    "ddpm": (DDPMProcess, DDPMConfig),
}


def build_process(cfg: Any) -> Any:
    """Instantiate the process whose config dataclass is ``cfg``."""
    for cls, cfg_cls in PROCESSES.values():
        if type(cfg) is cfg_cls:
            return cls(cfg)
    raise TypeError(f"no process registered for config {type(cfg).__name__}")
