"""One engine for every process: ``train`` (trainer.py) and ``generate`` (sampler.py)."""

from genproc.engine.sampler import SampleResult, generate, write_samples
from genproc.engine.trainer import TrainResult, train

__all__ = ["train", "TrainResult", "generate", "write_samples", "SampleResult"]
