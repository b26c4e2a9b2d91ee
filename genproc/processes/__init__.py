"""Forward processes: pure math, no networks. The registry maps a recipe name to
(process class, config dataclass); the engine talks to a process only through its
methods (``num_steps``, ``sample_levels``, ``training_pair``, ``loss``, ``prior``,
``sampling_levels``, ``reverse_step``, ``to_image``)."""

from __future__ import annotations

from typing import Any

from genproc.processes.heat import HeatConfig, HeatProcess

PROCESSES: dict[str, tuple[type, type]] = {
    "heat": (HeatProcess, HeatConfig),
}


def build_process(cfg: Any) -> Any:
    """Instantiate the process whose config dataclass is ``cfg``."""
    for cls, cfg_cls in PROCESSES.values():
        if type(cfg) is cfg_cls:
            return cls(cfg)
    raise TypeError(f"no process registered for config {type(cfg).__name__}")
